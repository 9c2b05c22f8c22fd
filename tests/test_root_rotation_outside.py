"""After a confirmed root rotation (PROTOCOL.md 5.9 ``ROOT``), what was certified under the old
root and the new one is judged by the same roots everywhere: a checkpoint file signed by a key the
new root certified (BUNDLE.md section 4 step 5), and the other people's old-root person
certificates a ROSTER keeps carrying after the new root certified one person (OPERATIONS.md, root
rotation step 4): valid, no "(forged?)", live, by verify and in a bundle."""

from __future__ import annotations

from typing import Any

import nacl.signing

from redline.bundle import build_bundle, export_checkpoint, parse_checkpoint, verify_bundle
from redline.persons import Person, certify_person
from redline.statements import Checkpoint, Cosign
from tests.test_keys import root_of, roots
from tests.test_keys_root import cert_under, file_key
from tests.test_keys_root import rotating as rotating  # the fixture


def _confirmed_with_new_key(sp: Any, new: nacl.signing.SigningKey) -> None:
    _, code = sp.a.root_safety_code()
    sp.a.confirm_root(code, sp.clock.wall)  # EUCOM's operator typed the code NDMC's read aloud
    sp.run()
    key, cert = cert_under(sp, new)
    file_key(sp, key, cert)
    sp.run()


def test_a_checkpoint_file_signed_by_a_key_of_the_confirmed_new_root_verifies_against_a_bundle(rotating: Any) -> None:
    sp, new = rotating
    _confirmed_with_new_key(sp, new)
    sp.send("b", "NDMC under a key of the new root")
    sp.send("a", "EUCOM meanwhile")
    sp.run()
    sp.tick(61)  # a checkpoint, signed by NDMC's key of the new root
    sp.run()
    bundle = build_bundle(sp.a.ledger.line_data(sp.line, "EUCOM"), roots(sp), sp.a.us, exported_at=sp.clock.wall)
    cpf = parse_checkpoint(export_checkpoint(sp.b.ledger.line_data(sp.line, "NDMC"), sp.b.us,
                                             exported_at=sp.clock.wall))  # fmt: skip
    signers = {Checkpoint.peek(cpf.proposal).key, Cosign.peek(cpf.cosign).key}
    assert sp.b.gate.current_key(sp.b.us) in signers  # the key of the new root signed it
    report = verify_bundle(bundle, sorted(roots(sp)), cpf.signed, other_certs=cpf.certs)
    assert report.ok, report.summary()
    assert report.consistency is not None and not report.consistency.problems, report.summary()
    assert {c.state for c in report.consistency.chains} == {"consistent"}


def test_old_root_person_certificates_stay_valid_after_the_new_root_certifies_one_person(rotating: Any) -> None:
    """The runbook's root rotation step 4: ``user rotate`` of one person under the new root; the
    next ROSTER still lists the others with the old root's certificates, which stay valid."""
    from redline import persons
    from tests.test_keys_people import ack, judged, publish

    sp, new = rotating
    old_root = root_of(sp.dir_b)

    def person(name: str, root: nacl.signing.SigningKey) -> tuple[Person, nacl.signing.SigningKey]:
        k = nacl.signing.SigningKey.generate()
        p = Person(name=name, role="duty", key=bytes(k.verify_key).hex())
        return Person(name=name, role="duty", key=p.key, cert=certify_person(root, p, station=sp.b.us)), k

    hayes, hkey = person("Col. Hayes", old_root)
    miller, _ = person("Duty Officer Miller", old_root)
    publish(sp, [hayes, miller])  # before the rotation is confirmed: both under the old root
    _confirmed_with_new_key(sp, new)
    sp.clock.wall += 1000
    miller2, mkey = person("Duty Officer Miller", new)  # user rotate under the new root
    publish(sp, [hayes, miller2])
    ack(sp, hayes, hkey)
    ack(sp, miller2, mkey)
    alarms = [t for _, lvl, t in sp.alarms if lvl == "alarm"]
    assert not [t for t in alarms if "forged" in t or "PINNED KEY" in t], alarms
    said = judged(sp)
    assert not [s for s in said if s.startswith("ROSTER REFUSED")], said
    assert said[0] == "person signatures of NDMC: 2 valid, all up to its root", said
    # the old root can no longer change a pin: a newer certificate of it over a new key is refused
    sp.clock.wall += 1000
    hayes2, _ = person("Col. Hayes", old_root)
    publish(sp, [hayes2, miller2])
    said = judged(sp)
    refused = [s for s in said if s.startswith("ROSTER REFUSED")]
    assert len(refused) == 1 and "Col. Hayes" in refused[0] and "replaced root" in refused[0], said
    assert persons.PersonCert.open(hayes.cert, bytes(old_root.verify_key), station=sp.b.us)  # type: ignore[arg-type]


def test_the_live_pins_keep_old_root_certificates_after_a_confirmed_rotation() -> None:
    """The live path (ops.engine.LineOps, what raised "[alarm] PINNED KEY … (forged?)" at the
    station in the runbook): NDMC's ROSTER after its rotation keeps Col. Hayes's old-root
    certificate and lists Miller with one of the new root. No alarm, no refusal; the old root can
    no longer move Hayes's pin."""
    from redline.ops.engine import LineOps
    from redline.ops.model import Entry
    from redline.persons import roster_content
    from tests.test_ops import EUCOM, NDMC, QUIET, T0

    old, new = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    rotated_at = 10  # NDMC's envelopes that have seen EUCOM's ROOT_CONFIRM (seq 10) are under the new root

    def root_for(station: str, seen: int) -> bytes:
        assert station == NDMC
        return bytes((new if seen >= rotated_at else old).verify_key)

    def person(name: str, root: nacl.signing.SigningKey, at: int) -> Person:
        p = Person(name=name, role="duty", key=bytes(nacl.signing.SigningKey.generate().verify_key).hex())
        return Person(name=name, role="duty", key=p.key, cert=certify_person(root, p, station=NDMC, issued_at=at))

    ops = LineOps(us=EUCOM, peer=NDMC, limits=QUIET, since=T0, roots={False: bytes(old.verify_key)},
                  root_for=root_for)  # fmt: skip
    seq = 0

    def roster(people: list[Person], seen: int) -> list[str]:
        nonlocal seq
        seq += 1
        e = Entry(sender=NDMC, ours=False, seq=seq, id=f"{seq:064x}", kind="ROSTER", prio="PRIORITY", sent_at=T0,
                  stored_at=T0, lang="ru", content=roster_content(people), seen=seen)  # fmt: skip
        return [a.text for a in ops.observe(e) if a.level == "alarm"]

    hayes, miller = person("Col. Hayes", old, 1), person("Duty Officer Miller", old, 1)
    assert roster([hayes, miller], seen=1) == []
    miller2 = person("Duty Officer Miller", new, 2)  # user rotate under the new root
    assert roster([hayes, miller2], seen=rotated_at) == []
    assert not ops.refused, ops.refused
    assert ops.pins[False].people["Col. Hayes"] == hayes and ops.pins[False].people["Duty Officer Miller"] == miller2
    hayes2 = person("Col. Hayes", old, 3)  # the replaced root tries to move a pin
    (alarm,) = roster([hayes2, miller2], seen=rotated_at + 1)
    assert "PINNED KEY" in alarm and "replaced root" in alarm and "forged" not in alarm, alarm
    assert ops.pins[False].people["Col. Hayes"] == hayes
