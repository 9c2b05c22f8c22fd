"""Render the README's screenshots: python scripts/screenshots.py [cli] [console] (default: both)

cli: runs the demo into a temporary directory, restarts both stations on the demo's 13 May 2022
clock, and records what `redline status`, `calls`, `tests`, `notices` and `verify` print (SVG).

console: runs the duty console's browser test (tests/test_console.py: two real stations, Debian's
chromium) with REDLINE_SCREENSHOTS=1, which writes docs/img/console*.png (one in Russian).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from click.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ["REDLINE_SETTABLE_CLOCK"] = "1"

from redline import cli  # noqa: E402
from redline.demo import run_demo  # noqa: E402
from redline.scenario import ms  # noqa: E402
from tests.procs import StationProc  # noqa: E402


def shoot(name: str, args: list[str], station: Path) -> None:
    cli.console.record = True
    cli.console.width = 110
    cli.console.force_terminal = True
    result = CliRunner().invoke(cli.main, [*args, "--station", str(station)], catch_exceptions=False)
    if result.exit_code not in (0, 2):
        raise SystemExit(f"{args}: {result.output}")
    cli.console.save_svg(str(ROOT / "docs" / "img" / f"{name}.svg"), title=f"redline {' '.join(args)}")


async def main(work: Path) -> None:
    # Started on the demo's clock, not today's: today's line-test slot would fall due before it is set.
    start = ("--clock-start", str(ms("2022-05-13T13:05:00Z")))
    eucom, ndmc = StationProc(work / "eucom", start), StationProc(work / "ndmc", start)
    await eucom.start()
    await ndmc.start()
    try:
        for p in (eucom, ndmc):
            await p.call({"op": "clock", "set_ms": ms("2022-05-13T13:05:00Z")})
        await asyncio.sleep(2.5)  # let both paths come up and measure a round trip
        line = (await eucom.status_line())["line"][:8]
        await asyncio.to_thread(shoot, "status", ["status"], work / "eucom")
        await asyncio.to_thread(shoot, "calls", ["calls", line], work / "eucom")
        await asyncio.to_thread(shoot, "notices", ["notices", line], work / "ndmc")
        await asyncio.to_thread(shoot, "tests", ["tests", line], work / "eucom")
        await asyncio.to_thread(shoot, "flashes", ["flashes", line], work / "eucom")
    finally:
        eucom.stop()
        ndmc.stop()
    shoot("verify", ["verify"], work / "ndmc")


def console_shots() -> None:
    env = {**os.environ, "REDLINE_SCREENSHOTS": "1", "REDLINE_REQUIRE_BROWSER": "1"}
    test = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "test_console.py")]
    if subprocess.run(test, cwd=ROOT, env=env).returncode != 0:
        raise SystemExit("the console's browser test failed: its screenshots are not to be trusted")


if __name__ == "__main__":
    wanted = set(sys.argv[1:]) or {"cli", "console"}
    if wanted - {"cli", "console"}:
        raise SystemExit("usage: python scripts/screenshots.py [cli] [console]")
    if "cli" in wanted:
        workdir = Path(tempfile.mkdtemp(prefix="redline-shots-"))
        run_demo(workdir, wait=False)
        asyncio.run(main(workdir))
    if "console" in wanted:
        console_shots()
