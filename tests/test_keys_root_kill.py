"""kill -9 of the RUNNING stations in the middle of each step of a root rotation, 10 times each,
under two-way traffic (issue 13, with tests/test_keys_kill.py's machinery): (a) NDMC killed at a
random moment while 'redline keys rotate --root' has it file its ROOT; (b) EUCOM killed at a random
moment around 'redline keys confirm-root' (while it files its ROOT_CONFIRM). Each time the killed
station is restarted and the operator runs the command again until it is done (both are safe to
repeat). After each rotation: both stores hold the same ROOT and ROOT_CONFIRM history (one of each
per root version), EUCOM's status names no code awaiting, and a signing-key rotation under the new
root ('keys rotate --signing --root-key NEW') is accepted by EUCOM. At the end nothing sent was
lost and ``redline verify`` passes at both ends."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from pathlib import Path

import pytest

from redline import canonical, identity, rotation
from redline import keys as keyfiles
from redline.envelope import split
from redline.home import StationDir
from tests.procs import StationProc, both, paired_stations, wait_until
from tests.test_e2e_line import verify_cli
from tests.test_keys_kill import _key_history, _last_keys, _rotate, _sender, _texts

EACH = 10  # kills per step


def _of_kind(home: Path, line: str, sender: str, kind: str) -> list[tuple[int, str, dict[str, object]]]:
    """``sender``'s envelopes of ``kind`` as this store holds them: (seq, id, content)."""
    ledger = StationDir(home).read_ledger()
    try:
        out = []
        for raw in ledger.raw_of_kind(line, sender, kind):
            env = split(raw)
            seq = int(canonical.decode_object(env.header_bytes, "header")["seq"])
            out.append((seq, env.id, canonical.decode_object(env.body_bytes or b"{}", "body")["content"]))
        return out
    finally:
        ledger.close()


def _in_outbox(home: Path, line: str, kind: str) -> int:
    """How many ``kind`` envelopes wait in this store's outbox (filed, not sealed yet)."""
    ledger = StationDir(home).read_ledger()
    try:
        return sum(item.kind == kind for item in ledger.pending(line, -1))
    finally:
        ledger.close()


