"""``redline`` commands for the engineer: backup, restore, doctor (docs/OPERATIONS.md).

Thin: the work is in ``redline.backup`` and ``redline.doctor``. A running station copies its own
store (control op ``backup``) and checks its own store's integrity (control op ``doctor``): while
it runs, nothing else may open those files.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import click

from redline import backup as bk
from redline import doctor as dr
from redline.cli.common import console, emit, err, json_option, run, station_option, when
from redline.control import call
from redline.display import styled
from redline.errors import ControlError, StationNotRunningError
from redline.home import StationDir, station_path

BACKUP_TIMEOUT = 3600.0  # the station answers once the copy is on disk; a large store takes a while


def _now_ms() -> int:
    return int(time.time() * 1000)


def read_passphrase(source: Any, *, confirm: bool) -> str:
    """From --passphrase-file, else standard input when it is not a terminal, else a prompt that
    does not echo (asked twice when a new passphrase is set)."""
    if source is not None:
        text = str(source.readline()).rstrip("\n")
    elif not sys.stdin.isatty():
        text = sys.stdin.readline().rstrip("\n")
    else:
        text = str(click.prompt("Backup passphrase", hide_input=True, confirmation_prompt=confirm))
    return text


def _station_copy(home: StationDir, dest: Path) -> tuple[int, str]:
    """The store's copy: by the running station, or (stopped) by this process. (taken_at, by)."""
    try:
        result = asyncio.run(call(home.path, {"op": "backup", "dest": str(dest)}, timeout=BACKUP_TIMEOUT))
        return int(result["taken_at"]), "the running station"
    except StationNotRunningError:
        taken_at = _now_ms()
        bk.copy_store(home.ledger_path, dest)
        return taken_at, "this command (the station is not running)"


