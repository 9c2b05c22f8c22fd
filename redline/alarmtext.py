"""Every alarm the station raises: a stable code, its English template, and the params it fills in.

An alarm is raised as ``code`` + ``params`` (str, int or float: JSON as they are) and carries the
English ``text`` rendered here, which the terminal, the log and the English console show. The
console renders a code in the reader's language from its own templates (strings.js,
``"alarm.<code>"``, the same placeholders), so the English wording lives here only.

Params: numbers and ids as they are; a person's or the peer's text (a name, a subject, a role, a
closing message) as it came, which the console puts on the page as text, never as markup; free
English (an exception's message, a ``describe()``), which stays English in every language
(``EN_PARAMS``, the console marks them ``lang="en"``); and the conflicts a notice meets, a list of
records of such values (``CONFLICT_PARAMS``), each written by a template of its own (``CONFLICT``
here, ``"conflict.ours"``/``"conflict.peer"`` in strings.js), so a Russian reader reads them in
Russian too.
This module imports nothing of redline, so ops/, session.py and station.py all import it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Final, Literal, get_args

from redline.clock import MAX_TIME_MS

Value = str | int | float
Record = Mapping[str, Value]  # one item of a list param: a conflict a notice meets
Param = Value | tuple[Record, ...]

AlarmCode = Literal[
    # ops/flash.py
    "flash.received", "flash.not_acked_by_peer", "flash.escalation_not_filed", "flash.missed", "flash.escalated",
    # ops/engine.py
    "refused.signed.ours", "refused.signed.peer", "refused.content.ours", "refused.content.peer",
    "roster.malformed", "notice.refused.ours", "notice.refused.peer",
    "key.signing.ours", "key.signing.peer", "key.tls.ours", "key.tls.peer", "key.both.ours", "key.both.peer",
    "kind.reserved.ours", "kind.reserved.peer", "kind.unknown.ours", "kind.unknown.peer",
    "roster.pinned.ours", "roster.pinned.peer", "roster.pinned_key.ours", "roster.pinned_key.peer",
    "roster.certified.ours", "roster.certified.peer", "roster.role.ours", "roster.role.peer",
    "notice.conflict.ours", "notice.conflict.peer", "notice.conflicts.ours", "notice.conflicts.peer",
    # ops/voice.py
    "voice.busy", "voice.ring", "voice.ring_test", "voice.picked_up", "voice.declined", "voice.declined_why",
    "voice.unanswered", "voice.peer_lost", "voice.peer_hung_up", "voice.audio_mismatch", "voice.lost_here",
    "voice.hangup_unreceipted",
    # ops/linetests.py
    "test.received", "test.missed_here", "test.passed_late", "test.missed", "test.missed_dead", "test.unanswered",
    # ops/calls.py
    "call.request",
    # standby.py, ceremony.py
    "ha.active", "ha.switchover", "ha.failover", "ha.deposed", "paired",
    # station.py
    "ops.internal_error", "recording.unreadable", "recording.incomplete", "storing.internal_error",
    "storage.failed.db", "storage.failed.disk", "storage.unreadable", "tick.internal_error",
    "clock.skew_back", "clock.skew.ahead", "clock.skew.behind", "file.later", "accept.failed",
    # session.py
    "tls.in_use", "tls.not_saved", "tls.rotating", "line.up", "line.down", "line.confirmed", "peer.failover",
    "peer.address", "peer.addresses", "recovering", "fork", "path.closed", "envelope.refused",
    "own.unrecoverable", "equivocation", "receipt.refused", "checkpoint.revoked_key", "checkpoint.ahead",
    "checkpoint.refused", "cosign.refused", "disk.held", "key.not_held", "flagged.ours", "flagged.peer",
    "revoke.ours", "revoke.peer", "revoke.ours.none", "revoke.peer.none", "root.rotation",
    "disk.warn.ours", "disk.warn.peer",
]  # fmt: skip

_REFUSED_CONTENT = ("refused {kind} seq {seq} from {who} station: its content is not as the protocol says ({exc}); "
                    "it is stored and shown, not acted on")  # fmt: skip
_KEY_SIGNING = "rotated the signing key; envelopes after seq {seq} are signed by the new key"
_KEY_TLS = "rotated the TLS key; the paths prove the new one from now on"
_KEY = "KEY seq {seq}: {who} {said}, certified by the station's root"
_PINNED = "PINNED KEY: {whose} ROSTER seq {seq}: {why}"
_PINNED_FIX = "; a person's key changes only by a key rotation the station's root certifies, never by a roster alone"
_CONFLICT = "NOTICE CONFLICT: {who} {kind} notice seq {seq} conflicts with {count} active {notices}: {named}"
_NAMED = ("{whose} {kind} notice seq {seq}, {distance_m} m apart (margin {margin_m} m), {start} to {end}, "
          "{floor_m}-{ceiling_m} m")  # fmt: skip
_SKEW = ("CLOCK SKEW: {peer}'s clock is {span} {way} ours (limit {limit} s, max_clock_skew_seconds): times and "
         "deadlines it states are misread until one clock is corrected")  # fmt: skip
_STORAGE = ("STORAGE FAILURE: {exc}. Nothing that was not stored has been receipted or acknowledged; the line accepts "
            "nothing until the store can be written again ({what}); the peer keeps and resends what we did not "
            "receipt")  # fmt: skip
_REVOKE = "REVOKE seq {seq} on line {line}: {whose} root revoked a signing key; "
_NOTHING = "nothing it signed on this line after the named checkpoint"
_DISK_WARN = ("DISK: {whose} envelopes on line {line} use {used} of {limit} bytes ({share}, max_line_disk_bytes); "
              "archive the transcript and raise the limit")  # fmt: skip


_SLOT = re.compile(r"\{(\w+)\}")  # a placeholder, here, in ``render`` and in ``placeholders``


def _fill(template: str, **fixed: str) -> str:
    """``template`` with some placeholders fixed (the sides of a code pair), the rest kept."""
    return _SLOT.sub(lambda m: fixed.get(m[1], m[0]), template)


# fmt: off
TEMPLATES: Final[dict[AlarmCode, str]] = {
    "flash.received": ("FLASH from the peer: {role} must acknowledge within {seconds} s: seq {seq}, id {id} "
                       "('redline ack LINE {id}')"),
    "flash.not_acked_by_peer": "FLASH seq {seq} was NOT acknowledged by the peer in time",
    "flash.escalation_not_filed": ("FLASH seq {seq} from the peer: ESCALATED {level} NOT filed: the peer's FLASHes "
                                   "used the escalations they allow us to sign"),
    "flash.missed": "FLASH seq {seq} from the peer was not acknowledged in time",
    "flash.escalated": "FLASH seq {seq} not acknowledged: escalated to {level}",
    "refused.signed.ours": "refused {kind} seq {seq} from our station: {exc}",
    "refused.signed.peer": "refused {kind} seq {seq} from the peer's station: {exc}",
    "refused.content.ours": _fill(_REFUSED_CONTENT, who="our"),
    "refused.content.peer": _fill(_REFUSED_CONTENT, who="the peer's"),
    "roster.malformed": "ROSTER seq {seq} is malformed and was ignored: {exc}",
    "notice.refused.ours": "our {kind} seq {seq} refused, not on the board: {exc}",
    "notice.refused.peer": "the peer's {kind} seq {seq} refused, not on the board: {exc}",
    "key.signing.ours": _fill(_KEY, who="we", said=_KEY_SIGNING),
    "key.signing.peer": _fill(_KEY, who="the peer", said=_KEY_SIGNING),
    "key.tls.ours": _fill(_KEY, who="we", said=_KEY_TLS),
    "key.tls.peer": _fill(_KEY, who="the peer", said=_KEY_TLS),
    "key.both.ours": _fill(_KEY, who="we", said=f"{_KEY_SIGNING} and {_KEY_TLS}"),
    "key.both.peer": _fill(_KEY, who="the peer", said=f"{_KEY_SIGNING} and {_KEY_TLS}"),
    "kind.reserved.ours": ("our {kind} seq {seq}: the kind is reserved in version 1; it is stored and shown, not "
                           "acted on"),
    "kind.reserved.peer": ("the peer's {kind} seq {seq}: the kind is reserved in version 1; it is stored and shown, "
                           "not acted on"),
    "kind.unknown.ours": ("our {kind} seq {seq}: the kind is not one this station knows (a newer peer's?); it is "
                          "stored and shown, not acted on"),
    "kind.unknown.peer": ("the peer's {kind} seq {seq}: the kind is not one this station knows (a newer peer's?); it "
                          "is stored and shown, not acted on"),
    "roster.pinned.ours": _fill(_PINNED, whose="our"),
    "roster.pinned.peer": _fill(_PINNED, whose="the peer's"),
    "roster.pinned_key.ours": _fill(_PINNED, whose="our") + _PINNED_FIX,
    "roster.pinned_key.peer": _fill(_PINNED, whose="the peer's") + _PINNED_FIX,
    "roster.certified.ours": "our ROSTER seq {seq}: {what}",
    "roster.certified.peer": "the peer's ROSTER seq {seq}: {what}",
    "roster.role.ours": "our ROSTER seq {seq} changes {name}'s role from {old} to {new}",
    "roster.role.peer": "the peer's ROSTER seq {seq} changes {name}'s role from {old} to {new}",
    "notice.conflict.ours": _fill(_CONFLICT, who="our", notices="notice"),
    "notice.conflict.peer": _fill(_CONFLICT, who="the peer's", notices="notice"),
    "notice.conflicts.ours": _fill(_CONFLICT, who="our", notices="notices"),
    "notice.conflicts.peer": _fill(_CONFLICT, who="the peer's", notices="notices"),
    "voice.busy": "VOICE CALL from the peer ({name}) while a call is open here: declined busy",
    "voice.ring": "VOICE CALL ringing from the peer ({name}): pick up",
    "voice.ring_test": "VOICE LINE TEST ringing from the peer ({name}): pick up",
    "voice.picked_up": "VOICE CALL picked up by the peer's {name}",
    "voice.declined": "VOICE CALL declined by the peer",
    "voice.declined_why": "VOICE CALL declined by the peer: {words}",
    "voice.unanswered": "VOICE CALL from the peer went unanswered (the caller's verdict)",
    "voice.peer_lost": "VOICE CALL ended: the peer lost the line mid-call (no path, no audio)",
    "voice.peer_hung_up": "VOICE CALL ended: the peer hung up",
    "voice.audio_mismatch": "AUDIO EVIDENCE MISMATCH on the call of seq {seq}: {details}",
    "voice.lost_here": ("VOICE CALL ended: this station lost the line mid-call (no path and no audio for {seconds} s); "
                        "the peer is told when the line is back"),
    "voice.hangup_unreceipted": ("VOICE CALL of seq {seq}: the peer has not receipted our hang-up in {seconds} s "
                                 "(twice call_lost_seconds); its audio is filed as received so far, and nothing of it "
                                 "that comes later is counted"),
    "test.received": "LINE TEST from the peer: a duty officer must answer it ('redline answer') within {seconds} s",
    "test.missed_here": ("LINE TEST MISSED here: the tester recorded that its test was not answered in time (its test "
                         "of {at})"),
    "test.passed_late": ("LINE TEST of {at} PASSED: the tester's verdict (our copy of its deadline had passed; the "
                         "tester's had not)"),
    "test.missed": "LINE TEST MISSED: no answer within {seconds} s",
    "test.missed_dead": ("LINE TEST MISSED: no answer within {seconds} s and the peer station never receipted it: the "
                         "line may be dead"),
    "test.unanswered": ("LINE TEST from the peer ({at}) still unanswered after our copy of its deadline: answer it now "
                        "('redline answer'); awaiting the tester's verdict"),
    "call.request": "CALL REQUEST from the peer's {from_role} to our {to_role}: {subject}",
    "ha.active": "ACTIVE: this process ({holder}) is now the active one, lease term {term}",
    "ha.switchover": ("SWITCHOVER: this process ({holder}) is now the active one, lease term {term}, from {before} "
                      "(term {before_term}), which stopped cleanly"),
    "ha.failover": ("FAILOVER: this process ({holder}) is now the active one, lease term {term}, from {before} at "
                    "{address} (term {before_term}), whose lease lapsed"),
    "ha.deposed": "{reason}",
    "paired": "paired with {peer}; safety code {code}: compare it by voice",
    "ops.internal_error": "INTERNAL ERROR interpreting {kind} seq {seq}: stored, not acted on; see the station log",
    "recording.unreadable": "RECORDING of the call of seq {seq} unreadable after restart: {problem}",
    "recording.incomplete": "RECORDING of the call of seq {seq} incomplete: {problem}",
    "storing.internal_error": ("INTERNAL ERROR while storing: {exc}; the batch was rolled back, nothing in it was "
                               "receipted, and the line restarts from the store"),
    "storage.failed.db": _fill(_STORAGE, what="check that the database answers and takes writes: {url} (the primary, "
                                              "reachable from this host, its disk not full)"),
    "storage.failed.disk": _fill(_STORAGE, what="free disk space, check the disk"),
    "storage.unreadable": "STORAGE FAILURE: the store cannot be read back either; the line stays closed until it can",
    "tick.internal_error": "INTERNAL ERROR in this line's tick: see the station log",
    "clock.skew_back": "clock skew back within {limit} s: {peer}'s clock is {off} s off ours",
    "clock.skew.ahead": _fill(_SKEW, way="ahead of"),
    "clock.skew.behind": _fill(_SKEW, way="behind"),
    "file.later": "could not file {kinds} yet: {exc}; filed as soon as there is room",
    "accept.failed": ("accepting failed ({exc}): the batch was rolled back, nothing in it was accepted, and the line "
                      "restarts from the store"),
    "tls.in_use": "line {line}: {peer}'s new TLS key is in use; its old TLS key is no longer accepted",
    "tls.not_saved": ("line {line}: that {peer}'s new TLS key is proven could not be saved ({exc}); after a restart "
                      "its old TLS key is accepted again until the new one connects"),
    "tls.rotating": ("line {line}: {peer} rotates its TLS key (KEY seq {seq}): the new key is pinned beside the old "
                     "until it is in use"),
    "line.up": "LINE UP again: a path to {peer} is open",
    "line.down": "LINE DOWN: no path to {peer} for {seconds} s",
    "line.confirmed": "line {line} with {peer} is confirmed at both ends",
    "peer.failover": ("PEER FAILOVER: the peer station failed over (term {last} -> {term}): another process of its HA "
                      "pair took over; check the line is back in sync"),
    "peer.address": "the peer announced an address this line did not dial yet: {addresses}; dialling it too",
    "peer.addresses": "the peer announced addresses this line did not dial yet: {addresses}; dialling them too",
    "recovering": ("recovering our own envelopes {from_seq}..{to_seq} from the peer (this store is older than what the "
                   "peer holds); nothing new is signed until done"),
    "fork": ("FORK: the peer says it holds a different envelope at our seq {seq} (its HELLO, which is not signed); the "
             "path is closed, and every path will be while it says so: if it goes on, stop, run 'redline verify' and "
             "compare with the peer"),
    "path.closed": "peer closed path {path}: {message}",
    "envelope.refused": "refused envelope seq {seq} from {peer}: {exc}",
    "own.unrecoverable": "could not recover our envelope seq {seq} from the peer: {exc}",
    "equivocation": "EQUIVOCATION on line {line}: {exc}",
    "receipt.refused": "refused a receipt from {peer}: {exc}",
    "checkpoint.revoked_key": "refused to countersign checkpoint {n}: proposed under {peer}'s revoked key {key}",
    "checkpoint.ahead": "checkpoint proposal ahead of ours ({exc}); waiting for the ones between",
    "checkpoint.refused": "refused to countersign a checkpoint: {exc}",
    "cosign.refused": "refused a checkpoint countersignature: {exc}",
    "disk.held": ("DISK: our {kind} (outbox #{local}) is held, not signed: its {size} bytes would take our envelopes "
                  "on line {line} past max_line_disk_bytes ({used} of {limit} used), which the peer refuses; archive "
                  "the transcript and raise the limit at both ends"),
    "key.not_held": ("line {line}: a KEY in the outbox names a key this station does not hold as its next signing key "
                     "(keys/signing.next.key); nothing more is signed on this line"),
    "flagged.ours": "line {line}: {what}; kept, not taken as our station's word",
    "flagged.peer": "line {line}: {what}; kept, not taken as {peer}'s word",
    "revoke.ours": _fill(_REVOKE, whose="our") + "{runs}",
    "revoke.peer": _fill(_REVOKE, whose="{peer}'s") + "{runs}",
    "revoke.ours.none": _fill(_REVOKE, whose="our") + _NOTHING,
    "revoke.peer.none": _fill(_REVOKE, whose="{peer}'s") + _NOTHING,
    "root.rotation": ("ROOT ROTATION on line {line}: {peer} names a new root (ROOT seq {seq}). It is NOT trusted until "
                      "the operators compare the new safety code {code} by voice, as at pairing, and ours confirms "
                      "it"),
    "disk.warn.ours": _fill(_DISK_WARN, whose="our"),
    "disk.warn.peer": _fill(_DISK_WARN, whose="{peer}'s"),
}
# fmt: on

# A conflict named in a notice conflict alarm (a record of ``named``: ``ours``, whose notice it is,
# picks the template; the rest are its placeholders), and the count of those not named. The console
# has the same keys in strings.js with the same placeholders (tests/test_alarm_codes.py).
CONFLICT: Final[dict[str, str]] = {
    "conflict.ours": _fill(_NAMED, whose="our"),
    "conflict.peer": _fill(_NAMED, whose="the peer's"),
    "conflict.more": "and {n} more ('redline notices')",
}
# Params that are a list of such conflicts; the alarm's ``count`` says how many there are in all.
CONFLICT_PARAMS: Final = frozenset({"named"})

# Params (also a record's) that are a number the text writes in words: a time (wall ms,
# "04 Dec 03:00Z") and a clock difference (ms, "2 min 5 s", "31.2 s"); a console writes them its own way.
TIME_PARAMS: Final = frozenset({"at", "start", "end"})
SPAN_PARAMS: Final = frozenset({"span"})


def span(ms: float) -> str:
    """A clock difference as a person reads it: '1647 d 3 h', '2 min 5 s', '31.2 s'."""
    s = abs(ms) / 1000
    if s < 60:
        return f"{s:.1f} s"
    d, rest = divmod(int(s), 86400)
    h, rest = divmod(rest, 3600)
    m, sec = divmod(rest, 60)
    return " ".join([f"{n} {unit}" for n, unit in ((d, "d"), (h, "h"), (m, "min"), (sec, "s")) if n][:2])


def _as_text(key: str, value: Param, count: Param = 0) -> str:
    if isinstance(value, tuple):
        return _conflicts(value, count) if key in CONFLICT_PARAMS else str(value)
    if key in TIME_PARAMS and isinstance(value, int) and 0 <= value <= MAX_TIME_MS:  # else as a number, never a raise
        return datetime.fromtimestamp(value / 1000, UTC).strftime("%d %b %H:%MZ")
    if key in SPAN_PARAMS and not isinstance(value, str):
        return span(value)
    return str(value)


def _conflicts(named: tuple[Record, ...], count: Param) -> str:
    """The conflicts ``named``, each by its template, then how many of ``count`` are not named."""
    said = [_filled(CONFLICT["conflict.ours" if c.get("ours") else "conflict.peer"], c) for c in named]
    rest = count - len(named) if isinstance(count, int) else 0
    return "; ".join(said + ([_fill(CONFLICT["conflict.more"], n=str(rest))] if rest > 0 else []))


# Params that are free English (an exception's message, a describe(), a problem):
# no translation of them exists; the console shows them as they are, marked lang="en".
EN_PARAMS: Final = frozenset({"exc", "why", "what", "details", "problem", "reason", "runs"})

def placeholders(template: str) -> set[str]:
    return set(_SLOT.findall(template))


def render(code: AlarmCode, params: Mapping[str, Param]) -> str:
    """The English text of alarm ``code`` with ``params`` (each as ``str()`` gives it, as the
    f-strings this replaces did; a time or a clock difference in words; the conflicts named each by
    its template in ``CONFLICT``). A code this table does not know (a caller outside the package,
    which mypy does not check) is its own text: an alarm is never lost to a wrong code."""
    template = TEMPLATES.get(code)
    if template is None:
        return str(code)
    # A param the call site did not give stays "{name}": one word of one alarm is lost, not the
    # ledger batch the alarm is raised in (tests/test_alarm_codes.py checks every call site's params).
    return _filled(template, params)


def _filled(template: str, params: Mapping[str, Param]) -> str:
    count = params.get("count", 0)  # a list param's items are counted against it
    return _SLOT.sub(lambda m: _as_text(m[1], params[m[1]], count) if m[1] in params else m[0], template)


assert set(get_args(AlarmCode)) == set(TEMPLATES), set(get_args(AlarmCode)) ^ set(TEMPLATES)
