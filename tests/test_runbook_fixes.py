"""Holes a reviewer found following docs/OPERATIONS.md literally as a 3 a.m. operator
(/tmp/runbook/REPORT.md): each test names the attack or the behaviour, and failed before its fix."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from redline import control
from redline.cli import main
from redline.home import StationDir
from redline.identity import show_fingerprint
from redline.testing import StationPair


def _run_stations(tmp_path: Path, body: Any) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as pair:
            await body(pair)

    asyncio.run(main())


async def _ask(pair: StationPair, request: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = await control._reply(pair.a, json.dumps({**request, "line": pair.line}).encode())
    return answer


# -- an idempotency key reused for another message ------------------------------------------------
def test_an_idempotency_key_reused_for_different_text_is_refused_not_silently_dropped(tmp_path: Path) -> None:
    async def body(pair: StationPair) -> None:
        first = await _ask(pair, {"op": "send", "text": "idem test", "idem": "k1"})
        assert first["ok"] is True, first
        again = await _ask(pair, {"op": "send", "text": "idem test", "idem": "k1"})  # a retry: the same message
        assert again["ok"] is True and again["result"]["outbox"] == first["result"]["outbox"]
        other = await _ask(pair, {"op": "send", "text": "different text", "idem": "k1"})
        assert other["ok"] is False, other
        assert "this idempotency key was already used for a different message" in other["error"]
        assert "NOT sent" in other["error"]
        # the same key as another kind (a FLASH for a text) is another message too
        flash = await _ask(pair, {"op": "send", "text": "idem test", "priority": "flash", "idem": "k1"})
        assert flash["ok"] is False, flash
        texts = [i.content.get("text") for i in pair.a.ledger.pending(pair.line)]
        assert "different text" not in texts

    _run_stations(tmp_path, body)


# -- verify --peer-fingerprint in the forms the pairing shows -------------------------------------
def _paired_on_disk(tmp_path: Path) -> tuple[StationDir, StationDir]:
    from redline.testing import make_station, pair_directly

    a, b = make_station(tmp_path, "EUCOM", "en", 17501), make_station(tmp_path, "NDMC", "ru", 17502)
    pair_directly(a, b)
    return a, b


def _cli(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"COLUMNS": "200"})


def test_verify_peer_fingerprint_takes_every_form_the_pairing_shows(tmp_path: Path) -> None:
    a, b = _paired_on_disk(tmp_path)
    fp = b.load_keys().fingerprint
    for given in (fp, fp[:32], fp.upper(), show_fingerprint(fp), show_fingerprint(fp).upper()):
        out = _cli("verify", "--station", str(a.path), "--peer-fingerprint", given)
        assert out.exit_code == 0, (given, out.output)
        assert "VERIFIED" in out.output and "changed" not in out.output


def test_verify_peer_fingerprint_refuses_a_short_prefix_as_a_typing_error_not_tampering(tmp_path: Path) -> None:
    a, b = _paired_on_disk(tmp_path)
    fp = b.load_keys().fingerprint
    out = _cli("verify", "--station", str(a.path), "--peer-fingerprint", fp[:16])
    assert out.exit_code == 1 and "is not a station fingerprint" in out.output
    assert "changed" not in out.output


def test_verify_peer_fingerprint_mismatch_exits_2_showing_the_digits_compared(tmp_path: Path) -> None:
    a, b = _paired_on_disk(tmp_path)
    wrong = a.load_keys().fingerprint[:32]  # our own, not the peer's
    out = _cli("verify", "--station", str(a.path), "--peer-fingerprint", wrong)
    assert out.exit_code == 2, out.output
    assert wrong in out.output and b.load_keys().fingerprint[:32] in out.output


# -- a FLASH can be acknowledged from what the tools print ----------------------------------------
PASSWORD = "test-password-1"


def _flash_scenario(tmp_path: Path, body: Any) -> None:
    """EUCOM sends two FLASHes; NDMC (a duty officer 'Dezhurny Orlov') must acknowledge both."""
    from nacl.pwhash.argon2id import MEMLIMIT_MIN, OPSLIMIT_MIN

    from redline import persons

    async def main_() -> None:
        sp = StationPair(tmp_path)
        persons.add_user(sp.dir_b.path, "Dezhurny Orlov", "duty", PASSWORD, ops=OPSLIMIT_MIN, mem=MEMLIMIT_MIN)
        async with sp:
            first = await sp.send("a", "Unidentified track, sector 4", kind="FLASH", prio="FLASH")
            second = await sp.send("a", "Second track, sector 7", kind="FLASH", prio="FLASH")
            await body(sp, first, second)

    asyncio.run(main_())


async def _cli_async(*args: str, stdin: str = "") -> Result:
    # The stations run on this loop: the command line talks to their control sockets from a thread.
    return await asyncio.to_thread(
        lambda: CliRunner().invoke(main, list(args), env={"COLUMNS": "200"}, input=stdin)
    )


def test_a_waiting_flash_is_acknowledged_from_what_flashes_status_and_log_print(tmp_path: Path) -> None:
    async def body(sp: StationPair, first: dict[str, Any], second: dict[str, Any]) -> None:
        at = ("--station", str(sp.dir_b.path))
        flashes = await _cli_async("flashes", *at, "EUCOM")
        assert flashes.exit_code == 0, flashes.output
        for f in (first, second):  # the id 'ack' takes, and the whole command, on screen
            assert f["id"][:8] in flashes.output
            assert f"redline ack EUCOM {f['id'][:8]} --user NAME" in flashes.output

        log = await _cli_async("log", *at, "EUCOM")
        assert log.exit_code == 0 and first["id"][:8] in log.output and second["id"][:8] in log.output
        assert "redline show EUCOM ID" in log.output

        # two FLASHes waiting are two lines in status, each with its seq, id and command
        status = await _cli_async("status", *at)
        waiting = [ln for ln in status.output.splitlines() if "FLASH WAITING" in ln]
        assert len(waiting) == 2, status.output
        assert any(f"seq {first['seq']} id {first['id'][:8]}" in w for w in waiting)
        assert any(f"seq {second['seq']} id {second['id'][:8]}" in w for w in waiting)

        # the id as printed acknowledges the first; the seq (fewer than 6 digits: no id) the second
        ack = await _cli_async("ack", *at, "EUCOM", first["id"][:8], "--user", "Dezhurny Orlov", stdin=PASSWORD + "\n")
        assert ack.exit_code == 0, ack.output
        ack = await _cli_async("ack", *at, "EUCOM", str(second["seq"]), "--user", "Dezhurny Orlov",
                               stdin=PASSWORD + "\n")  # fmt: skip
        assert ack.exit_code == 0, ack.output
        await sp.synced()
        status = await _cli_async("status", *at)
        assert "FLASH WAITING" not in status.output, status.output
        flashes = await _cli_async("flashes", *at, "EUCOM")
        assert "redline ack" not in flashes.output and flashes.output.count("Dezhurny Orlov") == 2

    _flash_scenario(tmp_path, body)


def test_ack_by_a_seq_the_peer_has_no_flash_at_is_one_clear_line(tmp_path: Path) -> None:
    async def body(sp: StationPair, first: dict[str, Any], second: dict[str, Any]) -> None:
        out = await _cli_async("ack", "--station", str(sp.dir_b.path), "EUCOM", "999", "--user", "Dezhurny Orlov",
                               stdin=PASSWORD + "\n")  # fmt: skip
        assert out.exit_code == 1 and "the peer has no FLASH seq 999" in out.output

    _flash_scenario(tmp_path, body)


# -- redline invite > FILE, then pair --token-file FILE ------------------------------------------
def test_pair_takes_the_file_invite_wrote_with_its_instructions_around_the_token(tmp_path: Path) -> None:
    from redline.station import Station
    from redline.testing import make_station
    from tests.procs import free_ports

    async def main_() -> None:
        ports = free_ports(2)
        da, db = make_station(tmp_path, "EUCOM", "en", ports[0]), make_station(tmp_path, "NDMC", "ru", ports[1])
        a, b = Station(da), Station(db)
        await a.start()
        await b.start()
        try:
            invited = await _cli_async("invite", "--station", str(da.path))  # as 'redline invite > token.txt'
            assert invited.exit_code == 0 and "Give this token" in invited.output
            saved = tmp_path / "token.txt"
            saved.write_text(invited.output)
            paired = await _cli_async("pair", "--station", str(db.path), "--token-file", str(saved))
            assert paired.exit_code == 0, paired.output
            assert "Paired with EUCOM" in paired.output and "Safety code" in paired.output
            # two different tokens in one file: which one is meant is not guessed
            saved.write_text("rl1-aaaa\nrl1-bbbb\n")
            twice = await _cli_async("pair", "--station", str(db.path), "--token-file", str(saved))
            assert twice.exit_code == 1 and "2 different pairing tokens" in twice.output
        finally:
            await a.close()
            await b.close()

    asyncio.run(main_())


# -- two inits of one folder at once -------------------------------------------------------------
def _init_process(folder: Path, name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "redline", "init", "--station", str(folder), "--name", name, "--lang", "en",
         "--listen", "127.0.0.1:7401"],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=60,
    )  # fmt: skip


def test_init_holds_the_folder_so_a_second_init_at_once_is_refused_in_one_line(tmp_path: Path) -> None:
    folder = tmp_path / "station"
    folder.mkdir()
    hold = StationDir(folder).hold("init")  # another init of this folder, still running
    try:
        second = _init_process(folder, "N2")
    finally:
        hold.release()
    assert second.returncode == 1, second.stderr
    assert "is held by" in second.stderr and len(second.stderr.strip().splitlines()) == 1
    assert not StationDir(folder).exists() and not (folder / "keys").exists()  # it wrote nothing
    first = _init_process(folder, "N1")  # once the other is done, init runs as ever
    assert first.returncode == 0, first.stderr
    keys = StationDir(folder).load_keys()
    keys.signing_cert.verify(keys.root_public)


def test_a_refused_init_leaves_no_folder_it_made(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["init", "--station", str(tmp_path / "new"), "--name", "N", "--lang", "en",
                                    "--listen", "localhost"])  # fmt: skip
    assert out.exit_code == 1 and "HOST:PORT" in out.output
    assert not (tmp_path / "new").exists()
