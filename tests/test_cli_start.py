"""The CLI starts with what the command uses (bench/cli_start.py measures how fast; no timing here).

``redline`` loads a command's module when that command runs (``cli.common.LazyGroup`` and its table
``COMMAND_MODULES``): ``--version`` and ``--help`` import no module of redline's commands,
``status`` and ``send`` neither the station nor the API, numpy, shapely, starlette or uvicorn;
``ack`` and ``answer`` neither the read views nor rich's tables; ``log`` not even asyncio, nor
verification and the trust gate (the store's read types are in ``ledger.model``), and of the content
types of ``redline.kinds`` (made on first use) only those of the kinds it shows. The table must name
the module of every command (a command missing from it still runs, after every module is loaded, but
then starts slowly), and ``COMMAND_HELP`` the first paragraph of its help (which --help lists).
"""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest

from redline.cli import main
from redline.cli.common import COMMAND_HELP, COMMAND_MODULES, run
from redline.control import call
from redline.control_client import call_blocking
from redline.errors import RedlineError
from redline.home import StationDir
from redline.testing import SessionPair, make_station, pair_directly

HEAVY = ("numpy", "shapely", "starlette", "uvicorn", "redline.station", "redline.api", "redline.ops.engine")


NO_STATION = "no running station at"


def modules_after(args: list[str], fails: str | None = None) -> set[str]:
    """The modules a ``redline`` process has imported once ``args`` ran (in a fresh interpreter)."""
    return _after(args, fails)[0]


def _after(args: list[str], fails: str | None = None) -> tuple[set[str], set[str]]:
    """(modules imported, the classes of redline.kinds made dataclasses) once ``args`` ran."""
    modules, built, _ = _run(args, fails)
    return modules, built


