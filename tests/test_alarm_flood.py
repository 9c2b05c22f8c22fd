"""A peer cannot push a real alarm out of the station's list (Station.alarms: status and the console
show the latest) by making many alarms of one kind, each naming a number it chose.

The list kept the latest 200 rows and folded only a repeat of a line's latest text: 200 signed
receipts for seqs beyond our chain, each refused with an alarm naming its seq, pushed an
EQUIVOCATION alarm out. Now, past 200 rows, the oldest row of the most numerous kind goes.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from redline.protocol.framing import FrameType, encode_frame
from redline.statements import Receipt
from redline.station import ALARMS_KEPT
from redline.testing import StationPair


def test_a_flood_of_distinct_refused_receipts_leaves_an_equivocation_alarm_in_place(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            a = sp.a
            session = a.sessions[sp.line]
            a.alarm(sp.line, "alarm", "EQUIVOCATION: the peer signed two envelopes at seq 7 (stand-in)")
            a.alarm(sp.line, "alarm", "FLASH seq 3 from the peer was not acknowledged in time")
            path = next(p for (line, p) in a._conns if line == sp.line)
            bkeys = sp.dir_b.load_keys()
            tail = session.ledger.head(sp.line, session.us)[0]
            for i in range(1, ALARMS_KEPT + 50):  # each signed by the peer's real key, each refused
                r = Receipt(line=sp.line, by=bkeys.fingerprint, key=bkeys.key_id, of=session.us, seq=tail + i,
                            id=os.urandom(32).hex(), received_at=a.wall()).sign(bkeys.signing)  # fmt: skip
                session.receive(path, encode_frame(FrameType.RECEIPT, r.encode()), a.clock.monotonic(), a.wall())
            texts = [row["text"] for row in a.alarms]
            assert len(texts) == ALARMS_KEPT
            assert sum("receipt" in t for t in texts) == ALARMS_KEPT - 2, texts[:3]  # the flood, newest kept
            assert any(t.startswith("EQUIVOCATION") for t in texts) and any(t.startswith("FLASH seq 3") for t in texts)

    asyncio.run(main())


def test_alarms_of_many_kinds_still_go_oldest_first(tmp_path: Path) -> None:
    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            kinds = [f"kind {chr(65 + k % 26)}{chr(65 + k // 26)} happened" for k in range(ALARMS_KEPT + 5)]
            for text in kinds:  # all different kinds (no digits): the list drops the oldest, as before
                sp.a.alarm(sp.line, "alarm", text)
            assert [row["text"] for row in sp.a.alarms][-ALARMS_KEPT:] == kinds[5:]
            assert len(sp.a.alarms) == ALARMS_KEPT

    asyncio.run(main())


def test_a_peer_varying_its_call_request_subjects_cannot_push_an_equivocation_out(tmp_path: Path) -> None:
    """The peer's CALL_REQUESTs, each with a subject of its own and no digits in it: kinded by their
    text (with numbers and ids taken out), each row was a kind of its own, so past 200 rows the
    oldest row of the station went first, the EQUIVOCATION raised before them. Kinded by code,
    only the call requests go."""

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            a = sp.a
            a.alarm(sp.line, "alarm", "equivocation", line=sp.line[:8], exc="two envelopes at seq 5 (stand-in)")
            letters = "klmnopqrstuvwxyz"
            for i in range(ALARMS_KEPT + 10):  # each a real, signed call request from the peer
                subject = "Ceasefire " + "".join(letters[int(d, 16)] for d in f"{i:03x}")
                wanted = {"from_role": "Secretary", "to_role": "Minister", "subject": subject, "windows": []}
                await sp.act("b", "CALL_REQUEST", wanted, prio="priority")
            codes = [row["code"] for row in a.alarms]
            assert len(codes) == ALARMS_KEPT
            assert codes.count("equivocation") == 1, codes[:3]
            assert codes.count("call.request") == ALARMS_KEPT - 1  # the flood, its newest rows kept
            assert a.alarms[-1]["params"]["subject"].startswith("Ceasefire ")

    asyncio.run(main())
