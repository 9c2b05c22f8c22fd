"""What the rest of redline may ask of a ledger, whichever database holds it.

Two implementations: ``ledger.sqlite.Ledger`` (one file, the embedded default) and
``ledger.postgres.PgLedger`` (a PostgreSQL database, for a station that must survive losing a
machine). Both keep the same promises (module docstrings say how): a method that changes state
commits before it returns unless it runs inside ``batch()``, whose outermost level commits once
(group commit); a different envelope at a used (line, sender, seq) is kept as equivocation
evidence and never replaces the first, and the database itself refuses a second row there
(UNIQUE), so a fork cannot be stored whatever the code above does.

Only the methods the station, the sessions, the operations engine and the CLI call are here;
what only one backend has (SQLite's page check, its read-only file connection) stays on it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # types only: a reader of the store ('redline log') imports neither verification nor signing
    from redline import merkle
    from redline.envelope import Envelope
    from redline.identity import SignedCert
    from redline.ledger.model import Equivocation, LineData, LineRecord, LineSource, OutboxItem
    from redline.statements import Signed


class LedgerStore(Protocol):
    """One station's store. Not thread-safe: one writer, the station's own thread."""

    read_only: bool

    @property
    def station(self) -> str: ...

    def close(self) -> None: ...

    def check_integrity(self) -> None:
        """The backend's own full check of its pages (SQLite: quick_check; PostgreSQL: its own)."""
        ...

    def checked_meanwhile(self) -> AbstractContextManager[None]:
        """``check_integrity`` while the block reads the store (SQLite: in a thread), its damage
        raised on leaving (``redline verify``)."""
        ...

    # transactions
    def batch(self) -> AbstractContextManager[None]: ...

    def snapshot(self) -> AbstractContextManager[None]: ...

    # lines and keys
    def put_line(self, record: LineRecord) -> None: ...

    def line(self, line: str) -> LineRecord: ...

    def find_line(self, prefix: str) -> LineRecord: ...

    def lines(self) -> list[LineRecord]: ...

    def put_cert(self, station: str, key_id: str, role: str, cert: SignedCert) -> None: ...

    def certs(self, station: str) -> list[tuple[str, str, SignedCert]]: ...

    # chains
    def head(self, line: str, sender: str) -> tuple[int, str | None]: ...

    def log(self, line: str, sender: str) -> merkle.StoredLog: ...

    def envelope_id(self, line: str, sender: str, seq: int) -> str | None: ...

    def has_id(self, line: str, envelope_id: str) -> bool: ...

    def append(self, env: Envelope, stored_at: int) -> bool: ...

    def raw_envelope(self, line: str, sender: str, seq: int) -> bytes: ...

    def raw_of_kind(self, line: str, sender: str, kind: str) -> list[bytes]: ...

    def raw_envelopes(self, line: str, sender: str, after: int = 0, limit: int = -1) -> Iterator[tuple[int, bytes]]: ...

    def stored_for_ops(self, line: str) -> Iterator[tuple[str, int, bytes, int]]: ...

    def stored_in_order(self, line: str) -> Iterator[tuple[str, int, bytes, int]]: ...

    def find_by_id_prefix(self, line: str, prefix: str, limit: int = 2) -> list[tuple[str, bytes, int]]: ...

    def stored_at(self, line: str, sender: str, seq: int) -> int: ...

    def equivocations(self, line: str | None = None) -> list[Equivocation]: ...

    def line_bytes(self, line: str, sender: str) -> int: ...

    def size_bytes(self) -> int:
        """What the whole store takes: its files (SQLite: the database and its write-ahead log, by
        ``stat``, no descriptor opened) or its database on the server (PostgreSQL)."""
        ...

    def files_dir(self) -> Path | None:
        """The directory of the store's files (its file system's free space is the store's room),
        or None for a store on a server, whose disk this station cannot see."""
        ...

    # outbox
    def accept(
        self,
        line: str,
        kind: str,
        prio: str,
        content: dict[str, Any],
        idem: str | None,
        accepted_at: int,
        *,
        text: str | None = None,
    ) -> OutboxItem:
        """``text``: ``content`` as JSON, when the caller has it already (any JSON of the same
        value: it is read back with a JSON parser)."""
        ...

    def pending(self, line: str, limit: int = -1) -> list[OutboxItem]: ...

    def outbox_by_idem(self, line: str, idem: str) -> OutboxItem | None:
        """The message accepted on ``line`` with this idempotency key (written or still in this
        batch), or None: how a retried request finds its first acceptance."""
        ...

    def max_outbox_local(self) -> int: ...

    def pending_count(self, line: str) -> int: ...

    def outbox_item(self, local: int) -> OutboxItem: ...

    def mark_signed(self, local: int, seq: int, envelope_id: str) -> None: ...

    # receipts and checkpoints
    def add_receipt(self, line: str, by: str, seq: int, signed: Signed, stored_at: int = 0) -> None: ...

    def receipt_times(self, line: str, by: str) -> list[tuple[int, int]]: ...

    def receipts_covering(self, line: str, by: str, seqs: Iterable[int]) -> list[tuple[int, int]]: ...

    def latest_receipt(self, line: str, by: str) -> tuple[int, Signed] | None: ...

    def receipts(self, line: str) -> list[tuple[str, Signed]]: ...

    def add_checkpoint(self, line: str, n: int, proposal: Signed, cosign: Signed) -> None: ...

    def checkpoints(self, line: str, after: int = 0, limit: int | None = None) -> list[tuple[int, Signed, Signed]]:
        """The line's checkpoints numbered above ``after``, in order, at most ``limit`` of them (all: None)."""
        ...

    def checkpoint(self, line: str, n: int) -> tuple[int, Signed, Signed] | None:
        """Checkpoint ``n`` by its key, or None: one row read, whatever the line's history."""
        ...

    def last_checkpoint(self, line: str) -> tuple[int, Signed, Signed] | None: ...

    # verification input
    def line_data(self, line: str, our_name: str = "our station") -> LineData: ...

    def stored_line(self, line: str, our_name: str = "our station") -> AbstractContextManager[LineSource]:
        """One line as ``verify.LineSource`` from one read transaction, streamed."""
        ...
