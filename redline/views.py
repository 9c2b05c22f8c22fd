"""Read models shared by the CLI, the HTTP API and the console: each is built once, here, as a
frozen dataclass with ``to_obj()`` for JSON, so every front-end shows the same thing.

- ``parse_utc``: the one rule for times people type ("2022-05-13T12:00Z").
- ``summary``: one line for an envelope of any kind.
- ``transcript``: both sides of a line, oldest first, with receipt state, then the outbox; it
  says how many entries exist, so a front-end can say "50 of 301 shown".
- ``page_counts``: how much of each list of a paged view a page shows, and how many more there
  are ("12 more"), from the read model's sizes: the API's ``Redline-Page`` header, the control
  socket's ``pages`` and so the CLI's "12 more; --offset 150 for the next page" and the console.
- ``VerifyView``: a ``redline verify`` report.
- ``StationStatus``/``LineStatus``/``PathView`` (in ``redline.status``, which the fast CLI
  commands import alone): what status shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from redline import canonical, kinds
from redline.envelope import split
from redline.errors import LocalProtocolError, RedlineError
from redline.firstuse import dataclass_on_first_use
from redline.logview import PAGE_MAX, Row, Transcript
from redline.status import Accepted, LineStatus, PathView, StationStatus

if TYPE_CHECKING:  # types only: 'redline log' imports neither every view nor verification and the gate
    from redline.ledger.interface import LedgerStore
    from redline.ledger.model import LineRecord
    from redline.ledger.verify import LineReport
    from redline.ops.engine import LineOps
    from redline.ops.views import FlashView
    from redline.station import Station

__all__ = [
    "PAGE_MAX", "Accepted", "LineStatus", "PageCount", "PathView", "Row", "StationStatus", "Transcript", "VerifyView",
    "page_counts", "parse_utc", "station_page", "summary", "transcript",
]  # fmt: skip


def parse_utc(text: str, what: str = "time") -> int:
    """An ISO 8601 time with a zone ('2022-05-13T11:00Z') as ms since 1970."""
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise LocalProtocolError(f"{what} {text!r} is not a time like 2022-05-13T11:00Z") from None
    if dt.tzinfo is None:
        raise LocalProtocolError(f"{what} {text!r} has no time zone; write it in UTC with a trailing Z")
    return int(dt.astimezone(UTC).timestamp() * 1000)


def summary(kind: str, content: Mapping[str, Any]) -> str:
    """One line for an envelope: the registry's summary of its body (``kinds.summarize``)."""
    return kinds.summarize(kind, content)


def station_page(station: Station, line: str, limit: int) -> Transcript:
    """A running station's page of ``line`` (``GET /api/lines/{line}/log``, and ``redline log``
    beside it): ``transcript`` with the receipts the station holds in memory and each FLASH's
    acknowledgements."""
    session = station.session(line)
    flashes = {f.id: f for f in station.flash_view(session.line)}
    return transcript(
        station.ledger, session.record, limit=limit, receipted_ours=session.receipted_seq, flashes=flashes
    )


