"""The write-ahead log copied into the store's file by a thread of its own, as it grows.

SQLite's automatic checkpoint runs in the commit that takes the WAL past 1,000 pages: it copies
them into the database file and fsyncs it, about 2 ms of the committing thread's CPU. With one
message in flight that was every ~110 messages at the sender and ~125 at the receiver, each time
inside the commit of the message in flight: a good part of the slowest 1-2 % of durable sends at
each end (docs/BENCHMARKS.md). Here a thread copies the frames as they come, a PASSIVE checkpoint
(it neither waits for nor blocks the station's reads and writes) at most every ``EVERY`` seconds
after a commit, on a connection of its own (SQLite only, like every reader in this process:
``integrity`` says why nothing else may open the files); SQLite runs it without the interpreter
lock, so the station's thread goes on meanwhile.

SQLite's own automatic checkpoint stays, at its 1,000 pages (``BACKSTOP``): a checkpoint beside the
writes does not restart the WAL (only a writer does, once every frame is copied), so the WAL still
reaches it; but by then the thread has copied nearly all, and the commit there copies only the
last few frames before the WAL starts over. And should the thread fail (a full disk), the commits
checkpoint it all, as before.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

EVERY = 0.02  # seconds between the thread's checkpoints, at most (each fsyncs the file)
BACKSTOP = 1000  # pages of WAL at which a commit checkpoints inline (SQLite's default)


class Checkpointer:
    """One store's checkpoint thread: ``committed()`` after each commit, ``close()`` before the
    store's own connection closes (SQLite then checkpoints what is left and removes the WAL)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._due = threading.Event()  # a commit since the last checkpoint
        self._stop = threading.Event()
        self.checkpoints = 0  # done so far
        self.last: tuple[int, int, int] | None = None  # SQLite's answer: busy, WAL frames, frames copied
        self.failed: str | None = None  # the last failure, in words (a full disk: SQLite keeps the WAL)
        self._thread = threading.Thread(target=self._run, name="redline-checkpoint", daemon=True)
        self._thread.start()

    def committed(self) -> None:
        self._due.set()

    def _run(self) -> None:
        try:  # mode=rw: never a new empty file where the store was (it is open: it is there)
            db = sqlite3.connect(self._path.resolve().as_uri() + "?mode=rw", uri=True, isolation_level=None)
        except sqlite3.Error as exc:  # SQLite's own automatic checkpoint (the backstop) does it all
            self.failed = str(exc)
            return
        try:
            db.execute("PRAGMA synchronous=FULL")  # the file is fsynced once the pages are copied
            while True:
                self._due.wait()
                if self._stop.is_set():
                    return
                self._due.clear()
                try:
                    busy, frames, copied = db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    self.last, self.checkpoints = (busy, frames, copied), self.checkpoints + 1
                    self.failed = None
                except sqlite3.Error as exc:  # the WAL keeps every commit; the next try or the backstop copies it
                    self.failed = str(exc)
                if self._stop.wait(EVERY):
                    return
        finally:
            db.close()

    def close(self) -> None:
        self._stop.set()
        self._due.set()
        self._thread.join()
