"""Is a store whole? Checked every time a store is opened, before the station uses it.

Why our own checks and not only SQLite's: SQLite treats damage to the write-ahead log as the end
of the log. A flipped bit in one WAL frame makes it ignore that frame *and every committed
transaction after it*, silently, and the first connection that closes then checkpoints what is
left and deletes the WAL, so the loss becomes permanent and the evidence is gone. A store file cut
short reads as a smaller database until a query reaches the missing pages. So:

1. ``check_files`` reads the raw bytes before SQLite is given the store: the database header
   against the file size (truncation), and every WAL frame with SQLite's own checksum rule
   (https://www.sqlite.org/fileformat2.html#walformat), looking for committed transactions
   *beyond* the first bad frame, which SQLite would drop.
2. ``quick_check`` runs ``PRAGMA quick_check`` (every b-tree page, cell and freelist; zeroed or
   overwritten pages) on a separate read-only connection, so that a refused store is never
   checkpointed: its files are kept as they were found, for the recovery and for evidence.

Damage is reported as ``StorageError`` naming what is damaged and how to recover (``RECOVERY``).
A WAL cut short at a frame boundary cannot be told from a crash before COMMIT; the peer's HELLO
catches that case (it holds more of our chain: we recover it, guarantee 2).

The raw read is safe only while *this process* does not have the store open through SQLite. On
POSIX, closing any descriptor of a file drops every fcntl lock the process holds on it
(https://www.sqlite.org/howtocorrupt.html, section 2.2): after one ``open()``/``close()`` of
``ledger.sqlite`` beside the station's own connection, the next outside reader finds no lock,
believes it is the last connection, checkpoints and deletes the live WAL, and every commit after
that goes to an unlinked file. So the ledger registers every store it opens (``holding``) and
``check_files`` refuses, with ``StoreInUseError``, to read the files of a store this process
holds; readers in the same process use ``Ledger.open_read_only``, which is SQLite only.
"""

from __future__ import annotations

import os
import sqlite3
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redline.errors import StorageError

_DB_MAGIC = b"SQLite format 3\x00"
_WAL_MAGICS = (0x377F0682, 0x377F0683)  # checksums in little-endian / big-endian words
_WAL_HEADER = struct.Struct(">IIIIIIII")
_FRAME_HEADER = struct.Struct(">IIIIII")


class StoreInUseError(RuntimeError):
    """Internal error: code tried to read the raw files of a store this process has open through
    SQLite. Not a ``RedlineError``: no input causes it, only a bug, and it must not be shown as one."""


# Stores this process has open through SQLite, by (device, inode) of the database file, so that
# another name for the same file (a symbolic link, a relative path) is the same store. The lock
# also makes "check the raw files, then let SQLite open them" one step against other threads (the
# console verifies in a worker thread while the station's thread writes).
_lock = threading.RLock()
_open: Counter[tuple[int, int]] = Counter()


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)  # a stat opens no descriptor, so it cannot drop a lock
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def is_open_here(path: Path) -> bool:
    """Whether this process has the store at ``path`` open through SQLite (a ``Ledger``)."""
    key = _file_id(path)
    with _lock:
        return key is not None and _open[key] > 0


@contextmanager
def opening() -> Iterator[None]:
    """Hold while checking a store's files and opening it, so no other thread opens it meanwhile."""
    with _lock:
        yield


def hold(path: Path) -> tuple[int, int]:
    """Record that this process now has the store open through SQLite; ``release`` the key after."""
    key = _file_id(path)
    if key is None:
        raise StorageError(f"store {path} vanished while it was being opened")
    with _lock:
        _open[key] += 1
    return key


def release(key: tuple[int, int]) -> None:
    with _lock:
        _open[key] -= 1
        if _open[key] <= 0:
            del _open[key]


def recovery(path: Path) -> str:
    """What the operator does about a damaged store (docs/OPERATIONS.md section 5)."""
    return (
        "The station will not start on it, so nothing it holds is rewritten or dropped. To recover, restore "
        f"the latest backup: move {path.name}, {path.name}-wal and {path.name}-shm aside (keep them as "
        f"evidence), copy the backup (made with: sqlite3 {path.name} \".backup FILE\") to {path} and start the "
        "station: it re-fetches from the peer, and verifies, whatever the backup lacks of both chains, and "
        "reuses no seq. With no backup, the peer's copy is whole: ask its operator for a bundle of the line "
        "('redline export') and pair again"
    )


def _damaged(path: Path, what: str) -> StorageError:
    return StorageError(f"store {path} is damaged: {what}. {recovery(path)}")