def register(main: click.Group) -> None:
    @main.command()
    @station_option
    @click.argument("dest", type=click.Path(path_type=Path))
    @click.option(
        "--secrets", type=click.Choice(["encrypt", "omit"]), required=True,
        help="encrypt: the signing and TLS keys sealed under a passphrase; omit: left out (restore then needs "
             "--keys-from). The root key is never in a backup.",
    )  # fmt: skip
    @click.option("--passphrase-file", type=click.File("r"), default=None, help="Read the passphrase from this file.")
    @json_option
    def backup(station: str | None, dest: Path, secrets: str, passphrase_file: Any, as_json: bool) -> None:
        """Back up the station into DEST (new or empty): a consistent copy of the store taken by the
        running station, config, public keys, users, and the secret keys sealed or left out; then
        verified as 'redline verify' would."""
        home = StationDir(station_path(station))
        run(home.require)
        passphrase = None
        if secrets == "encrypt":
            passphrase = run(lambda: bk.check_passphrase(read_passphrase(passphrase_file, confirm=True)))
        existed = dest.exists()
        folder: Path = run(lambda: bk.prepare_dir(dest))

        def take() -> bk.BackupResult:
            try:
                taken_at, by = _station_copy(home, folder / bk.STORE)
                return bk.finish_backup(home, folder, taken_at=taken_at, passphrase=passphrase, by=by)
            except BaseException:
                # No manifest, no backup: leave nothing half-made behind to be mistaken for one.
                if existed:
                    for child in folder.iterdir():
                        if child.is_dir():
                            shutil.rmtree(child)
                        else:
                            child.unlink()
                else:
                    shutil.rmtree(folder, ignore_errors=True)
                raise

        result: bk.BackupResult = run(take)
        m = result.manifest
        data = {**m, "path": str(result.path), "age_ms": max(0, _now_ms() - m["taken_at"]), "ok": result.ok}

        def human(d: dict[str, Any]) -> None:
            console.print(styled("Backup of ", (d["station"], "bold"), f" in {d['path']}"), soft_wrap=True)
            age = bk.age_text(d["age_ms"])
            console.print(f"  taken at {when(d['taken_at'])} by {d['taken_by']}; {age} old", soft_wrap=True)
            for ln in d["lines"]:
                console.print(f"  line {ln['line'][:8]} with {ln['peer']}: ours seq {ln['our_seq']}, "
                              f"theirs seq {ln['their_seq']}")  # fmt: skip
            mark = ("VERIFIED", "green") if d["verified"] else ("FAILED VERIFICATION", "bold red")
            console.print(styled("  the copy's transcript: ", mark, *(f"; {p}" for p in d["problems"][:1])))
            if d["secrets"] == "encrypted":
                console.print("  secret keys: sealed under the passphrase (keep it apart from the backup)")
            else:
                console.print("  secret keys: left out; a restore needs --keys-from DIR (their offline copy)")
            console.print("  not in it: the root key (it lives offline)")

        emit(as_json, data, human)
        if not result.ok:
            sys.exit(2)

    @main.command()
    @click.argument("source", type=click.Path(path_type=Path, file_okay=False, exists=True))
    @station_option
    @click.option(
        "--keys-from", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
        help="A folder holding the station's signing.key and tls.key, for a backup taken with --secrets omit.",
    )  # fmt: skip
    @click.option("--passphrase-file", type=click.File("r"), default=None, help="Read the passphrase from this file.")
    @click.option(
        "--trust-unsigned-backup", is_flag=True, default=False,
        help="Restore a backup taken by an earlier redline (its manifest unsigned). You vouch that nobody else "
             "could ever have written its folder: nothing in it can prove that it was not changed.",
    )  # fmt: skip
    @json_option
    def restore(source: Path, station: str | None, keys_from: Path | None, passphrase_file: Any,
                trust_unsigned_backup: bool, as_json: bool) -> None:  # fmt: skip
        """Restore the backup in SOURCE into a new or empty station directory (--station). The
        restored station signs nothing until its peer has said how much of both chains it holds,
        and fetches and verifies what the backup lacks first: no seq is ever reused.

        The backup's manifest must be signed by the station's signing key (from --keys-from, or
        sealed in the backup under the passphrase): nothing of a changed backup, or of another
        station's, is restored."""
        target = station_path(station)
        manifest = run(lambda: bk.read_manifest(source))
        signed = run(lambda: bk.require_signed(manifest, trust_unsigned=trust_unsigned_backup))
        if not signed:
            err.print(f"warning: restoring an unsigned backup ({bk.FORMAT_UNSIGNED}) on your word that nobody else "
                      "could have written it: its files are checked against its manifest, which proves nothing "
                      "about who wrote them", soft_wrap=True)  # fmt: skip
        passphrase = None
        if keys_from is None and manifest.get("secrets") == "encrypted":
            passphrase = read_passphrase(passphrase_file, confirm=False)
        result = run(lambda: bk.restore(source, target, passphrase=passphrase, keys_from=keys_from,
                                        trust_unsigned=trust_unsigned_backup))  # fmt: skip
        data = {**result, "age_ms": max(0, _now_ms() - result["taken_at"])}

        def human(d: dict[str, Any]) -> None:
            age = bk.age_text(d["age_ms"])
            console.print(styled("Restored ", (d["station"], "bold"), f" into {d['path']} from the backup taken at "
                                 f"{when(d['taken_at'])} ({age} old)."), soft_wrap=True)  # fmt: skip
            console.print(f"  root fingerprint {d['fingerprint']}: compare it with the one you keep", soft_wrap=True)
            keys = d["keys"]
            console.print(f"  keys restored: signing {keys['signing']}, TLS {keys['tls'][:16]}…"
                          + (" (and a rotation's next keys)" if len(keys) > 2 else "")
                          + ". A key rotated after this backup is not in it: if the line's chain names a newer "
                          "key, restore a newer backup, or pair the line again", soft_wrap=True)  # fmt: skip
            for ln in d["lines"]:
                console.print(f"  line {ln['line'][:8]} with {ln['peer']}: the backup holds our chain to seq "
                              f"{ln['our_seq']} and theirs to seq {ln['their_seq']}")  # fmt: skip
            console.print(
                f"Start it: redline serve --station {d['path']}\nIt signs nothing until the peer's HELLO says how "
                "much of both chains the peer holds; it then fetches and verifies what the backup lacks (the alarm "
                "'recovering our own envelopes' says how much) before anything new gets a seq. Messages sent "
                "meanwhile wait in the outbox. 'redline status' shows IN SYNC when it is done.", soft_wrap=True,
            )  # fmt: skip

        emit(as_json, data, human)

    @main.command()
    @station_option
    @json_option
    def doctor(station: str | None, as_json: bool) -> None:
        """Check what an engineer checks at 3 a.m.: key modes, the station running, lines and paths,
        clock skew, disk against budgets, the store's integrity, certificate expiry, the line's
        last proof, checkpoints, the latest backup. Exit 0 all ok, 1 a warning, 2 something critical."""
        home = StationDir(station_path(station))
        run(home.require)
        extra: list[dr.Finding] = []
        try:
            got = asyncio.run(call(home.path, {"op": "doctor"}, timeout=120.0))
            facts = dr.Facts(running=True, now=int(got["now"]), lines=got["lines"], integrity=got["integrity"])
        except StationNotRunningError:
            facts = dr.stopped_facts(home, _now_ms(), dr.Thresholds())
        except ControlError as exc:
            extra.append(dr.Finding("station", dr.CRITICAL, f"the station does not answer: {exc}",
                                    "look at its log; restart it if it stays silent"))  # fmt: skip
            facts = dr.Facts(running=False, now=_now_ms(), integrity=["not checked: the station does not answer"])
        findings = extra + run(lambda: dr.examine(home, facts))
        level = dr.worst(findings)
        data = {"station": str(home.path), "worst": level, "findings": [f.to_obj() for f in findings]}
        colours = {dr.OK: "green", dr.WARNING: "yellow", dr.CRITICAL: "bold red"}

        def human(d: dict[str, Any]) -> None:
            for f in d["findings"]:
                console.print(styled((f"{f['severity'].upper():<8}", colours[f["severity"]]), f" {f['check']}: ",
                                     f["text"]), soft_wrap=True)  # fmt: skip
                if f["fix"] and f["severity"] != dr.OK:
                    console.print(f"         what to do: {f['fix']}", soft_wrap=True)
            console.print(styled("\n", (level.upper(), colours[level]), f" (exit {dr.SEVERITY_EXIT[level]})"))

        emit(as_json, data, human)
        sys.exit(dr.SEVERITY_EXIT[level])
