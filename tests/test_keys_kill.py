"""kill -9 in the middle of each rotation step, 10 times each, with real station processes under
two-way traffic (issue 13): the line recovers with one consistent key history at both ends.

The steps of ``redline keys rotate`` (redline/keys.py), signing and TLS keys alternately: the
command killed at a random moment of its run (loading, preparing the next key's files, or asking
the station to file the KEY; then run again: it takes up what it finds); the rotating station
killed while it files and seals the KEY; around the promotion of the key files (after the peer's
receipt) the rotating station or the peer, in turn. Each kill lands at a random moment of
its step (seeded). After each rotation settles, and at the end: both stores hold the same KEY
envelopes of NDMC's chain (so the same key windows), NDMC signs with and presents the last keys
they name, no rotation is left half done, nothing sent was lost and ``redline verify`` passes at
both ends."""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from redline import canonical, identity
from redline import keys as keyfiles
from redline.envelope import split
from redline.errors import RedlineError
from redline.home import StationDir
from tests.procs import StationProc, both, paired_stations, wait_until
from tests.test_e2e_line import verify_cli

EACH = 10  # kills per step
STEPS = ("prepare", "file", "promote")


async def _rotate(home: Path, kind: str, root_key: Path | None = None, *more: str) -> asyncio.subprocess.Process:
    """'redline keys rotate --KIND' as the operator types it (the root key file: the station's first
    root unless given; ``more``: further options, like --new-root-key)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "redline", "keys", "rotate", f"--{kind}", "--root-key",
        str(root_key or home / "keys" / "root.key"), *more, "--station", str(home),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip


def _pending(home: Path) -> bool:
    keys = home / "keys"
    return (keys / keyfiles.NEXT_KEY).exists() or (keys / keyfiles.TLS_NEXT_CERT).exists()


def _key_history(home: Path, line: str, sender: str) -> list[tuple[int, str]]:
    """NDMC's KEY envelopes as this store holds them: (seq, id)."""
    ledger = StationDir(home).read_ledger()
    try:
        return [(seq, split(raw).id) for seq, raw in ledger.raw_envelopes(line, sender) if b'"KEY"' in raw[:400]]
    finally:
        ledger.close()


def _last_keys(home: Path, line: str, sender: str) -> tuple[str | None, str | None]:
    """The signing key id and the TLS SPKI hash NDMC's last KEYs name, from the chain."""
    ledger = StationDir(home).read_ledger()
    signing = tls = None
    try:
        for raw in ledger.raw_of_kind(line, sender, "KEY"):
            content = canonical.decode_object(split(raw).body_bytes or b"{}", "body")["content"]
            for c in content["certs"]:
                cert = json.loads(bytes.fromhex(c["data"]))
                if cert["role"] == "signing":
                    signing = cert["key_id"]
                else:
                    tls = cert["key"]
    finally:
        ledger.close()
    return signing, tls


def _texts(home: Path, line: str, sender: str) -> list[str]:
    """The TEXT messages of ``sender``'s chain as this store holds them, in seq order."""
    ledger = StationDir(home).read_ledger()
    try:
        out = []
        for _, raw in ledger.raw_envelopes(line, sender):
            body = canonical.decode_object(split(raw).body_bytes or b"{}", "body")
            if "text" in body.get("content", {}):
                out.append(body["content"]["text"])
        return out
    finally:
        ledger.close()


