"""Numbers a paired, authenticated peer controls must never become our loop bounds, allocation
sizes or the size of one burst (attack_peer review). SessionPair: real keys, real SQLite, real
frames; only the sockets and the clock are simulated."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from redline import canonical
from redline.config import Limits
from redline.protocol.events import Send
from redline.protocol.framing import FrameType, encode_frame
from redline.session import LineSession
from redline.testing import SessionPair


def hello(sp: SessionPair, sender: LineSession, *, yours_seq: int, yours_id: str | None) -> bytes:
    """A HELLO in ``sender``'s name, as its station would write it, but claiming ``yours``."""
    mine = sender.ledger.head(sp.line, sender.us)
    obj: dict[str, Any] = {
        "versions": [1], "line": sp.line, "station": sender.us,
        "mine": {"seq": mine[0], "id": mine[1]}, "yours": {"seq": yours_seq, "id": yours_id},
        "time": sp.clock.wall, "confirmed": True, "checkpoint": sender.link.checkpoint_n,
    }  # fmt: skip
    return encode_frame(FrameType.HELLO, canonical.encode(obj))


def test_a_replayed_old_checkpoint_proposal_reads_one_row_whatever_the_history(tmp_path: Path) -> None:
    """The peer sends its own validly signed proposal n=1 again, as often as it likes: we answer
    with the stored pair, read by its key. Before, each copy loaded and decoded every checkpoint
    row of the line (O(history) on the event loop per ~400-byte frame). The history is grown with
    copies of the real rows (the store does not check them; the replay path only reads)."""
    sp = SessionPair(tmp_path, paths=1, limits=Limits(checkpoint_every_envelopes=1, test_times_utc=()))
    try:
        sp.run()
        sp.send("a", "x")
        sp.run()
        proposer, victim = (sp.a, sp.b) if sp.a.is_proposer else (sp.b, sp.a)
        first = victim.ledger.checkpoint(sp.line, 1)
        assert first is not None
        replay = encode_frame(FrameType.CHECKPOINT, first[1].encode())
        head = victim.ledger.head(sp.line, victim.us)
        victim.path_up("evil", sp.clock.now, sp.clock.wall)
        victim.receive("evil", hello(sp, proposer, yours_seq=head[0], yours_id=head[1]), sp.clock.now, sp.clock.wall)

        def cost() -> float:  # the fastest of a few: noise on a shared machine only adds
            best = float("inf")
            for _ in range(5):
                t0 = time.perf_counter()
                out = victim.receive("evil", replay, sp.clock.now, sp.clock.wall)
                best = min(best, time.perf_counter() - t0)
                sent = [a.data for a in out if isinstance(a, Send)]
                assert sent == [replay, encode_frame(FrameType.COSIGN, first[2].encode())]  # the stored pair
            return best

        small = cost()
        last = victim.ledger.last_checkpoint(sp.line)
        assert last is not None
        with victim.ledger.batch():
            for n in range(last[0] + 1, last[0] + 1 + 5_000):
                victim.ledger.add_checkpoint(sp.line, n, last[1], last[2])
        big = cost()
        # Before: ~6 us per stored row, 5,000 rows ~ 200x the one-row cost.
        assert big < 10 * small, f"{big / small:.0f}x the cost with 5,000 more checkpoints held"
    finally:
        sp.close()
