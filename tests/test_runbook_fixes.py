"""Holes a reviewer found following docs/OPERATIONS.md literally as a 3 a.m. operator
(/tmp/runbook/REPORT.md): each test names the attack or the behaviour, and failed before its fix."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from redline import control
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
