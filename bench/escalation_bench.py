"""Cost of one FLASH escalation step (issue 4): `python -m bench.escalation_bench`.

A station holding N unacknowledged FLASH messages from the peer runs `LineOps.due(now)` on every
tick (10 a second); when a step falls due it decides an ESCALATED envelope. Measured: the cost of a
tick with nothing due (what every tick pays) and of a tick in which one step is due, with N pending,
next to one Ed25519 sign (what recording the step then costs at least).
"""

from __future__ import annotations

import statistics
import time

import nacl.signing

from redline.config import Limits
from redline.ops.engine import LineOps
from redline.ops.model import Entry

US, PEER = "a" * 64, "b" * 64
T0 = 1_652_443_200_000


def flash(seq: int, at: int) -> Entry:
    return Entry(sender=PEER, ours=False, seq=seq, id=f"{seq:064x}", kind="FLASH", prio="FLASH", sent_at=at,
                 stored_at=at, lang="ru", content={"text": "FLASH"})  # fmt: skip


def measure(pending: int) -> dict[str, float]:
    ops = LineOps(us=US, peer=PEER, limits=Limits(), since=T0)
    for i in range(pending):
        ops.observe(flash(i + 1, T0 + i))  # arrivals 1 ms apart: steps fall due 1 ms apart too
    idle, step = [], []
    for _ in range(200):
        t = time.perf_counter()
        ops.due(T0)  # nothing due yet
        idle.append(time.perf_counter() - t)
    step_ms = int(Limits().flash_ack_seconds * 1000) // len(Limits().escalation_levels)
    for i in range(min(pending, 200)):
        t = time.perf_counter()
        intents, _ = ops.due(T0 + step_ms + i)
        step.append(time.perf_counter() - t)
        for n, intent in enumerate(intents):  # record the decisions, as the station would
            ops.observe(Entry(sender=US, ours=True, seq=10**6 + i * 10 + n, id=f"{10**6 + i * 10 + n:064x}",
                              kind=intent.kind, prio=intent.prio, sent_at=T0, stored_at=T0,
                              lang="en", content=intent.content))  # fmt: skip
    return {"pending": pending, "idle_tick_us": statistics.median(idle) * 1e6,
            "step_tick_us": statistics.median(step) * 1e6}  # fmt: skip


def main() -> None:
    key = nacl.signing.SigningKey.generate()
    t = time.perf_counter()
    for _ in range(2000):
        key.sign(b"x" * 400)
    sign_us = (time.perf_counter() - t) / 2000 * 1e6
    print(f"Ed25519 sign (same run): {sign_us:.1f} us")
    print(f"{'pending FLASH':>14} {'tick, nothing due':>18} {'tick, one step due':>19} {'step / sign':>12}")
    for n in (1, 100, 1000):
        r = measure(n)
        ratio = r["step_tick_us"] / sign_us
        print(f"{n:>14} {r['idle_tick_us']:>15.1f} us {r['step_tick_us']:>16.1f} us {ratio:>11.1f}x")


if __name__ == "__main__":
    main()
