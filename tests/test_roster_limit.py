"""How many people a ROSTER may name is the protocol's number (``persons.MAX_ROSTER_PEOPLE``,
PROTOCOL.md 5.10), not a station's setting.

Whose signature counts follows from the ROSTERs in a transcript: a ROSTER over the limit is
ignored whole, and new names past it in all are not pinned. When the limit was config.json's
``max_roster_people``, a station that lowered it refused an ACK its peer, ``redline verify`` and a
bundle's reader all took as signed by a person on the roster: one co-signed transcript, two
meanings, chosen by a local file. The transcripts here are real (a SessionPair: real sessions,
stores and signatures); the live rule is a station's ops replaying its store, as at start."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import nacl.signing
import pytest
from nacl.pwhash.argon2id import MEMLIMIT_MIN, OPSLIMIT_MIN

from redline import config, persons
from redline.config import Limits, StationConfig
from redline.envelope import split
from redline.errors import ConfigError, SchemaError
from redline.ledger.interface import LedgerStore
from redline.ops.engine import LineOps
from redline.persons import MAX_ROSTER_PEOPLE, Person, RosterPins, certify_person
from redline.station import _entry
from redline.testing import SessionPair, StationPair
from tests.test_keys_people import judged, publish

MOST = MAX_ROSTER_PEOPLE


def key_of(name: str) -> nacl.signing.SigningKey:
    return nacl.signing.SigningKey(hashlib.sha256(name.encode()).digest())


def people(names: list[str]) -> list[Person]:
    return [Person(name=n, role="duty", key=bytes(key_of(n).verify_key).hex()) for n in names]


def acked_by(sp: SessionPair, name: str) -> int:
    """EUCOM sends a FLASH and NDMC's ``name`` acknowledges it, signing with their key; the ACK's seq."""
    sp.send("a", f"FLASH for {name}", kind="FLASH", prio="FLASH")
    sp.run()
    seq, eid = sp.a.ledger.head(sp.line, sp.a.us)
    content = persons.sign_content({"ref": {"sender": sp.a.us, "seq": seq, "id": eid}}, people([name])[0], key_of(name))
    with sp.b.ledger.batch():
        sp.b.accept("ACK", "FLASH", content, None, sp.clock.wall)
    sp.run()
    return sp.b.ledger.head(sp.line, sp.b.us)[0]


def live_refusals(ledger: LedgerStore, us: str, peer: str, line: str, limits: Limits, ndmc: str) -> list[int]:
    """The seqs of NDMC's ACKs a station's ops (built from ``limits``, replaying its store as at
    start) does not take as signed by a person of NDMC's roster."""
    ops = LineOps(us=us, peer=peer, limits=limits, since=0)
    for sender, _, raw, stored_at in ledger.stored_for_ops(line):
        ops.observe(_entry(split(raw), sender == us, stored_at))
    return sorted(e.seq for e, _ in ops.refused if e.sender == ndmc and e.kind == "ACK")


def audited_refusals(sp: SessionPair) -> list[int]:
    """The same, as a third party is told it: verify on either store and the bundle, which agree."""
    said = judged(sp)
    return sorted(int(m[1]) for s in said if (m := re.match(r"PERSON SIGNATURE NOT VALID: NDMC ACK seq (\d+):", s)))


def station_config(limits: dict[str, Any]) -> dict[str, Any]:
    return {"name": "EUCOM", "lang": "en", "listen": ["127.0.0.1:7401"], "limits": limits}


@pytest.fixture
def sp(tmp_path: Path) -> Any:
    pair = SessionPair(tmp_path)
    pair.run()
    yield pair
    pair.close()


