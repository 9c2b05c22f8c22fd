"""Every alarm the station raises carries a stable code and params (redline/alarmtext.py), so the
console can show the station's alarm log in its reader's language; the English text stays the
station's own, byte for byte as before, except where a param full of control characters is now
escaped before it is cut (each param is bounded on its own: a row holds at most a few times
MAX_ALARM_CHARS where it once held about six times).

- the table and the console agree: every code has a Russian template in strings.js with the same
  placeholders, and the console's list of free-English params is the table's;
- no call site passes free text: every ``.alarm(`` and ``Alarm(`` in the package names a code of the
  table (mypy checks the ``Literal`` too; this walks the source);
- the English text of real alarms, raised by driving two stations, is what the f-strings said;
- a peer cannot make one alarm row huge through its params: each str param is bounded like the text.
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from pathlib import Path
from typing import Any, get_args

from redline import alarmtext
from redline.alarmtext import (
    CONFLICT,
    CONFLICT_PARAMS,
    EN_PARAMS,
    SPAN_PARAMS,
    TEMPLATES,
    TIME_PARAMS,
    AlarmCode,
    placeholders,
    render,
)
from redline.station import MAX_ALARM_CHARS, MAX_ALARM_RECORDS
from redline.testing import StationPair
from tests.test_attacks_ops import disc_notice
from tests.test_ops import DAY, T0, Line

ROOT = Path(__file__).resolve().parents[1]
STRINGS = (ROOT / "redline/console/strings.js").read_text(encoding="utf-8")
APP = (ROOT / "redline/console/app.js").read_text(encoding="utf-8")
LEVELS = {"info", "warning", "alarm"}


def russian(prefix: str = "alarm") -> dict[str, str]:
    """strings.js's ``"alarm.<code>": "..."`` templates (all Russian: English lives in the table);
    with ``prefix`` "conflict", its templates of a conflict a notice conflict alarm names."""
    found = re.findall(rf'^\s*"{prefix}\.([\w.]+)": "((?:[^"\\]|\\.)*)",?$', STRINGS, re.M)
    out: dict[str, str] = {}
    for code, text in found:
        assert code not in out, f"{prefix}.{code} twice in strings.js"
        out[code] = text
    return out


def test_every_code_has_a_russian_template_with_the_same_placeholders() -> None:
    ru = russian()
    assert set(get_args(AlarmCode)) == set(TEMPLATES)
    assert sorted(set(TEMPLATES) - set(ru)) == [], "codes without a Russian template"
    assert sorted(set(ru) - set(TEMPLATES)) == [], "Russian templates of no code"
    wrong = {c: (sorted(placeholders(t)), sorted(placeholders(ru[c]))) for c, t in TEMPLATES.items()
             if placeholders(t) != placeholders(ru[c])}  # fmt: skip
    assert wrong == {}
    # Russian, not a copy of the English, and without the terminal's command hints
    assert [c for c, t in ru.items() if not re.search("[а-яА-Я]", t)] == []
    assert [c for c, t in ru.items() if re.search(r"\('?redline ", t)] == []


def test_each_conflict_an_alarm_names_has_a_russian_template_with_the_same_placeholders() -> None:
    """The conflicts of a notice conflict alarm (``named``) are written by alarmtext.CONFLICT in
    English and by strings.js's ``conflict.*`` in Russian: the same keys, the same placeholders."""
    ru = {f"conflict.{k}": v for k, v in russian("conflict").items()}
    assert sorted(ru) == sorted(CONFLICT)
    assert {k: placeholders(t) for k, t in CONFLICT.items()} == {k: placeholders(t) for k, t in ru.items()}
    assert [k for k, t in ru.items() if not re.search("[а-яА-Я]", t) or re.search(r"\('?redline ", t)] == []


def test_the_english_lives_only_in_the_table() -> None:
    english = re.search(r"window\.REDLINE_STRINGS = \{\s*en: \{(.*?)\n  \},", STRINGS, re.S)
    assert english is not None
    assert '"alarm.' not in english.group(1)
    assert not re.search(r"Object\.assign\(window\.REDLINE_STRINGS\.en, \{[^}]*\"alarm\.", STRINGS)


def test_the_consoles_free_english_time_and_span_params_are_the_tables() -> None:
    for name, names in (("EN", EN_PARAMS), ("TIME", TIME_PARAMS), ("SPAN", SPAN_PARAMS), ("CONFLICT", CONFLICT_PARAMS)):
        m = re.search(rf"const ALARM_{name}_PARAMS = new Set\(\[([^\]]*)\]\)", APP)
        assert m is not None, name
        assert set(re.findall(r'"(\w+)"', m.group(1))) == set(names), name
    used = set().union(*(placeholders(t) for t in TEMPLATES.values()))
    assert used >= EN_PARAMS