def transcript(
    ledger: LedgerStore, record: LineRecord, *, limit: int | None = 50, receipted_ours: int = 0,
    flashes: Mapping[str, FlashView] | None = None,
) -> Transcript:  # fmt: skip
    """The last ``limit`` entries of the line (every one with None), oldest first, then the outbox.
    ``receipted_ours``: a receipt of the peer verified but not yet stored (a running station)."""
    us = ledger.station
    rows: list[Row] = []
    total = 0
    for fp, ours in ((us, True), (record.peer, False)):
        revokes = revoked_runs(ledger, record.line, fp)
        receipt = ledger.latest_receipt(record.line, record.peer if ours else us)
        receipted = max(receipt[0] if receipt else 0, receipted_ours if ours else 0)
        head = ledger.head(record.line, fp)[0]
        total += head
        for seq, raw in ledger.raw_envelopes(record.line, fp, 0 if limit is None else max(0, head - limit)):
            env = split(raw)
            h = canonical.decode_object(env.header_bytes, "envelope header")
            content = canonical.decode_object(env.body_bytes, "envelope body")["content"] if env.body_bytes else {}
            flash = (flashes or {}).get(env.id)
            rows.append(Row(
                ours=ours, sender="us" if ours else record.peer_name, seq=seq, id=env.id, kind=h["kind"],
                priority=h["prio"], sent_at=h["sent_at"], stored_at=ledger.stored_at(record.line, fp, seq),
                lang=h["lang"], text=summary(h["kind"], content), content=content, receipted=seq <= receipted,
                state=("stored by the peer" if seq <= receipted else "sent, not yet receipted") if ours
                else "stored here",
                revoked=next((why for lo, hi, key, why in revokes if lo < seq < hi and h["key"] == key), None),
                ack=None if flash is None else {
                    "state": flash.state, "by": flash.acked_by, "at": flash.acked_at, "deadline": flash.deadline,
                    "escalations": [{"level": e.level, "at": e.at} for e in flash.escalations],
                },
            ))  # fmt: skip
    rows.sort(key=lambda r: (r.stored_at, not r.ours, r.seq or 0))
    outbox = tuple(
        Row(ours=True, sender="us", seq=None, id=None, kind=item.kind, priority=item.prio, sent_at=None,
            stored_at=item.accepted_at, lang=None, text=summary(item.kind, item.content), content=item.content,
            receipted=False, state="in the outbox: waits until the line is in sync", outbox=item.local)
        for item in ledger.pending(record.line, -1 if limit is None else limit)
    )  # fmt: skip
    shown = rows if limit is None else rows[-limit:]
    return Transcript(line=record.line, peer=record.peer_name, rows=tuple(shown), outbox=outbox, total=total)


@dataclass_on_first_use(frozen=True)
class PageCount:
    """One list of a paged view at one page: how many it holds in all (``total``), where the page
    starts and how long it may be; ``shown`` and ``more`` follow. A page is a slice of the view's
    whole order (``station._page``: what waits for a person first), so the sizes say it all."""

    total: int
    offset: int
    limit: int

    @property
    def shown(self) -> int:
        return min(self.limit, max(0, self.total - self.offset))

    @property
    def more(self) -> int:
        """Past this page: what the next pages hold."""
        return max(0, self.total - self.offset - self.limit)

    def to_obj(self) -> dict[str, int]:
        return {"total": self.total, "offset": self.offset, "limit": self.limit, "shown": self.shown,
                "more": self.more}  # fmt: skip


def page_counts(
    station: Station, line: str, what: str, *, offset: int = 0, limit: int | None = None
) -> dict[str, PageCount]:
    """Each list of the paged view ``what`` (``Station.view``'s ``offset`` and ``limit``) as a
    ``PageCount``, by its key in the view's answer (the flash, requests, calls and translations
    views are one list, named after the view; tests has three, notices two). The one place these
    are counted: from the read model's sizes (ops' dicts, in memory), never by building the view
    or reading the store."""
    from redline.ops.engine import NOTICES_PAGE, NOTICES_PAGE_MAX
    from redline.station import VIEW_PAGE, VIEW_PAGE_MAX

    ops = station.ops[station.session(line).line]
    sizes = _sizes(ops, what)
    if what == "notices":  # ops.notices_view's bounds
        limit = min(max(1, NOTICES_PAGE if limit is None else limit), NOTICES_PAGE_MAX)
    else:  # Station.view's: never the whole history
        limit = min(max(1, VIEW_PAGE if limit is None else limit), VIEW_PAGE_MAX)
    offset = max(0, offset)
    return {name: PageCount(total=n, offset=offset, limit=limit) for name, n in sizes.items()}


