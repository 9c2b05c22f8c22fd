"""Root rotation (issue 13 point 2, PROTOCOL.md section 5.9 ``ROOT``): a new root certified by the
old one, TUF-style (the statement signed by both, the next version, a key counts once), trusted by
the peer only after its operator typed the NEW safety code heard by voice (a ROOT_CONFIRM). One gate
rule (``TrustedLine.root_for``): live, by ``verify`` and in a bundle spanning the rotation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import nacl.signing
import pytest

from redline import errors, identity, rootrotation, rotation
from redline import keys as keyfiles
from redline.bundle import build_bundle, verify_bundle
from redline.identity import KeyCert, SignedCert
from redline.ledger.verify import verify_line
from redline.testing import SessionPair, StationPair
from tests.test_keys import in_loop, next_b, refused_everywhere, root_of, roots


def rotation_of(sp: SessionPair, new: nacl.signing.SigningKey, *, signer: nacl.signing.SigningKey | None = None,
                version: int = 2) -> dict[str, Any]:  # fmt: skip
    """NDMC's ROOT content naming ``new``; ``signer`` stands in for the old root (a forgery)."""
    old = root_of(sp.dir_b)
    rot = rootrotation.RootRotation(station=sp.b.us, version=version, prev=bytes(old.verify_key).hex(),
                                    root=bytes(new.verify_key).hex(), issued_at=sp.clock.wall)  # fmt: skip
    signed = rot.sign(old, new)
    if signer is not None:
        data = bytes.fromhex(signed["data"])
        signed["prev_sig"] = identity.sign(signer, rootrotation.DOMAIN, data).hex()
    return rootrotation.content(signed)


def cert_under(sp: SessionPair, root: nacl.signing.SigningKey) -> tuple[nacl.signing.SigningKey, SignedCert]:
    """A new NDMC signing key certified by ``root`` (the station keeps its identity)."""
    key = nacl.signing.SigningKey.generate()
    public = bytes(key.verify_key)
    cert = identity.certify(root, KeyCert(station=sp.b.us, name="NDMC", role="signing", key=public.hex(),
                                          key_id=identity.key_id(public), issued_at=sp.clock.wall))  # fmt: skip
    return key, cert


def file_key(sp: SessionPair, key: nacl.signing.SigningKey, cert: SignedCert) -> None:
    """What ``keys rotate --signing`` does once the new root is in force: the next key's files, the KEY."""
    keyfiles._write_atomic(sp.dir_b.keys / keyfiles.NEXT_CERT, (json.dumps(cert.to_obj()) + "\n").encode())
    keyfiles._write_atomic(sp.dir_b.keys / keyfiles.NEXT_KEY, key.encode().hex().encode() + b"\n")
    s = sp.b
    s.keys = dataclasses.replace(s.keys, next_signing=key, next_cert=cert)
    with s.ledger.batch():
        s.ledger.put_cert(s.us, identity.key_id(bytes(key.verify_key)), "signing", cert)
        s.accept("KEY", "PRIORITY", {"certs": [cert.to_obj()]}, None, sp.clock.wall)


@pytest.fixture
def rotating(tmp_path: Path) -> Any:
    """NDMC filed a ROOT naming a new root; EUCOM holds it, unconfirmed: (pair, new root)."""
    sp = SessionPair(tmp_path)
    sp.run()
    sp.send("a", "EUCOM 1")
    sp.send("b", "NDMC 1")
    sp.run()
    new = nacl.signing.SigningKey.generate()
    sp.b.accept("ROOT", "FLASH", rotation_of(sp, new), None, sp.clock.wall)
    sp.run()
    yield sp, new
    sp.close()


def test_a_root_rotation_without_the_confirmed_safety_code_is_not_trusted(rotating: Any) -> None:
    sp, new = rotating
    pending = sp.a.gate.pending_root(sp.b.us)
    assert pending is not None and pending.public == bytes(new.verify_key) and pending.version == 2
    held = sp.a.root_safety_code()
    assert held is not None
    code = held[1]
    said = [t for w, lvl, t in sp.alarms if w == "a" and t.startswith("ROOT ROTATION")]
    assert len(said) == 1 and code in said[0] and "NOT trusted" in said[0], sp.alarms
    # NDMC's side shows the same code (both compute it from the ROOT alone)
    own = sp.b.gate.pending_root(sp.b.us)
    assert own is not None
    old = root_of(sp.dir_b)
    assert rootrotation.safety_code(sp.line, bytes(old.verify_key), own.public, own.digest) == code
    # a key certified by the new root is refused while unconfirmed: live, by verify, in a bundle
    _, cert = cert_under(sp, new)
    forged = next_b(sp, sp.b.keys.signing, kind="KEY", prio="PRIORITY", content={"certs": [cert.to_obj()]})
    refused_everywhere(sp, forged, errors.KeyWindowError, "root in force did not certify", extra_certs=[cert])
    # verify says so: the rotation is held, not confirmed
    (said,) = verify_line(sp.a.ledger.line_data(sp.line, "x"), roots(sp)).roots
    assert "root version 2" in said and "NOT confirmed" in said, said
    # a wrong code typed by EUCOM's operator files nothing
    wrong = f"{(int(code[:4]) + 1) % 10000:04d}-{code[5:]}"
    with pytest.raises(errors.PairingError):
        sp.a.confirm_root(wrong, sp.clock.wall)
    assert sp.a.gate.pending_root(sp.b.us) is not None and not sp.a.ledger.raw_of_kind(sp.line, sp.a.us, "ROOT_CONFIRM")


