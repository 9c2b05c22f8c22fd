"""The duty console as a person on watch uses it: real Chromium (Debian's, driven by Playwright)
against two real station processes (``redline serve --http --settable-clock``), one pair for the
whole module, with real TLS between them.

What each test proves, in the words of the tracker issue:
- a FLASH already waiting at login raises the alarm area and the window title; a FLASH stays above
  a line test (most urgent first); the sound repeats until acknowledged; after a reload the browser
  keeps audio off and the console says so, and one click turns it back on; each condition clears
  when its cause does (the ACK, the answer);
- NDMC's console speaks Russian (``<html lang="ru">``) and marks each text by the language it was
  written in (``lang="ru"`` on NDMC's own, ``lang="en"`` on EUCOM's);
- every form files once on a double click (an idempotency key per submit, buttons disabled in
  flight): message, line test, notice, withdrawal, call request, reply, record, readout, translation;
- focus and half-typed text survive the refreshes; at 390 px the page does not scroll sideways and
  the controls are on screen; axe-core finds nothing;
- a peer clock years off raises CLOCK SKEW at both ends, and a dead line says for how long;
- a notice drawn on the map (a circle: centre, then edge) conflicts at both ends, and amended from
  the console (redrawn as a rectangle elsewhere) it replaces the old one and the conflict clears at
  both ends; the transcript is searched at the station (words, kind) and exported as the bundle
  ``redline export`` writes, which verifies; a FLASH in a background tab changes the title and raises
  a desktop notification, and clicking that notification acknowledges the FLASH;
- a FLASH is acknowledged and the transcript searched by keyboard alone (Tab, Enter, Space);
- no page ever fetches from anywhere but its own station: every console session of this module
  records each request and WebSocket Playwright sees and checks its origin when it closes.

Time is driven through the stations' settable clocks; every wait is for a condition.
Screenshots for the README (docs/img/console*.png) are written when REDLINE_SCREENSHOTS=1.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import nacl.pwhash
import pytest

from redline import identity, persons
from redline.bundle import verify_bundle
from redline.config import Limits
from redline.home import StationDir
from tests.procs import free_ports

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ROOT = Path(__file__).resolve().parent.parent
IMG = ROOT / "docs" / "img"
AXE = ROOT / "tests" / "vendor" / "axe-core" / "axe.min.js"
PASSWORD = "correct horse battery"
FAST = {"ops": nacl.pwhash.argon2id.OPSLIMIT_MIN, "mem": nacl.pwhash.argon2id.MEMLIMIT_MIN}
TIMEOUT = 20_000  # ms for each thing the page must come to show
YEARS_4_5 = int(4.5 * 365.25 * 86_400_000)

# scripts/test and .ci/run install chromium and set REDLINE_REQUIRE_BROWSER=1: there, a missing
# browser fails the run instead of skipping the one test of what a person sees.
_REQUIRED = os.environ.get("REDLINE_REQUIRE_BROWSER") == "1"
if _REQUIRED:
    from playwright.sync_api import Page, expect, sync_playwright

    assert shutil.which(CHROMIUM), f"no chromium at {CHROMIUM}: apt-get install -y chromium"
else:
    sync_api = pytest.importorskip("playwright.sync_api", reason="no playwright: pip install playwright")
    Page, expect, sync_playwright = sync_api.Page, sync_api.expect, sync_api.sync_playwright
    pytestmark = pytest.mark.skipif(
        shutil.which(CHROMIUM) is None, reason=f"no chromium at {CHROMIUM}: apt-get install -y chromium"
    )
# page.set_default_timeout does not reach expect(), whose own default is 5 s: each thing the page must
# come to show (a heartbeat measured, a station's alarm, the next refresh) gets TIMEOUT here too.
expect.set_options(timeout=TIMEOUT)

# Headless Chromium plays sound without a gesture; a desktop browser does not. This puts the
# desktop rule back: audio runs only if started or resumed during a click or a key press.
AUTOPLAY_POLICY = """
(() => {
  let gesture = false;  // true only while a click or a key press of this document is dispatched
  for (const type of ["pointerdown", "keydown"]) {
    window.addEventListener(type, () => { gesture = true; setTimeout(() => { gesture = false; }, 0); }, true);
  }
  const Real = window.AudioContext;
  window.AudioContext = class extends Real {
    constructor(...args) { super(...args); if (!gesture) super.suspend(); }
    resume() { return gesture ? super.resume() : Promise.resolve(); }
  };
})();
"""


# -- the station pair ----------------------------------------------------------------------------------
def ctl(home: Path, request: dict[str, Any]) -> Any:
    """One request to a station's control socket (synchronous: the browser's API is)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(str(StationDir(home).control_path))
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    reply = json.loads(data)
    assert reply["ok"], reply
    return reply["result"]


