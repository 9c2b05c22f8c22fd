"""``redline store migrate --to postgresql://…``: move a stopped station's SQLite ledger into an
empty PostgreSQL database, re-signing nothing.

Every row is copied as the bytes it holds (envelopes, receipts, checkpoints, equivocation
evidence, certificates, pairing records, the outbox with its row numbers, so an idempotency key
or an API's outbox reference still finds its message), in the order it was stored, in one
transaction; if the copy or a check after it fails, the tables it created are dropped again, so
the database is as empty as it was and the station still runs on SQLite. Each
chain's Merkle subtrees and byte totals are computed again while copying, as an append would.

Before the copy, every line must verify from the SQLite store (against the station's own root
and the peer root pinned at pairing); after it, every line must verify from PostgreSQL, every
envelope, receipt and checkpoint must be byte-equal to its source, and every chain's Merkle root
must be the same. Only then is config.json switched to the new store (written whole, then renamed
into place). The SQLite file stays where it was, untouched: the fallback if anything is wrong.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from redline import merkle
from redline.errors import ConfigError, StationBusyError, StorageError
from redline.ledger.postgres import TABLES, PgLedger, leaf_of, made_and_left_empty
from redline.ledger.sqlite import Ledger
from redline.ledger.stores import shown_url, store_url
from redline.ledger.verify import verify_line

if TYPE_CHECKING:
    from redline.home import StationDir


@dataclass
class MigrateReport:
    to: str  # the store URL, never a password
    lines: int = 0
    envelopes: int = 0
    receipts: int = 0
    checkpoints: int = 0
    outbox: int = 0
    roots: dict[str, str] = field(default_factory=dict)  # "line:sender" -> Merkle root hex, equal on both


class _Empty:
    def leaves(self, lo: int, hi: int) -> list[bytes]:
        raise AssertionError("an empty tree reads no leaves")

    def node(self, height: int, index: int) -> bytes:
        raise AssertionError("an empty tree reads no subtrees")


def _verify_all(ledger: Ledger | PgLedger, home: StationDir, where: str) -> None:
    our_root = bytes.fromhex((home.keys / "root.pub").read_text().strip())
    for record in ledger.lines():
        roots = {ledger.station: our_root, record.peer: bytes.fromhex(record.peer_root)}
        report = verify_line(ledger.line_data(record.line), roots)
        if not report.ok:
            first = "; ".join(str(p) for p in report.problems[:3])
            raise StorageError(f"line {record.line[:8]} does not verify {where}, nothing was switched: {first}")


def migrate_to_postgres(home: StationDir, url: str) -> MigrateReport:
    """Copy the station's SQLite ledger into the empty database at ``url`` and switch config.json to
    it, holding the folder throughout: no station may start on it meanwhile (what it accepted
    after the copy would be lost)."""
    store_url(url)  # a postgresql:// URL without a password
    config = home.config()
    if config.store:
        raise ConfigError(f"this station already keeps its ledger in {shown_url(config.store)}")
    try:
        hold = home.hold("redline store migrate")
    except StationBusyError as exc:
        why = f"the station must be stopped first ('redline store migrate' moves a stopped station): {exc}"
        raise ConfigError(why) from None
    try:
        return _migrate(home, url)
    finally:
        hold.release()


def _migrate(home: StationDir, url: str) -> MigrateReport:
    src = Ledger(home.ledger_path)
    try:
        _verify_all(src, home, "in the SQLite store")
        dst = _target(url, src.station)
        try:
            report = _copy(src, dst, url)
            _verify_all(dst, home, "after the copy")
            _compare(src, dst, report)
        except BaseException:
            with contextlib.suppress(Exception):
                dst._db.execute(f"DROP TABLE IF EXISTS {TABLES}")
            raise
        finally:
            dst.close()
    finally:
        src.close()
    obj = json.loads(home.config_path.read_text())
    obj["store"] = url
    tmp = home.config_path.with_name("config.json.new")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, home.config_path)
    dfd = os.open(home.path, os.O_RDONLY)
    try:
        os.fsync(dfd)  # the switch itself survives a power cut: the station comes back on PostgreSQL
    finally:
        os.close(dfd)
    return report


def _target(url: str, station: str) -> PgLedger:
    """The empty store to copy into: a new one, or the one a migrate killed mid-copy left behind.
    Creating the tables is committed before the copy's own transaction, so a kill -9 (or a power
    cut) during the copy leaves this station's store made and empty; running the command again
    copies into it. Any other store there, or one holding anything, or one a station has held the
    lease of, is refused ("a store already exists")."""
    try:
        return PgLedger(url, create=True, station=station)
    except StorageError:
        if not made_and_left_empty(url, station):
            raise
    return PgLedger(url)


def _copy(src: Ledger, dst: PgLedger, url: str) -> MigrateReport:
    report = MigrateReport(shown_url(url))
    s, d = src._db, dst._db
    logs: dict[tuple[str, str], merkle.StoredLog] = {}
    sizes: dict[tuple[str, str], int] = {}
    with dst.batch():
        for line, record in s.execute("SELECT line, record FROM lines ORDER BY rowid"):
            d.execute("INSERT INTO lines (line, record) VALUES (%s, %s)", (line, record))
            report.lines += 1
        for row in s.execute("SELECT station, key_id, role, data, sig FROM certs ORDER BY rowid"):
            d.execute(
                "INSERT INTO certs (station, key_id, role, data, sig) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                row,
            )
        rows = s.execute("SELECT line, sender, seq, id, kind, raw, stored_at, prio FROM envelopes ORDER BY rowid")
        for line, sender, seq, eid, kind, raw, stored_at, prio in rows:
            key = (line, sender)
            log = logs.setdefault(key, merkle.StoredLog(_Empty(), 0))
            if seq != log.size + 1:
                raise StorageError(f"chain {sender[:16]} of line {line[:8]} is not contiguous at seq {seq}: not copied")
            d.execute(
                "INSERT INTO envelopes (line, sender, seq, id, kind, raw, stored_at, prio) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (line, sender, seq, eid, kind, bytes(raw), stored_at, prio),
            )
            for height, index, node in log.append(leaf_of(eid)):
                d.execute("INSERT INTO merkle VALUES (%s, %s, %s, %s, %s)", (line, sender, height, index, node))
            sizes[key] = sizes.get(key, 0) + len(raw)
            report.envelopes += 1
        for key, total in sizes.items():
            d.execute("INSERT INTO chain_bytes VALUES (%s, %s, %s)", (*key, total))
        for row in s.execute("SELECT line, sender, seq, first, second, detected_at FROM equivocations ORDER BY rowid"):
            d.execute(
                "INSERT INTO equivocations (line, sender, seq, first, second, detected_at) "
                "VALUES (%s, %s, %s, %s, %s, %s)",
                row,
            )
        for row in s.execute("SELECT line, by, seq, raw, stored_at FROM receipts ORDER BY rowid"):
            d.execute("INSERT INTO receipts (line, by_station, seq, raw, stored_at) VALUES (%s, %s, %s, %s, %s)", row)
            report.receipts += 1
        for row in s.execute("SELECT line, n, proposal, cosign FROM checkpoints ORDER BY n"):
            d.execute("INSERT INTO checkpoints VALUES (%s, %s, %s, %s)", row)
            report.checkpoints += 1
        outbox = s.execute(
            "SELECT local, line, kind, prio, content, idem, accepted_at, seq, envelope_id FROM outbox ORDER BY local"
        )
        for row in outbox:
            d.execute(
                "INSERT INTO outbox (local, line, kind, prio, content, idem, accepted_at, seq, envelope_id) "
                "OVERRIDING SYSTEM VALUE VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                row,
            )
            report.outbox += 1
        # The next message accepted gets the next row number, as it would have in SQLite.
        d.execute(
            "SELECT setval(pg_get_serial_sequence('outbox', 'local'), %s, %s)",
            (max(src.max_outbox_local(), 1), src.max_outbox_local() > 0),
        )
    return report


def _compare(src: Ledger, dst: PgLedger, report: MigrateReport) -> None:
    """Byte-equal rows and equal Merkle roots, or the switch does not happen."""
    for record in src.lines():
        line = record.line
        for sender in (src.station, record.peer):
            a = list(src.raw_envelopes(line, sender))
            b = list(dst.raw_envelopes(line, sender))
            if a != b:
                raise StorageError(f"the copy of chain {sender[:16]} of line {line[:8]} differs: nothing was switched")
            ra, rb = src.log(line, sender).root(), dst.log(line, sender).root()
            if ra != rb:
                raise StorageError(f"the Merkle root of chain {sender[:16]} differs after the copy: nothing switched")
            report.roots[f"{line}:{sender}"] = ra.hex()
        receipts_a = [(by, sig.encode()) for by, sig in src.receipts(line)]
        receipts_b = [(by, sig.encode()) for by, sig in dst.receipts(line)]
        cps_a = [(n, p.encode(), c.encode()) for n, p, c in src.checkpoints(line)]
        cps_b = [(n, p.encode(), c.encode()) for n, p, c in dst.checkpoints(line)]
        if receipts_a != receipts_b or cps_a != cps_b:
            raise StorageError(f"receipts or checkpoints of line {line[:8]} differ after the copy: nothing switched")
    if src.equivocations() != dst.equivocations():
        raise StorageError("the equivocation evidence differs after the copy: nothing was switched")