async def _sender(proc: StationProc, line: str, texts: list[str], stop: asyncio.Event) -> list[str]:
    """Send until told to stop; a retry reuses the idempotency key (the answer may be lost to a kill)."""
    sent: list[str] = []
    for i, text in enumerate(texts):
        if stop.is_set():
            break
        while True:
            try:
                await proc.call({"op": "send", "line": line, "text": text, "idem": f"{proc.home.name}-{i}"})
                sent.append(text)
                break
            except (RedlineError, OSError, ConnectionError, TimeoutError):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.02)
    return sent


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_minus_nine_in_each_rotation_step_leaves_one_key_history(tmp_path: Path) -> None:
    rng = random.Random(20261203)

    async def main() -> None:
        a, b, line, relays = await paired_stations(tmp_path, redial_max=1.0)
        fa, fb = StationDir(a.home).load_keys().fingerprint, StationDir(b.home).load_keys().fingerprint
        stop = asyncio.Event()
        texts = {p: [f"{p.home.name} {i:05d}" for i in range(100_000)] for p in (a, b)}
        traffic = [asyncio.ensure_future(_sender(p, line, texts[p], stop)) for p in (a, b)]
        kills = dict.fromkeys(STEPS, 0)

        async def settle(kind: str, cli: asyncio.subprocess.Process) -> None:
            """The operator runs the command again until the rotation is done (it is safe to repeat)."""
            while _pending(b.home) or cli.returncode != 0:
                cli = await _rotate(b.home, kind)
                await cli.wait()
                await wait_until(lambda: both(a, b, lambda ln: ln["synced"] and ln["outbox"] == 0),
                                 "the line in sync after the rotation", timeout=60)  # fmt: skip
                if not _pending(b.home):
                    break
            await wait_until(lambda: both(a, b, lambda ln: ln["synced"] and ln["outbox"] == 0),
                             "the line in sync", timeout=60)  # fmt: skip
        try:
            for i in range(EACH * len(STEPS)):
                step, kind = STEPS[i % len(STEPS)], ("signing", "tls")[(i // len(STEPS)) % 2]
                if step == "prepare":  # the command itself, at a random moment of its run
                    while True:
                        cli = await _rotate(b.home, kind)
                        await asyncio.sleep(rng.uniform(0.05, 0.3))
                        if cli.returncode is None:
                            cli.kill()
                            kills[step] += 1
                            await cli.wait()
                            break
                        await cli.wait()  # it was done already: let that rotation settle and try again
                        await settle(kind, cli)
                else:  # NDMC while it files and seals the KEY; around the promotion NDMC, or EUCOM storing it
                    victim = a if step == "promote" and i % 2 else b
                    cli = await _rotate(b.home, kind)
                    await asyncio.sleep(rng.uniform(0.3, 0.7) if step == "file" else rng.uniform(0.6, 1.2))
                    victim.kill9()
                    kills[step] += 1
                    await cli.wait()
                    await victim.start()
                await settle(kind, cli)
                assert _key_history(a.home, line, fb) == _key_history(b.home, line, fb)[: len(
                    _key_history(a.home, line, fb))]  # fmt: skip
            stop.set()
            sent = {p: await t for p, t in zip((a, b), traffic, strict=True)}
            await wait_until(
                lambda: both(a, b, lambda ln: ln["outbox"] == 0 and ln["unreceipted"] == 0 and ln["synced"]),
                "all traffic receipted", timeout=120,
            )  # fmt: skip
        finally:
            stop.set()
            a.stop()
            b.stop()
            for r in relays:
                await r.cut()
        print(f"kills {kills}; NDMC KEYs {len(_key_history(b.home, line, fb))}; sent {len(sent[a])}/{len(sent[b])}")
        assert kills["file"] == kills["promote"] == EACH and kills["prepare"] == EACH, kills
        # one key history at both ends: the same KEYs in NDMC's chain, and NDMC's key files are the last ones
        history = _key_history(b.home, line, fb)
        assert history == _key_history(a.home, line, fb) and len(history) >= EACH * len(STEPS)
        signing, tls = _last_keys(b.home, line, fb)
        keys = StationDir(b.home).load_keys()
        assert keys.key_id == signing and identity.spki_hash(keys.tls_cert_der) == tls and not _pending(b.home)
        # nothing sent was lost: once each and in order, at both ends
        for home in (a.home, b.home):
            assert _texts(home, line, fa) == sent[a] and _texts(home, line, fb) == sent[b]
        for home in (a.home, b.home):
            result = verify_cli(home)
            assert result.returncode == 0, result.stdout

    asyncio.run(main())
