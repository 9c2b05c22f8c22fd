"""People's keys certified by their station's root (guarantee 8, issue 13): ``redline user add``
gets the root's certificate over a person's name, role and key; the peer pins certified people and
moves a pin only with a newer certificate (a rotation, a removal, a re-addition with a new key);
anything else, a forged certificate above all, is refused and alarmed. ``redline verify`` and a
bundle check every person signature up to the station's root (``persons.PersonSignatures``, run by
the gate over whole transcripts).

Transcripts are made in a SessionPair (real sessions, stores and signatures) and judged as a third
party judges them (verify, bundle); the live rule is the station's (StationPair: ops' pins and
alarms, the ROSTER the station publishes itself)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from nacl.pwhash.argon2id import MEMLIMIT_MIN, OPSLIMIT_MIN

from redline import persons
from redline.bundle import build_bundle, verify_bundle
from redline.identity import SignedCert
from redline.ledger.verify import verify_line
from redline.persons import Person, RosterPins, certify_person
from redline.testing import SessionPair, StationPair
from tests.test_keys import root_of, roots

PASSWORD = "test-password-1"
FAST = {"ops": OPSLIMIT_MIN, "mem": MEMLIMIT_MIN}
T = 1_700_000_000_000


def person(name: str, root: nacl.signing.SigningKey | None, role: str = "duty", *, at: int = T,
           key: nacl.signing.SigningKey | None = None) -> tuple[Person, nacl.signing.SigningKey]:  # fmt: skip
    """A person with a fresh key (or ``key``), certified by ``root`` at ``at`` (None: uncertified)."""
    k = key or nacl.signing.SigningKey.generate()
    p = Person(name=name, role=role, key=bytes(k.verify_key).hex())
    if root is not None:
        p = Person(name=name, role=role, key=p.key, cert=certify_person(root, p, issued_at=at))
    return p, k


def publish(sp: SessionPair, people: list[Person], removed: list[SignedCert] = ()) -> None:  # type: ignore[assignment]
    """NDMC files a ROSTER (as its station would), and EUCOM stores it."""
    with sp.b.ledger.batch():
        sp.b.accept("ROSTER", "PRIORITY", persons.roster_content(people, list(removed)), None, sp.clock.wall)
    sp.run()


def ack(sp: SessionPair, p: Person, key: nacl.signing.SigningKey) -> None:
    """NDMC files an ACK signed by ``p`` with ``key`` (of EUCOM's latest envelope)."""
    seq, eid = sp.a.ledger.head(sp.line, sp.a.us)
    content = persons.sign_content({"ref": {"sender": sp.a.us, "seq": seq, "id": eid}},
                                   Person(name=p.name, role=p.role, key=bytes(key.verify_key).hex()), key)  # fmt: skip
    with sp.b.ledger.batch():
        sp.b.accept("ACK", "FLASH", content, None, sp.clock.wall)
    sp.run()


def judged(sp: SessionPair) -> list[str]:
    """What a third party is told about person signatures: by verify (either store) and in a bundle."""
    said = []
    for ledger, name in ((sp.a.ledger, "EUCOM"), (sp.b.ledger, "NDMC")):
        report = verify_line(ledger.line_data(sp.line, name), roots(sp))
        assert report.ok, [str(p) for p in report.problems]
        said.append(report.people)
    data = sp.a.ledger.line_data(sp.line, "EUCOM")
    breport = verify_bundle(build_bundle(data, roots(sp), sp.a.us, exported_at=sp.clock.wall), sorted(roots(sp)))
    assert breport.ok, breport.summary()
    people = breport.line_report.people  # type: ignore[union-attr]
    assert breport.to_obj()["person_signatures"] == [s for s in breport.summary() if s in people] == people
    assert said[0] == said[1] == people
    return people


@pytest.fixture
def sp(tmp_path: Path) -> Any:
    pair = SessionPair(tmp_path)
    pair.run()
    pair.send("a", "FLASH from EUCOM", kind="FLASH", prio="FLASH")
    pair.run()
    yield pair
    pair.close()


# -- the transcript, judged by a third party ----------------------------------------------------------


def test_every_person_signature_is_checked_up_to_the_stations_root(sp: SessionPair) -> None:
    orlov, key = person("Dezhurny Orlov", root_of(sp.dir_b))
    legacy, lkey = person("Old Hand", None)  # published by a station before certificates
    publish(sp, [orlov, legacy])
    ack(sp, orlov, key)
    ack(sp, legacy, lkey)
    assert judged(sp) == [
        "person signatures of NDMC: 2 valid, 1 up to its root, 1 up to its ROSTER only (no root certificate)"
    ]


def test_a_forged_person_certificate_is_refused(sp: SessionPair) -> None:
    """NDMC's admin (or whoever holds its online key) makes up a person and a certificate under a
    root EUCOM never pinned: the person is not pinned, their signature counts nowhere."""
    impostor, key = person("Polkovnik Volkov", nacl.signing.SigningKey.generate())
    orlov, okey = person("Dezhurny Orlov", root_of(sp.dir_b))
    publish(sp, [orlov, impostor])
    ack(sp, impostor, key)
    ack(sp, orlov, okey)
    said = judged(sp)
    assert said[0] == "person signatures of NDMC: 1 valid, all up to its root"
    assert any(s.startswith("PERSON SIGNATURE NOT VALID: NDMC ACK") and "not on the sending station's published roster"
               in s for s in said), said  # fmt: skip
    assert any(s.startswith("ROSTER REFUSED IN PART") and "Polkovnik Volkov" in s and "pinned root" in s for s in said)
    # a certificate of the right root over another key than the one listed is no better
    other, _ = person("Polkovnik Volkov", root_of(sp.dir_b))
    pins = RosterPins(root=root_of(sp.dir_b).verify_key.encode())
    forged = Person(name=other.name, role=other.role, key=impostor.key, cert=other.cert)
    change = pins.apply({"Polkovnik Volkov": forged})
    assert change.cert_refused and not pins.people


def test_a_person_key_swapped_by_the_peers_admin_is_refused(sp: SessionPair) -> None:
    """The admin republishes a certified person with a key of their own: without a newer root
    certificate over it the pin stays, and the swapped key's signature counts nowhere."""
    root = root_of(sp.dir_b)
    orlov, key = person("Dezhurny Orlov", root)
    publish(sp, [orlov])
    swapped, skey = person("Dezhurny Orlov", None)
    publish(sp, [swapped])
    ack(sp, swapped, skey)  # the admin's key: refused
    ack(sp, orlov, key)  # the person's own: still counts
    old_cert = Person(name=orlov.name, role=orlov.role, key=swapped.key, cert=orlov.cert)  # an old certificate reused
    publish(sp, [old_cert])
    said = judged(sp)
    assert said[0] == "person signatures of NDMC: 1 valid, all up to its root"
    assert "signed with a key that is not the one on the roster" in said[1]
    refused = [s for s in said if s.startswith("ROSTER REFUSED IN PART")]
    assert len(refused) == 2 and "changes the pinned key of Dezhurny Orlov" in refused[0]
    assert "certificate of Dezhurny Orlov" in refused[1]  # the old certificate is not over the new key


def test_a_certified_rotation_moves_the_pin_and_retires_the_old_key(sp: SessionPair) -> None:
    root = root_of(sp.dir_b)
    orlov, old = person("Dezhurny Orlov", root, at=T)
    publish(sp, [orlov])
    ack(sp, orlov, old)
    rotated, new = person("Dezhurny Orlov", root, at=T + 1)
    publish(sp, [rotated])
    ack(sp, rotated, new)
    ack(sp, orlov, old)  # after the rotation: refused
    said = judged(sp)
    assert said[0] == "person signatures of NDMC: 2 valid, all up to its root" and len(said) == 2
    assert said[1].startswith("PERSON SIGNATURE NOT VALID: NDMC ACK")


def test_a_person_removed_then_readded_with_a_new_key(sp: SessionPair) -> None:
    """An uncertified drop and re-addition change nothing (refused, the old pin stays); a removal
    the root certified drops the pin (the old key signs nothing after it), and the person comes
    back only with a newer certificate over a new key (the old key never comes back)."""
    root = root_of(sp.dir_b)
    orlov, old = person("Dezhurny Orlov", root, at=T)
    volkov, vkey = person("Polkovnik Volkov", root, role="supervisor", at=T)
    publish(sp, [orlov, volkov])
    # 1. the admin drops Orlov and adds him back with a key of their own: both refused
    publish(sp, [volkov])
    back, bkey = person("Dezhurny Orlov", None)
    publish(sp, [volkov, back])
    ack(sp, back, bkey)
    ack(sp, orlov, old)  # the pin stayed
    # 2. the root removes Orlov: the pin is dropped, his old key signs nothing more
    removal = certify_person(root, orlov, removed=True, issued_at=T + 5)
    publish(sp, [volkov], [removal])
    ack(sp, orlov, old)
    # 3. back with the old key: refused; with a new key the root certified later: pinned again
    publish(sp, [volkov, orlov], [])
    again, akey = person("Dezhurny Orlov", root, at=T + 9)
    publish(sp, [volkov, again], [removal])
    ack(sp, again, akey)
    ack(sp, volkov, vkey)
    said = judged(sp)
    assert said[0] == "person signatures of NDMC: 3 valid, all up to its root", said
    invalid = [s for s in said if s.startswith("PERSON SIGNATURE NOT VALID")]
    assert len(invalid) == 2, said  # the admin's key, and the removed key after the removal
    refused = [s for s in said if s.startswith("ROSTER REFUSED IN PART")]
    assert "drops Dezhurny Orlov" in refused[0] and "changes the pinned key of Dezhurny Orlov" in refused[1]
    assert "changes Dezhurny Orlov" in refused[2] and "without a newer certificate" in refused[2]
    assert len(refused) == 3, refused


# -- live: the station's own pins, alarms, and the commands ---------------------------------------------


def _pins(sp: StationPair, who: str) -> RosterPins:
    """What ``who`` has pinned of the other station's people."""
    return sp.station(who).ops[sp.line].pins[False]  # type: ignore[no-any-return]


def test_a_station_publishes_certified_people_and_the_peer_alarms_on_certified_changes(tmp_path: Path) -> None:
    async def body() -> None:
        async with StationPair(tmp_path) as sp:
            root = root_of(sp.dir_b)
            persons.add_user(sp.dir_b.path, "Dezhurny Orlov", "duty", PASSWORD, root=root, **FAST)
            persons.add_user(sp.dir_b.path, "Polkovnik Volkov", "supervisor", PASSWORD, root=root, **FAST)
            await sp.send("b", "NDMC roster goes out with this", kind="FLASH", prio="FLASH")
            pins = _pins(sp, "a")
            assert set(pins.people) == {"Dezhurny Orlov", "Polkovnik Volkov"}
            assert all(pins.is_certified(n) for n in pins.people)
            old = pins.people["Dezhurny Orlov"].key
            persons.rotate_user(sp.dir_b.path, "Dezhurny Orlov", PASSWORD, root, **FAST)
            persons.remove_user(sp.dir_b.path, "Polkovnik Volkov", root=root)
            sp.alarms.clear()
            await sp.send("b", "NDMC after the changes", kind="FLASH", prio="FLASH")
            assert pins.people["Dezhurny Orlov"].key != old and "Polkovnik Volkov" not in pins.people
            said = [t for who, level, t in sp.alarms if who == "a" and level == "warning" and "ROSTER" in t]
            assert any("new key of Dezhurny Orlov" in t and "Polkovnik Volkov removed" in t and "certified by the "
                       "station's root" in t for t in said), sp.alarms  # fmt: skip
            assert not [t for who, level, t in sp.alarms if "PINNED KEY" in t]
            # the peer's admin swaps a key on disk: the next ROSTER is refused for that person, alarmed
            path = persons.users_dir(sp.dir_b.path) / "Dezhurny Orlov.json"
            pinned = pins.people["Dezhurny Orlov"].key
            path.unlink()
            persons.add_user(sp.dir_b.path, "Dezhurny Orlov", "duty", PASSWORD, **FAST)  # no root
            await sp.send("b", "NDMC after the swap", kind="FLASH", prio="FLASH")
            assert pins.people["Dezhurny Orlov"].key == pinned
            assert any(who == "a" and "PINNED KEY" in t and "Dezhurny Orlov" in t for who, _, t in sp.alarms)

    asyncio.run(body())


def test_user_add_certifies_with_the_root_and_a_wrong_root_is_refused_in_one_line(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from redline.cli.common import main

    sp = SessionPair(tmp_path)
    sp.close()
    station = str(sp.dir_b.path)
    stranger = tmp_path / "stranger.key"
    stranger.write_text(nacl.signing.SigningKey.generate().encode().hex() + "\n")
    stranger.chmod(0o600)
    env = {"REDLINE_PWHASH_COST": "interactive"}
    res = CliRunner().invoke(main, ["user", "add", "Orlov", "--role", "duty", "--station", station, "--root-key",
                                    str(stranger)], input=PASSWORD + "\n", env=env)  # fmt: skip
    assert res.exit_code == 1 and "is not this station's root key" in res.output and "Traceback" not in res.output
    assert persons.load_users(sp.dir_b.path) == []
    res = CliRunner().invoke(main, ["user", "add", "Orlov", "--role", "duty", "--station", station],
                             input=PASSWORD + "\n", env=env)  # keys/root.key, as redline init left it
    assert res.exit_code == 0, res.output
    (orlov,) = persons.load_users(sp.dir_b.path)
    assert orlov.cert is not None
    cert = persons.PersonCert.open(orlov.cert, sp.dir_b.load_keys().root_public)
    assert (cert.name, cert.role, cert.key, cert.removed) == ("Orlov", "duty", orlov.key, False)