def test_a_station_that_lowers_the_roster_limit_and_an_auditor_agree_on_whose_signature_counts(
    sp: SessionPair,
) -> None:
    """NDMC publishes a ROSTER of exactly the limit, then one past it, then one that swaps a name
    for a new one (within the limit listed, past it pinned in all). EUCOM's operator wrote a lower
    limit into config.json; an auditor verifies with the defaults. Before, EUCOM's ops ignored the
    first ROSTER whole and refused P499's ACKs that verify and the bundle call valid. Now that
    setting is refused at start, and every config a station can run with reads the same ACKs as
    signed as the auditor does."""
    everyone = [f"P{i}" for i in range(MOST + 1)]
    publish(sp, people(everyone[:MOST]))  # right at the limit: all pinned
    valid = [acked_by(sp, f"P{MOST - 1}")]
    publish(sp, people(everyone))  # one past it: ignored as a whole
    invalid = [acked_by(sp, f"P{MOST}")]
    publish(sp, people(["Q0", *everyone[: MOST - 1]]))  # 500 listed, but Q0 would be the 501st pinned
    invalid.append(acked_by(sp, "Q0"))
    valid.append(acked_by(sp, f"P{MOST - 1}"))  # left out, not removed by a certificate: still pinned
    assert audited_refusals(sp) == invalid

    ndmc, refused = sp.b.us, []
    for section in ({}, {"max_roster_people": MOST}, {"max_roster_people": 400}, {"max_roster_people": 1000}):
        try:
            limits = StationConfig.from_obj(station_config(section)).limits
        except ConfigError as exc:
            assert "max_roster_people is no longer a setting" in str(exc) and "\n" not in str(exc)
            refused.append(section["max_roster_people"])
            continue
        for ledger, us, peer in ((sp.a.ledger, sp.a.us, sp.b.us), (sp.b.ledger, sp.b.us, sp.a.us)):
            assert live_refusals(ledger, us, peer, sp.line, limits, ndmc) == invalid, section
    assert refused == [400, 1000]


def test_a_config_written_before_keeps_working_and_one_that_set_another_limit_is_refused() -> None:
    """Every config.json written before holds ``max_roster_people`` (``save`` wrote every field):
    the protocol's own value (500) reads as if it were absent; another cannot hold any more and is
    refused in one line naming it, never silently replaced. A config saved now does not write it."""
    old = StationConfig.from_obj(station_config({"max_roster_people": 500, "window": 1024}))
    assert old.limits == Limits(window=1024) and "max_roster_people" not in old.to_obj()["limits"]
    for bad in (499, 501, "500", True, None, [500]):
        with pytest.raises(ConfigError, match=r"^config\.json: limits\.max_roster_people is no longer a setting: "
                                              r"a ROSTER lists at most 500 people"):  # fmt: skip
            StationConfig.from_obj(station_config({"max_roster_people": bad}))
    with pytest.raises(TypeError):
        Limits(max_roster_people=400)  # type: ignore[call-arg]


def test_config_and_the_protocol_name_the_same_roster_limit() -> None:
    """config.py is imported before persons and cannot import it: its copy of the number is held
    to the protocol's here, so the value it lets through is always the one every reader uses."""
    assert config._NOW_PROTOCOL["limits"]["max_roster_people"][0] == MAX_ROSTER_PEOPLE == 500


def test_a_station_cannot_add_a_user_its_roster_could_not_list(tmp_path: Path) -> None:
    """At the edge, before anything is signed: the 501st user is refused by ``redline user add``
    (the ROSTER naming them would be ignored whole by the peer and every verifier), and a users
    folder grown past the limit by hand is not published (parse_roster refuses it)."""
    station = tmp_path / "station"
    station.mkdir()
    persons.add_user(station, "U0", "duty", "password-long", ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN)
    sealed = json.loads((persons.users_dir(station) / "U0.json").read_text())
    for i in range(1, MOST - 1):  # as 'redline user add' leaves them, without 498 more key derivations
        (persons.users_dir(station) / f"U{i}.json").write_text(json.dumps({**sealed, "name": f"U{i}"}))
    persons.add_user(station, f"U{MOST - 1}", "duty", "password-long", ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN)
    with pytest.raises(ConfigError, match="has 500 users, the most one ROSTER may list"):
        persons.add_user(station, "One Too Many", "duty", "password-long", ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN)
    persons.remove_user(station, "U0")
    persons.add_user(station, "One Too Many", "duty", "password-long", ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN)
    users = persons.load_users(station)
    assert len(persons.parse_roster(persons.roster_content(users))) == MOST
    extra = people(["By Hand"])[0]
    with pytest.raises(SchemaError, match="ROSTER lists 501 people; at most 500"):
        persons.parse_roster(persons.roster_content([*users, extra]))


