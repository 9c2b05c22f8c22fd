"""The record: ``log`` and ``verify`` read the store directly (read-only), so they work with the
station stopped too; ``export`` writes a bundle anyone can verify; ``verify --bundle`` checks one."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from redline.cli.common import console, emit, err, fail, json_option, main, run, station_option, when
from redline.display import columns, line_word, short_id, shown, styled
from redline.home import StationDir, station_path

if TYPE_CHECKING:  # each command imports what it uses, when it runs (the CLI starts in a few ms)
    from rich.text import Text

    from redline.bundle import BundleReport
    from redline.ledger.verify import LineReport


LOG_COLUMNS = ("time (UTC)", "from", "seq", "id", "kind", "prio", "receipt", "text")
ASK_SECONDS = 5.0  # how long log waits for a running station's page before it reads the store itself


@main.command(name="log")
@station_option
@click.argument("line")
@click.option("--limit", type=click.IntRange(1, 10**9), default=50, help="Show the last N entries.")
@click.option("--all", "show_all", is_flag=True, help="Show every entry of both sides.")
@json_option
def log_(station: str | None, line: str, limit: int, show_all: bool, as_json: bool) -> None:
    """Both sides of LINE's transcript, oldest first, with receipt state (from the station, or its store).

    Beside a running station this is the station's own page, as its console shows it (with the
    receipts it holds in memory and who acknowledged each FLASH). With --all, a --limit over 1000,
    or the station stopped, the store is read directly (read-only).
    """
    from redline.logview import PAGE_MAX, Transcript

    home = StationDir(station_path(station))

    def ask() -> Transcript | None:
        """The running station's page; None when no station answers, or it gives no pages (older)."""
        if show_all or not 0 < limit <= PAGE_MAX:
            return None
        from redline.control_client import call_blocking
        from redline.errors import ControlError, ControlRefusedError
        from redline.readmodel import from_obj

        try:
            obj = call_blocking(home.path, {"op": "log", "line": line, "limit": limit}, timeout=ASK_SECONDS)
        except ControlRefusedError as exc:
            if str(exc).startswith("unknown control operation"):  # a station older than this op
                return None
            raise  # the station's one line (no such line, say): the store would say the same
        except ControlError:  # none runs, or it did not answer in time: a read changes nothing, so
            return None  # the store is read instead (as before the station gave pages)
        return from_obj(obj, Transcript, "log")

    def collect() -> Transcript:
        from redline import views

        ledger = home.read_ledger()  # a reader: SQLite only, read-only, one snapshot
        try:
            with ledger.snapshot():
                return views.transcript(ledger, ledger.find_line(line), limit=None if show_all else limit)
        finally:
            ledger.close()

    held: Transcript = run(ask) or run(collect)

    def human(d: dict[str, Any]) -> None:
        rows: list[tuple[str | Text, ...]] = []
        for r in held.rows:
            text = shown(r.text, 300) if r.revoked is None else styled(
                (f"REVOKED: {shown(r.revoked, 300)}", "bold red"), f"\n{shown(r.text, 300)}")  # fmt: skip
            rows.append((when(r.sent_at), shown(r.sender, 20), str(r.seq), short_id(r.id), shown(r.kind, 20),
                         r.priority, "✓ stored" if r.receipted else "pending", text))  # fmt: skip
        rows += [("-", "us", "-", "-", shown(r.kind, 20), r.priority, "in the outbox", shown(r.text, 300))
                 for r in held.outbox]  # fmt: skip
        # aligned columns, the text wrapped under itself (or below each row when the terminal is narrow)
        console.print(columns(console, LOG_COLUMNS, rows), soft_wrap=True)
        if held.partial:
            console.print(f"{len(held.rows)} of {held.total} entries shown; --all for every entry", style="yellow")
        if held.rows:  # the id column is what 'show' takes
            console.print(f"one whole message: redline show {line_word(line)} ID", soft_wrap=True)

    emit(as_json, held.to_obj() if as_json else None, human)  # the JSON form only for --json

def _verify_bundle_file(path: Path, keys: tuple[str, ...], checkpoint: Path | None, as_json: bool) -> None:
    if len(keys) != 2:
        fail("give exactly the two stations' root fingerprints, from outside the bundle: --key FINGERPRINT "
             "--key FINGERPRINT")  # fmt: skip

    from redline.bundle import parse_checkpoint, read_bundle, verify_bundle

    def check() -> BundleReport:
        bundle = read_bundle(path)
        other = parse_checkpoint(read_bundle(checkpoint)) if checkpoint is not None else None
        return verify_bundle(
            bundle, list(keys), other.signed if other else None, other_certs=other.certs if other else None
        )

    report: BundleReport = run(check)

    def human(d: dict[str, Any]) -> None:
        for s in d["summary"]:
            bad = s.startswith(("PROBLEM", "FAILED", "NOT VERIFIED"))
            console.print(s, style="bold red" if bad else ("green" if s.startswith("VERIFIED") else None))

    emit(as_json, report.to_obj(), human)
    if not report.ok:
        sys.exit(2)

