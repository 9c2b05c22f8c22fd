"""What the operations of a line look like to a reader: frozen dataclasses, one per view.

``ops/`` builds them from its state (``LineTests.history``, ``Flash.view``, ``Calls.summary``,
``LineOps.notices_view``, ``Voice.view``); the station hands them to the control socket, the HTTP
API and the console, which turn them into JSON with ``readmodel.to_obj`` and back with
``readmodel.from_obj``. So the CLI, the API and the console render the same typed objects, and a
field added here appears in all three. Field names are the JSON keys (docs/API.md lists them).

Text that came from the peer (``text``, ``subject``, names) is data: the front-ends show it with
markup off, never format it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# -- line tests (ops/linetests.py) ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SentTest:
    """One of our line tests, with the verdict we recorded."""

    id: str
    sent_at: int
    deadline: int  # on our clock: we decide the verdict
    receipted_at: int | None
    answered_at: int | None
    answered_by: str | None
    answer_ms: int | None
    result: str  # passed | missed | pending


@dataclass(frozen=True, kw_only=True)
class ReceivedTest:
    """One of the peer's line tests, with the verdict the peer recorded ("pending" until it arrives)."""

    id: str
    stored_at: int
    deadline: int
    answered_at: int | None
    answered_by: str | None
    result: str
    decided_at: int | None
    state: str


@dataclass(frozen=True, kw_only=True)
class ToAnswer:
    """A peer's line test nobody here has answered yet."""

    id: str
    sent_at: int
    deadline: int


@dataclass(frozen=True, kw_only=True)
class LineTestsView:
    sent: int
    passed: int
    missed: int
    pending: int
    answer_ms_median: float | None
    answer_ms_worst: int | None
    since_last_proven_ms: int | None
    tests: tuple[SentTest, ...]
    received: tuple[ReceivedTest, ...]
    to_answer: tuple[ToAnswer, ...]


# -- FLASH (ops/flash.py) ---------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ReadMark:
    by: str
    at: int


@dataclass(frozen=True, kw_only=True)
class EscalationMark:
    level: str
    at: int


@dataclass(frozen=True, kw_only=True)
class FlashView:
    id: str
    seq: int
    ours: bool
    text: str | None
    lang: str
    accepted_at: int
    receipted_at: int | None
    read: tuple[ReadMark, ...]
    escalations: tuple[EscalationMark, ...]
    acked_by: str | None
    acked_at: int | None
    deadline: int
    state: str


# -- call requests, records and readouts (ops/calls.py) ---------------------------------------------


@dataclass(frozen=True, kw_only=True)
class CallReplyView:
    answer: str  # accept | decline
    time: int | None  # with accept
    reason: str | None  # with decline
    lang: str
    at: int  # stored here


@dataclass(frozen=True, kw_only=True)
class CallRequestView:
    id: str
    seq: int
    ours: bool
    requested_by: str
    from_role: str
    to_role: str
    subject: str
    lang: str
    windows: tuple[tuple[int, int], ...]  # proposed (start, end) pairs, as the requester sent them
    sent_at: int  # stored here
    expires: int | None  # None: past the year 9999 (model.as_time)
    state: str  # open | accepted | declined | expired
    time: int | None  # the accepted time
    reply: CallReplyView | None  # the first reply stored in time (a late one stands only until CALL_EXPIRED)


@dataclass(frozen=True, kw_only=True)
class ReadoutView:
    text: str
    lang: str
    by: str


@dataclass(frozen=True, kw_only=True)
class CallRecordView:
    id: str
    start: int | None
    end: int | None
    participants: tuple[str, ...]
    filed_by: str
    readouts: Mapping[str, ReadoutView]  # "ours" and/or "theirs"
    days_since_previous: int | None = None  # None for the first call of the pair
    voice: str | None = None  # the voice call (CALL_RING id) the record names: its audio evidence
    audio_evidence: str | None = None  # that call's CALL_AUDIO: match | mismatch, once both are held


@dataclass(frozen=True, kw_only=True)
class CallPairView:
    """Everything between one pair of principals (roles)."""

    principals: tuple[str, str]
    requests: Mapping[str, int]  # requests made, by station fingerprint (ours first)
    declined: int
    unanswered: int
    accepted: int
    open: int
    outcomes: tuple[CallRequestView, ...]
    calls: tuple[CallRecordView, ...]
    last_call_at: int | None
    days_since_last_call: int | None


# -- voice calls (ops/voice.py; the live audio from media.py) ---------------------------------------


