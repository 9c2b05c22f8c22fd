"""Exporting one line as a bundle from a station folder: the one path ``redline export`` and the
console's ``GET /api/lines/{line}/export`` both take, so the file a person downloads from the
browser is the file the command line writes (byte for byte, but for the export time).

Reads the store through ``StationDir.read_ledger`` (read-only, one snapshot), so it works beside a
running station (the console runs it in a worker thread) and with the station stopped (the CLI).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from redline import recording
from redline.bundle import build_bundle, export_checkpoint
from redline.home import StationDir


@dataclass(frozen=True)
class Exported:
    line: str  # the line's full id
    station: str  # this station's name (the file name carries it)
    fingerprints: tuple[str, str]  # ours, the peer's: what a verifier must get from outside the bundle
    kind: str  # "bundle" or "checkpoint"
    obj: dict[str, Any]  # the bundle (or checkpoint) as written

    @property
    def filename(self) -> str:
        return f"redline-{self.line[:8]}-{self.station}.{self.kind}.json"


def export_line(
    home: StationDir, line: str, *, now: int, redact: Iterable[str] = (), recordings: bool = False,
    checkpoint_only: bool = False, calls: Iterable[str] = (),
) -> Exported:  # fmt: skip
    """LINE (an id prefix or the peer's name) as a bundle, or only its last co-signed checkpoint.
    Raises ``LedgerError`` for an unknown line and ``BundleError`` for a bad redaction."""
    name = home.config().name
    our_root = bytes.fromhex((home.keys / "root.pub").read_text().strip())
    ledger = home.read_ledger()
    try:
        with ledger.snapshot():
            record = ledger.find_line(line)
            data = ledger.line_data(record.line, name)
            us = ledger.station
    finally:
        ledger.close()
    fingerprints = (us, record.peer)
    if checkpoint_only:
        return Exported(record.line, name, fingerprints, "checkpoint", export_checkpoint(data, us, exported_at=now))
    roots = {us: our_root, record.peer: bytes.fromhex(record.peer_root)}
    calls = list(calls)  # with recordings: only these calls' (CALL_RING ids or prefixes)
    files = recording.sealed_recordings(home.path, record.line, calls) if recordings or calls else []
    obj = build_bundle(data, roots, us, set(redact), exported_at=now, recordings=[f.read_bytes() for f in files])
    return Exported(record.line, name, fingerprints, "bundle", obj)