# Lines below this many envelopes verify in well under a second: no bar flashes up for them.
PROGRESS_FROM = 10_000


def _stderr_is_a_terminal() -> bool:
    """Rich's own test believes FORCE_COLOR and the like; a bar is only for a person at a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def verify_progress(label: str, total: int) -> Iterator[Callable[[int], None] | None]:
    """A bar on the terminal while a line is verified (a year of transcript takes minutes), gone
    when it ends; nothing when standard error is a pipe or a log. ``label`` is ours, and shown as
    text, never markup, like everything else here."""
    if total < PROGRESS_FROM or not err.is_terminal or not _stderr_is_a_terminal():
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    shown_as = (TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                TextColumn("envelopes", markup=False), TimeRemainingColumn())  # fmt: skip
    with Progress(*shown_as, console=err, transient=True, redirect_stdout=False, redirect_stderr=False) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.update(task, completed=n)


@main.command()
@station_option
@click.option("--peer-fingerprint", default=None, help="Check the pinned peer root against this fingerprint.")
@click.option(
    "--bundle", "bundle_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="Verify this bundle file (redline export) instead of the station's store; needs --key twice.",
)
@click.option(
    "--key", "keys", multiple=True, metavar="FINGERPRINT",
    help="With --bundle: a station's root fingerprint, from outside the bundle (64 hex digits, or the 32 read "
         "aloud at pairing). Give both stations'.",
)  # fmt: skip
@click.option(
    "--checkpoint", "checkpoint_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="With --bundle: the other side's checkpoint file (redline export --checkpoint), to find a cut tail "
         "or a split view.",
)  # fmt: skip
@json_option
def verify(
    station: str | None, peer_fingerprint: str | None, bundle_path: Path | None, keys: tuple[str, ...],
    checkpoint_path: Path | None, as_json: bool,
) -> None:  # fmt: skip
    """Verify every line: signatures, chains, seqs, seen-links, Merkle heads, checkpoints, keys.

    With --bundle, verify an exported bundle instead, on any machine, against the stations'
    fingerprints given with --key; no station is needed.
    """
    if bundle_path is not None:
        _verify_bundle_file(bundle_path, keys, checkpoint_path, as_json)
        return
    if keys or checkpoint_path is not None:
        fail("--key and --checkpoint go with --bundle FILE")
    from redline import bundle, recording, views
    from redline.ledger.verify import verify_line, workers_for

    home = StationDir(station_path(station))
    # Every form the pairing shows (the 32 digits read aloud, grouped, either case, or all 64): the
    # one rule --key uses. Shorter, or not hex, is a typing error, said so: never a tamper claim.
    expected = run(lambda: bundle.normalize_fingerprint(peer_fingerprint)) if peer_fingerprint else None

    def check() -> list[LineReport]:
        keys_root = bytes.fromhex((home.keys / "root.pub").read_text().strip()) if home.exists() else b""
        # A reader: read-only, never migrated (an older store is refused in one line, untouched; a
        # verify run beside a running older station must not change the layout under it).
        ledger = home.read_ledger()
        try:
            reports = []
            with ledger.checked_meanwhile():  # the full check too, whatever the clean-close mark says
                for record in ledger.lines():
                    if expected is not None and not record.peer.startswith(expected):
                        # A failed check, as a bad signature is (exit 2), with every digit compared shown.
                        err.print(styled(("error:", "bold red"), (
                            f" line {record.line[:8]}: the pinned peer root {record.peer[: len(expected)]} is not the "
                            f"fingerprint given ({expected}): either that is not {record.peer_name}'s fingerprint, "
                            "or the store's pairing record was changed; do not trust this line until you know which"
                        )), soft_wrap=True)  # fmt: skip
                        sys.exit(2)
                    roots = {ledger.station: keys_root, record.peer: bytes.fromhex(record.peer_root)}
                    with ledger.stored_line(record.line, home.config().name) as held:  # streamed, not loaded
                        total = sum(held.held(fp) for fp in held.stations())
                        with verify_progress(f"verifying line {record.line[:8]}", total) as progress:
                            reports.append(verify_line(held, roots, workers=workers_for(held), progress=progress))
                    audio = ledger.raw_of_kind(record.line, ledger.station, "CALL_AUDIO")
                    recording.verify_kept(home.path, audio, record.line, ledger.station, record.peer, reports[-1])
            return reports
        finally:
            ledger.close()

    reports = run(check)
    data = [views.VerifyView.of(r).to_obj() for r in reports]

    def human(ds: list[dict[str, Any]]) -> None:
        for d in ds:
            mark = ("VERIFIED", "green") if d["ok"] else ("FAILED", "bold red")
            console.print(styled(f"Line {d['line'][:8]}: ", mark))
            chains, cosigned, tail = d["chains"], d["cosigned"], d["one_sided_tail"]
            names = sorted(chains)
            tails = [f"{n} {cosigned.get(n, 0) + 1}..{chains[n]}" for n in names if tail.get(n, 0) > 0]
            console.print(
                "  envelopes: " + ", ".join(f"{n} {chains[n]}" for n in names)
                + "; co-signed prefix: " + (", ".join(f"{n} 1..{cosigned[n]}" for n in names if cosigned.get(n))
                                           or "none")
                + "; one-sided tail: " + (", ".join(tails) or "none")
            )  # fmt: skip
            console.print(f"  checkpoints: {d['checkpoints']}  receipts: {d['receipts']}")
            for p in d["problems"][:1]:
                console.print(styled("  ", ("first problem:", "bold red"), f" {p}"))
            for f in d["revoked"]:
                console.print(styled("  ", ("REVOKED:", "bold red"), f" {f}"))
            for p in d["people"]:
                bad = p.startswith(("PERSON SIGNATURE NOT VALID", "ROSTER REFUSED"))
                console.print(f"  {p}", style="bold red" if bad else None)
            if d["recordings"]:
                console.print(f"  call recordings matching the signed CALL_AUDIO: {len(d['recordings'])}")
            for n in d["notes"]:
                console.print(f"  note: {n}")
            for root in d.get("roots", ()):
                console.print(f"  {root}", style="bold yellow" if "NOT confirmed" in root else None)
        if not ds:
            console.print("no lines to verify")

    emit(as_json, data, human)
    if any(not r.ok for r in reports):
        sys.exit(2)

@main.command()
@station_option
@click.argument("line")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
    help="File to write (default: redline-LINE-STATION.bundle.json, or .checkpoint.json with --checkpoint).",
)
@click.option(
    "--redact", multiple=True, metavar="ID",
    help="Leave out this envelope's body (id, or 8+ hex digits of it); its salted hash stays signed. Repeatable.",
)
@click.option(
    "--checkpoint", "checkpoint_only", is_flag=True,
    help="Write only the last co-signed checkpoint: what a verifier checks the other side's bundle against.",
)
@click.option(
    "--recordings", "with_recordings", is_flag=True,
    help="Include this station's sealed call recordings (Ogg Opus); verify --bundle checks each against the "
    "audio digests signed in CALL_AUDIO.",
)
@click.option(
    "--recording", "calls", multiple=True, metavar="CALL",
    help="Include only this call's recordings (its CALL_RING id, or 6+ hex digits of it). Repeatable.",
)
@json_option
def export(
    station: str | None, line: str, out: Path | None, redact: tuple[str, ...], checkpoint_only: bool,
    with_recordings: bool, calls: tuple[str, ...], as_json: bool,
) -> None:  # fmt: skip
    """Write LINE's transcript as a bundle anyone can verify without either station (docs/BUNDLE.md)."""
    from redline.bundle import verify_bundle, write_bundle
    from redline.export import export_line

    home = StationDir(station_path(station))

    def make() -> dict[str, Any]:
        # The console's export (GET /api/lines/{line}/export) takes the same export_line.
        done = export_line(home, line, now=int(time.time() * 1000), redact=redact, recordings=with_recordings,
                           checkpoint_only=checkpoint_only, calls=calls)  # fmt: skip
        path = out or Path(done.filename)
        obj, fingerprints = done.obj, list(done.fingerprints)
        write_bundle(path, obj)
        if checkpoint_only:
            return {"path": str(path), "kind": done.kind, "line": done.line, "checkpoint": obj["n"],
                    "fingerprints": fingerprints, "summary": []}  # fmt: skip
        report = verify_bundle(obj, fingerprints)  # what a third party will be shown, checked here first
        return {"path": str(path), "kind": done.kind, "line": done.line, "redacted": report.redacted,
                "fingerprints": fingerprints, "ok": report.ok, "summary": report.summary()}  # fmt: skip

    data = run(make)

    def human(d: dict[str, Any]) -> None:
        console.print(styled(f"Wrote {d['kind']} of line {d['line'][:8]} to ", (d["path"], "bold")))
        for s in d["summary"]:
            console.print(f"  {s}", style="bold red" if s.startswith("PROBLEM") else None)
        if d["kind"] == "bundle":
            keys = " ".join(f"--key {fp}" for fp in d["fingerprints"])
            console.print(
                "To check it anywhere, with both fingerprints obtained from outside the bundle:\n"
                f"  redline verify --bundle {d['path']} {keys}",
                soft_wrap=True,
            )

    emit(as_json, data, human)