def _checksum(data: bytes, s0: int, s1: int, big_endian: bool) -> tuple[int, int]:
    # SQLite's sums are taken modulo 2**32 at every step; reducing only after every 64 pairs of
    # words gives the same result (the reduction commutes with addition) while the integers stay
    # small: a quarter to a third less time per frame, which 'redline log' pays for a running
    # station's WAL.
    words = struct.unpack(f"{'>' if big_endian else '<'}{len(data) // 4}I", data)
    for i in range(0, len(words), 128):
        run = iter(words[i : i + 128])
        for a, b in zip(run, run, strict=False):  # pairs: a WAL checksums 8-byte multiples
            s0 += a + s1
            s1 += b + s0
        s0, s1 = s0 & 0xFFFFFFFF, s1 & 0xFFFFFFFF
    return s0, s1


def _wal_pages(path: Path, wal: Path) -> tuple[int, set[int]]:
    """(database size in pages after the last commit SQLite will read, pages the WAL holds).

    Raises if the WAL holds committed transactions that SQLite would not read. Reads the WAL one
    frame at a time: memory stays one page whatever the WAL's size."""
    try:
        f = open(wal, "rb")  # noqa: SIM115 - closed below; the WAL may be large
    except FileNotFoundError:
        return 0, set()
    with f:
        size = f.seek(0, 2)
        f.seek(0)
        head = f.read(_WAL_HEADER.size)
        if len(head) < _WAL_HEADER.size:
            return 0, set()  # an empty WAL (or one whose header was never finished): nothing committed
        magic, _version, page_size, _cp, salt1, salt2, c1, c2 = _WAL_HEADER.unpack_from(head)
        frame_size = _FRAME_HEADER.size + page_size
        valid_size = page_size >= 512 and page_size & (page_size - 1) == 0 and page_size <= 65536
        frames = (size - _WAL_HEADER.size) // frame_size if valid_size else 0
        big = magic == _WAL_MAGICS[1]
        if magic not in _WAL_MAGICS or not valid_size or _checksum(head[:24], 0, 0, big) != (c1, c2):
            if frames:
                raise _damaged(path, f"the header of its write-ahead log {wal.name} is corrupt, so SQLite would "
                               f"ignore all {frames} frame(s) it holds: every transaction since the last "
                               "checkpoint")  # fmt: skip
            return 0, set()
        s0, s1 = c1, c2
        db_pages, order, committed = 0, list[int](), 0  # pages in frame order; how many up to the last commit
        bad_at: int | None = None
        for i in range(frames):
            frame = f.read(frame_size)
            if len(frame) < frame_size:
                break  # the file was cut meanwhile (a writer beside us reset its log): its end
            page, commit, f_salt1, f_salt2, f_c1, f_c2 = _FRAME_HEADER.unpack_from(frame)
            if (f_salt1, f_salt2) != (salt1, salt2):
                bad_at = i  # a frame of an older generation of the log: the normal end
                break
            s0, s1 = _checksum(frame[:8], s0, s1, big)
            s0, s1 = _checksum(frame[24:], s0, s1, big)
            if (s0, s1) != (f_c1, f_c2) or page == 0:
                bad_at = i
                break
            order.append(page)
            if commit:
                db_pages, committed = commit, len(order)
        if bad_at is not None:
            lost = 0
            for j in range(bad_at, frames):
                f.seek(_WAL_HEADER.size + j * frame_size)
                header = f.read(_FRAME_HEADER.size)
                if len(header) < _FRAME_HEADER.size:
                    break
                _, commit, f_salt1, f_salt2, _, _ = _FRAME_HEADER.unpack(header)
                if (f_salt1, f_salt2) == (salt1, salt2) and commit:
                    lost += 1
            if lost:
                raise _damaged(
                    path,
                    f"its write-ahead log {wal.name} is corrupt at frame {bad_at + 1} of {frames}; SQLite would "
                    f"silently drop the {lost} committed transaction(s) after it (if the machine lost power while "
                    "writing, the last of them may be one that was never acknowledged)",
                )
    return db_pages, set(order[:committed])


def check_files(path: Path) -> None:
    """Refuse a store whose files are cut short or whose WAL would lose committed transactions.

    Reads only; run it before SQLite opens the store. A file that is not an SQLite database at all
    is left to SQLite (its own error says so). Refuses (``StoreInUseError``) a store this process
    has open through SQLite: closing our descriptor would drop that connection's locks."""
    with _lock:  # no other thread of ours opens the store between this check and the read
        _check_files(path)


