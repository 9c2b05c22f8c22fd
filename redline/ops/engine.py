"""One line's operations, derived from its transcript: tests, FLASH, calls, rosters, translations.

Fed every stored envelope (``observe``) and the receipts (``receipted``); asked what is due at a
given time (``due``). Pure: no I/O, no clock reads. The station replays the ledger into a fresh
``LineOps`` at start, so pending escalations, tests and requests survive a crash and anything
overdue fires on the first ``due``.

What the peer sends is stored before ops sees it (it is signed evidence). Ops parses each
envelope's content once, into its kind's body type (``kinds.REGISTRY``), and reads only typed
fields from there on; content that does not parse, a reference to an envelope of a kind or side
the registry does not allow, or a person signature that does not count is kept in ``refused``
with the reason and alarmed, and not acted on at all (no default is filled in). Kinds this version
does not act on (a newer peer's) are stored and shown, never dropped. People: each side's roster is
pinned person by person on first sight, certificates of the side's root deciding every later change
(``persons.RosterPins``), and a person-signed envelope counts only when it verifies under the
pinned key and the person's role may sign it (``persons.check_signer``). Numbers in the peer's
bodies never set our deadlines, counts or sizes beyond our ``Limits``. Each time-dependent outcome
is decided by one side and recorded as an envelope; the other shows that verdict (guarantee 7).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from redline import kinds
from redline.alarmtext import AlarmCode, Param, Record
from redline.config import Limits
from redline.errors import LocalProtocolError, NoticeBoardError, RedlineError, SchemaError
from redline.ops.calls import Calls
from redline.ops.flash import FlashTracker
from redline.ops.linetests import LineTests
from redline.ops.model import MAX_TIME_MS, Alarm, Entry, Intent, Outbox
from redline.ops.notices import (
    MAX_ACTIVE_NOTICES_PER_SIDE,
    MAX_NOTICE_POINTS,
    Conflict,
    Notice,
    NoticeBoard,
    Standing,
    count_positions,
)
from redline.ops.views import ConflictRow, NoticeDetail, NoticeRow, NoticesPage, RefusedView, TranslationView
from redline.ops.voice import VOICE_KINDS, Voice
from redline.persons import Person, RosterPins, check_signer, roster_people, roster_removals, roster_too_long

NOTICES_PAGE = 100  # notices (and conflicts) per page of the notices view, by default
NOTICES_PAGE_MAX = 500
CONFLICTS_NAMED = 3  # conflicts spelled out in a notice's one conflict alarm; the rest are counted
REFUSED_KEPT = 1000


def peer_window_bounds(limits: Limits) -> tuple[int, int] | None:
    """The bounds a requested deadline window is clamped to, in ms, or None: use our own windows."""
    if not limits.honour_peer_windows:
        return None
    low = max(1000, int(limits.peer_window_min_seconds * 1000))
    return low, max(low, int(limits.peer_window_max_seconds * 1000))


class LineOps:
    def __init__(
        self, *, us: str, peer: str, limits: Limits, since: int, roots: Mapping[bool, bytes] | None = None,
        root_for: Callable[[str, int], bytes] | None = None,
    ) -> None:
        self.us, self.peer = us, peer
        self.limits = limits
        bounds = peer_window_bounds(limits)
        self.tests = LineTests(
            answer_ms=int(limits.test_answer_seconds * 1000), times=limits.test_slots, since=since, bounds=bounds
        )
        # The escalations the peer's FLASHes may make us sign beyond what those FLASHes took of the
        # peer's budget: a quarter of our reserve (16 MiB by default).
        reserve = min(limits.line_disk_reserve_bytes, limits.max_line_disk_bytes // 4)
        self.flash = FlashTracker(
            ack_ms=int(limits.flash_ack_seconds * 1000), levels=limits.escalation_levels, bounds=bounds,
            allowance=reserve // 4,
        )  # fmt: skip
        self.calls = Calls()
        self.voice = Voice(ring_ms=int(limits.ring_seconds * 1000), max_calls=limits.max_calls_per_line,
                           lost_ms=int(limits.call_lost_seconds * 1000))  # fmt: skip
        # Each side's roster as last published (ours? -> name -> person), and the pins that decide
        # whose signature counts: the same rule for both sides, so both ends agree on every ACK, and
        # the same limit as ``redline verify`` (persons.MAX_ROSTER_PEOPLE, the protocol's, not ours).
        # ``roots`` (ours? -> root public key): people's certificates are checked against them.
        self.rosters: dict[bool, dict[str, Person]] = {True: {}, False: {}}
        self.pins: dict[bool, RosterPins] = {
            side: RosterPins(root=(roots or {}).get(side), station=us if side else peer) for side in (True, False)
        }
        # The gate's rule for the root in force where a ROSTER stands (PROTOCOL.md 5.9, ROOT): a
        # person certificate of a station that rotated its root is checked under the root then.
        self._root_for = root_for
        self.translations: dict[str, list[TranslationView]] = {}  # envelope id -> its translations
        self.board = NoticeBoard()  # what is shown: the notices that stand, less those ended on our clock
        self.standing = Standing()  # what stands for each side by its own signed time: the rules' count
        self._unsent = _UnsentNotices()  # ours accepted, not signed yet: what the operator check adds
        self.notice_refs: dict[str, str] = {}  # notice ref ("<filer>:<seq>") -> envelope id, for the board's
        # Envelopes ops may need to find again by id. Plain TEXT is not kept here (a line carries
        # mostly text, and memory must stay flat): references to it are found in the ledger.
        self.entries: dict[str, Entry] = {}
        # What ops would not act on, with the reason: the latest REFUSED_KEPT (the envelopes
        # themselves stay in the ledger), so a peer's flood of refusals cannot grow memory or views.
        self.refused: list[tuple[Entry, str]] = []
        self.unknown_kinds: dict[str, int] = {}  # kinds stored but not acted on (a newer peer's), how many
        self._our_seq_to_id: dict[int, str] = {}
        self._due_at: float | None = None  # ``next_due``, until something changes what is due

    def accepted(self, kind: str, content: dict[str, Any]) -> None:
        """An item of ours accepted into the outbox and not signed yet (the line is down or out of
        sync), or found there at start. Our ACK: accepted, it is durable and goes out before
        anything filed after it, so the FLASH it names stops escalating now, as it does once the
        ACK is signed (PROTOCOL 5.9: no ESCALATED after the ACK). Our NOTICE and NOTICE_WITHDRAW:
        the operator's next notice is checked as if they were signed (``_unsent``), so nothing we
        sign later is over the limit or names a notice an earlier one replaced."""
        if kind in ("NOTICE", "NOTICE_WITHDRAW"):
            self._unsent.accepted(kind, content)
            return
        if kind != "ACK":
            return
        try:
            body = kinds.parse(kind, content)
        except RedlineError:
            return  # checked before it was accepted; one that is not an ACK acknowledges nothing
        if isinstance(body, kinds.Ack):
            self._due_at = None
            self.flash.ack_accepted(body.ref.id)

    def observe(self, e: Entry) -> list[Alarm]:
        out = Outbox()
        if e.ours:
            self._our_seq_to_id[e.seq] = e.id
        if e.kind == "TEXT" and e.prio != "FLASH":
            return out.alarms  # plain text: shown, never acted on (the station does not even replay it)
        self._due_at = None
        self.entries[e.id] = _kept(e)
        row = kinds.spec(e.kind)
        if row is None or row.reserved:
            self._unknown(e, row, out)
            return out.alarms
        if e.kind in ("NOTICE", "NOTICE_WITHDRAW"):
            if e.ours:
                self._unsent.signed(e.kind, e.content)
            # Every NOTICE and NOTICE_WITHDRAW its sender signed, refused or not, ends what of the
            # sender's had ended by its signed time (``Standing``, PROTOCOL.md 5.9): never at our
            # store time, and the same for every reader whatever the content says.
            for gone in self.standing.settle(e.sender, e.sent_at):
                self._off_board(gone)
        try:
            body = self._parse(row, e)
            self._check_refs(row, e, body)
            if row.person:
                check_signer(e.kind, e.content, self.pins[e.ours].people)
        except RedlineError as exc:
            # The envelope stays in the transcript (it is the sender's signed statement), but ops
            # does not act on it: no deadline, acknowledgement, answer, record, readout or notice.
            self._refuse(e, str(exc))
            level, code, params = self._refusal(row, e, exc)
            out.alarm(level, code, e.stored_at, **params)
            return out.alarms
        match body:
            case kinds.Roster():
                self._roster(e, body, out)
            case kinds.Notice() | kinds.NoticeWithdraw():
                self._notice(e, body, out)
            case kinds.Key():  # the gate moved the key window; people are told which key signs now
                # a TLS certificate travels with its DER; any other certificate is the signing key's
                tls = body.tls_der is not None
                signing = len(body.certs) > int(tls)
                if signing and tls:
                    key: AlarmCode = "key.both.ours" if e.ours else "key.both.peer"
                elif tls:
                    key = "key.tls.ours" if e.ours else "key.tls.peer"
                else:
                    key = "key.signing.ours" if e.ours else "key.signing.peer"
                out.alarm("info", key, e.stored_at, seq=e.seq)
            case kinds.Translation():
                self.translations.setdefault(body.ref.id, []).append(
                    TranslationView(lang=body.lang, text=body.text, translator=body.translator, ours=e.ours)
                )
            case _:
                self.tests.observe(e, body, out)
                self.flash.observe(e, body, out)
                self.calls.observe(e, body, out)
                self.voice.observe(e, body, out)
                if isinstance(body, kinds.CallAnswer) and (test := self.voice.test_of(body.ring.id)) is not None:
                    self.tests.answered_by_voice(test.id, e, body.person.name)  # a voice line test
        return out.alarms

    def _parse(self, row: kinds.Kind, e: Entry) -> kinds.Body:
        """The body, parsed once (the receiver's rule: unknown members are ignored, but in NOTICE)."""
        area = e.content.get("area") if row.body is kinds.Notice else None
        if isinstance(area, dict):
            # Counted against the protocol's limit before anything is read from it: a peer's
            # 8,000-point area costs a count, not 16,000 coordinates parsed.
            count_positions(area.get("coordinates"), MAX_NOTICE_POINTS)
        return row.body.parse(e.content)

    def _check_refs(self, row: kinds.Kind, e: Entry, body: kinds.Body) -> None:
        """Each reference names an envelope of a kind the registry allows, of the side it allows.
        Plain TEXT is not kept here, so a reference that may name one and is not found passes (the
        trackers find nothing to act on)."""
        named = dict(body.refs())
        for member, named_ref in named.items():
            # PROTOCOL 5.9: a reference's sender and seq are those of the envelope its id names. The
            # target is found by id; a sender/seq that disagree would be acted on elsewhere (a
            # NOTICE_WITHDRAW drops ``sender:seq`` from the board, summaries show the seq), so the
            # whole envelope is refused here, the one place references are resolved on receipt.
            held = self.entries.get(named_ref.id)
            if held is not None and (named_ref.sender != held.sender or named_ref.seq != held.seq):
                whose = "our" if held.ours else "the peer's"
                station = "that station" if named_ref.sender == held.sender else "another station"
                raise SchemaError(
                    f"{e.kind} '{member}' names the id of {whose} {held.kind} seq {held.seq} "
                    f"but says seq {named_ref.seq} of {station}"
                )
        for rule in row.refs:
            ref = named.get(rule.member)
            if ref is None:
                continue  # an optional reference, absent
            target = self.entries.get(ref.id)
            wanted = " or ".join(rule.targets)
            if target is None:
                if "TEXT" in rule.targets:
                    continue
                raise SchemaError(f"{e.kind} '{rule.member}' names no {wanted} held on this line")
            side_ok = {kinds.PEER: target.ours != e.ours, kinds.OWN: target.ours == e.ours}.get(rule.whose, True)
            if target.kind not in rule.targets or not side_ok:
                whose = {kinds.PEER: "the other side's ", kinds.OWN: "its sender's own "}.get(rule.whose, "")
                side = "our" if target.ours else "the peer's"
                raise SchemaError(
                    f"{e.kind} '{rule.member}' must name {whose}{wanted}, not {side} {target.kind} seq {target.seq}"
                )

    def _refusal(self, row: kinds.Kind, e: Entry, exc: RedlineError) -> tuple[str, AlarmCode, dict[str, Param]]:
        """(level, code, params) of the alarm for a refused envelope."""
        params: dict[str, Param] = {"kind": e.kind, "seq": e.seq, "exc": str(exc)}
        if row.person:
            return "alarm", "refused.signed.ours" if e.ours else "refused.signed.peer", params
        if row.body is kinds.Roster:
            return "warning", "roster.malformed", {"seq": e.seq, "exc": str(exc)}
        if row.body in (kinds.Notice, kinds.NoticeWithdraw):
            return "warning", "notice.refused.ours" if e.ours else "notice.refused.peer", params
        urgent = row.priority == "FLASH" or e.prio == "FLASH" or row.body is kinds.Test
        return ("alarm" if urgent else "warning"), "refused.content.ours" if e.ours else "refused.content.peer", params

    def _unknown(self, e: Entry, row: kinds.Kind | None, out: Outbox) -> None:
        """A kind this version does not act on (a newer peer's): stored,
        receipted and shown like any other, never dropped; said once per kind."""
        seen = self.unknown_kinds.get(e.kind, 0)
        self.unknown_kinds[e.kind] = seen + 1
        if seen:
            return
        if row is not None:
            code: AlarmCode = "kind.reserved.ours" if e.ours else "kind.reserved.peer"
        else:
            code = "kind.unknown.ours" if e.ours else "kind.unknown.peer"
        out.alarm("info", code, e.stored_at, kind=e.kind, seq=e.seq)

    def _refuse(self, e: Entry, why: str) -> None:
        self.refused.append((_kept(e), why))
        if len(self.refused) > REFUSED_KEPT:
            del self.refused[0]

    def _roster(self, e: Entry, body: kinds.Roster, out: Outbox) -> None:
        """A ROSTER pins each new person's key; it cannot change or drop a pinned one (refused for
        that person, alarmed naming them); a role change is taken and alarmed."""
        published = roster_people(body)
        if e.ours:  # as published: the station compares its users with it, so it publishes once
            self.rosters[True] = published
        # The protocol's limit, not one of our Limits: whose signature counts must not depend on a
        # setting, or this station, its peer and ``redline verify`` would read one transcript apart.
        over = roster_too_long(len(published))
        if over is not None:
            self._refuse(e, over)
            out.alarm("warning", "roster.malformed", e.stored_at, seq=e.seq, exc=over)
            return
        self.rosters[e.ours] = published
        if self._root_for is not None:
            self.pins[e.ours].root = self._root_for(e.sender, e.seen)
        change = self.pins[e.ours].apply(published, roster_removals(body))
        why = change.refusal()
        if why is not None:
            self._refuse(e, why)
            if change.key_refused:  # with the way a person's key does change
                pinned: AlarmCode = "roster.pinned_key.ours" if e.ours else "roster.pinned_key.peer"
            else:
                pinned = "roster.pinned.ours" if e.ours else "roster.pinned.peer"
            out.alarm("alarm", pinned, e.stored_at, seq=e.seq, why=why)
        certified = change.certified()
        if certified is not None:
            out.alarm("warning", "roster.certified.ours" if e.ours else "roster.certified.peer", e.stored_at,
                      seq=e.seq, what=certified)  # fmt: skip
        for name, old, new in change.roles:
            out.alarm("warning", "roster.role.ours" if e.ours else "roster.role.peer", e.stored_at, seq=e.seq,
                      name=name, old=old, new=new)  # fmt: skip

    def _notice(self, e: Entry, body: kinds.Notice | kinds.NoticeWithdraw, out: Outbox) -> None:
        """Both ends run the same check on the same notices, so both see the same conflicts.

        A notice over the protocol's limits (``MAX_NOTICE_POINTS``, ``MAX_ACTIVE_NOTICES_PER_SIDE``:
        never our settings, or two readers of one transcript would show different boards) is refused
        here: stored, as signed evidence, but not put on the board, and said once. A new notice's conflicts give one
        alarm, naming the nearest few and counting the rest."""
        who = "our" if e.ours else "the peer's"
        # Judged against what stands for the sender at its signed time (``observe`` settled it).
        for gone in self.board.expire(e.stored_at):  # ended on our clock: off what we show (only)
            self.notice_refs.pop(gone, None)
        try:
            if isinstance(body, kinds.Notice):
                ref = f"{e.sender}:{e.seq}"
                most = MAX_ACTIVE_NOTICES_PER_SIDE
                amends = body.amends
                if amends is not None and not self.standing.holds(e.sender, amends):
                    raise NoticeBoardError(f"notice {amends} is not active (withdrawn, ended or never filed by "
                                           f"{who} side); nothing to amend")  # fmt: skip
                if amends is None and self.standing.count(e.sender) >= most:
                    raise NoticeBoardError(
                        f"{who} side already has {self.standing.count(e.sender)} active notices; at most {most} per "
                        "side (PROTOCOL.md 5.9): withdraw or amend one first"
                    )
                notice = Notice.from_body(body, ref=ref)
                # The notice it amends may have left our board already (ended on our clock).
                conflicts = self.board.add(notice) if amends is None or amends in self.board else self.board.put(notice)
                self.standing.put(e.sender, ref, notice.end, replacing=amends)
                if amends is not None:
                    self.notice_refs.pop(amends, None)
                self.notice_refs[ref] = e.id
                if conflicts:
                    # the nearest few as data (alarmtext writes them, and ``count`` less these as "N more")
                    named = tuple(self._conflict_named(ref, c) for c in conflicts[:CONFLICTS_NAMED])
                    if len(conflicts) > 1:
                        conflict: AlarmCode = "notice.conflicts.ours" if e.ours else "notice.conflicts.peer"
                    else:
                        conflict = "notice.conflict.ours" if e.ours else "notice.conflict.peer"
                    out.alarm("alarm", conflict, e.stored_at, kind=notice.kind, seq=e.seq, count=len(conflicts),
                              named=named)  # fmt: skip
            else:
                if not self.standing.holds(e.sender, body.notice_ref):
                    raise NoticeBoardError(f"notice {body.notice_ref} is not active (withdrawn, ended or never filed "
                                           f"by {who} side)")  # fmt: skip
                self.standing.drop(e.sender, body.notice_ref)
                self._off_board(body.notice_ref)
        except RedlineError as exc:
            self._refuse(e, str(exc))
            out.alarm("warning", "notice.refused.ours" if e.ours else "notice.refused.peer", e.stored_at, kind=e.kind,
                      seq=e.seq, exc=str(exc))  # fmt: skip

    def stands_for_us(self, ref: str, now: int | None) -> bool:
        """Our notice ``ref`` stands at ``now`` and nothing of ours waiting unsigned amends or
        withdraws it: what a new amendment or withdrawal of it may name."""
        return self.standing.holds(self.us, ref, now) and ref not in self._unsent.targets

    def our_notices_counted(self, now: int | None) -> int:
        """How many of our notices our next one is counted with: those that stand at ``now`` and
        the new ones waiting unsigned (they are signed first)."""
        return self.standing.count(self.us, now) + self._unsent.new

    def _off_board(self, ref: str) -> None:
        if ref in self.board:
            self.board.withdraw(ref)
        self.notice_refs.pop(ref, None)

    def _conflict_named(self, ref: str, c: Conflict) -> Record:
        """The conflict ``c`` of the new notice ``ref`` as its alarm names it, as data: the other
        notice (whose, its kind, its seq), how far apart against which margin, and when and at
        which altitudes the two overlap (alarmtext.CONFLICT writes it in English)."""
        other = self.board.get(c.other(ref))  # a conflict is only ever with a notice on the board
        filer, _, seq = c.other(ref).rpartition(":")  # "<filer>:<seq>", as _notice makes a ref
        return {"ours": filer == self.us, "kind": other.kind if other is not None else "?",
                "seq": int(seq) if seq.isascii() and seq.isdigit() else seq,
                "distance_m": c.distance_m, "margin_m": c.margin_m, "start": c.time_overlap[0],
                "end": c.time_overlap[1], "floor_m": c.band_overlap[0], "ceiling_m": c.band_overlap[1]}  # fmt: skip

    def notices_view(
        self, now: int, *, offset: int = 0, limit: int = NOTICES_PAGE, notice: str | None = None
    ) -> NoticesPage | NoticeDetail:
        """Active notices and conflicts, a page at a time (``offset``, ``limit``; ``total`` and
        ``conflicts_total`` say how many there are), each area shown by its outline of at most
        ``notices.OUTLINE_POINTS`` points: cheap to build and bounded in size whatever the board
        holds. ``notice`` (a notice's envelope id, or a unique prefix of it, or its ref) gives that
        one notice in full, with every conflict it has."""
        if notice is not None:
            return self._notice_detail(notice)
        # Past the end of both lists is an empty page (islice refuses an index past sys.maxsize, and
        # the control socket's 'view' passes any whole number).
        offset = min(max(0, offset), max(len(self.board), self.board.conflict_count()))
        limit = min(max(1, limit), NOTICES_PAGE_MAX)
        return NoticesPage(
            total=len(self.board), offset=offset, limit=limit,
            active=tuple(self._notice_row(n, n.summary()) for n in self.board.active(offset, limit)),
            conflicts_total=self.board.conflict_count(),
            conflicts=tuple(self._conflict_row(c) for c in self.board.conflicts_page(offset, limit)),
        )  # fmt: skip

    def _notice_row(self, n: Notice, content: dict[str, Any]) -> NoticeRow:
        return NoticeRow(ref=n.ref, id=self.notice_refs.get(n.ref), ours=n.filer == self.us,
                         conflicts=self.board.conflict_count(n.ref), **content)  # fmt: skip

    def _conflict_row(self, c: Conflict) -> ConflictRow:
        content = c.summary()
        nearest = content.pop("nearest", None)
        return ConflictRow(
            **content | {"time_overlap": c.time_overlap, "band_overlap": c.band_overlap},
            ids=(self.notice_refs.get(c.a), self.notice_refs.get(c.b)),
            nearest=None if nearest is None else (tuple(nearest[0]), tuple(nearest[1])),
        )  # fmt: skip

    def _notice_detail(self, wanted: str) -> NoticeDetail:
        refs = [ref for ref, eid in self.notice_refs.items() if ref == wanted or eid.startswith(wanted)]
        if len(wanted) < 6 or len(refs) != 1 or refs[0] not in self.board:
            raise NoticeBoardError(f"no single active notice has the id or ref {wanted!r}")
        n = self.board.get(refs[0])
        assert n is not None
        content = n.to_content() | {"points": n.points}
        if n.radius_m:
            content["display_area"] = n.to_content(area=n.display_area())["area"]
        return NoticeDetail(
            notice=self._notice_row(n, content),
            conflicts=tuple(self._conflict_row(c) for c in self.board.conflicts(n.ref)),
        )

    def refused_view(self) -> tuple[RefusedView, ...]:
        """The peer's envelopes ops kept off its state, with why (the newest ``REFUSED_KEPT``)."""
        return tuple(RefusedView(kind=e.kind, seq=e.seq, ours=e.ours, reason=why) for e, why in self.refused)

    def receipted(self, our_seq: int, at: int) -> None:
        """The peer receipted our chain up to ``our_seq``."""
        # Our seqs are inserted in order, so the receipted ones are at the front: pop just those
        # (a scan of the whole dict per receipt made a restart's replay quadratic).
        pending = self._our_seq_to_id
        if pending and next(iter(pending)) <= our_seq:
            self._due_at = None
        while pending:
            seq = next(iter(pending))
            if seq > our_seq:
                break
            eid = pending.pop(seq)
            self.tests.receipted(eid, at)
            self.flash.receipted(eid, at)
            self.voice.receipted(eid)

    def next_due(self, now: int) -> float:
        """The earliest wall time (ms) at which ``due`` may record or alarm anything if nothing is
        observed or receipted first (``now`` or before: something is due already): a line test's
        verdict or slot, a FLASH's escalation, a call request's expiry, a call not over, a notice's
        end. The station runs ``due`` on an idle line only then (issue 12: with many lines, and
        years of tests and FLASHes each ``due`` walks, ten times a second per line added up).
        Worked out once, and again after the next observe, receipt or ``due``."""
        if self._due_at is None:
            self._due_at = min(
                self.tests.next_due(now), self.flash.next_due(now), self.calls.next_due(now),
                self.voice.next_due(now), self.board.next_end(),
            )  # fmt: skip
        return self._due_at

    def due(self, now: int) -> tuple[list[Intent], list[Alarm]]:
        self._due_at = None
        out = Outbox()
        self.tests.due(now, out)
        self.flash.due(now, out)
        self.calls.due(now, out)
        self.voice.due(now, out)
        for ref in self.board.expire(now):
            self.notice_refs.pop(ref, None)
        return out.intents, out.alarms

    def person_roster(self) -> dict[str, Person]:
        """The roster we last published (what the peer checks our people against)."""
        return self.rosters[True]


# Members of a body ops does not keep once it has acted on the envelope: the large, nested ones
# (a notice's area: the board holds the geometry of those that stand; a roster's people: ``rosters``
# holds the last one parsed). Decoded, they are several times their bytes, and ops keeps every
# operational envelope for the process's life, so a peer's NOTICEs and ROSTERs, refused ones
# included, would cost memory by their size at the pace of its disk budget. ``Station.show``
# reads such an envelope from the ledger.
NOT_KEPT: dict[str, frozenset[str]] = {"NOTICE": frozenset({"area"}), "ROSTER": frozenset({"users", "removed"})}


def _kept(e: Entry) -> Entry:
    """What ops keeps of an envelope after acting on it (``NOT_KEPT``)."""
    dropped = NOT_KEPT.get(e.kind)
    if dropped is None or dropped.isdisjoint(e.content):
        return e
    return replace(e, content={k: v for k, v in e.content.items() if k not in dropped})


class _UnsentNotices:
    """Our NOTICEs and NOTICE_WITHDRAWs accepted into the outbox and not signed yet: how many new
    notices, and which notices they amend or withdraw. Told of each at acceptance (and at start, of
    those still waiting) and again as each is signed; what this process never saw accepted (a
    replay of the store) is not counted, and counts never go below nothing."""

    def __init__(self) -> None:
        self.new = 0
        self.targets: list[str] = []  # notice refs an unsent amendment or withdrawal names

    @staticmethod
    def _target(kind: str, content: dict[str, Any]) -> str | None:
        ref = content.get("amends") if kind == "NOTICE" else content.get("notice")
        if isinstance(ref, dict):
            return f"{ref.get('sender')}:{ref.get('seq')}"
        return ref if isinstance(ref, str) else None

    def accepted(self, kind: str, content: dict[str, Any]) -> None:
        target = self._target(kind, content)
        if target is not None:
            self.targets.append(target)
        elif kind == "NOTICE":
            self.new += 1

    def signed(self, kind: str, content: dict[str, Any]) -> None:
        target = self._target(kind, content)
        if target is not None:
            if target in self.targets:
                self.targets.remove(target)
        elif kind == "NOTICE":
            self.new = max(0, self.new - 1)


def check_operator_content(
    ops: LineOps,
    kind: str,
    content: dict[str, Any],
    find: Callable[[str], list[Entry]] | None = None,
    *,
    now: int | None = None,
    retry: bool = False,
) -> dict[str, Any]:
    """Refuse what an operator may not file, before it is accepted, and return the content to sign:
    each reference completed to (sender, seq, id) from a unique id prefix and checked against the
    registry (kind and side), a CALL_REQUEST's ``expires`` filled in (``now`` + call_request_ttl)
    when missing, and the whole validated as PROTOCOL.md 5.9 says for senders (``kinds.parse``
    strict: no member the schema does not list). Content of a person-signed kind may come before
    its ``person`` member (to be signed) or with it. ``find`` looks up envelopes ops does not keep
    (plain TEXT) by id prefix. ``retry``: the request's idempotency key is accepted already, so
    nothing is judged against the line's state its first submit changed (the session then answers
    it with that first acceptance, or refuses other content under the key)."""
    row = kinds.spec(kind)
    if row is None or not row.operator:
        raise LocalProtocolError(f"{kind} is not something an operator files")
    _check_numbers(ops.limits, kind, content)
    if kind == "CALL_REQUEST" and "expires" not in content and now is not None:
        content = {**content, "expires": now + int(ops.limits.call_request_ttl_seconds * 1000)}
    if kind == "NOTICE":
        content = _check_notice(ops, content, now, retry)
    for rule in row.refs:
        if rule.optional and rule.member not in content:
            continue
        content = {**content, rule.member: _resolve(ops, kind, rule, content.get(rule.member), find).ref}
    # What depends on the line's state, judged as every reader will judge it; not for a retry,
    # whose first submit changed that state (the notice withdrawn, the call hung up).
    if kind == "NOTICE_WITHDRAW" and not retry:
        ref = content["notice"]
        if not ops.stands_for_us(f"{ref['sender']}:{ref['seq']}", now):
            raise LocalProtocolError("that notice is no longer active (withdrawn or ended): nothing to withdraw")
    if kind in VOICE_KINDS and not retry:
        ops.voice.check_filing(kind, content)
    unsigned = row.person and "person" not in content
    try:
        row.body.parse({**content, "person": _PLACEHOLDER} if unsigned else content, strict=True)
    except SchemaError as exc:
        raise LocalProtocolError(f"{kind} cannot be filed: {exc}") from None
    return content


# Stands in for the person signature of content still to be signed, so the rest is checked whole.
_PLACEHOLDER = {"name": "placeholder", "role": "duty", "key": "0" * 64, "sig": "0" * 128}


def _resolve(
    ops: LineOps, kind: str, rule: kinds.RefRule, wanted: object, find: Callable[[str], list[Entry]] | None
) -> Entry:
    """The one envelope a reference (an id prefix of 6+ hex digits, or a reference) names."""
    prefix = wanted.get("id") if isinstance(wanted, dict) else wanted
    if not isinstance(prefix, str) or len(prefix) < 6:
        raise LocalProtocolError(f"{kind} must name the envelope it answers ('{rule.member}': an id of 6+ hex digits)")
    matches = [e for eid, e in ops.entries.items() if eid.startswith(prefix)]
    if find is not None:
        matches += [e for e in find(prefix) if e.id not in ops.entries]
    if len(matches) != 1:
        raise LocalProtocolError(f"no single envelope on this line has an id starting {prefix!r}")
    target = matches[0]
    wrong_side = (rule.whose == kinds.PEER and target.ours) or (rule.whose == kinds.OWN and not target.ours)
    if target.kind not in rule.targets or wrong_side:
        side = {kinds.PEER: "the peer's ", kinds.OWN: "our own "}.get(rule.whose, "")
        raise LocalProtocolError(
            f"{kind} must answer {side}{' or '.join(rule.targets)}, not {target.kind} seq {target.seq}"
        )
    return target


# Deadline windows an operator may ask the peer for (ms): held to the bounds a receiver honours.
_WINDOWS = {"FLASH": "ack_within_ms", "TEST": "answer_within_ms"}


def _check_numbers(limits: Limits, kind: str, content: dict[str, Any]) -> None:
    """What we file is held to the bounds we hold the peer to: a requested window within
    [peer_window_min_seconds, peer_window_max_seconds], a call request's expiry a time."""
    name = _WINDOWS.get(kind)
    if name is not None and name in content:
        value = content[name]
        low = max(1000, int(limits.peer_window_min_seconds * 1000))
        high = max(low, int(limits.peer_window_max_seconds * 1000))
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise LocalProtocolError(
                f"{name} must be a whole number of milliseconds from {low} to {high} (peer_window_min_seconds, "
                f"peer_window_max_seconds), not {value!r}; the receiving station runs its deadline on its own window"
            )
    if kind == "CALL_REQUEST" and "expires" in content:
        value = content["expires"]
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_TIME_MS:
            raise LocalProtocolError(f"expires must be a time (ms since 1970, UTC), not {value!r}")


def _check_notice(ops: LineOps, content: dict[str, Any], now: int | None, retry: bool) -> dict[str, Any]:
    """A notice is validated in full before it is accepted: bad geometry, inverted windows or bands,
    too many points or too many active notices are refused with the reason and nothing is sent.
    ``amends`` names our earlier notice by id or by its notice ref; either way it must be ours and
    stand, and an amendment is not counted. A ``retry`` (its first submit accepted) is not judged
    against what that submit changed."""
    if "amends" in content:
        content = {**content, "amends": _our_notice(ops, content["amends"], "amends")}
    # The protocol's limits, which every reader applies to what we sign (PROTOCOL.md 5.9), counted
    # as they will count it (at our signed time, no earlier than now): refused here, in one line,
    # rather than signed and then kept off both boards. Ours waiting unsigned count as signed.
    most = MAX_ACTIVE_NOTICES_PER_SIDE
    amends = content.get("amends")
    if not retry and amends is not None and not ops.stands_for_us(amends, now):
        raise LocalProtocolError("that notice is no longer active (withdrawn, amended or expired); file a new one")
    if not retry and amends is None and (standing := ops.our_notices_counted(now)) >= most:
        raise LocalProtocolError(
            f"we already have {standing} active notices; at most {most} per side "
            "(PROTOCOL.md 5.9): withdraw or amend one first"
        )
    Notice.from_content(content, ref=f"{ops.us}:0")
    return content


def _our_notice(ops: LineOps, wanted: object, member: str) -> str:
    """The notice ref ("<our fingerprint>:<seq>") of our own NOTICE named by an id prefix (6+ hex
    digits) or by its notice ref: a peer's notice, or none, is refused in one line."""
    if isinstance(wanted, str) and ":" in wanted:
        matches = [e for e in ops.entries.values() if e.kind == "NOTICE" and f"{e.sender}:{e.seq}" == wanted]
    elif isinstance(wanted, str) and len(wanted) >= 6:
        matches = [e for eid, e in ops.entries.items() if eid.startswith(wanted) and e.kind == "NOTICE"]
    else:
        matches = []
    if len(matches) != 1 or not matches[0].ours:
        raise LocalProtocolError(f"{member} must name one of our own notices; no single one is {wanted!r}")
    return f"{matches[0].sender}:{matches[0].seq}"