def _sizes(ops: LineOps, what: str) -> dict[str, int]:
    """How many items each list of the view ``what`` holds in all (the read model's sizes)."""
    if what == "flash":
        return {"flash": len(ops.flash.flashes)}
    if what == "tests":
        theirs = ops.tests.theirs.values()
        return {"tests": len(ops.tests.ours), "received": len(theirs),
                "to_answer": sum(1 for t in theirs if t.answer is None)}  # fmt: skip
    if what == "requests":
        return {"requests": len(ops.calls.requests)}
    if what == "calls":  # pairs of principals: of a request or of a call record
        pairs = {r.pair for r in ops.calls.requests.values()} | {c.pair for c in ops.calls.calls.values()}
        return {"calls": len(pairs)}
    if what == "translations":
        return {"translations": len(ops.translations)}
    if what == "notices":
        return {"active": len(ops.board), "conflicts": ops.board.conflict_count()}
    raise LocalProtocolError(f"{what!r} is not a paged view: flash, tests, requests, calls, translations, notices")


def revoked_runs(ledger: LedgerStore, line: str, station: str) -> list[tuple[int, int, str, str]]:
    """What each stored REVOKE of ``station``'s chain flags, as (after, revoke seq, key id, words): the
    envelopes at after < seq < revoke seq signed by that key are "signed by a revoked key". Read
    from the store without the gate: a REVOKE is stored only once the gate accepted it (the rule,
    and ``redline verify``'s check of it, is the gate's: ``TrustedLine.flagged``)."""
    from redline.statements import Checkpoint, Signed

    out = []
    for raw in ledger.raw_of_kind(line, station, "REVOKE"):
        env = split(raw)
        header = canonical.decode_object(env.header_bytes, "envelope header")
        if env.body_bytes is None:
            continue
        try:
            body = kinds.Revoke.parse(canonical.decode_object(env.body_bytes, "envelope body")["content"])
            rev = canonical.decode_object(bytes.fromhex(body.revocation.data), "revocation")
            after = Checkpoint.peek(Signed.decode(bytes.fromhex(body.checkpoint.proposal))).head(station).size
        except (RedlineError, ValueError, KeyError):
            continue
        why = (f"signed by a revoked key ({str(rev['key'])[:12]}, revoked by the station's root in its REVOKE at seq "
               f"{header['seq']}: {str(rev.get('reason'))[:200]})")  # fmt: skip
        out.append((after, int(header["seq"]), str(rev["key"]), why))
    return out


@dataclass_on_first_use(frozen=True)
class VerifyView:
    line: str
    ok: bool
    chains: Mapping[str, int]
    cosigned: Mapping[str, int]
    one_sided_tail: Mapping[str, int]
    checkpoints: int
    receipts: int
    problems: tuple[str, ...]
    evidence: tuple[str, ...] = field(default=())
    revoked: tuple[str, ...] = field(default=())  # runs of envelopes signed by a revoked key (a REVOKE)
    people: tuple[str, ...] = field(default=())  # person signatures checked up to the roots, in words
    recordings: tuple[str, ...] = field(default=())  # own call recordings matching the signed CALL_AUDIO
    notes: tuple[str, ...] = field(default=())  # e.g. a recording not kept on this station
    roots: tuple[str, ...] = field(default=())  # root rotations (ROOT) and their confirmation, in words

    @classmethod
    def of(cls, r: LineReport) -> VerifyView:
        name = r.names.get
        return cls(
            line=r.line, ok=r.ok, chains={name(k, k): v for k, v in r.chain_sizes.items()},
            cosigned={name(k, k): v for k, v in r.cosigned_sizes.items()},
            one_sided_tail={name(k, k): r.tail(k) for k in r.chain_sizes}, checkpoints=r.checkpoints,
            receipts=r.receipts, problems=tuple(str(p) for p in r.problems), evidence=tuple(str(p) for p in r.evidence),
            revoked=tuple(r.revoked(lambda fp: name(fp, fp[:12]))), people=tuple(r.people),
            recordings=tuple(r.recordings), notes=tuple(r.notes), roots=tuple(r.roots),
        )  # fmt: skip

    def to_obj(self) -> dict[str, Any]:
        obj = asdict(self)
        obj["problems"], obj["evidence"], obj["revoked"] = list(self.problems), list(self.evidence), list(self.revoked)
        obj["people"] = list(self.people)
        obj["recordings"], obj["notes"] = list(self.recordings), list(self.notes)
        obj["roots"] = list(self.roots)
        return obj