def _check_files(path: Path) -> None:
    if is_open_here(path):
        raise StoreInUseError(
            f"internal error: refusing to read the files of store {path} with plain file I/O while this process "
            "has it open through SQLite: closing that descriptor would drop every lock SQLite holds on it, and "
            "another process could then delete the live write-ahead log. Use Ledger.open_read_only"
        )
    with open(path, "rb") as f:
        header = f.read(100)
        size = f.seek(0, 2)
    if len(header) < 100 or not header.startswith(_DB_MAGIC):
        if 0 < size < 100 and _DB_MAGIC.startswith(header[:16]):
            raise _damaged(path, f"the file is truncated to {size} bytes, shorter than an SQLite header")
        return
    (page_size,) = struct.unpack_from(">H", header, 16)
    page_size = 65536 if page_size == 1 else page_size
    if page_size < 512 or page_size & (page_size - 1):
        raise _damaged(path, f"its header names an impossible page size ({page_size})")
    # SQLite keeps the WAL beside the real file when the store's path is a symbolic link.
    real = path.resolve()
    wal_pages, in_wal = _wal_pages(path, real.with_name(real.name + "-wal"))
    if size % page_size:
        raise _damaged(path, f"the file is truncated: {size} bytes is not a whole number of {page_size}-byte pages")
    (change, header_pages) = struct.unpack_from(">II", header, 24)
    (valid_for,) = struct.unpack_from(">I", header, 92)
    needed = wal_pages or (header_pages if header_pages and change == valid_for else 0)
    missing = [p for p in range(size // page_size + 1, needed + 1) if p not in in_wal]
    if missing:
        raise _damaged(
            path,
            f"the file is truncated: it holds {size // page_size} pages of {page_size} bytes, the database has "
            f"{needed}, and {len(missing)} of the missing pages are nowhere else (not in the write-ahead log)",
        )


def sidecars(path: Path) -> set[Path]:
    """The store's -wal and -shm files that exist now (SQLite keeps them beside the real file)."""
    real = path.resolve()
    return {p for p in (real.with_name(real.name + "-wal"), real.with_name(real.name + "-shm")) if p.exists()}


def quick_check(path: Path, db: sqlite3.Connection, existed: set[Path]) -> None:
    """``PRAGMA quick_check`` on a separate read-only connection, while ``db`` (the caller's, which
    has read the store) is open. On damage ``db`` is closed first, so the read-only connection is
    the last to close the WAL and cannot checkpoint it: a store found damaged keeps its files as
    they were (nothing checkpointed into it, no WAL deleted), for the recovery and for evidence;
    only an empty WAL and its index that opening it created (not in ``existed``) are removed."""
    ro = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)
    rows = ["the check did not finish"]
    try:
        rows = _check_rows(ro)
    finally:
        if rows != ["ok"]:
            db.close()
        ro.close()
    if rows != ["ok"]:
        _refuse(path, rows, existed)


def _check_rows(ro: sqlite3.Connection) -> list[str]:
    try:
        return [str(r[0]) for r in ro.execute("PRAGMA quick_check(20)").fetchall()]
    except sqlite3.DatabaseError as exc:
        return _damaged_tables(ro) or [str(exc)]  # the check itself stopped: say which table it hit


def _refuse(path: Path, rows: list[str], existed: set[Path]) -> None:
    created = sidecars(path) - existed
    wal = [p for p in created if p.name.endswith("-wal")]
    if not wal or wal[0].stat().st_size == 0:
        for p in created:
            p.unlink(missing_ok=True)
    shown = "; ".join(rows[:5]) + (f"; and {len(rows) - 5} more" if len(rows) > 5 else "")
    raise _damaged(path, f"SQLite's integrity check found {len(rows)} problem(s): {shown}")


class BackgroundCheck:
    """``quick_check`` in a thread, on its own read-only connection, while the caller goes on
    reading the store (``redline verify``): SQLite runs the check without holding the interpreter
    lock, and it mostly waits for the disk. ``result(db)`` waits for it and, on damage, closes
    ``db`` before the check's connection, for the reason ``quick_check`` gives."""

    def __init__(self, path: Path, existed: set[Path]) -> None:
        self._path, self._existed = path, existed
        self._ro = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False)
        self._rows = ["the check did not finish"]
        self._thread = threading.Thread(target=self._run, name="redline-quick-check", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self._rows = _check_rows(self._ro)

    def result(self, db: sqlite3.Connection) -> None:
        self._thread.join()
        if self._rows != ["ok"]:
            db.close()
        self._ro.close()
        if self._rows != ["ok"]:
            _refuse(self._path, self._rows, self._existed)


def _damaged_tables(ro: sqlite3.Connection) -> list[str]:
    """One line per table whose own check fails, naming the table (``envelopes`` is the transcript)."""
    try:
        tables = [str(r[0]) for r in ro.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY rootpage")]
    except sqlite3.DatabaseError:
        return []
    out = []
    for table in tables:
        quoted = table.replace('"', '""')
        try:
            rows = [str(r[0]) for r in ro.execute(f'PRAGMA quick_check("{quoted}")').fetchall()]
        except sqlite3.DatabaseError as exc:
            rows = [str(exc)]
        out += [f"table {table}: {row}" for row in rows if row != "ok"]
    return out