def test_a_root_confirm_filed_while_the_line_is_down_is_not_asked_for_again_after_a_crash(rotating: Any) -> None:
    """The operator typed the code with the line down, then the station crashed before the
    ROOT_CONFIRM went out (found by tests/test_keys_root_kill.py): the status no longer asks for the
    code (it is filed, waiting in the outbox), typing it again files nothing more, and once the line
    is back the ROOT_CONFIRM is sealed and EUCOM trusts the new root."""
    sp, new = rotating
    held = sp.a.root_safety_code()
    assert held is not None and sp.a.status().root_code == held[1]
    for p in sp.paths:
        sp.disconnect(p)
    sp.a.confirm_root(held[1], sp.clock.wall)
    sp.restart("a")  # the crash (its paths come back up, but nothing moves until run())
    assert sp.a.gate.pending_root(sp.b.us) is not None, "trusted only from the sealed ROOT_CONFIRM"
    assert sp.a.status().root_code is None
    sp.a.confirm_root(held[1], sp.clock.wall)  # typed again: the same one (its idempotency key)
    assert [it.kind for it in sp.a.ledger.pending(sp.line, -1)] == ["ROOT_CONFIRM"]
    sp.run()
    assert sp.a.gate.pending_root(sp.b.us) is None and sp.a.status().root_code is None
    assert len(sp.a.ledger.raw_of_kind(sp.line, sp.a.us, "ROOT_CONFIRM")) == 1
    assert sp.b.gate.root_history[sp.b.us][-1].public == bytes(new.verify_key)
    assert sp.b.gate.pending_root(sp.b.us) is None


def test_a_confirmed_root_rotation_certifies_new_keys_live_by_verify_and_in_a_bundle(rotating: Any) -> None:
    sp, new = rotating
    _, code = sp.a.root_safety_code()
    sp.a.confirm_root(code, sp.clock.wall)  # EUCOM's operator typed the code NDMC's read aloud
    sp.run()
    assert sp.a.gate.pending_root(sp.b.us) is None and sp.b.gate.pending_root(sp.b.us) is None
    assert [r.version for r in sp.a.gate.root_history[sp.b.us]] == [1, 2]
    key, cert = cert_under(sp, new)
    file_key(sp, key, cert)
    sp.run()
    sp.send("b", "NDMC under a key of the new root")
    sp.send("a", "EUCOM meanwhile")
    sp.run()
    assert sp.a.gate.current_key(sp.b.us) == identity.key_id(bytes(key.verify_key))
    assert sp.a.ledger.head(sp.line, sp.b.us) == sp.b.ledger.head(sp.line, sp.b.us)
    assert not [t for w, lvl, t in sp.alarms if lvl == "alarm" and "refused" in t], sp.alarms
    for ledger in (sp.a.ledger, sp.b.ledger):
        report = verify_line(ledger.line_data(sp.line, "x"), roots(sp))
        assert report.ok, [str(p) for p in report.problems]
        (said,) = report.roots
        assert said.startswith("ROOT: ") and "root version 2" in said and "confirmed by" in said, said
        assert "NOT confirmed" not in said
    bundle = build_bundle(sp.a.ledger.line_data(sp.line, "EUCOM"), roots(sp), sp.a.us, exported_at=sp.clock.wall)
    breport = verify_bundle(bundle, sorted(roots(sp)))
    assert breport.ok, breport.summary()
    (bsaid,) = [s for s in breport.summary() if s.startswith("ROOT: ")]
    assert breport.to_obj()["roots"] == [bsaid] and "NDMC root version 2" in bsaid and "confirmed by EUCOM" in bsaid
    # both ends take the history up again from their stores
    sp.restart("a")
    sp.restart("b")
    sp.run()
    sp.send("b", "NDMC after the restart")
    sp.run()
    assert [r.version for r in sp.a.gate.root_history[sp.b.us]] == [1, 2]
    assert sp.a.ledger.head(sp.line, sp.b.us) == sp.b.ledger.head(sp.line, sp.b.us)
    # the old root no longer certifies NDMC's keys: a KEY under it, after the confirmation, is refused
    _, stale = cert_under(sp, root_of(sp.dir_b))
    forged = next_b(sp, key, kind="KEY", prio="PRIORITY", content={"certs": [stale.to_obj()]})
    refused_everywhere(sp, forged, errors.KeyWindowError, "root in force did not certify", extra_certs=[stale])


