"""``redline keys``: the station's online keys (guarantee 6; the procedure is ``redline/keys.py``).

Thin: the root key is read from the path given (it may live offline: a removable disk mounted for
the moment) and never copied; the new key and its certificate are written beside the current keys,
and the running station (control op ``rotate_signing``), or this command on a stopped station,
files a KEY envelope on every line.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from redline import keys as keyfiles
from redline import rotation
from redline.cli.common import console, emit, json_option, run, station_option
from redline.control import call
from redline.errors import ConfigError, StationNotRunningError
from redline.home import StationDir, station_path


def register(main: click.Group) -> None:
    @main.group()
    def keys() -> None:
        """The station's online keys: rotate the signing key under the root."""

    @keys.command()
    @station_option
    @click.option("--signing", is_flag=True, help="rotate the online signing key")
    @click.option("--root-key", "root_key", required=True, type=click.Path(path_type=Path, dir_okay=False),
                  help="the station's root key file (read now, never copied; may live offline)")  # fmt: skip
    @json_option
    def rotate(station: str | None, signing: bool, root_key: Path, as_json: bool) -> None:
        """Make a new signing key, have the root certify it, and file a KEY envelope (signed by the
        current key) on every line; each line signs with the new key from the seq after its KEY."""

        def go() -> None:
            if not signing:
                raise ConfigError("say which key to rotate: --signing (TLS keys do not rotate yet)")
            home = StationDir(station_path(station))
            home.require()
            cfg = home.config()
            current = home.load_keys()
            root = keyfiles.read_root(root_key, current.root_public)
            keyfiles.prepare_signing(home.keys, root, cfg.name)
            del root
            try:
                result = asyncio.run(call(home.path, {"op": "rotate_signing"}))
            except StationNotRunningError:
                result = rotation.file_offline(home)
            emit(as_json, result, lambda r: console.print(
                f"new signing key {r['key_id']}: KEY filed on {len(r['lines'])} line(s)"
                + ("" if r["running"] else "; the station seals it when it next runs")
            ))  # fmt: skip

        run(go)
