"""The command line against real station processes: the ceremony and every kind of bad input.
Each refusal prints one line a duty officer can act on, exits non-zero and changes nothing."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from redline.config import StationConfig
from tests.procs import StationProc, free_ports, wait_until


def rl(*args: str, station: Path | None = None, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    if station is not None:
        env["REDLINE_STATION"] = str(station)
    return subprocess.run(
        [sys.executable, "-m", "redline", *args], capture_output=True, text=True, env=env, timeout=60, input=stdin
    )


def init_pair(tmp: Path) -> tuple[Path, Path]:
    p = free_ports(2)
    a, b = tmp / "eucom", tmp / "ndmc"
    assert rl("init", "--name", "EUCOM", "--lang", "en", "--listen", f"127.0.0.1:{p[0]}", station=a).returncode == 0
    assert rl("init", "--name", "NDMC", "--lang", "ru", "--listen", f"127.0.0.1:{p[1]}", station=b).returncode == 0
    return a, b


def test_init_creates_private_keys_and_refuses_to_overwrite(tmp_path: Path) -> None:
    home = tmp_path / "st"
    out = rl("init", "--name", "EUCOM", "--lang", "en", "--listen", "127.0.0.1:7401", "--json", station=home)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert len(info["fingerprint"]) == 64
    for key in ("root.key", "signing.key", "tls.key"):
        assert stat.S_IMODE((home / "keys" / key).stat().st_mode) == 0o600
    assert StationConfig.load(home / "config.json").limits.max_text_bytes > 0
    before = (home / "keys" / "root.key").read_bytes()
    again = rl("init", "--name", "X", "--lang", "en", "--listen", "127.0.0.1:7402", station=home)
    assert again.returncode != 0 and "refusing to overwrite" in again.stderr
    assert (home / "keys" / "root.key").read_bytes() == before


def test_bad_listen_address_is_refused(tmp_path: Path) -> None:
    out = rl("init", "--name", "EUCOM", "--lang", "en", "--listen", "localhost", station=tmp_path / "s")
    assert out.returncode != 0 and "HOST:PORT" in out.stderr
    assert not (tmp_path / "s" / "config.json").exists()


def test_commands_without_a_running_station_say_how_to_start_it(tmp_path: Path) -> None:
    a, _ = init_pair(tmp_path)
    out = rl("status", station=a)
    assert out.returncode != 0 and "redline serve" in out.stderr


def test_ceremony_and_bad_input_through_the_cli(tmp_path: Path) -> None:
    a_home, b_home = init_pair(tmp_path)
    cfg = StationConfig.load(a_home / "config.json")
    a, b = StationProc(a_home), StationProc(b_home)

    async def main() -> None:
        await a.start()
        await b.start()
        try:
            await asyncio.to_thread(ceremony)
        finally:
            a.stop()
            b.stop()

    def ceremony() -> None:
        # malformed and damaged tokens
        for bad in ("hello", "rl1-!!!!", "rl1-eyJ2IjoxfQ"):
            out = rl("pair", station=b_home, stdin=bad)
            assert out.returncode != 0 and "token" in out.stderr, out.stderr
        token = json.loads(rl("invite", "--json", station=a_home).stdout)["token"]
        paired = rl("pair", "--json", station=b_home, stdin=token)
        assert paired.returncode == 0, paired.stderr
        info = json.loads(paired.stdout)
        line, code = info["line"], info["safety_code"]
        # a token is single-use
        again = rl("pair", station=b_home, stdin=token)
        assert again.returncode != 0 and "already used" in again.stderr
        # until both confirm, the line carries no traffic and says so
        st = json.loads(rl("status", "--json", station=b_home).stdout)["lines"][0]
        assert not st["active"] and st["safety_code"] == code
        human = rl("status", station=b_home).stdout
        assert "WAITING FOR SAFETY-CODE CONFIRMATION" in human
        # a wrong safety code is refused and changes nothing
        wrong = "0000-0000" if code != "0000-0000" else "1111-1111"
        out = rl("confirm", line[:8], wrong, station=b_home)
        assert out.returncode != 0 and "does not match" in out.stderr
        assert not json.loads(rl("status", "--json", station=b_home).stdout)["lines"][0]["confirmed"]["local"]
        # an unknown line
        out = rl("send", "nosuchline", "hello", station=b_home)
        assert out.returncode != 0 and "no line matches" in out.stderr
        # accepted before confirmation: durable in the outbox, not signed
        queued = json.loads(rl("send", "EUCOM", "queued before confirmation", "--json", station=b_home).stdout)
        assert queued["seq"] is None and queued["outbox"] >= 1
        assert rl("confirm", line[:8], code, station=b_home).returncode == 0
        assert rl("confirm", line[:8], code, station=a_home).returncode == 0
        asyncio.run(wait_until(lambda: _synced(a_home, b_home), "line in sync"))
        # oversized message: a documented limit, nothing accepted
        before = json.loads(rl("status", "--json", station=a_home).stdout)["lines"][0]["our_seq"]
        out = rl("send", "NDMC", "x" * (cfg.limits.max_text_bytes + 1), station=a_home)
        assert out.returncode != 0 and "max_text_bytes" in out.stderr
        sent = rl("send", "NDMC", "Line test. Please answer.", "--priority", "flash", station=a_home)
        assert sent.returncode == 0 and "id " in sent.stdout
        after = json.loads(rl("status", "--json", station=a_home).stdout)["lines"][0]["our_seq"]
        assert after == before + 1
        asyncio.run(wait_until(lambda: _drained(a_home, b_home), "traffic receipted"))
        log = json.loads(rl("log", "NDMC", "--json", station=a_home).stdout)["rows"]
        assert [r["text"] for r in log if r["from"] == "NDMC"] == ["queued before confirmation"]
        assert any(r["text"] == "Line test. Please answer." and r["receipted"] for r in log if r["from"] == "us")
        assert "VERIFIED" in rl("verify", station=a_home).stdout

    asyncio.run(main())


def test_unreachable_peer_message_waits_in_outbox_and_status_says_so(tmp_path: Path) -> None:
    a_home, b_home = init_pair(tmp_path)
    a, b = StationProc(a_home), StationProc(b_home)

    async def main() -> None:
        await a.start()
        await b.start()
        token = (await a.call({"op": "invite"}))["token"]
        info = await b.call({"op": "pair", "token": token})
        for home in (a, b):
            await home.call({"op": "confirm", "line": info["line"], "code": info["safety_code"]})
        await wait_until(lambda: _synced(a_home, b_home), "line in sync")
        a.stop()  # the inviting station goes away
        try:
            out = await asyncio.to_thread(rl, "send", "EUCOM", "are you there?", "--json", station=b_home)
            assert out.returncode == 0
            assert "outbox" in json.loads(out.stdout)["state"]
            await wait_until(lambda: _unsynced(b_home), "NDMC to notice the path is down")
            human = await asyncio.to_thread(rl, "status", station=b_home)
            assert "wait in the outbox" in human.stdout and "down" in human.stdout
            # the peer comes back: the message goes out by itself
            await a.start()
            await wait_until(lambda: _drained(a_home, b_home), "the queued message to be delivered")
        finally:
            a.stop()
            b.stop()

    asyncio.run(main())


def test_expired_and_foreign_tokens_are_refused(tmp_path: Path) -> None:
    a_home, b_home = init_pair(tmp_path)
    cfg_path = a_home / "config.json"
    obj = json.loads(cfg_path.read_text())
    obj["limits"]["invite_ttl_seconds"] = 0.2
    cfg_path.write_text(json.dumps(obj))
    a, b = StationProc(a_home), StationProc(b_home)

    async def main() -> None:
        await a.start()
        await b.start()
        try:
            token = (await a.call({"op": "invite"}))["token"]
            await asyncio.sleep(0.3)  # the token's real expiry is wall-clock time; nothing else sleeps
            out = await asyncio.to_thread(rl, "pair", station=b_home, stdin=token)
            assert out.returncode != 0 and "expired" in out.stderr
            obj["limits"]["invite_ttl_seconds"] = 600
            cfg_path.write_text(json.dumps(obj))
            a.stop()
            await a.start()  # a restart forgets unused invites: new pairing listener, new tokens
            token = (await a.call({"op": "invite"}))["token"]
            a.stop()
            await a.start()
            out = await asyncio.to_thread(rl, "pair", station=b_home, stdin=token)
            assert out.returncode != 0
            assert "cannot reach" in out.stderr or "did not issue" in out.stderr
            assert not (await b.call({"op": "status"}))["lines"]  # nothing was recorded
        finally:
            a.stop()
            b.stop()

    asyncio.run(main())


async def _line(home: Path) -> dict[str, object]:
    out = await asyncio.to_thread(rl, "status", "--json", station=home)
    line: dict[str, object] = json.loads(out.stdout)["lines"][0]
    return line


async def _synced(*homes: Path) -> bool:
    lines = [await _line(h) for h in homes]
    return all(ln["synced"] and ln["active"] for ln in lines)


async def _unsynced(home: Path) -> bool:
    return not (await _line(home))["synced"]


async def _drained(*homes: Path) -> bool:
    lines = [await _line(h) for h in homes]
    return all(ln["outbox"] == 0 and ln["unreceipted"] == 0 for ln in lines)




@pytest.mark.parametrize("content", [None, b"\xff\xfe\x00garbage", b"[" * 3000, b"[" * 100 + b"]" * 100])
def test_notice_area_from_a_bad_file_is_one_line(tmp_path: Path, content: bytes | None) -> None:
    """'--area @FILE' was read outside the command's error handling, and only ValueError caught:
    a missing file, a binary one or deep nesting was a traceback. Refused before any station is asked."""
    from click.testing import CliRunner

    from redline.cli import main as cli

    area = tmp_path / "area.json"
    if content is not None:
        area.write_bytes(content)
    res = CliRunner().invoke(cli, ["notice", "L", "--station", str(tmp_path / "st"), "--kind", "air", "--area",
                                   f"@{area}", "--floor", "0", "--ceiling", "10", "--start", "2030-01-01T00:00Z",
                                   "--end", "2030-01-02T00:00Z"])  # fmt: skip
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), (res.exception, res.output)
    assert res.output.startswith("error: --area") and len(res.output.strip().splitlines()) == 1, res.output


def _numeric_options() -> list[tuple[str, str, object]]:
    import click

    from redline.cli import main as cli

    def walk(cmd: click.Command, path: str) -> list[tuple[str, str, object]]:
        out = [(path, p.name or "", p.type) for p in cmd.params
               if isinstance(p, click.Option) and isinstance(p.type, click.types._NumberParamTypeBase)]  # fmt: skip
        if isinstance(cmd, click.Group):
            for name, sub in cmd.commands.items():
                out += walk(sub, f"{path} {name}".strip())
        return out

    return walk(cli, "")


def test_every_numeric_option_of_every_command_has_a_range() -> None:
    """A number from the command line is a size, a count or a time: unbounded, '--limit 10**23' was an
    OverflowError traceback from SQLite, and '--seconds 1e9' a tone the size of the machine's memory.
    Every numeric option of every command carries a range, checked by click before anything runs."""
    import click

    found = _numeric_options()
    assert len(found) >= 8, found  # the walk reaches the commands' options
    # A notice's numbers go to the station as they are: its schema (kinds.Notice) is their one rule,
    # and it refuses one out of range in one line (tests/test_attacks_ops.py); a range here would be
    # a second copy of it.
    schema = {("notice", "radius_m"), ("notice", "floor_m"), ("notice", "ceiling_m"), ("notice", "margin_m")}
    unbounded = [(cmd, name) for cmd, name, kind in found if not isinstance(kind, click.IntRange | click.FloatRange)]
    assert sorted(unbounded) == sorted(schema), unbounded


@pytest.mark.parametrize("value", ["1" + "0" * 25, "0", "-5"])
def test_a_log_limit_out_of_range_is_one_line(tmp_path: Path, value: str) -> None:
    res = rl("log", "L", "--limit", value, station=tmp_path / "none")
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "Invalid value for '--limit'" in res.stderr


def test_the_cli_page_limit_is_the_station_s_largest_page() -> None:
    """cli/common.py states the station's largest page (500) instead of importing it (ops.engine
    loads shapely, which the CLI's start does not): the two must not drift apart."""
    import click

    from redline.cli.common import limit_option
    from redline.ops.engine import NOTICES_PAGE_MAX
    from redline.station import VIEW_PAGE_MAX

    @limit_option
    def probe(limit: int) -> None: ...

    option = next(p for p in getattr(probe, "__click_params__", []) if p.name == "limit")
    assert isinstance(option.type, click.IntRange) and option.type.max == NOTICES_PAGE_MAX == VIEW_PAGE_MAX