def test_a_forged_root_rotation_signed_by_the_new_root_only_is_refused(tmp_path: Path) -> None:
    sp = SessionPair(tmp_path)
    sp.run()
    sp.send("b", "NDMC 1")
    sp.run()
    new = nacl.signing.SigningKey.generate()
    forged = next_b(sp, sp.b.keys.signing, kind="ROOT", prio="FLASH", content=rotation_of(sp, new, signer=new))
    refused_everywhere(sp, forged, errors.RootRotationError, "not certified by the root in force")
    # the same key for both signatures (a key counts once) and a skipped version are refused too
    with pytest.raises(errors.SchemaError):
        rootrotation.RootRotation(station=sp.b.us, version=2, prev=bytes(new.verify_key).hex(),
                                  root=bytes(new.verify_key).hex(), issued_at=0)  # fmt: skip
    skipped = next_b(sp, sp.b.keys.signing, kind="ROOT", prio="FLASH", content=rotation_of(sp, new, version=3))
    with pytest.raises(errors.RootRotationError, match="the next is 2"):
        sp.a.gate.accept_envelope(skipped.encode(), sender=sp.b.us)
    assert sp.a.gate.root_history[sp.b.us][-1].version == 1
    sp.close()


# -- a whole station: the procedure of 'redline keys rotate --root' and 'keys confirm-root' ------------


@in_loop
async def test_keys_rotate_root_in_running_stations_needs_the_typed_code_then_new_keys_verify(tmp_path: Path) -> None:
    async with StationPair(tmp_path) as sp:
        await sp.send("a", "EUCOM 1")
        await sp.send("b", "NDMC 1")
        us = sp.b.keys.fingerprint
        old, new = root_of(sp.dir_b), nacl.signing.SigningKey.generate()
        content = rotation.root_content(old, new, station=us, version=2, issued_at=sp.clocks["b"].wall())
        result = await rotation.file_root_running(sp.b, content, 2)
        keyfiles.record_root(sp.dir_b.keys, 2, bytes(new.verify_key))
        await sp.synced()
        code = result["codes"][sp.line]
        assert any(w == "a" and code in t and t.startswith("ROOT ROTATION") for w, _, t in sp.alarms), sp.alarms
        assert rotation.unconfirmed_roots(sp.b.ledger, us, 2) == [sp.line]
        # the station itself refuses to file a KEY under the root not confirmed yet (nothing filed)
        keyfiles.prepare_signing(sp.dir_b.keys, new, "NDMC", us)
        head = sp.b.ledger.head(sp.line, us)
        with pytest.raises(errors.LocalProtocolError, match="has the peer confirmed the new root"):
            await rotation.file_running(sp.b)
        assert sp.b.ledger.head(sp.line, us) == head and not sp.b.ledger.pending(sp.line, -1)
        with pytest.raises(errors.PairingError):
            await sp.a.confirm_root(sp.line, "0000-0000" if code != "0000-0000" else "1111-1111")
        assert rotation.unconfirmed_roots(sp.b.ledger, us, 2) == [sp.line]
        confirmed = await sp.a.confirm_root(sp.line, code.replace("-", " "))  # typed as heard
        await sp.synced()
        assert confirmed["confirmed_version"] == 2 and rotation.unconfirmed_roots(sp.b.ledger, us, 2) == []
        assert keyfiles.root_in_force(sp.dir_b.keys) == (2, bytes(new.verify_key))
        # 'keys rotate --signing --root-key NEW': the new root certifies the next key, under the same identity
        keyfiles.prepare_signing(sp.dir_b.keys, keyfiles.read_root(_write_key(tmp_path, new), bytes(new.verify_key)),
                                 "NDMC", us)  # fmt: skip
        await rotation.file_running(sp.b)
        await sp.synced()
        await sp.send("b", "NDMC under the new root's key")
        await sp.advance(2)
        assert sp.dir_b.load_keys().signing_cert.verify(bytes(new.verify_key), station=us)
        # a person the new root certifies ('redline user add --root-key NEW'): pinned as certified by EUCOM
        from redline import persons
        from tests.test_keys_people import FAST, PASSWORD

        persons.add_user(sp.dir_b.path, "Dezhurny Orlov", "duty", PASSWORD, root=new, **FAST)
        await sp.send("b", "NDMC roster goes out with this", kind="FLASH", prio="FLASH")
        pins = sp.a.ops[sp.line].pins[False]
        assert pins.is_certified("Dezhurny Orlov"), (pins.people, sp.alarms)
        assert not [t for _, lvl, t in sp.alarms if lvl == "alarm" and "refused" in t], sp.alarms
        for s in (sp.a, sp.b):
            report = verify_line(s.ledger.line_data(sp.line, "x"), roots(sp))
            assert report.ok, [str(p) for p in report.problems]


