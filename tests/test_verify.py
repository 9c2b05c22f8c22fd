"""Transcript verification (redline.ledger.verify) over real stores, and every way to tamper with one.

One real transcript is built once with ``SessionPair`` (two stations, real keys, real SQLite
ledgers, both directions, FLASH messages that force co-signed checkpoints). Each attack then runs on
a copy of a closed store, edited with raw SQL the way someone with the file would, and must be
found by ``verify_line`` with a first problem that names what was done. Roots always come from the
station directories (outside the store), as guarantee 4 requires. Tests are named after the attack.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
import re
import shutil
import sqlite3
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import nacl.signing
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from redline import canonical, identity
from redline.envelope import Envelope, open_envelope, seal, split
from redline.errors import RedlineError, UnknownKeyError
from redline.home import StationKeys
from redline.identity import KeyCert
from redline.ledger.sqlite import Ledger
from redline.ledger.verify import LineReport, Problem, verify_line
from redline.protocol.framing import FrameType, encode_frame
from redline.statements import Checkpoint
from redline.testing import SessionPair

_U32 = struct.Struct(">I")


@dataclass(frozen=True)
class Transcript:
    line: str
    dir_a: Path  # station directory of EUCOM (closed)
    dir_b: Path
    keys_a: StationKeys
    keys_b: StationKeys

    @property
    def a(self) -> str:
        return self.keys_a.fingerprint

    @property
    def b(self) -> str:
        return self.keys_b.fingerprint

    @property
    def roots(self) -> dict[str, bytes]:
        return {self.a: self.keys_a.root_public, self.b: self.keys_b.root_public}

    def store(self, who: str = "a") -> Path:
        return (self.dir_a if who == "a" else self.dir_b) / "ledger.sqlite"

    def lookup(self, sender: str, key_id: str) -> bytes:
        for k in (self.keys_a, self.keys_b):
            if sender == k.fingerprint and key_id == k.key_id:
                return bytes(k.signing.verify_key)
        raise UnknownKeyError(f"no key {key_id}")


@pytest.fixture(scope="module")
def transcript(tmp_path_factory: pytest.TempPathFactory) -> Transcript:
    pair = SessionPair(tmp_path_factory.mktemp("transcript"))
    pair.run()
    for i in range(3):
        pair.send("a", f"EUCOM routine {i}")
        pair.send("b", f"NDMC routine {i}")
        pair.run()
    pair.send("a", "FLASH: unannounced launch detected, confirm", kind="FLASH", prio="FLASH")
    pair.run()
    pair.send("b", "Reading you. Checking.")
    pair.send("a", "Standing by.")
    pair.run()
    pair.send("b", "FLASH: it is a scheduled test, notice attached", kind="FLASH", prio="FLASH")
    pair.run()
    pair.send("a", "Understood, thank you.")
    pair.run()
    pair.tick(1.0)
    pair.run()
    assert not [a for a in pair.alarms if a[1] == "alarm"], pair.alarms
    pair.close()
    return Transcript(pair.line, pair.dir_a.path, pair.dir_b.path, pair.dir_a.load_keys(), pair.dir_b.load_keys())


def report_of(t: Transcript, store: Path) -> LineReport:
    ledger = Ledger(store)
    try:
        return verify_line(ledger.line_data(t.line, "EUCOM"), t.roots)
    finally:
        ledger.close()


@pytest.fixture
def copy(transcript: Transcript, tmp_path: Path) -> Path:
    """A copy of EUCOM's closed store, to tamper with."""
    assert not Path(str(transcript.store("a")) + "-wal").exists(), "the store was not closed cleanly"
    dst = tmp_path / "ledger.sqlite"
    shutil.copyfile(transcript.store("a"), dst)
    return dst


