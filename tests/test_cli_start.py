"""The CLI starts with what the command uses (bench/cli_start.py measures how fast; no timing here).

``redline`` loads a command's module when that command runs (``cli.common.LazyGroup`` and its
table ``COMMAND_MODULES``): ``--version`` imports no module of redline's commands, ``status`` and
``send`` neither the station nor the API, numpy, shapely, starlette or uvicorn; ``log`` not
even asyncio. The table must name the module of every command (a command missing from it still
runs, after every module is loaded, but then starts slowly).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click

from redline.cli import main
from redline.cli.common import COMMAND_MODULES
from redline.testing import make_station, pair_directly

HEAVY = ("numpy", "shapely", "starlette", "uvicorn", "redline.station", "redline.api", "redline.ops.engine")


def modules_after(args: list[str]) -> set[str]:
    """The modules a ``redline`` process has imported once ``args`` ran (in a fresh interpreter)."""
    code = (
        "import json, sys\n"
        "from redline.cli import main\n"
        "try:\n"
        f"    main({args!r}, standalone_mode=False)\n"
        "except BaseException:\n"
        "    pass\n"
        "print(json.dumps(sorted(sys.modules)), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    return set(json.loads(out.stderr.strip().splitlines()[-1]))


def test_the_table_names_the_module_of_every_command() -> None:
    commands = main.commands  # loads every module
    assert set(commands) == set(COMMAND_MODULES)
    for name, command in commands.items():
        callback = command.callback
        module = callback.__module__ if callback is not None else ""
        if isinstance(command, click.Group) and not module.startswith("redline.cli."):
            module = next(iter(command.commands.values())).callback.__module__  # type: ignore[union-attr]
        assert module == f"redline.cli.{COMMAND_MODULES[name]}", name


def test_version_imports_no_command_module() -> None:
    loaded = modules_after(["--version"])
    assert not {m for m in loaded if m.startswith("redline.cli.") and m != "redline.cli.common"}
    assert not [m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")]
    assert "asyncio" not in loaded and "redline.ledger.sqlite" not in loaded


def test_status_and_send_load_neither_the_station_nor_the_api(tmp_path: object) -> None:
    for args in (["status", "--station", str(tmp_path)], ["send", "--station", str(tmp_path), "abcd1234", "hi"]):
        loaded = modules_after(args)
        assert "redline.cli.station" in loaded and "redline.cli.ops" not in loaded, args
        assert not [m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")], args


def test_log_loads_the_store_but_not_asyncio_or_the_station(tmp_path: Path) -> None:
    a, b = make_station(tmp_path, "EUCOM", "en", 7401), make_station(tmp_path, "NDMC", "ru", 7501)
    line = pair_directly(a, b)
    loaded = modules_after(["log", "--station", str(a.path), line])
    assert "redline.cli.record" in loaded and "redline.ledger.sqlite" in loaded and "redline.views" in loaded
    assert not [m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")]
    assert "asyncio" not in loaded
