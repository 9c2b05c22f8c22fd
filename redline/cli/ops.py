"""``redline`` commands for operations: users, line tests, FLASH, calls and readouts, translations.

Person-signed actions (answer, ack, call record, readout) unlock the acting person's key here, in
the CLI process, with the password typed by that person; the station never sees the password and
only checks the signature against the roster it publishes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from redline import jsonin, kinds
from redline.cli.common import (
    console,
    control,
    emit,
    fail,
    json_option,
    limit_option,
    offset_option,
    read_view,
    run,
    say_more,
    station_option,
    when,
)
from redline.display import ID_PREFIX_MIN, awaits_ack, line_word, short_id, styled
from redline.errors import EncodingError
from redline.home import station_path

if TYPE_CHECKING:  # a command imports what it uses when it runs: 'redline ack' draws no table, reads no view
    from redline.ops.views import (
        CallPairView,
        FlashView,
        LineTestsView,
        MessageView,
        NoticeDetail,
        NoticesPage,
        ToAnswer,
    )  # fmt: skip


def parse_time(text: str) -> int:
    """ISO 8601 UTC time ('2022-05-13T11:00Z') -> ms (views.parse_utc: the one rule)."""
    from redline import views

    return int(run(lambda: views.parse_utc(text)))


def read_password(prompt: str) -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt(prompt, hide_input=True))


def act(station: str | None, line: str, kind: str, content: dict[str, Any], *, user: str | None = None,
        priority: str | None = None, idem: str | None = None) -> dict[str, Any]:  # fmt: skip
    """File an operator action; sign it as ``user`` first when the kind needs a person."""
    if kind in kinds.PERSON_SIGNED:
        from redline import persons  # the person's key: PyNaCl's Argon2id and SecretBox

        if not user:
            fail(f"{kind} must be signed by a person: give --user NAME (the password is asked for)")
        assert user is not None
        content = control(station, {"op": "resolve", "line": line, "kind": kind, "content": content})
        home = station_path(station)
        people = {p.name: p for p in persons.load_users(home)}
        if user not in people:
            fail(f"no user {user!r} at this station; add one with 'redline user add'")
        key = run(lambda: persons.unlock(home, user, read_password(f"password for {user}")))
        content = persons.sign_content(content, people[user], key)
    request = {"op": "act", "line": line, "kind": kind, "content": content, "priority": priority, "idem": idem}
    result: dict[str, Any] = control(station, request)
    return result


def show_result(d: dict[str, Any]) -> None:
    if d["id"]:
        console.print(f"{d['kind']} accepted: seq {d['seq']}, id {d['id']}")
    else:
        console.print(f"{d['kind']} accepted as outbox #{d['outbox']}: {d['state']}")


def register(main: click.Group) -> None:
    @main.group()
    def user() -> None:
        """People on this station's roster: each signs for themselves."""

    root_key_option = click.option(
        "--root-key", "root_key", type=click.Path(path_type=Path, dir_okay=False), default=None,
        help="the station's root key file, which certifies the person (read now, never copied; default: "
             "keys/root.key if it is still there)",
    )  # fmt: skip

    def station_root(station: str | None, root_key: Path | None) -> Any:
        """The station's root, read from ``root_key`` (or keys/root.key): it certifies people."""
        from redline import keys as keyfiles
        from redline.errors import ConfigError
        from redline.home import StationDir

        home = StationDir(station_path(station))
        home.require()
        path = root_key if root_key is not None else home.keys / "root.key"
        if not path.exists():
            raise ConfigError(f"{path} is not there: give --root-key PATH (the root certifies each person's key)")
        from redline import rotation

        version, in_force = rotation.record_roots(home)  # after a root rotation, the new root
        rotation.require_confirmed(home, version, "people")
        return keyfiles.read_root(path, in_force)

    @user.command("add")
    @station_option
    @click.argument("name")
    @click.option("--role", type=click.Choice(kinds.ROLES), required=True)  # persons.ROLES
    @root_key_option
    @json_option
    def user_add(station: str | None, name: str, role: str, root_key: Path | None, as_json: bool) -> None:
        """Add NAME with a signing key sealed by their password (read from stdin), certified by the
        station's root (name, role and key)."""
        from redline import persons

        root = run(lambda: station_root(station, root_key))
        password = read_password(f"new password for {name}")
        p = run(lambda: persons.add_user(station_path(station), name, role, password, root=root))
        note = (f"user {name} ({role}) added, key {p.key_id}, certified by the station's root; the roster goes to "
                "the peer with the next message")  # fmt: skip
        emit(as_json, p.to_obj(), lambda d: console.print(note))

    @user.command("rotate")
    @station_option
    @click.argument("name")
    @root_key_option
    @json_option
    def user_rotate(station: str | None, name: str, root_key: Path | None, as_json: bool) -> None:
        """Give NAME a new key (sealed by a new password, read from stdin), certified by the root; the
        peer moves its pin when the next roster carries the certificate."""
        from redline import persons

        root = run(lambda: station_root(station, root_key))
        password = read_password(f"new password for {name}")
        p = run(lambda: persons.rotate_user(station_path(station), name, password, root))
        note = f"user {name} has a new key {p.key_id}, certified by the station's root"
        emit(as_json, p.to_obj(), lambda d: console.print(note))

    @user.command("remove")
    @station_option
    @click.argument("name")
    @root_key_option
    @json_option
    def user_remove(station: str | None, name: str, root_key: Path | None, as_json: bool) -> None:
        """Remove NAME: their sealed key is deleted, their console session ends at its next request, and
        the root certifies the removal so the peer drops their pin."""
        from redline import persons

        root = run(lambda: station_root(station, root_key))
        p = run(lambda: persons.remove_user(station_path(station), name, root=root))
        note = (f"user {name} ({p.role}) removed: their key can no longer be unlocked here, and a console "
                "session of theirs ends at its next request; the root's removal goes to the peer")  # fmt: skip
        emit(as_json, p.to_obj(), lambda d: console.print(note))

    @user.command("list")
    @station_option
    @json_option
    def user_list(station: str | None, as_json: bool) -> None:
        """This station's users and roles."""
        from redline import persons

        people = [p.to_obj() for p in persons.load_users(Path(station_path(station)))]

        def human(ps: list[dict[str, str]]) -> None:
            for p in ps:
                console.print(f"{p['name']:24} {p['role']:12} {p['key'][:16]}")

        emit(as_json, people, human)

    @main.command("test")
    @station_option
    @click.argument("line")
    @json_option
    def test_cmd(station: str | None, line: str, as_json: bool) -> None:
        """Send a line test now; a person at the peer must answer it."""
        content = {"text": "Line test (on demand). Please answer to confirm the line is attended."}
        emit(as_json, act(station, line, "TEST", content, priority="priority"), show_result)

    @main.command()
    @station_option
    @click.argument("line")
    @click.argument("test_id", required=False)
    @click.option("--user", required=True, help="The person answering (asked for their password).")
    @click.option("--text", default="Test received. Line attended.", help="The answer.")
    @json_option
    def answer(station: str | None, line: str, test_id: str | None, user: str, text: str, as_json: bool) -> None:
        """Answer the peer's line test (the oldest unanswered one, unless TEST_ID is given)."""
        if test_id is None:
            pending: tuple[ToAnswer, ...] = read_view(station, line, "tests").to_answer
            if not pending:
                fail("no unanswered line test from the peer")
            test_id = pending[0].id
        emit(as_json, act(station, line, "TEST_ANSWER", {"test": test_id, "text": text}, user=user), show_result)

    @main.command()
    @station_option
    @click.argument("line")
    @offset_option
    @limit_option
    @json_option
    def tests(station: str | None, line: str, offset: int, limit: int, as_json: bool) -> None:
        """Line test history: passed, answer times, time since the line was last proven.

        A page: the tests still pending first, then the newest (--offset, --limit)."""
        view: LineTestsView = read_view(station, line, "tests", offset=offset, limit=limit)

        def human(h: LineTestsView) -> None:
            from rich.table import Table

            med = f"{h.answer_ms_median / 1000:.1f} s" if h.answer_ms_median is not None else "-"
            worst = f"{h.answer_ms_worst / 1000:.1f} s" if h.answer_ms_worst is not None else "-"
            since = h.since_last_proven_ms
            proven = f"{since / 3_600_000:.1f} h ago" if since is not None else "never"
            console.print(f"tests sent {h.sent}: passed {h.passed}, missed {h.missed}, pending {h.pending}")
            console.print(f"answer time: median {med}, worst {worst}; line last proven {proven}")
            table = Table("id", "sent (UTC)", "receipted", "answered by", "answer time", "result")
            for t in h.tests[-20:]:
                took = f"{t.answer_ms / 1000:.1f} s" if t.answer_ms is not None else "-"
                table.add_row(short_id(t.id), when(t.sent_at), when(t.receipted_at), t.answered_by or "-", took,
                              t.result)  # fmt: skip
            console.print(table)
            for w in h.to_answer:  # the command to type, with the id it needs
                console.print(f"the peer's test {short_id(w.id)} waits for an answer until {when(w.deadline)}: "
                              f"redline answer {line_word(line)} {short_id(w.id)} --user NAME",
                              style="bold red", soft_wrap=True)  # fmt: skip
            say_more(station, line, "tests", offset, limit,
                     {"tests": "of our tests", "to_answer": "of the peer's tests waiting for an answer"})  # fmt: skip

        emit(as_json, view, human)

    @main.command()
    @station_option
    @click.argument("line")
    @click.argument("flash_id")
    @click.option("--user", required=True, help="The person acknowledging (asked for their password).")
    @json_option
    def ack(station: str | None, line: str, flash_id: str, user: str, as_json: bool) -> None:
        """Acknowledge the peer's FLASH message FLASH_ID (id prefix) as a named person.

        FLASH_ID is the id column of 'redline flashes' (6 or more hex digits of the id), or the
        FLASH's seq: a number of fewer than 6 digits can be no id, so it is the peer's seq."""
        if flash_id.isdigit() and len(flash_id) < ID_PREFIX_MIN:
            seq = int(flash_id)
            page: tuple[FlashView, ...] = read_view(station, line, "flash", offset=0, limit=500)
            found = [f for f in page if not f.ours and f.seq == seq]
            if not found:
                fail(f"the peer has no FLASH seq {seq} on this line ('redline flashes {line}' lists them)")
            flash_id = found[0].id
        emit(as_json, act(station, line, "ACK", {"ref": flash_id}, user=user), show_result)

    @main.command()
    @station_option
    @click.argument("line")
    @offset_option
    @limit_option
    @json_option
    def flashes(station: str | None, line: str, offset: int, limit: int, as_json: bool) -> None:
        """FLASH messages both ways: receipted, read, escalated, acknowledged by whom and when.

        A page: those not acknowledged first, then the newest (--offset, --limit)."""
        view: tuple[FlashView, ...] = read_view(station, line, "flash", offset=offset, limit=limit)

        def human(fs: tuple[FlashView, ...]) -> None:
            from rich.table import Table

            table = Table("dir", "seq", "id", "text", "receipted", "escalations", "acknowledged", "state")
            for f in fs:
                esc = ", ".join(e.level for e in f.escalations) or "-"
                ackd = f"{f.acked_by} {when(f.acked_at)}" if f.acked_by else "-"
                table.add_row("out" if f.ours else "in", str(f.seq), short_id(f.id), f.text or "",
                              when(f.receipted_at), esc, ackd, f.state)  # fmt: skip
            console.print(table)
            for f in fs:  # each one still owed an ACK here, with the command that gives it
                if awaits_ack(f.ours, f.acked_by, f.state):
                    console.print(f"FLASH seq {f.seq} waits for acknowledgement: redline ack {line_word(line)} "
                                  f"{short_id(f.id)} --user NAME", style="bold red", soft_wrap=True)  # fmt: skip
            say_more(station, line, "flash", offset, limit, {"flash": "FLASH messages"})

        emit(as_json, view, human)

    @main.group()
    def call() -> None:
        """Call requests, replies and call records."""

    @call.command("request")
    @station_option
    @click.argument("line")
    @click.option("--from-role", required=True, help="Our principal, e.g. Secretary.")
    @click.option("--to-role", required=True, help="The peer's principal, e.g. Minister.")
    @click.option("--subject", required=True)
    @click.option("--window", multiple=True, help="Proposed window START/END in UTC (ISO 8601, trailing Z).")
    @click.option("--expires", default=None, help="When the request lapses unanswered (UTC); default 7 days.")
    @json_option
    def call_request(station: str | None, line: str, from_role: str, to_role: str, subject: str,
                     window: tuple[str, ...], expires: str | None, as_json: bool) -> None:  # fmt: skip
        """Request a call between our principal and the peer's."""
        windows = []
        for w in window:
            start, _, end = w.partition("/")
            a, b = parse_time(start), parse_time(end)
            if b <= a:
                fail(f"window {w} ends before it starts")
            windows.append([a, b])
        content: dict[str, Any] = {"from_role": from_role, "to_role": to_role, "subject": subject, "windows": windows}
        if expires:
            content["expires"] = parse_time(expires)
        emit(as_json, act(station, line, "CALL_REQUEST", content, priority="priority"), show_result)

    @call.command("reply")
    @station_option
    @click.argument("line")
    @click.argument("request_id")
    @click.argument("answer", type=click.Choice(["accept", "decline"]))
    @click.option("--time", "at", default=None, help="Accepted call time (UTC).")
    @click.option("--reason", default=None, help="Why declined.")
    @json_option
    def call_reply(station: str | None, line: str, request_id: str, answer: str, at: str | None,
                   reason: str | None, as_json: bool) -> None:  # fmt: skip
        """Accept (with a time) or decline (with a reason) the peer's call request."""
        content: dict[str, Any] = {"request": request_id, "answer": answer}
        if answer == "accept":
            if not at:
                fail("accepting needs --time")
            content["time"] = parse_time(str(at))
        elif reason:
            content["reason"] = reason
        emit(as_json, act(station, line, "CALL_REPLY", content, priority="priority"), show_result)

    @call.command("join")
    @click.argument("line")
    @click.option("--url", required=True, help="The station's console address, e.g. http://127.0.0.1:8001/.")
    @click.option("--user", required=True, help="Station user to take part as (the password is asked for).")
    @click.option("--ring", "ring", flag_value=True, help="Ring the peer (default: wait for its ring and pick up).")
    @click.option("--pick-up", "ring", flag_value=False, default=False, help="Wait for the peer's ring; pick it up.")
    @click.option("--play", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                  help="Audio file to say (WAV, or anything ffmpeg reads).")  # fmt: skip
    @click.option("--tone", type=click.FloatRange(1, 20_000), default=None,
                  help="Say a sine tone of this many Hz instead of a file.")  # fmt: skip
    @click.option("--seconds", type=click.FloatRange(0.02, 600), default=3.0, show_default=True,
                  help="Length of --tone.")  # fmt: skip
    @click.option("--record", type=click.Path(dir_okay=False, path_type=Path), default=None,
                  help="Write what the peer said to this WAV file.")  # fmt: skip
    @click.option("--hang-up", is_flag=True, help="Hang up once our audio is said (default: stay until the call ends).")
    @click.option("--stay", type=click.FloatRange(0, 86_400), default=30.0, show_default=True,
                  help="Seconds to stay on after our audio when not hanging up.")  # fmt: skip
    @click.option("--test-id", default=None, help="With --ring: the ring is the voice line test of this TEST.")
    @click.option("--timeout", type=click.FloatRange(0.1, 86_400), default=60.0, show_default=True,
                  help="Seconds to wait for a ring or a pick-up.")  # fmt: skip
    @click.option("--insecure", is_flag=True, help="Accept the console's self-signed certificate (a test station).")
    @json_option
    def call_join(line: str, url: str, user: str, ring: bool, play: Path | None, tone: float | None, seconds: float,
                  record: Path | None, hang_up: bool, stay: float, test_id: str | None, timeout: float,
                  insecure: bool, as_json: bool) -> None:  # fmt: skip
        """Take part in a voice call without a browser (a headless participant): ring the peer or pick
        up its ring, say a WAV file or a tone, record what the peer says; as a console does, through
        the station's API, signed as --user."""
        import asyncio

        from redline import participant

        if (play is None) == (tone is None):
            fail("give exactly one of --play FILE or --tone HZ")
        pcm = run(lambda: participant.read_wav(play) if play is not None else participant.tone(seconds, tone or 0))
        password = read_password(f"password for {user}")
        say = (lambda s: None) if as_json else (lambda s: console.print(s))
        result = run(lambda: asyncio.run(participant.join(
            url, line, user, password, ring=ring, play=pcm, record=record, test_id=test_id, stay=stay,
            hang_up=hang_up, timeout=timeout, insecure=insecure, say=say)))  # fmt: skip

        def human(d: dict[str, Any]) -> None:
            console.print(f"call {d['call'][:12]}: sent {d['sent']} packets, heard {d['heard']}; now {d['state']}"
                          + (f"; recorded to {d['record']}" if d["record"] else ""))  # fmt: skip
            for r in d["refused"]:
                console.print(styled(("refused:", "bold red"), f" {r}"))

        emit(as_json, result, human)

    @call.command("record")
    @station_option
    @click.argument("line")
    @click.option("--start", required=True)
    @click.option("--end", required=True)
    @click.option("--principal", "principals", multiple=True, required=True, help="Role on each side.")
    @click.option("--participant", "participants", multiple=True, help="Everyone on the call.")
    @click.option("--request", "request_id", default=None, help="The request this call answers.")
    @click.option("--voice", "voice_id", default=None,
                  help="The voice call on the line this records (its CALL_RING id): its audio evidence.")  # fmt: skip
    @click.option("--user", required=True)
    @json_option
    def call_record(
        station: str | None, line: str, start: str, end: str, principals: tuple[str, ...],
        participants: tuple[str, ...], request_id: str | None, voice_id: str | None, user: str, as_json: bool,
    ) -> None:  # fmt: skip
        """File the record of a call that took place."""
        a, b = parse_time(start), parse_time(end)
        if b <= a:
            fail("the call ends before it starts")
        content: dict[str, Any] = {"start": a, "end": b, "principals": list(principals),
                                   "participants": list(participants) or list(principals)}  # fmt: skip
        if request_id:
            content["request"] = request_id
        if voice_id:
            content["voice"] = voice_id
        emit(as_json, act(station, line, "CALL_RECORD", content, user=user, priority="priority"), show_result)

    @main.command()
    @station_option
    @click.argument("line")
    @click.argument("call_id")
    @click.argument("text")
    @click.option("--user", required=True)
    @json_option
    def readout(station: str | None, line: str, call_id: str, text: str, user: str, as_json: bool) -> None:
        """File this side's readout of call CALL_ID, in this station's language."""
        emit(as_json, act(station, line, "READOUT", {"call": call_id, "text": text}, user=user), show_result)

    @main.command()
    @station_option
    @click.argument("line")
    @offset_option
    @limit_option
    @json_option
    def calls(station: str | None, line: str, offset: int, limit: int, as_json: bool) -> None:
        """Per pair of principals: requests, declines, unanswered, days since the last call; readouts side by side.

        A page of the pairs (--offset, --limit)."""
        view: tuple[CallPairView, ...] = read_view(station, line, "calls", offset=offset, limit=limit)

        def human(pairs: tuple[CallPairView, ...]) -> None:
            from rich.table import Table

            for p in pairs:
                console.rule(" ↔ ".join(p.principals))
                for r in p.outcomes:  # the peer's open requests: the id 'call reply' takes, on screen
                    if r.state == "open" and not r.ours:
                        console.print(f"open request {short_id(r.id)} (seq {r.seq}) from {r.from_role}: {r.subject}; "
                                      f"reply: redline call reply {line_word(line)} {short_id(r.id)} accept --time "
                                      "TIME, or decline --reason TEXT", style="bold yellow",
                                      soft_wrap=True)  # fmt: skip
                made = ", ".join(str(n) for n in p.requests.values())
                since = p.days_since_last_call
                console.print(
                    f"requests made {made} (ours, theirs); accepted {p.accepted}, declined {p.declined}, "
                    f"unanswered {p.unanswered}, open {p.open}; days since last call: "
                    f"{since if since is not None else 'no call yet'}"
                )
                for c in p.calls:
                    gap = f" — first in {c.days_since_previous} days" if c.days_since_previous is not None else ""
                    console.print(f"\ncall {when(c.start)} to {when(c.end)}{gap}")
                    if c.voice:
                        evidence = c.audio_evidence or "not yet filed"
                        console.print(f"voice call {c.voice[:12]}: audio evidence {evidence}")
                    table = Table("our readout", "their readout", expand=True)
                    ours, theirs = c.readouts.get("ours"), c.readouts.get("theirs")
                    table.add_row(
                        f"{ours.text}\n— {ours.by} ({ours.lang})" if ours else "(not filed)",
                        f"{theirs.text}\n— {theirs.by} ({theirs.lang})" if theirs else "(not filed)",
                    )
                    console.print(table)
            say_more(station, line, "calls", offset, limit, {"calls": "pairs of principals"})

        emit(as_json, view, human)

    @main.command()
    @station_option
    @click.argument("line")
    @click.argument("ref")
    @click.argument("text")
    @click.option("--lang", required=True, help="Language of the translation.")
    @click.option("--translator", required=True, help="Who translated it (or reviewed the machine draft).")
    @click.option("--machine", is_flag=True, help="Draft TEXT with an installed offline machine translator.")
    @json_option
    def translate(
        station: str | None, line: str, ref: str, text: str, lang: str, translator: str, machine: bool,
        as_json: bool,
    ) -> None:  # fmt: skip
        """Attach a translation of message REF; the original stays authoritative.

        With --machine, TEXT is the original to draft from (e.g. copied from 'redline show') and
        the translator named is the person who reviewed the draft."""
        if machine:
            from redline.ops.translation import machine_translate

            source = control(station, {"op": "status"})["lines"][0].get("peer_lang", "auto")
            text, backend = run(lambda: machine_translate(text, source, lang))
            translator = f"{translator} (reviewing {backend} machine draft)"
        content = {"ref": ref, "text": text, "lang": lang, "translator": translator}
        emit(as_json, act(station, line, "TRANSLATION", content), show_result)

    @main.command()
    @station_option
    @click.argument("line")
    @click.argument("ref")
    @click.option("--user", default=None, help="Record that this person read it (files READ).")
    @json_option
    def show(station: str | None, line: str, ref: str, user: str | None, as_json: bool) -> None:
        """Show message REF with its translations; with --user, record that the person read it."""
        from redline.ops.views import MessageView
        from redline.readmodel import from_obj, to_obj

        m = run(lambda: from_obj(control(station, {"op": "show", "line": line, "id": ref}), MessageView, "show"))
        read = act(station, line, "READ", {"ref": m.id, "by": user}) if user else None

        def human(m: MessageView) -> None:
            console.print(f"{m.kind} seq {m.seq} from {'us' if m.ours else 'the peer'} "
                          f"({m.lang}, {when(m.sent_at)}):")  # fmt: skip
            console.print(m.content.get("text", json.dumps(m.content, ensure_ascii=False)))
            for t in m.translations:
                console.print(f"  [{t.lang}] {t.text} — {t.translator}")

        emit(as_json, to_obj(m) | ({"read": read} if read is not None else {}), lambda _: human(m))

    @main.command()
    @station_option
    @click.argument("line")
    @click.option("--kind", type=click.Choice(kinds.NOTICE_KINDS), required=True)
    @click.option("--area", required=True, help="GeoJSON Polygon, MultiPolygon or Point (text, or @FILE).")
    @click.option("--radius", "radius_m", type=int, default=None, help="Radius in metres, for a Point.")
    @click.option("--floor", "floor_m", type=int, required=True, help="Altitude floor, metres above sea level.")
    @click.option("--ceiling", "ceiling_m", type=int, required=True, help="Altitude ceiling, metres.")
    @click.option("--start", required=True, help="UTC, e.g. 2022-05-13T12:00Z.")
    @click.option("--end", required=True, help="UTC.")
    @click.option("--margin", "margin_m", type=int, default=0, help="Safety margin in metres.")
    @click.option("--text", default="", help="Free text.")
    @click.option("--amends", default=None, help="Id (prefix) of our earlier notice this one replaces.")
    @json_option
    def notice(
        station: str | None, line: str, kind: str, area: str, radius_m: int | None, floor_m: int, ceiling_m: int,
        start: str, end: str, margin_m: int, text: str, amends: str | None, as_json: bool,
    ) -> None:  # fmt: skip
        """File a deconfliction notice: checked in full, then against every active notice of both sides."""
        try:
            raw = Path(area[1:]).read_bytes() if area.startswith("@") else area
        except OSError as exc:
            fail(f"--area: cannot read {area[1:]}: {exc.strerror or exc}")
        try:
            geometry = jsonin.loads(raw, parse_float=str, parse_int=str)
        except EncodingError as exc:
            fail(f"--area: {exc}")
        content: dict[str, Any] = {
            "kind": kind, "area": geometry, "floor_m": floor_m, "ceiling_m": ceiling_m,
            "start": parse_time(start), "end": parse_time(end), "margin_m": margin_m, "text": text,
        }  # fmt: skip
        if radius_m is not None:
            content["radius_m"] = radius_m
        if amends:
            content["amends"] = amends
        emit(as_json, act(station, line, "NOTICE", content, priority="priority"), show_result)

    @main.command()
    @station_option
    @click.argument("line")
    @click.argument("notice_id")
    @json_option
    def withdraw(station: str | None, line: str, notice_id: str, as_json: bool) -> None:
        """Withdraw our notice NOTICE_ID (id prefix)."""
        emit(as_json, act(station, line, "NOTICE_WITHDRAW", {"notice": notice_id}, priority="priority"), show_result)

    @main.command()
    @station_option
    @click.argument("line")
    @offset_option
    @limit_option
    @click.option("--notice", "notice_id", default=None, help="Show this one notice (id prefix) whole.")
    @json_option
    def notices(
        station: str | None, line: str, offset: int, limit: int, notice_id: str | None, as_json: bool
    ) -> None:
        """Active notices of both sides, and every conflicting pair with where and when they overlap."""
        from redline.ops.views import NoticesPage

        extra = {"notice": notice_id} if notice_id else {}
        view: NoticesPage | NoticeDetail = read_view(station, line, "notices", offset=offset, limit=limit, **extra)

        def human(v: NoticesPage | NoticeDetail) -> None:
            from rich.table import Table

            table = Table("id", "side", "kind", "window (UTC)", "band (m)", "margin", "text")
            for n in v.active if isinstance(v, NoticesPage) else (v.notice,):
                table.add_row((n.id or "")[:10], "ours" if n.ours else "theirs", n.kind,
                              f"{when(n.start)} to {when(n.end)}", f"{n.floor_m}-{n.ceiling_m}",
                              f"{n.margin_m} m", n.text)  # fmt: skip
            console.print(table)
            for c in v.conflicts:
                a, b = ((i or "")[:10] for i in c.ids)
                console.print(styled(
                    ("CONFLICT", "bold red"), f" {a} and {b}: {c.distance_m} m apart (margin {c.margin_m} m), "
                    f"{when(c.time_overlap[0])} to {when(c.time_overlap[1])}, "
                    f"{c.band_overlap[0]}-{c.band_overlap[1]} m; where: {json.dumps(c.where)[:200]}"
                ))
            if not v.conflicts:
                console.print("no conflicts among the active notices")
            if isinstance(v, NoticesPage):  # the station's count, as for flashes, tests and calls
                lists = {"active": "active notices", "conflicts": "conflicts"}
                say_more(station, line, "notices", offset, limit, lists)

        emit(as_json, view, human)