@pytest.fixture
def db(copy: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(copy, isolation_level=None)
    yield conn
    conn.close()


def first_problem(report: LineReport) -> Problem:
    assert not report.ok, "tampering went unnoticed: the transcript still verifies"
    return report.problems[0]


def raw_of(db: sqlite3.Connection, sender: str, seq: int) -> bytes:
    (raw,) = db.execute("SELECT raw FROM envelopes WHERE sender=? AND seq=?", (sender, seq)).fetchone()
    return bytes(raw)


def set_raw(db: sqlite3.Connection, sender: str, seq: int, raw: bytes) -> None:
    db.execute("UPDATE envelopes SET raw=? WHERE sender=? AND seq=?", (raw, sender, seq))


def who(t: Transcript, side: str) -> str:
    return t.a if side == "ours" else t.b


def name(side: str) -> str:
    return "EUCOM" if side == "ours" else "NDMC"


# -- the untouched transcript --------------------------------------------------------------------


@pytest.mark.parametrize("station", ["a", "b"])
def test_real_transcript_verifies_at_both_stations(transcript: Transcript, station: str) -> None:
    report = report_of(transcript, transcript.store(station))
    assert report.ok, [str(p) for p in report.problems]
    # Not vacuous: both chains, receipts and co-signed checkpoints were all checked.
    assert report.chain_sizes == {transcript.a: 6, transcript.b: 5}
    assert report.checkpoints >= 2
    assert report.receipts >= 8
    assert set(report.cosigned_sizes) == {transcript.a, transcript.b}
    assert all(size >= 4 for size in report.cosigned_sizes.values()), report.cosigned_sizes


def test_both_stations_hold_the_same_transcript(transcript: Transcript) -> None:
    a, b = Ledger(transcript.store("a")), Ledger(transcript.store("b"))
    try:
        for fp in (transcript.a, transcript.b):
            assert list(a.raw_envelopes(transcript.line, fp)) == list(b.raw_envelopes(transcript.line, fp))
        assert a.checkpoints(transcript.line) == b.checkpoints(transcript.line)
    finally:
        a.close()
        b.close()


def test_verification_needs_roots_from_outside(transcript: Transcript, copy: Path) -> None:
    ledger = Ledger(copy)
    try:
        data = ledger.line_data(transcript.line)
    finally:
        ledger.close()
    other_root = bytes(nacl.signing.SigningKey.generate().verify_key)
    missing = verify_line(data, {transcript.a: transcript.keys_a.root_public})
    assert "no trusted root key was given" in str(first_problem(missing))
    wrong = verify_line(data, {transcript.a: transcript.keys_a.root_public, transcript.b: other_root})
    assert "does not match its fingerprint" in str(first_problem(wrong))


# -- tampering, one attack per test --------------------------------------------------------------


@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_edited_body_is_found(transcript: Transcript, copy: Path, db: sqlite3.Connection, side: str) -> None:
    fp = who(transcript, side)
    raw = raw_of(db, fp, 2)
    assert b"routine 1" in raw
    set_raw(db, fp, 2, raw.replace(b"routine 1", b"routine 9"))  # same length; nothing re-hashed
    problem = first_problem(report_of(transcript, copy))
    assert f"{name(side)} chain, entry 2" in problem.where
    assert "body does not match the hash its header signs" in problem.what


@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_edited_body_with_its_hash_recomputed_is_found(
    transcript: Transcript, copy: Path, db: sqlite3.Connection, side: str
) -> None:
    # The careful forger fixes the body hash in the header too: now the signature no longer fits.
    fp = who(transcript, side)
    parts = split(raw_of(db, fp, 2))
    assert parts.body_bytes is not None
    body = parts.body_bytes.replace(b"routine 1", b"routine 9")
    header = canonical.decode_object(parts.header_bytes, "header")
    header["body"] = hashlib.sha256(body).hexdigest()
    hb = canonical.encode(header)
    set_raw(db, fp, 2, _U32.pack(len(hb)) + hb + _U32.pack(len(body)) + body + parts.sig)
    problem = first_problem(report_of(transcript, copy))
    assert f"{name(side)} chain, entry 2" in problem.where
    assert "signature does not verify" in problem.what


@pytest.mark.parametrize(("side", "seq"), [("ours", 1), ("ours", 3), ("theirs", 2)])
def test_deleted_entry_is_found(
    transcript: Transcript, copy: Path, db: sqlite3.Connection, side: str, seq: int
) -> None:
    db.execute("DELETE FROM envelopes WHERE sender=? AND seq=?", (who(transcript, side), seq))
    problem = first_problem(report_of(transcript, copy))
    assert f"{name(side)} chain, entry {seq}" in problem.where
    assert f"seq {seq} is missing: the entry before seq {seq + 1} was deleted" in problem.what


def test_cut_tail_covered_by_a_checkpoint_is_found(transcript: Transcript, copy: Path, db: sqlite3.Connection) -> None:
    # Deleting the newest entries leaves no gap in the chain; the co-signed checkpoint and the
    # other side's seen-links still say they existed.
    b = transcript.b
    db.execute("DELETE FROM envelopes WHERE sender=? AND seq>=4", (b,))
    report = report_of(transcript, copy)
    assert "of the other side, which the transcript does not hold" in str(first_problem(report))
    assert any(
        re.search(r"checkpoint \d+: covers [45] envelopes of NDMC but only 3 verify", str(p)) for p in report.problems
    ), [str(p) for p in report.problems]


@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_swapped_entries_are_found(transcript: Transcript, copy: Path, db: sqlite3.Connection, side: str) -> None:
    fp = who(transcript, side)
    two, three = raw_of(db, fp, 2), raw_of(db, fp, 3)
    set_raw(db, fp, 2, three)
    set_raw(db, fp, 3, two)
    problem = first_problem(report_of(transcript, copy))
    assert f"{name(side)} chain, entry 2" in problem.where
    assert "stored as seq 2 but signed as seq 3: entries were swapped or renumbered" in problem.what


def test_swapped_entries_with_their_index_columns_are_found(
    transcript: Transcript, copy: Path, db: sqlite3.Connection
) -> None:
    # Swap whole rows (id, kind, raw), so the index columns agree with the bytes they sit beside.
    b = transcript.b
    rows = {
        seq: db.execute("SELECT id, kind, raw FROM envelopes WHERE sender=? AND seq=?", (b, seq)).fetchone()
        for seq in (2, 3)
    }
    db.execute("BEGIN")
    db.execute("DELETE FROM envelopes WHERE sender=? AND seq IN (2, 3)", (b,))
    for seq, other in ((2, 3), (3, 2)):
        db.execute("INSERT INTO envelopes VALUES (?, ?, ?, ?, ?, ?, 0, NULL)", (transcript.line, b, seq, *rows[other]))
    db.execute("COMMIT")
    problem = first_problem(report_of(transcript, copy))
    assert "NDMC chain, entry 2" in problem.where
    assert "swapped or renumbered" in problem.what


@pytest.mark.parametrize(("seq", "to"), [(6, 12), (2, 0)])
def test_changed_seq_is_found(transcript: Transcript, copy: Path, db: sqlite3.Connection, seq: int, to: int) -> None:
    db.execute("UPDATE envelopes SET seq=? WHERE sender=? AND seq=?", (to, transcript.a, seq))
    problem = first_problem(report_of(transcript, copy))
    assert "EUCOM chain" in problem.where
    assert f"stored as seq {to} but signed as seq {seq}: entries were swapped or renumbered" in problem.what


@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_forged_signature_is_found(transcript: Transcript, copy: Path, db: sqlite3.Connection, side: str) -> None:
    fp = who(transcript, side)
    raw = bytearray(raw_of(db, fp, 3))
    raw[-10] ^= 0x01  # inside the 64-byte signature at the end
    set_raw(db, fp, 3, bytes(raw))
    problem = first_problem(report_of(transcript, copy))
    assert f"{name(side)} chain, entry 3" in problem.where
    assert "signature does not verify" in problem.what
    assert "forged" in problem.what


def test_substituted_key_is_refused_as_not_signed_by_the_pinned_root(
    transcript: Transcript, copy: Path, db: sqlite3.Connection
) -> None:
    # Someone replaces the peer's signing certificate with one for their own key, made by a root
    # of their own that claims the peer's fingerprint, and re-signs the peer's chain with that key.
    b = transcript.b
    fake_root, fake_signing = nacl.signing.SigningKey.generate(), nacl.signing.SigningKey.generate()
    fake_pub = bytes(fake_signing.verify_key)
    fake_id = identity.key_id(fake_pub)
    cert = identity.certify(
        fake_root,
        KeyCert(station=b, name="NDMC", role="signing", key=fake_pub.hex(), key_id=fake_id, issued_at=1),
    )
    changed = db.execute(
        "UPDATE certs SET key_id=?, data=?, sig=? WHERE station=? AND role='signing'", (fake_id, cert.data, cert.sig, b)
    ).rowcount
    assert changed == 1
    prev = None
    db.execute("BEGIN")
    for seq, raw in list(db.execute("SELECT seq, raw FROM envelopes WHERE sender=? ORDER BY seq", (b,))):
        parts = split(bytes(raw))
        header = canonical.decode_object(parts.header_bytes, "header")
        header["key"], header["prev"] = fake_id, prev
        hb = canonical.encode(header)
        body = parts.body_bytes or b""
        forged = _U32.pack(len(hb)) + hb + _U32.pack(len(body)) + body + identity.sign(fake_signing, "envelope", hb)
        prev = split(forged).id
        db.execute("UPDATE envelopes SET id=?, raw=? WHERE sender=? AND seq=?", (prev, forged, b, seq))
    db.execute("COMMIT")
    # The forged chain is internally consistent under the fake key...
    fake_lookup = {(b, fake_id): fake_pub}
    assert open_envelope(raw_of(db, b, 5), lambda s, k: fake_lookup[(s, k)]).header.key == fake_id
    # ...and refused, because the pinned root never certified that key.
    report = report_of(transcript, copy)
    problem = first_problem(report)
    assert "NDMC key certificate 1" in problem.where
    assert "not signed by the pinned root" in problem.what
    assert any(
        "NDMC chain, entry 1" in str(p) and "never certified (substituted key?)" in str(p) for p in report.problems
    )
    assert report.chain_sizes[b] == 0


@pytest.mark.parametrize("column", ["proposal", "cosign"])
@pytest.mark.parametrize("where", ["data", "sig"])
def test_altered_checkpoint_is_found(
    transcript: Transcript, copy: Path, db: sqlite3.Connection, column: str, where: str
) -> None:
    (blob,) = db.execute(f"SELECT {column} FROM checkpoints WHERE n=1").fetchone()
    blob = bytearray(blob)
    # A digit of the clock (still valid canonical JSON), or a byte of the signature.
    i = bytes(blob).index(b'"time":') + len(b'"time":') if where == "data" else len(blob) - 20
    blob[i] ^= 0x01
    db.execute(f"UPDATE checkpoints SET {column}=? WHERE n=1", (bytes(blob),))
    problem = first_problem(report_of(transcript, copy))
    assert "checkpoint 1" in problem.where
    assert "altered or forged checkpoint" in problem.what


def test_deleted_first_checkpoint_is_found(transcript: Transcript, copy: Path, db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM checkpoints WHERE n=1")
    problem = first_problem(report_of(transcript, copy))
    assert "checkpoint 2" in problem.where
    assert "does not extend the previous checkpoint" in problem.what


@pytest.mark.parametrize("side", ["ours", "theirs"])
def test_equivocating_pair_is_found(transcript: Transcript, copy: Path, db: sqlite3.Connection, side: str) -> None:
    # A second, validly signed envelope at a used seq, made with the station's real signing key.
    fp = who(transcript, side)
    keys = transcript.keys_a if side == "ours" else transcript.keys_b
    held = open_envelope(raw_of(db, fp, 3), transcript.lookup)
    h = held.header
    other = seal(
        keys.signing, line=h.line, sender=h.sender, key=h.key, seq=h.seq, sent_at=h.sent_at, kind=h.kind,
        prio=h.prio, prev=h.prev, seen_seq=h.seen_seq, seen_id=h.seen_id, lang=h.lang,
        content={"text": "a different story told to someone else"}, salt=os.urandom(16),
    )  # fmt: skip
    assert other.id != held.id
    evidence = (transcript.line, fp, 3, held.encode(), other.encode(), 0)
    db.execute("INSERT INTO equivocations VALUES (?, ?, ?, ?, ?, ?)", evidence)
    problem = first_problem(report_of(transcript, copy))
    assert f"{name(side)}, seq 3" in problem.where
    assert "EQUIVOCATION" in problem.what
    assert held.id[:12] in problem.what and other.id[:12] in problem.what


def test_forged_equivocation_evidence_is_reported_not_believed(
    transcript: Transcript, copy: Path, db: sqlite3.Connection
) -> None:
    b = transcript.b
    held = raw_of(db, b, 3)
    stranger = nacl.signing.SigningKey.generate()
    h = open_envelope(held, transcript.lookup).header
    fake = seal(
        stranger, line=h.line, sender=h.sender, key=h.key, seq=h.seq, sent_at=h.sent_at, kind=h.kind, prio=h.prio,
        prev=h.prev, seen_seq=h.seen_seq, seen_id=h.seen_id, lang=h.lang, content={"text": "framed"},
        salt=os.urandom(16),
    )  # fmt: skip
    db.execute("INSERT INTO equivocations VALUES (?, ?, ?, ?, ?, ?)", (transcript.line, b, 3, held, fake.encode(), 0))
    problem = first_problem(report_of(transcript, copy))
    assert "equivocation evidence does not verify" in problem.what


def test_redacted_body_still_verifies(transcript: Transcript, copy: Path, db: sqlite3.Connection) -> None:
    b = transcript.b
    env: Envelope = open_envelope(raw_of(db, b, 2), transcript.lookup)
    redacted = env.redacted().encode()
    assert b"routine 1" not in redacted
    assert split(redacted).body_bytes is None
    set_raw(db, b, 2, redacted)
    report = report_of(transcript, copy)
    assert report.ok, [str(p) for p in report.problems]
    assert report.chain_sizes[b] == 5


def test_every_flash_is_covered_by_a_cosigned_checkpoint_once_the_line_settles(tmp_path: Path) -> None:
    pair = SessionPair(tmp_path)
    try:
        pair.run()
        uncovered = []
        for who in ("a", "b"):
            session = pair.a if who == "a" else pair.b
            pair.send(who, f"FLASH from {who}", kind="FLASH", prio="FLASH")
            pair.run()
            pair.tick(0.5)
            pair.run()
            flash_seq = session.ledger.head(pair.line, session.us)[0]
            last = session.ledger.last_checkpoint(pair.line)
            covered = Checkpoint.peek(last[1]).head(session.us).size if last else 0
            if covered < flash_seq:
                role = "proposer" if session.is_proposer else "countersigner"
                uncovered.append(f"{who} ({role}): FLASH seq {flash_seq}, last checkpoint covers {covered}")
        assert not uncovered, uncovered
    finally:
        pair.close()


def test_peer_withholding_a_body_gets_no_receipt_for_it(tmp_path: Path) -> None:
    # Redaction is for stored copies and bundles. On the wire, a body-less envelope lets the sender
    # later reveal any body matching the salted hash and prove, by our receipt, that we "stored" it.
    pair = SessionPair(tmp_path, paths=1)
    try:
        pair.run()
        pair.send("b", "The launch is a scheduled test; notice NTM-17 was filed.")
        pair.flush()
        path = pair.paths[0]
        frames = list(path.b_to_a)
        path.b_to_a.clear()
        stripped = 0
        for frame in frames:
            if frame[4] == FrameType.ENVELOPE:
                parts = split(frame[5:])
                frame = encode_frame(
                    FrameType.ENVELOPE,
                    _U32.pack(len(parts.header_bytes)) + parts.header_bytes + _U32.pack(0) + parts.sig,
                )
                stripped += 1
            path.b_to_a.append(frame)
        assert stripped == 1
        pair.run()
        held = pair.a.ledger.head(pair.line, pair.b.us)[0]
        without_body = [
            seq for seq, raw in pair.a.ledger.raw_envelopes(pair.line, pair.b.us) if split(raw).body_bytes is None
        ]
        receipt = pair.b.ledger.latest_receipt(pair.line, pair.a.us)
        receipted = receipt[0] if receipt else 0
        assert receipted <= held
        assert not [seq for seq in without_body if seq <= receipted], (
            f"EUCOM receipted NDMC envelope(s) {without_body} although it never received their bodies"
        )
    finally:
        pair.close()


# -- the real command line -----------------------------------------------------------------------


def _cli_verify(station: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "redline", "verify", "--station", str(station)],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


def test_cli_verify_exits_0_on_a_good_store_and_2_on_a_tampered_one(transcript: Transcript, tmp_path: Path) -> None:
    station = tmp_path / "EUCOM"
    shutil.copytree(transcript.dir_a, station)
    good = _cli_verify(station)
    assert good.returncode == 0, good.stdout + good.stderr
    assert "VERIFIED" in good.stdout

    db = sqlite3.connect(station / "ledger.sqlite", isolation_level=None)
    db.execute("DELETE FROM envelopes WHERE sender=? AND seq=2", (transcript.b,))
    db.close()
    bad = _cli_verify(station)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    assert "FAILED" in bad.stdout
    assert "seq 2 is missing: the entry before seq 3 was deleted" in bad.stdout


# -- any single bit, anywhere ----------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    table: str
    column: str
    where: str  # SQL condition naming one row
    args: tuple[object, ...]
    size: int


@pytest.fixture(scope="module")
def blobs(transcript: Transcript) -> list[Blob]:
    db = sqlite3.connect(transcript.store("a"))
    try:
        out = [
            Blob("envelopes", "raw", "sender=? AND seq=?", (sender, seq), n)
            for sender, seq, n in db.execute("SELECT sender, seq, length(raw) FROM envelopes")
        ]
        out += [
            Blob("receipts", "raw", "rowid=?", (rowid,), n)
            for rowid, n in db.execute("SELECT rowid, length(raw) FROM receipts")
        ]
        for column in ("proposal", "cosign"):
            out += [
                Blob("checkpoints", column, "n=?", (n,), size)
                for n, size in db.execute(f"SELECT n, length({column}) FROM checkpoints")
            ]
        for column in ("data", "sig"):
            out += [
                Blob("certs", column, "station=? AND key_id=?", (station, key_id), size)
                for station, key_id, size in db.execute(f"SELECT station, key_id, length({column}) FROM certs")
            ]
    finally:
        db.close()
    assert {b.table for b in out} == {"envelopes", "receipts", "checkpoints", "certs"}
    return out


def _flip_and_verify(t: Transcript, blob: Blob, bit: int) -> LineReport:
    with tempfile.TemporaryDirectory() as d:
        store = Path(d) / "ledger.sqlite"
        shutil.copyfile(t.store("a"), store)
        db = sqlite3.connect(store, isolation_level=None)
        (value,) = db.execute(f"SELECT {blob.column} FROM {blob.table} WHERE {blob.where}", blob.args).fetchone()
        value = bytearray(value)
        value[bit // 8] ^= 1 << (bit % 8)
        db.execute(f"UPDATE {blob.table} SET {blob.column}=? WHERE {blob.where}", (bytes(value), *blob.args))
        db.close()
        return report_of(t, store)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_single_bit_flip_in_a_stored_blob_is_found(
    transcript: Transcript, blobs: list[Blob], data: st.DataObject
) -> None:
    blob = data.draw(st.sampled_from(blobs), label="blob")
    bit = data.draw(st.integers(0, blob.size * 8 - 1), label="bit")
    try:
        report = _flip_and_verify(transcript, blob, bit)
    except RedlineError as exc:  # refused before a report could be written: still not a pass
        pytest.fail(f"verification aborted instead of reporting the flip in {blob.table}.{blob.column}: {exc}")
    assert not report.ok, f"a flipped bit {bit} in {blob.table}.{blob.column} {blob.args} went unnoticed"


def test_a_flip_in_every_blob_kind_is_found(transcript: Transcript, blobs: list[Blob]) -> None:
    # The property above samples; this walks every stored blob once, at a random bit, so no row
    # kind is skipped by chance.
    rng = random.Random(4242)
    for blob in blobs:
        bit = rng.randrange(blob.size * 8)
        report = _flip_and_verify(transcript, blob, bit)
        assert not report.ok, f"a flipped bit {bit} in {blob.table}.{blob.column} {blob.args} went unnoticed"


def test_verify_tells_its_progress_batch_by_batch_up_to_every_envelope_held(transcript: Transcript) -> None:
    ledger = Ledger(transcript.store("a"))
    try:
        data = ledger.line_data(transcript.line, "EUCOM")
        told: list[int] = []
        assert verify_line(data, transcript.roots, progress=told.append).ok
        held = sum(data.held(fp) for fp in data.stations())
    finally:
        ledger.close()
    assert told and told == sorted(set(told)) and told[-1] == held > 0, (told, held)


def test_cli_verify_shows_a_bar_on_a_terminal_only_and_as_text(
    transcript: Transcript, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a terminal, 'redline verify' shows how far it is (a year of transcript takes minutes);
    in a pipe or a log, nothing but the report. The bar's text is never read as markup."""
    from click.testing import CliRunner

    from redline.cli import record
    from redline.cli.common import main
    from redline.display import SafeConsole

    station = tmp_path / "EUCOM"
    shutil.copytree(transcript.dir_a, station)
    monkeypatch.setattr(record, "PROGRESS_FROM", 1)
    piped = CliRunner().invoke(main, ["verify", "--station", str(station)])
    assert piped.exit_code == 0 and "VERIFIED" in piped.output and "verifying" not in piped.output, piped.output
    screen = io.StringIO()
    monkeypatch.setattr(record, "err", SafeConsole(stderr=True, file=screen, force_terminal=True, width=120))
    # A console forced to colour (FORCE_COLOR, say) is no terminal: standard error itself must be one.
    forced = CliRunner().invoke(main, ["verify", "--station", str(station)])
    assert forced.exit_code == 0 and screen.getvalue() == "", screen.getvalue()
    monkeypatch.setattr(record, "_stderr_is_a_terminal", lambda: True)
    labels: list[str] = []
    shown = record.verify_progress

    @contextlib.contextmanager
    def watched(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
        labels.append(f"[bold]{label}[/bold]")  # as if a label held markup: it is shown as typed
        with shown(labels[-1], total) as progress:
            yield progress

    monkeypatch.setattr(record, "verify_progress", watched)
    on_tty = CliRunner().invoke(main, ["verify", "--station", str(station)])
    assert on_tty.exit_code == 0 and "VERIFIED" in on_tty.output, on_tty.output
    drawn = screen.getvalue()
    assert f"[bold]verifying line {transcript.line[:8]}[/bold]" in drawn and "envelopes" in drawn, drawn