@dataclass(frozen=True, kw_only=True)
class AudioEvidenceView:
    """Both stations' CALL_AUDIO of a call (their content as signed) and whether they agree."""

    ours: Mapping[str, Any] | None
    theirs: Mapping[str, Any] | None
    evidence: str | None  # match | mismatch, once both are held


@dataclass(frozen=True, kw_only=True)
class VoiceCallView:
    id: str
    seq: int
    ours: bool
    state: str  # ringing | live | declined | unanswered | cancelled | ended | busy
    caller: str
    rang_at: int
    deadline: int
    answered_by: str | None
    answered_at: int | None
    ended_at: int | None
    test: str | None  # the line test this call answers (a voice test)
    reason: str | None
    audio: AudioEvidenceView


@dataclass(frozen=True, kw_only=True)
class DirectionView:
    """One direction of the live call's audio as hashed so far (what CALL_AUDIO will say)."""

    digest: str
    packets: int
    ms: int


@dataclass(frozen=True, kw_only=True)
class PathAudioView:
    packets: int
    first: int  # packets that came first on this path
    silent_ms: int | None  # since the last packet on this path


@dataclass(frozen=True, kw_only=True)
class LiveAudioView:
    call: str
    sent: DirectionView
    received: DirectionView
    dropped: Mapping[str, int]  # packets refused or counted, by reason (media.Counters)
    paths: Mapping[str, PathAudioView]


@dataclass(frozen=True, kw_only=True)
class VoiceView:
    current: VoiceCallView | None  # ringing or live here
    calls: tuple[VoiceCallView, ...]  # the last 50
    audio: LiveAudioView | None = None  # this station's audio of the current call
    dropped_no_call: int = 0  # AUDIO frames for no call live here


# -- notices (ops/engine.py, ops/notices.py) --------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NoticeRow:
    """An active notice for lists and maps; ``area`` is its outline of at most
    ``notices.OUTLINE_POINTS`` points when ``area_outline`` (``points`` says how many it has)."""

    ref: str
    id: str | None
    ours: bool
    conflicts: int
    kind: str
    area: Mapping[str, Any]  # GeoJSON, coordinates as decimal strings
    floor_m: int
    ceiling_m: int
    start: int
    end: int
    margin_m: int
    text: str
    points: int
    radius_m: int | None = None
    amends: str | None = None
    area_outline: bool = False
    display_area: Mapping[str, Any] | None = None  # one notice whole: a circle as a polygon


@dataclass(frozen=True, kw_only=True)
class ConflictRow:
    a: str
    b: str
    ids: tuple[str | None, str | None]  # envelope ids of a and b
    time_overlap: tuple[int, int]
    band_overlap: tuple[int, int]
    distance_m: int
    margin_m: int
    where: Mapping[str, Any]  # GeoJSON: the overlap, or the midpoint between the nearest points
    nearest: tuple[tuple[str, str], tuple[str, str]] | None = None
    where_outline: bool = False


@dataclass(frozen=True, kw_only=True)
class NoticesPage:
    total: int
    offset: int
    limit: int
    active: tuple[NoticeRow, ...]
    conflicts_total: int
    conflicts: tuple[ConflictRow, ...]


@dataclass(frozen=True, kw_only=True)
class NoticeDetail:
    """One notice whole, with every conflict it has."""

    notice: NoticeRow
    conflicts: tuple[ConflictRow, ...]


# -- one message and its translations (ops/engine.py) -----------------------------------------------


@dataclass(frozen=True, kw_only=True)
class TranslationView:
    lang: str
    text: str
    translator: str
    ours: bool  # filed by this station


@dataclass(frozen=True, kw_only=True)
class MessageView:
    """One envelope of a line, found by id prefix, with the translations attached to it."""

    id: str
    seq: int
    kind: str
    ours: bool
    lang: str
    sent_at: int
    content: Mapping[str, Any]
    translations: tuple[TranslationView, ...]


# -- what the peer sent that ops refused (ops/engine.py) --------------------------------------------


@dataclass(frozen=True, kw_only=True)
class RefusedView:
    kind: str
    seq: int
    ours: bool
    reason: str


# The views a running station answers by name (control socket ``view``, API ``/lines/{line}/{what}``),
# with the type each answers: the CLI reads them back with ``readmodel.from_obj(obj, VIEWS[what])``.
VIEWS: dict[str, Any] = {
    "tests": LineTestsView,
    "flash": tuple[FlashView, ...],
    "calls": tuple[CallPairView, ...],
    "notices": NoticesPage | NoticeDetail,
    "voice": VoiceView,
    "refused": tuple[RefusedView, ...],
}