def test_a_person_back_after_a_removal_cannot_push_the_pins_past_the_limit() -> None:
    """A person removed by a root certificate frees a place, and may come back with a newer
    certificate over a new key; when a new name has taken the place meanwhile, coming back would
    be the 501st pin: refused like any new name, so no reader holds more than the protocol's 500."""
    root = nacl.signing.SigningKey(hashlib.sha256(b"NDMC root").digest())
    pins = RosterPins(root=bytes(root.verify_key))
    x = people(["X"])[0]
    x = Person(name="X", role="duty", key=x.key, cert=certify_person(root, x, issued_at=1))
    rest = people([f"P{i}" for i in range(MOST - 1)])
    assert len(pins.apply({p.name: p for p in [x, *rest]}).added) == MOST
    removal = certify_person(root, x, removed=True, issued_at=2)
    y = people(["Y"])[0]
    assert pins.apply({p.name: p for p in rest}, [removal]).removed == ["X"]
    assert pins.apply({p.name: p for p in [*rest, y]}).added == ["Y"] and len(pins.people) == MOST
    back = Person(name="X", role="duty", key="ab" * 32)
    back = Person(name="X", role="duty", key=back.key, cert=certify_person(root, back, issued_at=3))
    change = pins.apply({p.name: p for p in [back, *rest[1:], y]})  # 500 listed, P0 left out
    assert change.over_limit == ["X"] and change.readded == [] and change.drop_refused == ["P0"]
    assert len(pins.people) == MOST and "X" not in pins.people and "X" in pins.gone


def test_a_users_folder_grown_past_the_limit_by_hand_publishes_no_roster_every_reader_would_ignore(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """NDMC's admin copies a 501st user file into users/ (``redline user add`` would refuse it):
    the station does not sign a ROSTER that the peer and every verifier would ignore whole; it logs
    why once, and the roster it published last stays in force at both ends."""

    async def body() -> None:
        async with StationPair(tmp_path) as sp:
            users = persons.users_dir(sp.dir_b.path)
            persons.add_user(sp.dir_b.path, "U0", "duty", "password-long", ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN)
            sealed = json.loads((users / "U0.json").read_text())
            for i in range(1, MOST):
                (users / f"U{i}.json").write_text(json.dumps({**sealed, "name": f"U{i}"}))
            await sp.send("b", "NDMC's roster of 500 goes out with this", kind="FLASH", prio="FLASH")
            pins = sp.station("a").ops[sp.line].pins[False]
            assert len(pins.people) == MOST
            (users / "By Hand.json").write_text(json.dumps({**sealed, "name": "By Hand"}))
            with caplog.at_level(logging.ERROR, logger="redline.station"):
                await sp.send("b", "NDMC after the hand edit", kind="FLASH", prio="FLASH")
            assert len(sp.b.ledger.raw_of_kind(sp.line, sp.b.keys.fingerprint, "ROSTER")) == 1
            assert len(pins.people) == MOST and "By Hand" not in pins.people
            assert not [t for _, _, t in sp.alarms if "ROSTER" in t]  # nothing refused: nothing was sent
            said = [r.getMessage() for r in caplog.records if getattr(r, "event", None) == "roster_unreadable"]
            assert len(said) == 1 and "ROSTER lists 501 people; at most 500 (PROTOCOL.md 5.10)" in said[0]

    asyncio.run(body())