def wait_for(pred: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            value = pred()
            if value:
                return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


class Proc:
    def __init__(self, home: Path, http: int) -> None:
        self.home, self.http = home, http
        self.url = f"http://127.0.0.1:{http}/"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            StationDir(self.home).control_path.unlink()
        with open(self.home / "serve.log", "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "redline", "serve", "--station", str(self.home), "--settable-clock",
                 "--http", f"127.0.0.1:{self.http}"], stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        wait_for(lambda: ctl(self.home, {"op": "status"}) and _http_up(self.http), f"{self.home.name} to serve", 30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def status(self) -> dict[str, Any]:
        line: dict[str, Any] = ctl(self.home, {"op": "status"})["lines"][0]
        return line


def _http_up(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


class Pair:
    def __init__(self, eucom: Proc, ndmc: Proc, line: str) -> None:
        self.eucom, self.ndmc, self.line = eucom, ndmc, line

    def act(self, who: Proc, kind: str, content: dict[str, Any], priority: str = "priority") -> dict[str, Any]:
        result: dict[str, Any] = ctl(who.home, {"op": "act", "line": self.line, "kind": kind, "content": content,
                                                "priority": priority})  # fmt: skip
        return result

    def send(self, who: Proc, text: str, kind: str = "TEXT", priority: str = "routine") -> dict[str, Any]:
        result: dict[str, Any] = ctl(who.home, {"op": "send", "line": self.line, "text": text, "kind": kind,
                                                "priority": priority})  # fmt: skip
        return result

    def view(self, who: Proc, what: str) -> Any:
        return ctl(who.home, {"op": "view", "line": self.line, "what": what})

    def synced(self) -> bool:
        return all(p.status()["synced"] and p.status()["active"] for p in (self.eucom, self.ndmc))


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    root = tmp_path_factory.mktemp("console")
    p = free_ports(6)
    eucom, ndmc = StationDir(root / "eucom"), StationDir(root / "ndmc")
    # Scheduled line tests twelve hours away: a test that moves a clock never runs into one.
    far = Limits(test_times_utc=((datetime.now(UTC) + timedelta(hours=12)).strftime("%H:%M"),))
    eucom.init(name="EUCOM", lang="en", listen=[f"127.0.0.1:{p[0]}", f"127.0.0.1:{p[1]}"], limits=far)
    ndmc.init(name="NDMC", lang="ru", listen=[f"127.0.0.1:{p[2]}", f"127.0.0.1:{p[3]}"], limits=far)
    persons.add_user(eucom.path, "Duty EUCOM", "duty", PASSWORD, **FAST)
    persons.add_user(ndmc.path, "Dezhurny", "duty", PASSWORD, **FAST)
    a, b = Proc(eucom.path, p[4]), Proc(ndmc.path, p[5])
    try:
        a.start()
        b.start()
        token = ctl(a.home, {"op": "invite"})["token"]
        paired = ctl(b.home, {"op": "pair", "token": token})
        line = paired["line"]
        wait_for(lambda: ctl(a.home, {"op": "status"})["lines"], "EUCOM to hold the line")
        for proc in (a, b):
            ctl(proc.home, {"op": "confirm", "line": line, "code": paired["safety_code"]})
        pr = Pair(a, b, line)
        wait_for(pr.synced, "the line in sync")
        yield pr
    finally:
        a.stop()
        b.stop()


@pytest.fixture(scope="module")
def browser(pair: Pair) -> Iterator[Any]:
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


# Desktop notifications the page creates, kept where the test can see (and click) them: the real
# Notification is still what is constructed.
NOTIFICATIONS = """
(() => {
  const Real = window.Notification;
  if (!Real) return;
  window.redlineShown = [];
  window.Notification = class extends Real {
    constructor(title, options) { super(title, options); window.redlineShown.push(this); }
  };
})();
"""


def foreign(requested: list[str], url: str) -> list[str]:
    """What a page fetched from anywhere but its own station (data: URLs are the page's own)."""
    origin = url.rstrip("/")
    ws = origin.replace("http://", "ws://", 1)
    return [u for u in requested if not (u == origin or u.startswith((origin + "/", ws + "/", "data:", "blob:")))]


@contextlib.contextmanager
def console(
    browser: Any, url: str, user: str, *, width: int = 1500, height: int = 1100, notifications: bool = False,
) -> Iterator[Page]:  # fmt: skip
    context = browser.new_context(viewport={"width": width, "height": height}, accept_downloads=True)
    context.add_init_script(AUTOPLAY_POLICY)
    if notifications:
        context.grant_permissions(["notifications"], origin=url.rstrip("/"))
        context.add_init_script(NOTIFICATIONS)
    # Every request and WebSocket of every page of this context, checked at the end (issue 11: no
    # request leaves the station).
    requested: list[str] = []
    context.on("request", lambda r: requested.append(r.url))
    context.on("page", lambda pg: pg.on("websocket", lambda ws: requested.append(ws.url)))
    page = context.new_page()
    page.on("websocket", lambda ws: requested.append(ws.url))
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.set_default_timeout(TIMEOUT)
    try:
        page.goto(url)
        page.fill("#login-user", user)
        page.fill("#login-password", PASSWORD)
        page.click("#login-submit")
        expect(page.locator("#console")).to_be_visible()
        page.wait_for_function("() => S.status !== null")  # the station's lines known: forms may file
        yield page
        assert not errors, errors
        assert requested and not foreign(requested, url), foreign(requested, url)
    finally:
        context.close()


def log_rows(page: Page, line: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = page.evaluate(
        "async (line) => (await (await fetch(`/api/lines/${line}/log?limit=1000`)).json()).rows", line
    )
    return rows


def count(page: Page, line: str, kind: str, pred: Any = None) -> int:
    return sum(1 for r in log_rows(page, line) if r["ours"] and r["kind"] == kind and (pred is None or pred(r)))


def settle(page: Page) -> None:
    """Wait for two more refreshes of every panel: whatever a second click might have filed is in."""
    n = page.evaluate("window.redlineRefreshes")
    page.evaluate("document.dispatchEvent(new Event('redline-refresh'))")
    page.wait_for_function(f"() => window.redlineRefreshes >= {n + 2}", timeout=TIMEOUT)


def shot(page: Page, name: str, panel: str | None = None) -> None:
    """README screenshots: written only when asked (REDLINE_SCREENSHOTS=1), so a test run never
    changes tracked files; otherwise into the temp dir, to prove the page renders. The whole page,
    or one panel."""
    target = IMG if os.environ.get("REDLINE_SCREENSHOTS") == "1" else Path(tempfile.gettempdir())
    target.mkdir(parents=True, exist_ok=True)
    if panel is not None:  # the alarm area, pinned to the top, would cover the panel's top
        page.evaluate("document.getElementById('alarm-area').style.position = 'static'")
        page.locator(panel).screenshot(path=str(target / name))
        page.evaluate("document.getElementById('alarm-area').style.position = ''")
        return
    page.evaluate("window.scrollTo(0, 0)")  # the alarm area is pinned to the top of the window
    page.screenshot(path=str(target / name), full_page=True)


def iso_minutes(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M")


# -- the tests ------------------------------------------------------------------------------------------
def test_a_flash_waiting_at_login_leads_the_alarms_sounds_until_acknowledged_and_survives_a_reload(
    pair: Pair, browser: Any
) -> None:
    flash = pair.send(pair.ndmc, "FLASH: unidentified aircraft crossing the border at 13:05Z", "FLASH", "flash")
    wait_for(lambda: any(f["id"] == flash["id"] for f in pair.view(pair.eucom, "flash")), "the FLASH at EUCOM")
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        first = page.locator("#alarm-list li.first")
        expect(first).to_have_attribute("data-code", "flash")
        expect(first).to_contain_text("unidentified aircraft")
        expect(page).to_have_title(re.compile(r"FLASH"))
        # its countdown to the ACK deadline moves every second, without a refresh
        before = first.locator(".countdown").inner_text()
        page.wait_for_function("(b) => document.querySelector('#alarm-list li.first .countdown').textContent !== b",
                               arg=before, timeout=3000)  # fmt: skip
        assert page.evaluate("document.getElementById('favicon').href").startswith("data:image/png")
        # a line test arrives after the FLASH: it goes below it, not over it
        test = pair.act(pair.ndmc, "TEST", {"text": "Line test"})
        expect(page.locator(f'#alarm-list li[data-key="test:{test["id"]}"]')).to_be_visible()
        expect(first).to_have_attribute("data-code", "flash")
        codes = page.locator("#alarm-list li").evaluate_all("els => els.map(e => e.dataset.code)")
        assert codes.index("flash") < codes.index("test_to_answer"), codes
        # the sound repeats while nobody acknowledges (a FLASH every 3 s)
        page.wait_for_function("() => window.redlineBeeps >= 2", timeout=TIMEOUT)
        expect(page.locator("#sound-toggle")).to_be_hidden()
        assert page.evaluate("S.audio.state") == "running"

        # a reload: no click yet, so the browser keeps audio off; the console says so, still alarms
        page.reload()
        expect(page.locator("#alarm-list li.first")).to_have_attribute("data-code", "flash")
        expect(page).to_have_title(re.compile(r"FLASH"))
        flag = page.locator("#sound-toggle")
        expect(flag).to_be_visible()
        expect(flag).to_contain_text("SOUND IS OFF")
        assert page.evaluate("window.redlineBeeps") == 0
        assert page.evaluate("S.audio.state") == "suspended"
        shot(page, "console-flash.png")
        flag.click()
        expect(flag).to_be_hidden()
        page.wait_for_function("() => window.redlineBeeps >= 1", timeout=TIMEOUT)
        assert page.evaluate("S.audio.state") == "running"

        # acknowledged: the FLASH condition clears; the test is now the most urgent, then answered
        page.locator("#alarm-list li.first button.danger").click()
        expect(page.locator("#alarm-list li.first")).to_have_attribute("data-code", "test_to_answer")
        acked = wait_for(lambda: [f for f in pair.view(pair.ndmc, "flash") if f["acked_by"]], "the ACK at NDMC")
        assert acked[0]["acked_by"] == "Duty EUCOM" and acked[0]["id"] == flash["id"]
        page.locator("#alarm-list li.first button.go").click()
        expect(page.locator("#alarm-list li.alarm-none")).to_be_visible()
        expect(page).not_to_have_title(re.compile(r"FLASH|LINE TEST"))
        assert pair.view(pair.ndmc, "refused") == []


def test_the_ndmc_console_is_in_russian_and_marks_each_text_by_its_language(pair: Pair, browser: Any) -> None:
    pair.send(pair.eucom, "EUCOM to NDMC: exercise NORTH starts 12:00Z as notified")
    with console(browser, pair.ndmc.url, "Dezhurny") as page:
        assert page.evaluate("document.documentElement.lang") == "ru"
        # every word of the console exists in both languages (strings.js); the alarm log's templates
        # ("alarm.<code>", and "conflict.*" for the conflicts a notice conflict alarm names) only in
        # Russian: in English the log is the station's own text
        missing = page.evaluate("""() => { const S = window.REDLINE_STRINGS;
            const en = Object.keys(S.en), ru = Object.keys(S.ru), log = /^(alarm|conflict)\\./;
            return [en.filter((k) => !(k in S.ru)), ru.filter((k) => !(k in S.en) && !log.test(k))]; }""")
        assert missing == [[], []], missing
        expect(page.locator("#h-line")).to_have_text("Линия")
        expect(page.locator("#login-submit")).to_have_text("ВОЙТИ")
        expect(page.locator("#line-state")).to_have_text("СИНХРОННО")
        page.wait_for_function("() => window.redlineRefreshes >= 1")
        assert english_left(page) == []
        # the map's place names, in Russian, none over another at any zoom
        for zoom in (4, 5, 6):
            page.evaluate("(z) => void S.map.setView([49, 31], z, {animate: false})", zoom)
            names = wait_for(lambda: placed_labels(page), "the map's place names")
            assert "Украина" in names, (zoom, names)
        text = "НЦУО — EUCOM: уведомление получено, проверяем по своему плану"
        page.fill("#compose-text", text)
        page.click("#compose-send")
        expect(page.locator("#compose-result")).to_contain_text("ПРИНЯТО")
        expect(page.locator("#compose-result")).to_contain_text("подписано и отправлено")  # not the station's English
        # a refusal: the console's lead in Russian, the station's reason marked as its English words
        lead, reason = page.evaluate("""() => { const o = document.createElement("span");
            showRefused(o, new ApiError(409, "that FLASH (seq 4) was already acknowledged"));
            return [o.firstChild.textContent, o.querySelector('.said[lang="en"]').textContent]; }""")
        assert (lead, reason) == ("НЕ ПРИНЯТО:", "that FLASH (seq 4) was already acknowledged")
        mine = page.locator('#log td.text [lang="ru"]', has_text=text)
        expect(mine).to_have_count(1)
        theirs = page.locator('#log td.text [lang="en"]', has_text="exercise NORTH")
        expect(theirs).to_have_count(1)
        # the person's choice is kept at the station: English now, and after a reload
        page.select_option("#lang-select", "en")
        expect(page.locator("#h-line")).to_have_text("Line")
        page.reload()
        expect(page.locator("#line-state")).to_have_text("IN SYNC")
        page.select_option("#lang-select", "ru")
        expect(page.locator("#line-state")).to_have_text("СИНХРОННО")


def test_a_form_filed_before_the_page_knows_the_line_says_so_and_posts_nothing(pair: Pair, browser: Any) -> None:
    """A slow station's first status not in yet (seen on a loaded box): SEND posted to
    /api/lines/null/send and showed the station's "no line matches 'null'"."""
    with console(browser, pair.eucom.url, "Duty EUCOM") as eu:
        posted: list[str] = []
        eu.on("request", lambda r: posted.append(r.url) if r.method == "POST" else None)
        eu.fill("#compose-text", "before the line is known")
        eu.evaluate("() => { window.keptLine = S.line; S.line = null; }")
        eu.click("#compose-send")
        expect(eu.locator("#compose-result")).to_have_text(
            "the page has not loaded the station's lines yet: nothing was sent; try again in a moment"
        )
        assert posted == []
        eu.evaluate("() => { S.line = window.keptLine; }")
        eu.click("#compose-send")
        expect(eu.locator("#compose-result")).to_contain_text("ACCEPTED")
        sent = f"{pair.eucom.url.rstrip('/')}/api/lines/{pair.line}/send"
        assert [u for u in posted if u.endswith("/send")] == [sent]


def test_every_form_files_once_on_a_double_click(pair: Pair, browser: Any) -> None:
    now = int(ctl(pair.eucom.home, {"op": "clock", "advance_ms": 0})["now"])
    with console(browser, pair.eucom.url, "Duty EUCOM") as eu:
        line = pair.line
        eu.fill("#compose-text", "double-click test message")
        eu.dblclick("#compose-send")
        expect(eu.locator("#compose-result")).to_contain_text("ACCEPTED")
        eu.dblclick("#tests-send")
        expect(eu.locator("#test-form .result")).to_contain_text("FILED")

        eu.click("#notice-details summary")
        eu.select_option("#notice-kind", "air")
        eu.fill("#notice-area", "45.10, 28.10\n45.10, 28.90\n45.60, 28.90\n45.60, 28.10")
        eu.fill("#notice-floor", "6000")
        eu.fill("#notice-ceiling", "12000")
        eu.fill("#notice-start", iso_minutes(now - 3_600_000))
        eu.fill("#notice-end", iso_minutes(now + 6 * 3_600_000))
        eu.fill("#notice-margin", "10000")
        eu.fill("#notice-text", "Air exercise NORTH")
        eu.dblclick("#notice-submit")
        expect(eu.locator("#notice-result")).to_contain_text("FILED")

        eu.click("#call-request-form >> xpath=ancestor::details/summary")
        form = eu.locator("#call-request-form")
        form.locator("[name=from_role]").fill("Secretary")
        form.locator("[name=to_role]").fill("Minister")
        form.locator("[name=subject]").fill("Ceasefire and lines of communication")
        form.locator("button[type=submit]").dblclick()
        expect(form.locator(".result")).to_contain_text("FILED")

        settle(eu)
        assert count(eu, line, "TEXT", lambda r: r["text"] == "double-click test message") == 1
        assert count(eu, line, "TEST") == 1
        assert count(eu, line, "NOTICE") == 1
        assert count(eu, line, "CALL_REQUEST") == 1

        # the peer files a conflicting notice; NDMC replies to the request, twice clicked
        strike = {"type": "Point", "coordinates": ["29.05", "45.45"]}
        pair.act(pair.ndmc, "NOTICE", {"kind": "strike", "area": strike, "radius_m": 15000, "floor_m": 0,
                                       "ceiling_m": 10000, "start": now, "end": now + 2 * 3_600_000, "margin_m": 0,
                                       "text": "Удар по району"})  # fmt: skip
        expect(eu.locator("#notice-conflicts .conflict-line")).to_have_count(1)
        expect(eu.locator("#map path.conflict")).to_have_count(2)
        with console(browser, pair.ndmc.url, "Dezhurny") as ru:
            reply = ru.locator("#call-requests form.reply-form")
            reply.locator("[name=time]").fill(iso_minutes(now + 3_600_000))
            reply.locator("button[value=accept]").dblclick()
            expect(ru.locator("#call-requests li.accepted")).to_have_count(1)
            settle(ru)
            assert count(ru, line, "CALL_REPLY") == 1

            # the call took place: EUCOM records it, both sides file readouts, NDMC translates
            eu.click("#call-record-form >> xpath=ancestor::details/summary")
            rec = eu.locator("#call-record-form")
            rec.locator("[name=start]").fill(iso_minutes(now - 7_200_000))
            rec.locator("[name=end]").fill(iso_minutes(now - 3_600_000))
            rec.locator("[name=principals]").fill("Secretary, Minister")
            rec.locator("[name=participants]").fill("Secretary, Minister, interpreters")
            rec.locator("select[name=request_id]").select_option(index=1)
            rec.locator("button[type=submit]").dblclick()
            expect(rec.locator(".result")).to_contain_text("FILED")
            readout = eu.locator("#calls form.readout-form")
            readout.locator("textarea").fill("The Secretary urged an immediate ceasefire.")
            readout.locator("button").dblclick()
            expect(eu.locator("#calls .readout.ours [lang=en]")).to_have_count(1)
            ru_readout = ru.locator("#calls form.readout-form")
            ru_readout.locator("textarea").fill("Обсуждены актуальные вопросы международной безопасности.")
            ru_readout.locator("button").dblclick()
            expect(ru.locator("#calls .readout.ours [lang=ru]")).to_have_count(1)
            ru.locator("#log tr", has_text="urged an immediate").locator("button").click()
            ru.fill("#translate-text", "Министр призвал к немедленному прекращению огня.")
            ru.locator("#translate-form button[type=submit]").dblclick()
            expect(ru.locator("#log .translation [lang=ru]")).to_have_count(1)
            settle(ru)
            assert count(ru, line, "READOUT") == 1 and count(ru, line, "TRANSLATION") == 1
            shot(ru, "console-ru.png")
        settle(eu)
        assert count(eu, line, "CALL_RECORD") == 1 and count(eu, line, "READOUT") == 1
        expect(eu.locator("#calls .readout.theirs [lang=ru]")).to_have_count(1)
        call_id = pair.view(pair.eucom, "calls")[0]["calls"][-1]["id"]  # the call, named by its record's id
        expect(eu.locator(f'#calls .call[data-id="{call_id}"] .call-id')).to_have_text(f"(call record {call_id[:10]})")
        shot(eu, "console.png")

        # withdrawal asks for a second, deliberate press: a double click only arms it
        withdraw = eu.locator("#notices form.withdraw-form button")
        withdraw.dblclick()
        expect(eu.locator("#notices form.withdraw-form .result")).to_contain_text("Withdraw our notice")
        assert count(eu, line, "NOTICE_WITHDRAW") == 0
        eu.wait_for_timeout(450)  # the second press must be deliberate: not within 400 ms of the first
        withdraw.click()
        expect(eu.locator("#notice-conflicts .conflict-line")).to_have_count(0)
        settle(eu)
        assert count(eu, line, "NOTICE_WITHDRAW") == 1


def test_focus_and_typing_survive_refreshes(pair: Pair, browser: Any) -> None:
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        button = page.locator("#log tr button[data-focus=translate]").first
        button.focus()
        key = button.evaluate("b => b.closest('tr').dataset.key")
        page.fill("#compose-text", "half typed")
        button.focus()
        for i in range(2):  # new envelopes from the peer: every panel refreshes around the focus
            pair.send(pair.ndmc, f"refresh {i}")
            expect(page.locator("#log tr", has_text=f"refresh {i}")).to_have_count(1)
        settle(page)
        assert page.evaluate("document.activeElement.dataset.focus") == "translate"
        assert page.evaluate("document.activeElement.closest('tr').dataset.key") == key
        assert page.input_value("#compose-text") == "half typed"
        # the priority is chosen by keyboard: Tab to it, Enter
        page.focus("#compose-text")
        page.keyboard.press("Tab")
        page.keyboard.press("Tab")
        page.keyboard.press("Enter")
        expect(page.locator("[data-prio=priority]")).to_have_attribute("aria-pressed", "true")


def test_a_phone_width_console_has_no_sideways_scroll_and_no_axe_violations(pair: Pair, browser: Any) -> None:
    with console(browser, pair.eucom.url, "Duty EUCOM", width=390, height=844) as page:
        expect(page.locator("#line-state")).to_have_text("IN SYNC")
        page.wait_for_function("() => window.redlineRefreshes >= 1")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for sel in ("#compose-send", "#logout", "#lang-select", "#tests-send"):
            box = page.locator(sel).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (sel, box)
        shot(page, "console-phone.png")
        page.set_viewport_size({"width": 1500, "height": 1100})
        _no_axe_violations(page)


def placed_labels(page: Page) -> list[str]:
    """The map's country names on screen, after checking that no two of them overlap."""
    labels: list[dict[str, Any]] = page.evaluate("""() => {
        const v = document.getElementById('map').getBoundingClientRect();
        return [...document.querySelectorAll('#map .country-label')]
          .filter((el) => getComputedStyle(el).visibility !== 'hidden')
          .map((el) => { const r = el.getBoundingClientRect();
                         return {name: el.textContent, l: r.left, r: r.right, t: r.top, b: r.bottom}; })
          .filter((x) => x.r > x.l && x.r > v.left && x.l < v.right && x.b > v.top && x.t < v.bottom); }""")
    for i, a in enumerate(labels):
        for b in labels[i + 1 :]:
            assert not (a["l"] < b["r"] and b["l"] < a["r"] and a["t"] < b["b"] and b["t"] < a["b"]), (a, b)
    return [x["name"] for x in labels]


def english_left(page: Page) -> list[str]:
    """Interface strings that appear in English on a page meant to be in Russian: every text of the
    page (hidden forms too) but what stations and people wrote (``.said``, ``[lang="en"]``)."""
    found: list[str] = page.evaluate("""() => {
        const S = window.REDLINE_STRINGS, page = document.body.cloneNode(true);
        for (const el of page.querySelectorAll('[lang="en"], .said, script, style')) el.remove();
        const text = page.textContent;
        return Object.keys(S.en).filter((k) => S.en[k] !== S.ru[k] && !S.en[k].includes("{") && S.en[k].length >= 5
                                               && text.includes(S.en[k])).map((k) => `${k}: ${S.en[k]}`);
    }""")
    return found


def _no_axe_violations(page: Page) -> None:
    page.evaluate(AXE.read_text())
    for details in page.locator("details").all():
        details.evaluate("d => d.open = true")
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    found = [(v["id"], v["help"], [n["target"] for n in v["nodes"]][:5]) for v in result["violations"]]
    assert not found, found


def test_the_login_page_has_no_axe_violations(pair: Pair, browser: Any) -> None:
    for locale, lang in (("en-US", "en"), ("ru-RU", "ru")):  # before login: the browser's language
        context = browser.new_context(locale=locale)
        try:
            page = context.new_page()
            page.goto(pair.ndmc.url)
            expect(page.locator("#login-screen")).to_be_visible()
            assert page.evaluate("document.documentElement.lang") == lang
            _no_axe_violations(page)
        finally:
            context.close()


def test_a_line_test_the_tester_called_missed_offers_no_answer(pair: Pair, browser: Any) -> None:
    test = pair.act(pair.eucom, "TEST", {"text": "Line test"})
    with console(browser, pair.ndmc.url, "Dezhurny") as page:
        item = page.locator(f'#tests-to-answer [data-id="{test["id"]}"]')
        expect(item.locator("button.answer-button")).to_be_visible()
        for proc in (pair.ndmc, pair.eucom):  # both clocks past the window: overdue here, missed there
            ctl(proc.home, {"op": "clock", "advance_ms": 301_000})
        expect(item).to_have_class(re.compile("expired"))
        expect(item.locator("button")).to_have_count(0)
        expect(page.locator('#alarm-list li[data-code="test_missed"]')).to_be_visible()
        expect(page.locator(f'#alarm-list li[data-key="test:{test["id"]}"]')).to_have_count(0)


def test_a_peer_clock_years_off_alarms_at_both_ends(pair: Pair, browser: Any) -> None:
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        ctl(pair.ndmc.home, {"op": "clock", "advance_ms": -YEARS_4_5})
        try:
            skew = page.locator('#alarm-list li[data-code="clock_skew"]')
            expect(skew).to_contain_text("CLOCK SKEW")
            expect(skew).to_contain_text("behind")
            expect(page.locator("#line-skew")).to_have_class(re.compile("bad"))
            for proc in (pair.eucom, pair.ndmc):
                wait_for(lambda p=proc: any(a["text"].startswith("CLOCK SKEW") and "1643 d" in a["text"] for a in
                                            ctl(p.home, {"op": "status"})["alarms"]), f"the alarm at {proc.home.name}")
        finally:
            ctl(pair.ndmc.home, {"op": "clock", "advance_ms": YEARS_4_5})
        expect(page.locator('#alarm-list li[data-code="clock_skew"]')).to_have_count(0)


def test_a_dead_line_says_how_long_it_has_been_down(pair: Pair, browser: Any) -> None:
    with console(browser, pair.eucom.url, "Duty EUCOM") as page:
        pair.ndmc.stop()
        try:
            expect(page.locator("#paths td.state").first).to_have_text("DOWN")
            ctl(pair.eucom.home, {"op": "clock", "advance_ms": 192_000})
            expect(page.locator('#alarm-list li[data-code="line_down"]')).to_contain_text("LINE DOWN")
            expect(page.locator("#line-down")).to_contain_text(re.compile(r"line down for 3 min 1\d s"))
        finally:
            pair.ndmc.start()
        expect(page.locator("#line-state")).to_have_text("IN SYNC", timeout=30_000)
        expect(page.locator('#alarm-list li[data-code="line_down"]')).to_have_count(0)


def click_map(page: Page, lat: float, lon: float) -> None:
    """A person's click on the map at a place (its pixel found by the map itself)."""
    point = page.evaluate("([lat, lon]) => S.map.latLngToContainerPoint([lat, lon])", [lat, lon])
    page.locator("#map").click(position={"x": point["x"], "y": point["y"]})


def notices_at(who: Proc, pair: Pair) -> dict[str, Any]:
    result: dict[str, Any] = pair.view(who, "notices")
    return result


def conflicting(view: dict[str, Any], nid: str) -> bool:
    return any(nid in c["ids"] for c in view["conflicts"])


def test_a_notice_drawn_on_the_map_conflicts_at_both_ends_and_amended_from_the_console_no_longer_does(
    pair: Pair, browser: Any
) -> None:
    now = int(ctl(pair.eucom.home, {"op": "clock", "advance_ms": 0})["now"])
    # NDMC's exercise area over the Åland Sea, filed at NDMC
    box = [["19.90", "60.00"], ["20.90", "60.00"], ["20.90", "60.40"], ["19.90", "60.40"], ["19.90", "60.00"]]
    naval = {"kind": "naval", "area": {"type": "Polygon", "coordinates": [box]}, "floor_m": 0, "ceiling_m": 3000,
             "start": now - 3_600_000, "end": now + 6 * 3_600_000, "margin_m": 0, "text": "Морские учения"}  # fmt: skip
    theirs = pair.act(pair.ndmc, "NOTICE", naval)
    with console(browser, pair.eucom.url, "Duty EUCOM") as eu:
        expect(eu.locator(f'#notices tr[data-id="{theirs["id"]}"]')).to_have_count(1)
        eu.click("#notice-details summary")
        # a polygon: a click per corner, FINISH AREA (then cleared: this notice is drawn as a circle)
        eu.click("#draw-start")
        eu.evaluate("void S.map.setView([60.2, 20.4], 8, {animate: false})")
        for lat, lon in ((60.1, 20.1), (60.1, 20.7), (60.3, 20.4)):
            click_map(eu, lat, lon)
        eu.click("#draw-finish")
        assert len(eu.input_value("#notice-area").splitlines()) == 3
        expect(eu.locator("#draw-finish")).to_be_hidden()
        eu.click("#draw-clear")
        # a circle: its centre, then a point on its edge 0.5° of longitude east (about 28 km); while
        # a person draws, new notices never move the map under the pointer
        eu.click('#draw-shape [data-shape="circle"]')
        eu.click("#draw-start")
        eu.evaluate("void S.map.setView([60.2, 20.4], 8, {animate: false})")
        expect(eu.locator("#draw-status")).to_contain_text("centre")
        click_map(eu, 60.2, 20.4)
        click_map(eu, 60.2, 20.9)
        area = eu.input_value("#notice-area")
        lat, lon = (float(x) for x in area.split(","))
        assert abs(lat - 60.2) < 0.02 and abs(lon - 20.4) < 0.03, area
        radius = int(eu.input_value("#notice-radius"))
        assert 25_000 < radius < 31_000, radius
        eu.select_option("#notice-kind", "air")
        eu.fill("#notice-floor", "1000")
        eu.fill("#notice-ceiling", "9000")
        eu.fill("#notice-start", iso_minutes(now))
        eu.fill("#notice-end", iso_minutes(now + 4 * 3_600_000))
        eu.fill("#notice-text", "Drawn air corridor")
        eu.click("#notice-submit")
        expect(eu.locator("#notice-result")).to_contain_text("FILED")
        mine = lambda v: [n for n in v["active"] if n["text"] == "Drawn air corridor"]  # noqa: E731
        drawn = wait_for(lambda: mine(notices_at(pair.eucom, pair)), "the drawn notice at EUCOM")[0]
        assert drawn["area"]["type"] == "Point" and drawn["radius_m"] == radius
        # the conflict, at both ends: each station's board, and each console
        for who in (pair.eucom, pair.ndmc):
            wait_for(lambda w=who: conflicting(notices_at(w, pair), drawn["id"]), f"the conflict at {who.home.name}")
        expect(eu.locator("#notice-conflicts .conflict-line", has_text=drawn["id"][:10])).to_have_count(1)
        expect(eu.locator(f'#notices tr.conflicted[data-id="{drawn["id"]}"]')).to_have_count(1)
        eu.evaluate("void S.map.setView([60.2, 20.5], 7, {animate: false})")
        shot(eu, "console-notices.png", ".notices-panel")
        with console(browser, pair.ndmc.url, "Dezhurny") as ru:
            expect(ru.locator("#notice-conflicts .conflict-line", has_text=drawn["id"][:10])).to_have_count(1)
            expect(ru.locator("#map path.conflict")).not_to_have_count(0)
            assert english_left(ru) == []
            _no_axe_violations(ru)  # the new controls, in Russian

        # AMEND: the form takes the notice; redrawn as a rectangle over Denmark, it replaces the old one
        eu.locator(f'#notices tr[data-id="{drawn["id"]}"] button.amend').click()
        expect(eu.locator("#notice-amending")).to_be_visible()
        assert eu.input_value("#notice-radius") == str(radius) and eu.input_value("#notice-floor") == "1000"
        expect(eu.locator("#notice-submit")).to_have_text("FILE AMENDMENT")
        eu.click("#draw-clear")
        eu.click('#draw-shape [data-shape="rectangle"]')
        eu.click("#draw-start")
        eu.evaluate("void S.map.setView([55.5, 10.3], 7, {animate: false})")
        click_map(eu, 55.3, 10.0)
        click_map(eu, 55.7, 10.6)
        assert len(eu.input_value("#notice-area").splitlines()) == 4
        eu.click("#notice-submit")
        expect(eu.locator("#notice-result")).to_contain_text("replaces notice")
        expect(eu.locator("#notice-amending")).to_be_hidden()
        gone = lambda v: not any(n["id"] == drawn["id"] for n in v["active"])  # noqa: E731
        for who in (pair.eucom, pair.ndmc):  # rechecked at both ends: the new notice, no conflict
            view = wait_for(lambda w=who: (v := notices_at(w, pair)) and gone(v) and v, "the amendment")
            new = mine(view)
            assert len(new) == 1 and new[0]["area"]["type"] == "Polygon" and new[0]["amends"] == drawn["ref"], new
            assert not conflicting(view, new[0]["id"]) and not conflicting(view, drawn["id"])
        expect(eu.locator("#notice-conflicts .conflict-line", has_text=drawn["id"][:10])).to_have_count(0)
        expect(eu.locator(f'#notices tr[data-id="{new[0]["id"]}"]')).to_contain_text("amends our notice")


def test_the_transcript_is_searched_at_the_station_and_the_bundle_downloads_and_verifies(
    pair: Pair, browser: Any
) -> None:
    pair.send(pair.ndmc, "Учения ЗЕБРА-42 начнутся в 06:00Z")
    pair.send(pair.eucom, "Exercise ZEBRA-42 noted, thank you")
    with console(browser, pair.eucom.url, "Duty EUCOM") as eu:
        expect(eu.locator("#log tr", has_text="ZEBRA-42 noted")).to_have_count(1)
        eu.fill("#log-q", "зебра-42")  # case-insensitive, in Russian too
        eu.press("#log-q", "Enter")
        rows = eu.locator("#log tr")
        expect(rows).to_have_count(1)
        expect(rows.first).to_contain_text("ЗЕБРА-42")
        expect(eu.locator("#log-found")).to_have_text("1 found")
        eu.fill("#log-q", "-42")
        eu.click("#log-find")
        expect(rows).to_have_count(2)
        # readable kind names, the kind filter, human times
        expect(rows.first.locator("td.kind")).to_contain_text("Message")
        assert re.fullmatch(r"\d{4}-\d\d-\d\d\s\d\d:\d\d:\d\dZ", rows.first.locator("td").first.inner_text())
        eu.select_option("#log-kind", label="FLASH message")
        expect(rows).to_have_count(0)
        eu.select_option("#log-kind", label="Message")
        expect(rows).to_have_count(2)
        settle(eu)  # the refresh keeps the filter
        expect(rows).to_have_count(2)
        eu.click("#log-clear")
        expect(eu.locator("#log-found")).to_have_text("")
        expect(rows).not_to_have_count(2)

        # EXPORT BUNDLE: the file 'redline export' writes, verified against both roots from outside it
        with eu.expect_download() as download:
            eu.click("#export-link")
        assert download.value.suggested_filename == f"redline-{pair.line[:8]}-EUCOM.bundle.json"
        bundle = json.loads(Path(download.value.path()).read_text())
        roots = [identity.fingerprint(bytes.fromhex((StationDir(p.home).keys / "root.pub").read_text().strip()))
                 for p in (pair.eucom, pair.ndmc)]  # fmt: skip
        report = verify_bundle(bundle, roots)
        assert report.ok, report.summary()
        assert "ZEBRA-42" in json.dumps(bundle, ensure_ascii=False) or any(
            "ZEBRA" in bytes.fromhex(e["envelope"]).decode("utf-8", "replace")
            for s in bundle["stations"] for e in s["chain"]
        )  # fmt: skip


def test_a_flash_in_a_background_tab_changes_the_title_and_is_acknowledged_from_its_notification(
    pair: Pair, browser: Any
) -> None:
    with console(browser, pair.eucom.url, "Duty EUCOM", notifications=True) as eu:
        expect(eu.locator("#notify-enable")).to_be_hidden()  # permission granted: nothing to ask
        # The officer is in another tab. (Headless Chromium keeps every page "visible", so this cannot
        # prove a hidden tab's throttled timers; the title and the notification come from the
        # WebSocket's alarm and the watch poll, and nothing in the console waits for visibility.)
        other = eu.context.new_page()
        other.bring_to_front()
        flash = pair.send(pair.ndmc, "FLASH: convoy stopped at the crossing", "FLASH", "flash")
        expect(eu).to_have_title(re.compile(r"FLASH"))
        shown = eu.wait_for_function(
            "(id) => (window.redlineShown || []).find((n) => n.tag === `flash:${id}`)", arg=flash["id"]
        )
        body = shown.evaluate("n => n.body")
        assert "convoy stopped" in body and "Click to acknowledge as Duty EUCOM" in body, body
        assert shown.evaluate("n => n.requireInteraction") is True
        shown.evaluate("n => n.dispatchEvent(new Event('click'))")  # the officer clicks the notification
        acked = wait_for(lambda: [f for f in pair.view(pair.ndmc, "flash") if f["id"] == flash["id"] and f["acked_by"]],
                         "the ACK from the notification at NDMC")  # fmt: skip
        assert acked[0]["acked_by"] == "Duty EUCOM"
        expect(eu).not_to_have_title(re.compile(r"FLASH"))
        other.close()


def test_the_page_fetches_only_from_its_own_origin(pair: Pair, browser: Any) -> None:
    """Every view, in both languages, with every form open, the map zoomed and panned: the checks
    in console() find every request and WebSocket went to the station that served the page."""
    with console(browser, pair.ndmc.url, "Dezhurny") as page:
        page.wait_for_function("() => window.redlineRefreshes >= 1")
        for details in page.locator("details").all():
            details.evaluate("d => d.open = true")
        for lang, verified in (("en", "VERIFIED"), ("ru", "ПРОВЕРЕНО")):
            page.select_option("#lang-select", lang)
            for view in ("[45, 30], 9", "[60, 20], 3"):
                page.evaluate(f"void S.map.setView({view}, {{animate: false}})")
            page.fill("#log-q", lang)
            page.click("#log-find")
            expect(page.locator("#log-found")).not_to_be_empty()
            page.click("#log-clear")
            page.click("#verify-run")
            expect(page.locator("#verify-state")).to_have_text(verified)
        page.click("#map-fit")
        assert page.locator("img[src^='http'], link[href^='http'], script[src^='http']").count() == 0


def test_a_flash_is_acknowledged_and_the_transcript_searched_by_keyboard_alone(pair: Pair, browser: Any) -> None:
    flash = pair.send(pair.ndmc, "FLASH: keyboard drill", "FLASH", "flash")
    with console(browser, pair.eucom.url, "Duty EUCOM") as eu:
        ack = eu.locator(f'#alarm-list li[data-key="flash:{flash["id"]}"] button.danger')
        expect(ack).to_be_visible()
        eu.focus("#logout")  # from the top bar, Tab reaches the alarm's ACKNOWLEDGE
        for _ in range(12):
            eu.keyboard.press("Tab")
            if ack.evaluate("b => b === document.activeElement"):
                break
        else:
            raise AssertionError("Tab never reached ACKNOWLEDGE")
        eu.keyboard.press("Enter")
        wait_for(lambda: [f for f in pair.view(pair.ndmc, "flash") if f["id"] == flash["id"] and f["acked_by"]],
                 "the ACK at NDMC")  # fmt: skip
        # the search: type, Tab to the kind, arrow down to a kind, Enter
        eu.focus("#log-q")
        eu.keyboard.type("keyboard drill")
        eu.keyboard.press("Enter")
        expect(eu.locator("#log tr")).to_have_count(1)
        eu.keyboard.press("Tab")
        assert eu.evaluate("document.activeElement.id") == "log-kind"
        eu.select_option("#log-kind", "TEXT")  # the select's own keys are the browser's; its value is what counts
        expect(eu.locator("#log tr")).to_have_count(0)  # a FLASH is not a plain message
        eu.focus("#log-clear")
        eu.keyboard.press("Space")
        expect(eu.locator("#log-found")).to_have_text("")
