"""``redline keys``: the station's online keys (guarantee 6; the procedure is ``redline/keys.py``).

Thin: the root key is read from the path given (it may live offline: a removable disk mounted for
the moment) and never copied; the new key and its certificate are written beside the current keys,
and the running station (control op ``rotate_signing``), or this command on a stopped station,
files a KEY envelope on every line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click

from redline import keys as keyfiles
from redline import rotation
from redline.cli.common import console, emit, json_option, run, station_option
from redline.control import call
from redline.errors import ConfigError, StationNotRunningError
from redline.home import StationDir, station_path

# A backup taken before a rotation holds none of the keys it made: restored, that station is refused
# by the peer at TLS, or can never sign on its lines again (attack finding 2; OPERATIONS section 10).
BACKUP_NOW = (
    "Take a backup now ('redline backup DIR'): a backup taken before this rotation cannot restore this "
    "station's lines ('redline doctor' says CRITICAL until then)."
)


def register(main: click.Group) -> None:
    @main.group()
    def keys() -> None:
        """The station's online keys: rotate the signing key under the root, or revoke it."""

    @keys.command()
    @station_option
    @click.option("--signing", is_flag=True, help="rotate the online signing key")
    @click.option("--tls", is_flag=True, help="rotate the TLS key (the paths stay up)")
    @click.option("--root", "root_rotation", is_flag=True,
                  help="rotate the root itself: --root-key is the root in force, --new-root-key the new one")
    @click.option("--root-key", "root_key", required=True, type=click.Path(path_type=Path, dir_okay=False),
                  help="the station's root key file (read now, never copied; may live offline)")  # fmt: skip
    @click.option("--new-root-key", "new_root_key", default=None, type=click.Path(path_type=Path, dir_okay=False),
                  help="with --root: the new root's key file (made beforehand with 'redline keys new-root'; read "
                       "now, never copied)")  # fmt: skip
    @json_option
    def rotate(station: str | None, signing: bool, tls: bool, root_rotation: bool, root_key: Path,
               new_root_key: Path | None, as_json: bool) -> None:  # fmt: skip
        """Make a new signing (or TLS) key, have the root certify it, and file a KEY envelope (signed
        by the current key) on every line; each line signs with the new key from the seq after its
        KEY. A new TLS key is pinned by the peer beside the old one; the station presents it once
        the peer has stored the KEY, and the peer drops the old pin when the new key is in use.

        With --root: file on every line a ROOT naming the new root, signed by the root in force and
        by the new one. Each line shows a NEW safety code: read it to the peer's operator by voice;
        the peer trusts the new root only once its operator typed it ('redline keys confirm-root')."""

        def go() -> None:
            if signing + tls + root_rotation != 1:
                raise ConfigError("say which key to rotate: --signing, --tls or --root (one at a time)")
            if (new_root_key is not None) != root_rotation:
                raise ConfigError("--new-root-key goes with --root, and --root needs it")
            home = StationDir(station_path(station))
            home.require()
            cfg = home.config()
            current = home.load_keys()
            version, in_force = rotation.record_roots(home)  # what our chains filed, also after a restore
            keyfiles.tidy_root(home.keys)
            if root_rotation and version > 1 and new_root_key is not None and _public(new_root_key) == in_force:
                _said_again(home, root_key, version, as_json)  # a run again after one that finished
                return
            root = keyfiles.read_root(root_key, in_force)
            if root_rotation:
                assert new_root_key is not None
                new = keyfiles.read_new_root(new_root_key, in_force)
                _rotate_root(home, root, new, current.fingerprint, version + 1, as_json)
                return
            rotation.require_confirmed(home, version, "keys")
            if tls:
                keyfiles.prepare_tls(home.keys, root, cfg.name, current.fingerprint)
                del root
                try:
                    done = asyncio.run(call(home.path, {"op": "rotate_tls"}))
                except StationNotRunningError:
                    done = rotation.file_tls_offline(home)
                emit(as_json, {**done, "advice": BACKUP_NOW}, lambda r: console.print(
                    f"new TLS key {r['spki'][:16]}…: KEY filed on {len(r['lines'])} line(s)"
                    + ("" if r["running"] else "; the station seals it when it next runs") + f"\n{BACKUP_NOW}"
                ))  # fmt: skip
                return
            keyfiles.prepare_signing(home.keys, root, cfg.name, current.fingerprint)
            del root
            try:
                result = asyncio.run(call(home.path, {"op": "rotate_signing"}))
            except StationNotRunningError:
                result = rotation.file_offline(home)
            emit(as_json, {**result, "advice": BACKUP_NOW}, lambda r: console.print(
                f"new signing key {r['key_id']}: KEY filed on {len(r['lines'])} line(s)"
                + ("" if r["running"] else "; the station seals it when it next runs") + f"\n{BACKUP_NOW}"
            ))  # fmt: skip

        run(go)

    def _rotate_root(home: StationDir, old: Any, new: Any, station: str, version: int, as_json: bool) -> None:
        import time

        public = bytes(new.verify_key)
        content = keyfiles.prepare_root(home.keys, version, public, lambda: rotation.root_content(
            old, new, station=station, version=version, issued_at=int(time.time() * 1000)))  # fmt: skip
        try:
            result = asyncio.run(call(home.path, {"op": "rotate_root", "content": content, "version": version}))
        except StationNotRunningError:
            result = rotation.file_root_offline(home, content, version)
        keyfiles.finish_root(home.keys, version, public)
        _say_codes(as_json, result)

    def _public(path: Path) -> bytes:
        from redline import identity

        return bytes(identity.load_signing_key(path).verify_key)

    def _said_again(home: StationDir, old_path: Path, version: int, as_json: bool) -> None:
        """The rotation to this new root is done (the run that did it crashed before printing, or
        its output was lost): the same codes once more, read from the ROOTs filed, nothing filed.
        Only for the holder of the root it replaced (checked like any root key)."""
        previous = keyfiles.root_public_at(home.keys, version - 1)
        if previous is None:
            raise ConfigError(f"root version {version - 1} is not recorded in keys/{keyfiles.ROOTS}")
        keyfiles.read_root(old_path, previous)
        ledger = home.read_ledger()
        try:
            codes = rotation.filed_root_codes(ledger, version)
        finally:
            ledger.close()
        _say_codes(as_json, {"version": version, "lines": list(codes), "codes": codes, "again": True})

    def _say_codes(as_json: bool, result: dict[str, Any]) -> None:
        def human(r: dict[str, Any]) -> None:
            if r.get("again"):
                said = f"root version {r['version']} is in force already (filed by an earlier run): nothing filed now"
            else:
                said = (f"root version {r['version']}: ROOT filed on {len(r['lines'])} line(s)"
                        + ("" if r["running"] else "; the station seals it when it next runs"))  # fmt: skip
            console.print(said + ". Read each line's NEW safety code to the peer's operator by voice; the peer trusts "
                          "the new root only once its operator types it:\n"
                          + "\n".join(f"  line {line[:8]}: {code}" for line, code in r["codes"].items()))  # fmt: skip

        emit(as_json, result, human)

    @keys.command(name="new-root")
    @click.argument("path", type=click.Path(path_type=Path, dir_okay=False))
    def new_root(path: Path) -> None:
        """Make a new root key at PATH (on the offline medium it will live on), for 'keys rotate --root'."""

        def go() -> None:
            from redline import identity

            if path.exists():
                raise ConfigError(f"{path} exists: a root key is never overwritten")
            key = identity.new_signing_key(path)
            console.print(f"new root key {identity.fingerprint(bytes(key.verify_key))[:16]}… written to {path}")

        run(go)

    @keys.command(name="confirm-root")
    @station_option
    @click.option("--line", required=True, help="the line whose peer rotated its root (id or prefix)")
    @click.argument("code")
    @json_option
    def confirm_root(station: str | None, line: str, code: str, as_json: bool) -> None:
        """Trust the peer's new root: CODE is the new safety code its operator read aloud. A code that
        does not match files nothing (do NOT trust the new root; call the peer on a known number)."""

        def go() -> None:
            home = StationDir(station_path(station))
            home.require()
            try:
                result = asyncio.run(call(home.path, {"op": "confirm_root", "line": line, "code": code}))
            except StationNotRunningError as exc:
                raise ConfigError("start the station first: the confirmation is checked against the line as held "
                                  "live") from exc  # fmt: skip
            emit(as_json, result, lambda r: console.print(
                f"line {r['line'][:8]}: the peer's root version {r['confirmed_version']} is confirmed (ROOT_CONFIRM "
                "filed)"
            ))  # fmt: skip

        run(go)

    @keys.command()
    @station_option
    @click.option("--root-key", "root_key", required=True, type=click.Path(path_type=Path, dir_okay=False),
                  help="the station's root key file (read now, never copied; may live offline)")  # fmt: skip
    @click.option("--checkpoint", type=click.IntRange(1, 2**53 - 1), default=None,
                  help="the last checkpoint both sides co-signed before the compromise (with --line on a station of "
                       "several lines)")  # fmt: skip
    @click.option("--line", default=None, help="the line whose checkpoint --checkpoint names (id or prefix)")
    @click.option("--before", default=None, metavar="TIME",
                  help="instead of --checkpoint: on every line, the last checkpoint this station signed before "
                       "TIME by its own clock (UTC, like 2026-12-03T04:00Z), when the key may first have been "
                       "stolen")  # fmt: skip
    @click.option("--reason", required=True, help="why, for the record (1 to 500 characters)")
    @json_option
    def revoke(station: str | None, root_key: Path, checkpoint: int | None, line: str | None, before: str | None,
               reason: str, as_json: bool) -> None:  # fmt: skip
        """Revoke the current signing key after a compromise: the root signs a REVOKE on each line
        naming the last checkpoint co-signed before it (what the key signed after it is flagged
        'signed by a revoked key' at both ends and in every bundle) and the next signing key."""

        def go() -> None:
            import time

            from redline import revocation
            from redline.views import parse_utc

            if (checkpoint is None) == (before is None):
                raise ConfigError("name the last checkpoint before the compromise: --checkpoint N or --before TIME")
            if not 0 < len(reason) <= revocation.MAX_REASON:
                raise ConfigError(f"--reason is 1 to {revocation.MAX_REASON} characters")
            before_ms = parse_utc(before, "--before") if before is not None else None
            home = StationDir(station_path(station))
            home.require()
            current = home.load_keys()
            version, in_force = rotation.record_roots(home)
            rotation.require_confirmed(home, version, "a revocation")
            root = keyfiles.read_root(root_key, in_force)
            _, cert = keyfiles.prepare_signing(home.keys, root, home.config().name, current.fingerprint)
            ledger = home.read_ledger()
            try:
                contents, bare = rotation.revoke_contents(
                    ledger, root, key=current.key_id, cert=cert, reason=reason, issued_at=int(time.time() * 1000),
                    checkpoint=checkpoint, line=line, before=before_ms, station=current.fingerprint,
                )  # fmt: skip
            finally:
                ledger.close()
            del root
            try:
                result = asyncio.run(call(home.path, {"op": "revoke", "contents": contents}))
            except StationNotRunningError:
                result = rotation.file_offline(home, contents)
            result = {**result, "revoked_key": current.key_id, "without_checkpoint": bare, "advice": BACKUP_NOW}
            emit(as_json, result, lambda r: console.print(
                f"signing key {r['revoked_key']} revoked on {len(r['revoked'])} line(s); new signing key "
                f"{r['key_id']}" + (f"; {len(r['without_checkpoint'])} line(s) had no co-signed checkpoint before "
                                    "the compromise and only rotate (KEY)" if r["without_checkpoint"] else "")
                + ("" if r["running"] else "; the station seals them when it next runs") + f"\n{BACKUP_NOW}"
            ))  # fmt: skip

        run(go)
