"""The transcript's read view: ``Row`` and ``Transcript``, what ``redline log``, ``GET
/api/lines/{line}/log`` and the console show of a line (built by ``views.transcript``). Standard
library only, like ``redline.status``: ``redline log`` beside a running station reads the station's
page back into these (``readmodel.from_obj``) without importing the content registry, envelopes or
the store."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from redline.firstuse import dataclass_on_first_use

PAGE_MAX = 1000  # the most rows a running station gives in one page (the API's log and 'redline log')


@dataclass_on_first_use(frozen=True)
class Row:
    """One entry of a transcript: an envelope of either side, or an unsigned outbox item."""

    ours: bool
    sender: str  # "us" or the peer's name
    seq: int | None
    id: str | None
    kind: str
    priority: str
    sent_at: int | None
    stored_at: int
    lang: str | None
    text: str
    content: Mapping[str, Any]
    receipted: bool
    state: str
    outbox: int | None = None
    ack: Mapping[str, Any] | None = None
    revoked: str | None = None  # "signed by a revoked key": which REVOKE flags it (PROTOCOL.md 5.9)

    def to_obj(self) -> dict[str, Any]:
        obj = asdict(self)
        obj["from"] = obj.pop("sender")
        return obj

    @staticmethod
    def json_fields(obj: dict[str, Any]) -> dict[str, Any]:
        """``to_obj``'s JSON as this row's fields, for ``readmodel.from_obj``: ``from`` is ``sender``."""
        if "sender" in obj:
            raise ValueError("extra fields found (sender)")
        return {("sender" if k == "from" else k): v for k, v in obj.items()}


@dataclass_on_first_use(frozen=True)
class Transcript:
    line: str
    peer: str
    rows: tuple[Row, ...]
    outbox: tuple[Row, ...]
    total: int  # envelopes of both sides held; ``rows`` may be fewer

    @property
    def partial(self) -> bool:
        return len(self.rows) < self.total

    def to_obj(self) -> dict[str, Any]:
        return {
            "line": self.line, "peer": self.peer, "rows": [r.to_obj() for r in self.rows],
            "outbox": [r.to_obj() for r in self.outbox], "total": self.total, "shown": len(self.rows),
        }  # fmt: skip

    @staticmethod
    def json_fields(obj: dict[str, Any]) -> dict[str, Any]:
        """``to_obj``'s JSON as this page's fields, for ``readmodel.from_obj``: ``shown`` is how many
        rows it holds, said for a script; it must say so."""
        fields = {k: v for k, v in obj.items() if k != "shown"}
        rows = obj.get("rows")
        if type(obj.get("shown")) is not int or not isinstance(rows, list) or obj["shown"] != len(rows):
            raise ValueError("expected 'shown' to be the number of rows")
        return fields