async def _confirm_root(home: Path, line: str, code: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "redline", "keys", "confirm-root", "--line", line, code, "--station", str(home),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_minus_nine_of_running_stations_during_a_root_rotation_leaves_one_root_history(tmp_path: Path) -> None:
    rng = random.Random(20261203 + 13)

    async def main() -> None:
        a, b, line, relays = await paired_stations(tmp_path, redial_max=1.0)
        fa, fb = StationDir(a.home).load_keys().fingerprint, StationDir(b.home).load_keys().fingerprint
        stop = asyncio.Event()
        texts = {p: [f"{p.home.name} {i:05d}" for i in range(100_000)] for p in (a, b)}
        traffic = [asyncio.ensure_future(_sender(p, line, texts[p], stop)) for p in (a, b)]
        # where each kill landed: 'before' (nothing filed yet), 'filed' (the envelope durable, the
        # command not done), 'after' (the command had finished), 'offline' (before the command reached
        # the station, which it then found down: it filed the ROOT in the outbox, sealed at restart)
        landed: dict[str, dict[str, int]] = {"root": {}, "confirm": {}}
        took = {"root": 0.8, "confirm": 0.8}  # how long one command runs here, measured as we go

        async def synced() -> None:
            await wait_until(lambda: both(a, b, lambda ln: ln["synced"] and ln["outbox"] == 0), "the line in sync",
                             timeout=60)  # fmt: skip

        async def kill_during(victim: StationProc, cli: asyncio.subprocess.Process, step: str) -> str:
            began = time.monotonic()
            await asyncio.sleep(rng.uniform(0.2, 1.1) * took[step])
            running = cli.returncode is None
            victim.kill9()
            out = (await cli.communicate())[0].decode()
            assert "Traceback" not in out, out
            if not running:
                took[step] = time.monotonic() - began
            await victim.start()
            if "seals it when it next runs" in out:  # the command found the station down: its outbox
                return "offline"
            return "running" if running else "after"

        old = b.home / "keys" / "root.key"
        try:
            for i in range(EACH):
                version = i + 2
                new = tmp_path / "offline" / f"root{version}.key"
                new.parent.mkdir(exist_ok=True)
                public = bytes(identity.new_signing_key(new).verify_key)  # 'redline keys new-root PATH'
                # (a) NDMC killed while 'keys rotate --root' has it file the ROOT
                cli = await _rotate(b.home, "root", old, "--new-root-key", str(new))
                when = await kill_during(b, cli, "root")
                roots = _of_kind(b.home, line, fb, "ROOT")
                if when == "running":
                    when = "filed" if len(roots) == i + 1 or _in_outbox(b.home, line, "ROOT") else "before"
                landed["root"][when] = landed["root"].get(when, 0) + 1
                # the operator runs it once more, for the codes to read (the same ones, whatever it did before)
                again = await _rotate(b.home, "root", old, "--new-root-key", str(new), "--json")
                out = (await again.communicate())[0].decode()
                assert again.returncode == 0, out
                said = json.loads(out)["codes"][line]
                assert keyfiles.root_in_force(b.home / "keys") == (version, public)
                assert not (b.home / "keys" / keyfiles.ROOT_NEXT).exists()
                await synced()
                roots = _of_kind(b.home, line, fb, "ROOT")
                assert len(roots) == i + 1 and roots == _of_kind(a.home, line, fb, "ROOT"), (i, when)
                code = (await a.status_line())["root_code"]  # what EUCOM's operator compares by voice
                assert code == said == rotation.root_codes([line], dict(roots[-1][2]))[line], code  # type: ignore[arg-type]
                # (b) EUCOM killed around 'keys confirm-root' (while it files the ROOT_CONFIRM)
                cli = await _confirm_root(a.home, line, code)
                when = await kill_during(a, cli, "confirm")
                confirms = _of_kind(a.home, line, fa, "ROOT_CONFIRM")
                if when == "running":
                    when = "filed" if len(confirms) == i + 1 or _in_outbox(a.home, line, "ROOT_CONFIRM") else "before"
                landed["confirm"][when] = landed["confirm"].get(when, 0) + 1
                # right after the restart (the line not back yet): the status asks for the code again
                # only if the ROOT_CONFIRM was not filed (one filed, still in the outbox, counts)
                if (await a.status_line())["root_code"] is not None:  # not filed: the operator types it again
                    again = await _confirm_root(a.home, line, code)
                    out = (await again.communicate())[0].decode()
                    assert again.returncode == 0, out
                assert (await a.status_line())["root_code"] is None
                await synced()
                confirms = _of_kind(a.home, line, fa, "ROOT_CONFIRM")
                assert len(confirms) == i + 1 and confirms == _of_kind(b.home, line, fa, "ROOT_CONFIRM"), (i, when)
                assert confirms[-1][2]["root"]["id"] == roots[-1][1]  # type: ignore[index]
                ledger = StationDir(b.home).read_ledger()
                try:
                    assert rotation.unconfirmed_roots(ledger, fb, version) == []
                finally:
                    ledger.close()
                # a signing key certified by the new root: filed by NDMC, accepted by EUCOM
                cli = await _rotate(b.home, "signing", new)
                out = (await cli.communicate())[0].decode()
                assert cli.returncode == 0, out
                await synced()
                history = _key_history(b.home, line, fb)
                assert history == _key_history(a.home, line, fb) and len(history) == i + 1
                assert _last_keys(a.home, line, fb)[0] == StationDir(b.home).load_keys().key_id
                assert StationDir(b.home).load_keys().signing_cert.verify(public, station=fb)
                old = new
            stop.set()
            sent = {p: await t for p, t in zip((a, b), traffic, strict=True)}
            await wait_until(
                lambda: both(a, b, lambda ln: ln["outbox"] == 0 and ln["unreceipted"] == 0 and ln["synced"]),
                "all traffic receipted", timeout=120,
            )  # fmt: skip
            alarms = (await a.call({"op": "status"}))["alarms"] + (await b.call({"op": "status"}))["alarms"]
        finally:
            stop.set()
            a.stop()
            b.stop()
            for r in relays:
                await r.cut()
        print(f"kills landed {landed}; sent {len(sent[a])}/{len(sent[b])}")
        assert sum(landed["root"].values()) == sum(landed["confirm"].values()) == EACH, landed
        assert not [al for al in alarms if "refused" in str(al).lower()], alarms
        # one root history at both ends
        assert _of_kind(a.home, line, fb, "ROOT") == _of_kind(b.home, line, fb, "ROOT")
        assert _of_kind(a.home, line, fa, "ROOT_CONFIRM") == _of_kind(b.home, line, fa, "ROOT_CONFIRM")
        for home in (a.home, b.home):
            assert _texts(home, line, fa) == sent[a] and _texts(home, line, fb) == sent[b]
        for home in (a.home, b.home):
            result = verify_cli(home)
            assert result.returncode == 0, result.stdout
            assert f"root version {EACH + 1}" in result.stdout, result.stdout

    asyncio.run(main())