def _codes_of(node: ast.expr) -> list[str] | None:
    """The codes an argument can be: a string constant, either branch of ``a if c else b``; None
    for anything else (an f-string, a concatenation, a call)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        a, b = _codes_of(node.body), _codes_of(node.orelse)
        return None if a is None or b is None else a + b
    return None


def _is_level(node: ast.expr) -> bool:
    """An alarm's level: "info", "warning", "alarm" (or a choice of them), or a name for one."""
    codes = _codes_of(node)
    if codes:
        return set(codes) <= LEVELS
    return (isinstance(node, ast.Name) and node.id == "level") or (
        isinstance(node, ast.Attribute) and node.attr == "level")


def test_no_alarm_call_site_passes_free_text() -> None:
    """An AST walk over the package: every ``.alarm(...)`` call passes no f-string or built string
    at all, and its code (the argument after the level) is a code of the table, or a name typed
    ``AlarmCode`` (mypy --strict checks those); a call naming its code gives exactly that
    template's params; every ``Alarm(...)`` names its code."""
    bad: list[str] = []
    calls = 0
    for path in sorted((ROOT / "redline").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(ROOT)
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if name == "Alarm":
                code = next((k.value for k in node.keywords if k.arg == "code"), None)
                codes = _codes_of(code) if code is not None else None
                typed = isinstance(code, ast.Name)  # Outbox.alarm's own argument, typed AlarmCode
                if not typed and (codes is None or not set(codes) <= set(TEMPLATES)):
                    bad.append(f"{rel}:{node.lineno}: Alarm without a known code")
                continue
            if name != "alarm" or not node.args:
                continue
            calls += 1
            if any(isinstance(a, (ast.JoinedStr, ast.BinOp)) for a in node.args):
                bad.append(f"{rel}:{node.lineno}: a built string")
                continue
            # the level comes first (Outbox, session) or second (Station, after the line); the code after it
            at = next((i + 1 for i, a in enumerate(node.args) if _is_level(a)), None)
            if at is None or at >= len(node.args):
                bad.append(f"{rel}:{node.lineno}: no level and code")
                continue
            arg = node.args[at]
            codes = _codes_of(arg)
            if codes is not None:
                if not set(codes) <= set(TEMPLATES):
                    bad.append(f"{rel}:{node.lineno}: unknown code {codes}")
                    continue
                given = {k.arg for k in node.keywords}
                if None in given:  # **params: the caller passes on what it was given
                    continue
                for code in codes:  # its params are its template's placeholders, no more and no fewer
                    if given != placeholders(TEMPLATES[code]):
                        bad.append(f"{rel}:{node.lineno}: {code} given {sorted(given)}, its template wants "
                                   f"{sorted(placeholders(TEMPLATES[code]))}")  # fmt: skip
            elif not (isinstance(arg, ast.Name) or (isinstance(arg, ast.Attribute) and arg.attr == "code")):
                bad.append(f"{rel}:{node.lineno}: the code is {ast.unparse(arg)}")
    assert calls >= 70, calls
    assert bad == []


def test_the_composed_templates_say_what_the_f_strings_said() -> None:
    """The templates built from parts (a side, a variant) render the texts the call sites built."""
    seq, ident, who = 7, "0123abcd", "the peer's"
    assert render("flash.received", {"role": "duty", "seconds": 120, "seq": seq, "id": ident}) == (
        f"FLASH from the peer: duty must acknowledge within 120 s: seq {seq}, id {ident} ('redline ack LINE {ident}')")
    said = [f"rotated the signing key; envelopes after seq {seq} are signed by the new key",
            "rotated the TLS key; the paths prove the new one from now on"]  # fmt: skip
    assert render("key.both.peer", {"seq": seq}) == (
        f"KEY seq {seq}: the peer {' and '.join(said)}, certified by the station's root")
    assert render("key.tls.ours", {"seq": seq}) == f"KEY seq {seq}: we {said[1]}, certified by the station's root"
    assert render("refused.content.peer", {"kind": "FLASH", "seq": seq, "exc": "bad"}) == (
        f"refused FLASH seq {seq} from {who} station: its content is not as the protocol says (bad); it is stored "
        "and shown, not acted on")  # fmt: skip
    assert render("kind.unknown.peer", {"kind": "BEACON", "seq": seq}) == (
        f"{who} BEACON seq {seq}: the kind is not one this station knows (a newer peer's?); it is stored and shown, "
        "not acted on")  # fmt: skip
    fix = "; a person's key changes only by a key rotation the station's root certifies, never by a roster alone"
    assert render("roster.pinned_key.ours", {"seq": seq, "why": "it changes X"}) == (
        f"PINNED KEY: our ROSTER seq {seq}: it changes X{fix}")
    named = "strike seq 3 (our side)"
    assert render("notice.conflicts.peer", {"kind": "strike", "seq": seq, "count": 2, "named": named}) == (
        f"NOTICE CONFLICT: {who} strike notice seq {seq} conflicts with 2 active notices: {named}")
    assert render("notice.conflict.ours", {"kind": "exercise", "seq": seq, "count": 1, "named": named}) == (
        f"NOTICE CONFLICT: our exercise notice seq {seq} conflicts with 1 active notice: {named}")
    assert render("test.missed_dead", {"seconds": 300}) == (
        "LINE TEST MISSED: no answer within 300 s and the peer station never receipted it: the line may be dead")
    what = ("check that the database answers and takes writes: postgresql://db/redline (the primary, reachable "
            "from this host, its disk not full)")  # fmt: skip
    assert render("storage.failed.db", {"exc": "disk I/O error", "url": "postgresql://db/redline"}) == (
        f"STORAGE FAILURE: disk I/O error. Nothing that was not stored has been receipted or acknowledged; the line "
        f"accepts nothing until the store can be written again ({what}); the peer keeps and resends what we did not "
        "receipt")  # fmt: skip
    assert render("clock.skew.ahead", {"peer": "NDMC", "span": 31_240.5, "limit": "30"}).startswith(
        "CLOCK SKEW: NDMC's clock is 31.2 s ahead of ours (limit 30 s, ")
    assert render("clock.skew.ahead", {"peer": "NDMC", "span": 142_311_600_000, "limit": "30"}).startswith(
        "CLOCK SKEW: NDMC's clock is 1647 d 3 h ahead of ours")
    at = 1_764_817_200_000  # 2025-12-04 03:00Z, written as LineTest.at() did
    assert render("test.missed_here", {"at": at}) == (
        "LINE TEST MISSED here: the tester recorded that its test was not answered in time (its test of 04 Dec 03:00Z)")
    assert render("test.unanswered", {"at": at}).startswith("LINE TEST from the peer (04 Dec 03:00Z) still unanswered")
    assert render("clock.skew.behind", {"peer": "NDMC", "span": 125_000, "limit": "30"}) == (
        "CLOCK SKEW: NDMC's clock is 2 min 5 s behind ours (limit 30 s, max_clock_skew_seconds): times and deadlines "
        "it states are misread until one clock is corrected")  # fmt: skip
    assert render("revoke.peer.none", {"seq": seq, "line": ident, "peer": "NDMC"}) == (
        f"REVOKE seq {seq} on line {ident}: NDMC's root revoked a signing key; nothing it signed on this line after "
        "the named checkpoint")  # fmt: skip
    assert render("disk.warn.peer", {"peer": "NDMC", "line": ident, "used": 8, "limit": 10, "share": "80%"}) == (
        f"DISK: NDMC's envelopes on line {ident} use 8 of 10 bytes (80%, max_line_disk_bytes); archive the "
        "transcript and raise the limit")  # fmt: skip
    assert render("ha.failover", {"holder": "h2", "term": 4, "before": "h1", "address": "a:1", "before_term": 3}) == (
        "FAILOVER: this process (h2) is now the active one, lease term 4, from h1 at a:1 (term 3), whose lease lapsed")
    # a param is put in as it is, never read as a template
    assert render("path.closed", {"path": "p0", "message": "{exc} {peer}"}) == "peer closed path p0: {exc} {peer}"


def test_the_english_of_the_notice_conflict_alarms_is_word_for_word_as_before() -> None:
    """The conflicts a notice meets are params as data now (``named``: whose, kind, seq, metres
    apart, margin, window, band); the English the terminal, the log and ``status --json`` print
    from them is what the engine's f-strings said, at both ends, one conflict or more, with the
    ones past the named three counted."""
    line = Line()
    line.file(line.a, "NOTICE", disc_notice(30.15, 50.0, kind="strike", margin_m=2000))
    line.file(line.b, "NOTICE", disc_notice(30.0, 50.0, kind="naval", floor_m=500, start=T0 + 3_600_000))
    for i in range(4):
        line.file(line.b, "NOTICE", disc_notice(30.0 + i * 0.01, 50.01, kind="exercise", ceiling_m=8000 - i))
    window = "13 May 09:00Z to 14 May 09:00Z"
    for side, ours, theirs in ((line.a, "the peer's", "our"), (line.b, "our", "the peer's")):
        side_of = "peer" if side is line.a else "ours"
        assert [a.code for a in side.alarms] == [f"notice.conflict.{side_of}"] + [f"notice.conflicts.{side_of}"] * 4
        texts = [a.text for a in side.alarms]
        assert texts[0] == (
            f"NOTICE CONFLICT: {ours} naval notice seq 1 conflicts with 1 active notice: {theirs} strike notice seq "
            "1, 755 m apart (margin 2000 m), 13 May 10:00Z to 14 May 09:00Z, 500-10000 m")  # fmt: skip
        assert texts[1] == (
            f"NOTICE CONFLICT: {ours} exercise notice seq 2 conflicts with 2 active notices: {ours} naval notice seq "
            f"1, 0 m apart (margin 0 m), 13 May 10:00Z to 14 May 09:00Z, 500-8000 m; {theirs} strike notice seq 1, "
            f"811 m apart (margin 2000 m), {window}, 0-8000 m")  # fmt: skip
        assert texts[4] == (
            f"NOTICE CONFLICT: {ours} exercise notice seq 5 conflicts with 5 active notices: {theirs} strike notice "
            f"seq 1, 0 m apart (margin 2000 m), {window}, 0-7997 m; {ours} naval notice seq 1, 0 m apart (margin 0 "
            f"m), 13 May 10:00Z to 14 May 09:00Z, 500-7997 m; {ours} exercise notice seq 2, 0 m apart (margin 0 m), "
            f"{window}, 0-7997 m; and 2 more ('redline notices')")  # fmt: skip
    # ... from params that are data: the three nearest as records, the rest counted by ``count``
    params = line.a.alarms[4].params
    assert params["count"] == 5 and params["kind"] == "exercise"
    assert params["named"][0] == {"ours": True, "kind": "strike", "seq": 1, "distance_m": 0, "margin_m": 2000,
                                  "start": T0, "end": T0 + DAY, "floor_m": 0, "ceiling_m": 7997}  # fmt: skip
    assert [(c["ours"], c["kind"]) for c in params["named"]] == [(True, "strike"), (False, "naval"),
                                                                (False, "exercise")]  # fmt: skip
    assert json.loads(json.dumps(params)) == {**params, "named": [dict(c) for c in params["named"]]}


def test_a_list_param_is_bounded_like_the_text_and_the_records_cut_are_counted_as_more(tmp_path: Path) -> None:
    """A station keeps at most MAX_ALARM_RECORDS records of a list param, each text in them
    escaped and cut like the text; the English counts the records it cut among those not named."""

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            huge = "\u202e" + "x" * 50_000
            named = tuple({"ours": False, "kind": huge, "seq": str(i), "distance_m": i, "margin_m": 0, "start": T0,
                           "end": T0 + DAY, "floor_m": 0, "ceiling_m": 100} for i in range(50))  # fmt: skip
            sp.a.alarm(sp.line, "alarm", "notice.conflicts.peer", kind="air", seq=9, count=60, named=named)
            row = _row(sp.a, "notice.conflicts.peer")
            kept = row["params"]["named"]
            assert len(kept) == MAX_ALARM_RECORDS and [c["seq"] for c in kept] == [str(i) for i in range(10)]
            assert all(len(c["kind"]) <= MAX_ALARM_CHARS and "\u202e" not in c["kind"] for c in kept)
            assert len(row["text"]) <= MAX_ALARM_CHARS and "\u202e" not in row["text"]
            # records of short texts: the ten kept are named, the forty cut counted with the ten never sent
            sp.a.alarm(sp.line, "alarm", "notice.conflicts.peer", kind="air", seq=9, count=60,
                       named=tuple({**c, "kind": "naval"} for c in named))  # fmt: skip
            text = _row(sp.a, "notice.conflicts.peer")["text"]
            assert text.count("the peer's naval notice seq") == MAX_ALARM_RECORDS
            assert text.endswith("0-100 m; and 50 more ('redline notices')")

    asyncio.run(main())


def _row(st: Any, code: str) -> dict[str, Any]:
    rows = [a for a in st.alarms if a["code"] == code]
    assert rows, [a["code"] for a in st.alarms]
    return dict(rows[-1])


def test_a_peers_call_request_alarms_with_its_code_params_and_unchanged_english(tmp_path: Path) -> None:
    """Driven through two real stations: the alarm row (what status, the WebSocket and ``redline
    status --json`` give) carries the code, JSON-safe params and the English of before."""

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            wanted = {"from_role": "Secretary", "to_role": "Minister", "subject": "Ceasefire", "windows": []}
            await sp.act("b", "CALL_REQUEST", wanted, prio="priority")
            row = _row(sp.a, "call.request")
            assert row["params"] == {"from_role": "Secretary", "to_role": "Minister", "subject": "Ceasefire"}
            assert row["text"] == "CALL REQUEST from the peer's Secretary to our Minister: Ceasefire"
            assert row["level"] == "warning"
            status = sp.a.status().to_obj()["alarms"]
            assert any(a["code"] == "call.request" and a["params"] == row["params"] for a in status)
            # a FLASH: the role word, the window, the seq and the id as params
            sent = await sp.send("b", "FLASH: exercise", kind="FLASH", prio="FLASH")
            flash = _row(sp.a, "flash.received")
            assert flash["params"]["seq"] == sent["seq"] and flash["params"]["role"] == "duty"
            assert flash["text"] == (
                f"FLASH from the peer: duty must acknowledge within {flash['params']['seconds']} s: seq {sent['seq']}, "
                f"id {flash['params']['id']} ('redline ack LINE {flash['params']['id']}')")  # fmt: skip
            assert all(type(v) in (str, int, float) for a in sp.a.alarms for v in a["params"].values())

    asyncio.run(main())


def test_a_peer_cannot_make_one_alarm_huge_through_its_params(tmp_path: Path) -> None:
    """A call request whose subject and roles are each 50,000 characters of text and bidi controls:
    each param of the row is bounded (and made visible) like the text, never kept whole."""

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            huge = "\u202e" + "x" * 50_000
            wanted = {"from_role": huge, "to_role": huge, "subject": huge, "windows": []}
            await sp.act("b", "CALL_REQUEST", wanted, prio="priority")
            row = _row(sp.a, "call.request")
            assert len(row["text"]) <= MAX_ALARM_CHARS
            for key in ("from_role", "to_role", "subject"):
                value = row["params"][key]
                assert len(value) <= MAX_ALARM_CHARS and value.startswith("\\u202e") and "\u202e" not in value

    asyncio.run(main())


def test_an_alarm_raised_with_a_code_outside_the_table_is_kept_as_its_own_text(tmp_path: Path) -> None:
    """A caller outside the package (which mypy does not check) loses no alarm: code "text"."""

    async def main() -> None:
        async with StationPair(tmp_path) as sp:
            sp.a.alarm(sp.line, "alarm", "a tool's own words")  # type: ignore[arg-type]
            assert sp.a.alarms[-1]["code"] == "text" and sp.a.alarms[-1]["params"] == {}
            assert sp.a.alarms[-1]["text"] == "a tool's own words"

    asyncio.run(main())


def test_the_table_imports_nothing_of_redline_but_the_clock() -> None:
    """ops/, session.py, station.py and standby.py all import it: it must not import them back
    (redline.clock, for the last time ``datetime`` shows, imports nothing of redline)."""
    tree = ast.parse(Path(alarmtext.__file__).read_text(encoding="utf-8"))
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)] + [
        a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]  # fmt: skip
    assert [m for m in imported if m and m.startswith("redline")] == ["redline.clock"]
    clock = ast.parse((ROOT / "redline" / "clock.py").read_text(encoding="utf-8"))
    assert not [n for n in ast.walk(clock) if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("redline")]


def test_a_time_param_past_the_year_9999_is_written_as_a_number_not_raised() -> None:
    """``datetime`` raises past the year 9999; every time param is our own stored_at today, but the
    table's rendering must not be the place an alarm turns into a traceback."""
    far = 253_402_300_800_000
    assert render("test.missed_here", {"at": far}).endswith(f"(its test of {far})")
    assert render("test.missed_here", {"at": -1}).endswith("(its test of -1)")
    assert "01 Jan 00:00Z" in render("test.missed_here", {"at": 0})


def test_an_alarm_missing_a_param_keeps_its_placeholder_instead_of_raising() -> None:
    """Ops alarms are raised inside the batch that stores the peer's envelope: a param a call site
    forgot must cost one word of one alarm, never the batch (it would roll back the envelope at
    every resend and stall the line)."""
    said = render("call.request", {"from_role": "Secretary"})
    assert said == "CALL REQUEST from the peer's Secretary to our {to_role}: {subject}"
    assert render("line.up", {}) == "LINE UP again: a path to {peer} is open"
