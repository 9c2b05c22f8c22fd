"""The peer's root rotation confirmed from the duty console (PROTOCOL.md 5.9 ROOT, ROOT_CONFIRM): real
Chromium (Debian's, driven by Playwright) against two real station processes with real TLS between
them (tests/test_console.py's pair, one for this module, since a root rotation cannot be undone).

NDMC rotates its root with the real CLI (``redline keys rotate --root``), which says the NEW safety
code. EUCOM's console shows a banner and a warning in the alarm area until the code is confirmed:
an auditor sees them without the button (in Russian too); a supervisor opens the dialog, types a
wrong code (one clear line, nothing filed, the banner stays), then the code NDMC read out
(ROOT_CONFIRM filed, the banner and the warning gone, NDMC receipts it)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from redline import persons
from tests import test_console
from tests.test_console import FAST, PASSWORD, Pair, browser, console, count, english_left, expect, pair, wait_for

__all__ = ["browser", "pair"]  # the module's own station pair and browser (tests/test_console.py's fixtures)
# Real processes and a browser: slow; skipped where tests/test_console.py is (no chromium).
pytestmark = [pytest.mark.slow, *([test_console.pytestmark] if hasattr(test_console, "pytestmark") else [])]


def redline(*args: str) -> str:
    done = subprocess.run([sys.executable, "-m", "redline", *args], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_peers_root_rotation_is_confirmed_at_the_console_only_with_the_code_heard_and_only_by_a_supervisor(
    pair: Pair, browser: Any, tmp_path: Path
) -> None:
    persons.add_user(pair.eucom.home, "Supervisor EUCOM", "supervisor", PASSWORD, **FAST)
    persons.add_user(pair.eucom.home, "Auditor EUCOM", "auditor", PASSWORD, **FAST)
    new_root = tmp_path / "offline" / "root2.key"
    new_root.parent.mkdir()
    redline("keys", "new-root", str(new_root))
    said = json.loads(redline("keys", "rotate", "--root", "--root-key", str(pair.ndmc.home / "keys" / "root.key"),
                              "--new-root-key", str(new_root), "--station", str(pair.ndmc.home), "--json"))  # fmt: skip
    code = said["codes"][pair.line]
    wait_for(lambda: pair.eucom.status()["root_code"] == code, "EUCOM to hold NDMC's ROOT, unconfirmed")

    with console(browser, pair.eucom.url, "Auditor EUCOM") as page:
        banner = page.locator("#root-banner")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("THE PEER'S ROOT KEY CHANGED")
        expect(banner).to_contain_text("NDMC rotated its root key")
        expect(banner).to_contain_text("may not")
        expect(page.locator("#root-open")).to_be_hidden()  # an auditor may not confirm
        cond = page.locator('#alarm-list li[data-code="root_rotation"]')  # the alarm area says so too
        expect(cond).to_contain_text("NDMC CHANGED ITS ROOT KEY")
        expect(cond.locator("button")).to_have_count(0)
        page.select_option("#lang-select", "ru")  # the banner and the dialog in the reader's language
        expect(banner).to_contain_text("КОРНЕВОЙ КЛЮЧ ДРУГОЙ СТОРОНЫ ЗАМЕНЁН")
        expect(banner).to_contain_text("Станция NDMC заменила корневой ключ")
        expect(banner).to_contain_text("(аудитор) не может")
        wait_for(lambda: english_left(page) == [], "no English left (the voice panel follows at its next refresh)")

    with console(browser, pair.eucom.url, "Supervisor EUCOM") as page:
        banner, dialog = page.locator("#root-banner"), page.locator("#root-dialog")
        result = page.locator("#root-result")
        cond = page.locator('#alarm-list li[data-code="root_rotation"]')
        expect(cond.locator("button.danger")).to_have_text("CONFIRM THE NEW SAFETY CODE…")
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: banner and dialog fit, no sideways scroll
        page.click("#root-open")
        expect(dialog).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        for sel in ("#root-code", "#root-submit", "#root-cancel"):
            box = page.locator(sel).bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, (sel, box)
        page.set_viewport_size({"width": 1500, "height": 1100})
        test_console._no_axe_violations(page)  # the dialog open: axe-core finds nothing
        expect(dialog).to_contain_text("Call the peer's duty officer on a number you know")
        expect(dialog).to_contain_text(code)
        wrong = f"{(int(code[:4]) + 1) % 10000:04d}-{code[5:]}"
        page.fill("#root-code", wrong)
        page.click("#root-submit")
        expect(result).to_have_text(
            "WRONG CODE — nothing filed. Do NOT trust the new root: hang up and call NDMC back on a number you know."
        )
        expect(result).to_have_class("result bad")
        assert count(page, pair.line, "ROOT_CONFIRM") == 0 and pair.eucom.status()["root_code"] == code
        expect(banner).to_be_visible()
        page.fill("#root-code", code.replace("-", " "))  # typed as heard
        page.click("#root-submit")
        expect(dialog).to_be_hidden()
        expect(banner).to_be_hidden()
        expect(cond).to_have_count(0)
        expect(page.locator("#root-done")).to_contain_text("CONFIRMED — NDMC's new root (version 2)")
        wait_for(lambda: count(page, pair.line, "ROOT_CONFIRM") == 1, "EUCOM's ROOT_CONFIRM filed")
    # NDMC stored and receipted it: nothing of EUCOM's waits, and EUCOM's status asks for no code
    wait_for(lambda: (st := pair.eucom.status())["outbox"] == 0 == st["unreceipted"] and st["root_code"] is None,
             "NDMC to receipt EUCOM's ROOT_CONFIRM")  # fmt: skip