def _run(args: list[str], fails: str | None = None) -> tuple[set[str], set[str], str]:
    """``_after``, and what the command printed. The command must succeed, or, with ``fails``, end
    with an error saying that (an import graph measured on another way out would prove nothing)."""
    code = (
        "import json, sys\n"
        "from redline.cli import main\n"
        "outcome = 'ok'\n"
        "try:\n"
        f"    main({args!r}, standalone_mode=False)\n"
        "except SystemExit as exc:\n"
        "    outcome = 'ok' if not exc.code else f'exit {exc.code}'\n"
        "except BaseException as exc:\n"
        "    outcome = f'{type(exc).__name__}: {exc}'\n"
        "kinds = sys.modules.get('redline.kinds')\n"
        "built = [n for n, v in vars(kinds).items() if isinstance(v, type) and v.__module__ == kinds.__name__ "
        "and '__dataclass_params__' in v.__dict__] if kinds else []\n"  # not is_dataclass(): that builds
        "print(json.dumps([sorted(sys.modules), built, outcome]), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    modules, built, outcome = json.loads(out.stderr.strip().splitlines()[-1])
    if fails is None:
        assert outcome == "ok", (args, outcome, out.stdout[-500:])
    else:
        assert outcome != "ok" and fails in outcome + out.stderr, (args, outcome, out.stderr[-500:])
    return set(modules), set(built), out.stdout


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
    assert "asyncio" not in loaded and "redline.ledger.sqlite" not in loaded and "sqlite3" not in loaded


def test_version_prints_the_version_of_pyproject_without_reading_the_installed_metadata() -> None:
    project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
    out = subprocess.run([sys.executable, "-m", "redline", "--version"], capture_output=True, text=True, timeout=60)
    assert out.stdout == f"python -m redline, version {project['version']}\n"
    assert "importlib.metadata" not in modules_after(["--version"])


def test_help_lists_every_command_as_click_does_without_loading_their_modules() -> None:
    loaded = modules_after(["--help"])
    assert not {m for m in loaded if m.startswith("redline.cli.") and m != "redline.cli.common"}
    assert not [m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")] and "asyncio" not in loaded
    listed = subprocess.run([sys.executable, "-m", "redline", "--help"], capture_output=True, text=True, timeout=60)
    every = ("from redline.cli import main\nmain.commands\nmain(['--help'], prog_name='python -m redline')\n")
    loaded_all = subprocess.run([sys.executable, "-c", every], capture_output=True, text=True, timeout=60)
    assert listed.stdout == loaded_all.stdout and "withdraw" in listed.stdout


def test_the_help_table_holds_the_first_paragraph_of_every_command_s_help() -> None:
    commands = main.commands  # loads every module
    assert set(COMMAND_HELP) == set(commands)
    for name, command in commands.items():
        text = command.help or ""
        first = text[: text.find("\n\n")] if "\n\n" in text else text
        assert COMMAND_HELP[name] == " ".join(first.split()), f"COMMAND_HELP[{name!r}]: paste the new first paragraph"


def test_status_and_send_load_neither_the_station_nor_the_api(tmp_path: object) -> None:
    for args in (["status", "--station", str(tmp_path)], ["send", "--station", str(tmp_path), "abcd1234", "hi"]):
        loaded = modules_after(args, fails=NO_STATION)  # as far as a control request goes without a station
        assert "redline.cli.station" in loaded and "redline.cli.ops" not in loaded, args
        assert not [m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")], args
        assert "asyncio" not in loaded and "nacl.signing" not in loaded, args
        assert "sqlite3" not in loaded and "redline.kinds" not in loaded, args
        assert "logging" not in loaded, args


def test_status_draws_its_paths_without_rich_tables(tmp_path: Path) -> None:
    pair = SessionPair(tmp_path / "pair")
    line = pair.a.status().to_obj()  # a line's status, as the station puts it into its own
    pair.close()
    status = {"station": "EUCOM", "fingerprint": "ab" * 32, "listen": ["127.0.0.1:1"], "lines": [line], "alarms": []}
    answer = json.dumps({"ok": True, "result": status}).encode() + b"\n"
    home = tmp_path / "station"
    home.mkdir()
    thread = _serve_once(StationDir(home).control_path, answer)
    loaded, _, shown = _run(["status", "--station", str(home)])
    thread.join(timeout=10)
    assert "Line " in shown and "IN SYNC" in shown and "round trip" in shown  # it showed the status
    assert "rich.table" not in loaded and "cattrs" not in loaded


def test_ack_and_answer_load_the_person_keys_but_no_view_and_no_table(tmp_path: Path) -> None:
    line = "abcd1234"
    for args in (["ack", "--station", str(tmp_path), line, "abcdef", "--user", "anna"],
                 ["answer", "--station", str(tmp_path), line, "abcdef", "--user", "anna"]):  # fmt: skip
        loaded = modules_after(args, fails=NO_STATION)
        assert "redline.cli.ops" in loaded and "redline.persons" in loaded, args  # signing is what they do
        assert not [m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")], args
        # the read views (25 dataclasses) and rich's tables load only for the commands that show them
        assert not {"redline.ops.views", "redline.views", "rich.table", "asyncio"} & loaded, args


def test_log_loads_the_store_but_not_asyncio_or_the_station(tmp_path: Path) -> None:
    a, b = make_station(tmp_path, "EUCOM", "en", 7401), make_station(tmp_path, "NDMC", "ru", 7501)
    line = pair_directly(a, b)
    loaded = modules_after(["log", "--station", str(a.path), line])
    assert "redline.cli.record" in loaded and "redline.ledger.sqlite" in loaded and "redline.views" in loaded
    assert not [m for m in loaded for h in HEAVY if m == h or m.startswith(h + ".")]
    assert "asyncio" not in loaded and "logging" not in loaded  # the log formatters are the station's
    # it reads envelopes and signs or verifies none: PyNaCl loads with the first key used
    assert "nacl.signing" not in loaded and "nacl.bindings" not in loaded
    # reading a store is not verifying it: neither verification nor the trust gate loads
    assert not {"redline.ledger.verify", "redline.gate", "redline.ops.views"} & loaded
    # its rows are laid out in one pass (display.columns), not by rich's Table (about 30 ms a page)
    assert "rich.table" not in loaded


def test_log_makes_only_the_content_types_of_the_kinds_it_shows(tmp_path: Path) -> None:
    pair = SessionPair(tmp_path)
    pair.send("a", "hello")
    pair.send("b", "привет")
    pair.run()
    pair.close()
    loaded, built = _after(["log", "--station", str(pair.dir_a.path), pair.line])
    assert "redline.kinds" in loaded
    # TEXT rows only: TEXT's content type is made (kinds.summarize parses each row's content), no
    # other kind's, nor the types inside other kinds' content (redline/firstuse.py); the registry's
    # own row types are made at import
    assert built == {"Body", "Kind", "RefRule", "Text"}


def test_log_reads_where_the_store_is_without_making_the_limits(tmp_path: Path) -> None:
    pair = SessionPair(tmp_path)
    pair.send("a", "hello")
    pair.run()
    pair.close()
    code = (
        "import sys\n"
        "from redline.cli import main\n"
        "from redline import config, firstuse\n"
        f"main({['log', '--station', str(pair.dir_a.path), pair.line]!r}, standalone_mode=False)\n"
        "print(sorted(c.__name__ for c in firstuse.unbuilt() if c.__module__ == 'redline.config'), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "hello" in out.stdout, out.stderr
    # the reader needs the store's location only (StationConfig.load_store), not the config's 60 limits
    assert out.stderr.strip().splitlines()[-1] == "['ApiConfig', 'Limits', 'StationConfig']"


def test_a_reader_finds_the_store_as_the_config_names_it_and_refuses_what_load_refuses(tmp_path: Path) -> None:
    from redline.config import StationConfig
    from redline.errors import ConfigError

    home = make_station(tmp_path, "EUCOM", "en", 7401)
    config = home.config_path
    assert StationConfig.load_store(config) == home.config().store == ""
    obj = json.loads(config.read_text())
    for store in ("postgresql://redline@db:5432/eucom", "postgres://db/x"):
        config.write_text(json.dumps({**obj, "store": store}))
        assert StationConfig.load_store(config) == home.config().store == store
    for bad in ("sqlite:///x", 7, None):
        config.write_text(json.dumps({**obj, "store": bad}))
        with pytest.raises(ConfigError) as read:
            StationConfig.load_store(config)
        with pytest.raises(ConfigError) as loaded:
            home.config()
        assert str(read.value) == str(loaded.value)  # the one rule (config._check_store), worded once
    # bad JSON, not an object, and a file saved in another encoding than UTF-8 (Latin-1 here)
    for text, words in ((b"{", "is not valid JSON"), (b"[]", "malformed: not an object but list"),
                        ('{"name": "Z\xfcrich"}'.encode("latin-1"), "is not valid JSON")):  # fmt: skip
        config.write_bytes(text)
        with pytest.raises(ConfigError, match=words):
            StationConfig.load_store(config)
        with pytest.raises(ConfigError, match=words):
            home.config()
    config.unlink()
    with pytest.raises(ConfigError, match="not found"):
        StationConfig.load_store(config)


def test_a_store_error_while_reading_is_one_line_though_the_cli_does_not_import_sqlite3(
    capsys: pytest.CaptureFixture[str],
) -> None:
    def damaged() -> None:
        raise sqlite3.DatabaseError("database disk image is malformed")

    with pytest.raises(SystemExit) as exited:
        run(damaged)
    assert exited.value.code == 1
    assert capsys.readouterr().err == (
        "error: the store could not be read (database disk image is malformed): it may be damaged; "
        "'redline doctor' says what to do\n"
    )
    with pytest.raises(ZeroDivisionError):  # anything else is not ours to word
        run(lambda: 1 / 0)


# -- the blocking control client answers as control.call does ---------------------------------------


def _serve_once(path: Path, answer: bytes | None) -> threading.Thread:
    """A control socket that reads one request and answers ``answer`` (None: closes without a word)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def run() -> None:
        conn, _ = server.accept()
        with conn:
            conn.recv(65536)
            if answer is not None:
                conn.sendall(answer)
        server.close()
        path.unlink()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def _outcome(fn: Callable[[], Any]) -> tuple[str, str]:
    try:
        return "ok", json.dumps(fn())
    except RedlineError as exc:
        return type(exc).__name__, str(exc)


@pytest.mark.parametrize(
    "answer",
    [b'{"ok": true, "result": {"n": 42}}\n', b'{"ok": false, "error": "nope"}\n', b'{"ok": tr', b"", None],
    ids=["answered", "refused", "cut off", "closed at once", "closed without answering"],
)
def test_the_blocking_client_answers_as_the_event_loop_one(tmp_path: Path, answer: bytes | None) -> None:
    home = tmp_path / "station"
    home.mkdir()
    sock = StationDir(home).control_path
    got = []
    for client in (lambda: call_blocking(home, {"op": "status"}), lambda: asyncio.run(call(home, {"op": "status"}))):
        thread = _serve_once(sock, answer)
        got.append(_outcome(client))
        thread.join(timeout=10)
    assert got[0] == got[1]
    assert _outcome(lambda: call_blocking(home, {"op": "status"})) == _outcome(
        lambda: asyncio.run(call(home, {"op": "status"}))
    )  # and with no socket at all: "no running station"
