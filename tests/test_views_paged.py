"""The flash, tests, requests and translations views are paged (attack_ops V2).

They held every FLASH, test, request and translation the peer ever sent, texts included, and each
console fetched all four every 5 s: 2,000 peer FLASHes of 50 KB (100 MB of the peer's own disk
budget) made a 101 MB flash view per refresh per console. Now the API and the control socket give
a page (``offset``, ``limit``: 100 by default, at most 500), what is still open first, each text
cut at 2,000 characters. Driven on LineOps and Station's own view code (no network)."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from redline.config import Limits
from redline.ops.engine import LineOps
from redline.ops.model import Entry
from redline.station import VIEW_PAGE, VIEW_TEXT_CHARS, Station

US, PEER, LINE = "a" * 64, "b" * 64, "c" * 32
T0 = 1_652_443_200_000


class _Station:
    """Just what Station's view code reads: one line's ops and the clock."""

    def __init__(self, ops: LineOps) -> None:
        self.ops = {LINE: ops}
        self.keys = SimpleNamespace(fingerprint=US)

    def session(self, line: str) -> Any:
        return SimpleNamespace(line=line, peer=PEER)

    def wall(self) -> int:
        return T0 + 10_000

    view = Station.view
    flash_view = Station.flash_view
    tests_view = Station.tests_view
    requests_view = Station.requests_view
    translations_view = Station.translations_view
    calls_view = Station.calls_view
    voice_view = Station.voice_view  # named by Station.view, not called here
    refused_view = Station.refused_view
    notices_view = Station.notices_view


def _flashes(n: int, open_from: int) -> LineOps:
    """``n`` FLASHes of 50 KB from the peer; those before seq ``open_from`` acknowledged here."""
    ops = LineOps(us=US, peer=PEER, limits=Limits(test_times_utc=()), since=0)
    for seq in range(1, n + 1):
        ops.observe(Entry(sender=PEER, ours=False, seq=seq, id=f"{seq:064x}", kind="FLASH", prio="FLASH", sent_at=T0,
                          stored_at=T0 + seq, lang="ru", content={"text": "x" * 50_000}))  # fmt: skip
    ack = Entry(sender=US, ours=True, seq=1, id="f" * 64, kind="ACK", prio="FLASH", sent_at=T0, stored_at=T0,
                lang="en", content={})  # fmt: skip
    for f in ops.flash.flashes.values():
        if f.entry.seq < open_from:
            f.ack = ack  # as our officer's ACK would (the view reads only that)
    return ops


def test_a_peer_flooding_flashes_of_50_kb_gets_a_bounded_page_into_each_console_refresh() -> None:
    st = _Station(_flashes(2000, open_from=1851))
    page = st.view(LINE, "flash")  # what the API and the control socket give without offset/limit
    body = json.dumps(page)
    assert len(page) == VIEW_PAGE and len(body) < 400_000, len(body)  # was 101 MB
    assert all(len(f["text"]) == VIEW_TEXT_CHARS + 1 and f["text"].endswith("…") for f in page)
    # The open FLASHes first (oldest first: the most overdue), the page in time order.
    assert [f["seq"] for f in page] == list(range(1851, 1951))
    second = st.view(LINE, "flash", offset=100)
    assert [f["seq"] for f in second] == [*range(1801, 1851), *range(1951, 2001)]
    assert len(st.view(LINE, "flash", limit=10_000)) == 500  # at most VIEW_PAGE_MAX, whatever is asked
    assert st.view(LINE, "flash", offset=5000) == []
    # In-process readers (metrics, the attention list) still see them all.
    assert len(Station.flash_view(st, LINE)) == 2000  # type: ignore[arg-type]


def test_the_translations_view_is_a_page_of_the_latest_translated_envelopes_with_texts_cut() -> None:
    ops = _flashes(300, open_from=1)
    for seq in range(301, 601):  # the peer translates each of its FLASHes, 9,000 characters each
        target = ops.flash.flashes[f"{seq - 300:064x}"].entry
        content = {"ref": target.ref, "text": "y" * 9000, "lang": "en", "translator": "bot"}
        ops.observe(Entry(sender=PEER, ours=False, seq=seq, id=f"{seq:064x}", kind="TRANSLATION", prio="ROUTINE",
                          sent_at=T0, stored_at=T0 + seq, lang="en", content=content))  # fmt: skip
    st = _Station(ops)
    page = st.view(LINE, "translations")
    assert list(page) == [f"{seq:064x}" for seq in range(201, 301)]  # the latest translated, in time order
    assert all(len(t["text"]) == VIEW_TEXT_CHARS + 1 for ts in page.values() for t in ts)
    assert list(st.view(LINE, "translations", offset=250, limit=100)) == [f"{seq:064x}" for seq in range(1, 51)]
    assert st.view(LINE, "requests") == [] and st.view(LINE, "tests")["to_answer"] == []


def test_the_calls_and_requests_views_are_pages_of_pairs_and_requests_with_subjects_cut() -> None:
    ops = LineOps(us=US, peer=PEER, limits=Limits(test_times_utc=()), since=0)
    for seq in range(1, 601):  # 600 open requests of 9,000 characters between 300 pairs of roles
        content = {"from_role": f"Role {seq % 300}", "to_role": "Minister", "subject": "s" * 9000, "windows": [],
                   "expires": T0 + 10**9}  # fmt: skip
        ops.observe(Entry(sender=PEER, ours=False, seq=seq, id=f"{seq:064x}", kind="CALL_REQUEST", prio="PRIORITY",
                          sent_at=T0, stored_at=T0 + seq, lang="en", content=content))  # fmt: skip
    st = _Station(ops)
    pairs = st.view(LINE, "calls")
    assert len(pairs) == VIEW_PAGE and len(json.dumps(pairs)) < 2_000_000  # was 300 pairs, 5.4 MB
    assert all(p["open"] == 2 and len(p["outcomes"]) == 2 for p in pairs)  # the counts and its requests
    assert all(len(r["subject"]) == VIEW_TEXT_CHARS + 1 for p in pairs for r in p["outcomes"])
    requests = st.view(LINE, "requests")
    assert [r["seq"] for r in requests] == list(range(1, 101))  # open ones, the oldest first