def _write_key(tmp_path: Path, key: nacl.signing.SigningKey) -> Path:
    path = tmp_path / "offline" / "root2.key"
    path.parent.mkdir(exist_ok=True)
    if not path.exists():
        identity.write_secret(path, key.encode().hex().encode() + b"\n")
    return path


def test_keys_rotate_root_on_a_stopped_station_files_the_root_and_says_the_codes(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from redline.cli.common import main

    sp = SessionPair(tmp_path)
    sp.run()
    sp.close()
    st = str(sp.dir_b.path)
    old_path = str(sp.dir_b.keys / "root.key")
    new_path = tmp_path / "offline" / "root2.key"
    new_path.parent.mkdir()
    runner = CliRunner()
    res = runner.invoke(main, ["keys", "new-root", str(new_path)])
    assert res.exit_code == 0 and new_path.exists(), res.output
    # one line each, nothing filed: no new root given, the new root as the old, a stranger as the old
    for args, words in ((["--root-key", old_path], "--root needs it"),
                        (["--root-key", old_path, "--new-root-key", old_path], "is the root in force"),
                        (["--root-key", str(new_path), "--new-root-key", str(new_path)], "is not this station's root")):
        res = runner.invoke(main, ["keys", "rotate", "--root", "--station", st, *args])
        assert res.exit_code == 1 and words in res.output and "Traceback" not in res.output, res.output
    ledger = sp.dir_b.open_ledger()
    assert not ledger.outbox_by_idem(sp.line, rotation.root_idem(2))
    ledger.close()
    res = runner.invoke(main, ["keys", "rotate", "--root", "--station", st, "--root-key", old_path,
                               "--new-root-key", str(new_path), "--json"])  # fmt: skip
    assert res.exit_code == 0, res.output
    out = json.loads(res.output)
    assert out["version"] == 2 and out["lines"] == [sp.line] and not out["running"]
    ledger = sp.dir_b.open_ledger()
    item = ledger.outbox_by_idem(sp.line, rotation.root_idem(2))
    ledger.close()
    assert item is not None
    new_public = bytes(identity.load_signing_key(new_path).verify_key)
    assert keyfiles.root_in_force(sp.dir_b.keys) == (2, new_public)
    # the same command again (its output lost, say): the same codes, nothing more filed; only for
    # the holder of the root it replaced
    again = runner.invoke(main, ["keys", "rotate", "--root", "--station", st, "--root-key", old_path,
                                 "--new-root-key", str(new_path), "--json"])  # fmt: skip
    assert again.exit_code == 0 and json.loads(again.output)["codes"] == out["codes"], again.output
    again = runner.invoke(main, ["keys", "rotate", "--root", "--station", st, "--root-key", old_path,
                                 "--new-root-key", str(new_path)])  # fmt: skip
    assert "in force already" in again.output and out["codes"][sp.line] in again.output, again.output
    stranger = tmp_path / "offline" / "stranger.key"
    identity.new_signing_key(stranger)
    again = runner.invoke(main, ["keys", "rotate", "--root", "--station", st, "--root-key", str(stranger),
                                 "--new-root-key", str(new_path)])  # fmt: skip
    assert again.exit_code == 1 and "is not this station's root" in again.output, again.output
    ledger = sp.dir_b.open_ledger()
    assert [it.kind for it in ledger.pending(sp.line, -1)] == ["ROOT"]
    ledger.close()
    # the peer has not confirmed: keys under the new root are not made yet
    res = runner.invoke(main, ["keys", "rotate", "--signing", "--station", st, "--root-key", str(new_path)])
    assert res.exit_code == 1 and "has not confirmed root version 2" in res.output, res.output
    assert not (sp.dir_b.keys / keyfiles.NEXT_KEY).exists()
    res = runner.invoke(main, ["user", "add", "--station", st, "--root-key", str(new_path), "Dezhurny Orlov",
                               "--role", "duty"], input="test-password-1\n")  # fmt: skip
    assert res.exit_code == 1 and "has not confirmed root version 2" in res.output, res.output
    assert not (sp.dir_b.path / "users" / "Dezhurny Orlov.json").exists()
    # nor a revocation: the peer would refuse a REVOKE (and its next key) under a root it does not trust
    res = runner.invoke(main, ["keys", "revoke", "--station", st, "--root-key", str(new_path), "--before",
                               "2030-01-01T00:00Z", "--reason", "laptop stolen"])  # fmt: skip
    assert res.exit_code == 1 and "has not confirmed root version 2" in res.output, res.output
    assert not (sp.dir_b.keys / keyfiles.NEXT_KEY).exists()


def test_person_certificates_follow_the_root_in_force(rotating: Any) -> None:
    """Section 5.10 under 5.9 ROOT: a person certified by the new root is refused before the
    confirmation and pinned after it, by the peer's live pins, by verify and in a bundle."""
    from redline import persons
    from redline.persons import Person, certify_person
    from tests.test_keys_people import ack, judged, publish

    sp, new = rotating

    def person(name: str) -> tuple[Person, nacl.signing.SigningKey]:
        k = nacl.signing.SigningKey.generate()
        p = Person(name=name, role="duty", key=bytes(k.verify_key).hex())
        return Person(name=name, role="duty", key=p.key, cert=certify_person(new, p, station=sp.b.us)), k

    early, _ = person("Dezhurny Orlov")
    publish(sp, [early])  # the new root is not trusted yet: the certificate is refused
    _, code = sp.a.root_safety_code()
    sp.a.confirm_root(code, sp.clock.wall)
    sp.run()
    later, lkey = person("Polkovnik Volkov")
    publish(sp, [later])
    ack(sp, later, lkey)
    said = judged(sp)
    assert said[0] == "person signatures of NDMC: 1 valid, all up to its root", said
    refused = [s for s in said if s.startswith("ROSTER REFUSED IN PART")]
    assert len(refused) == 1 and "Dezhurny Orlov" in refused[0] and "does not verify" in refused[0], said
    assert persons.PersonCert.open(later.cert, bytes(new.verify_key), station=sp.b.us)  # type: ignore[arg-type]


@pytest.mark.slow
def test_keys_rotate_root_killed_at_random_moments_files_one_root(tmp_path: Path) -> None:
    """kill -9 of 'redline keys rotate --root' (a stopped station, the real CLI) at a random moment
    of its run, 10 times, then the command run again: each station ends with exactly one ROOT per
    line whose safety codes are the ones the finishing run printed (the statement is prepared first
    and reused), keys/roots.json naming the new root and nothing left half done. A run again after
    the killed one had finished says the same codes again (read from the ROOT filed), filing nothing."""
    import random
    import subprocess
    import sys
    import time

    rng = random.Random(13)
    whole = None
    finished_first = 0
    for i in range(10):
        sp = SessionPair(tmp_path / str(i))
        sp.run()
        sp.close()
        new_path = tmp_path / str(i) / "offline" / "root2.key"
        new_path.parent.mkdir()
        new = identity.new_signing_key(new_path)
        cmd = [sys.executable, "-m", "redline", "keys", "rotate", "--root", "--station", str(sp.dir_b.path),
               "--root-key", str(sp.dir_b.keys / "root.key"), "--new-root-key", str(new_path), "--json"]  # fmt: skip
        began = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if whole is None:  # the first run is not killed: how long one run takes on this box
            proc.wait()
            whole = time.monotonic() - began
        else:
            time.sleep(rng.uniform(0, whole))
            proc.kill()
            proc.wait()
        out = subprocess.run(cmd, capture_output=True, text=True, check=False)
        ledger = sp.dir_b.open_ledger()
        try:
            items = [it for it in ledger.pending(sp.line, -1) if it.kind == "ROOT"]
        finally:
            ledger.close()
        assert len(items) == 1, (i, out.stdout, out.stderr)
        assert out.returncode == 0, (out.stdout, out.stderr)
        said = json.loads(out.stdout)
        assert said["codes"] == rotation.root_codes([sp.line], dict(items[0].content))
        finished_first += bool(said.get("again"))  # the killed run had finished
        assert keyfiles.root_in_force(sp.dir_b.keys) == (2, bytes(new.verify_key)), i
        assert not (sp.dir_b.keys / keyfiles.ROOT_NEXT).exists()
    assert finished_first < 10
