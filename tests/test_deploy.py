"""What an engineer deploys: the systemd unit and the Grafana dashboard in docs/deploy, held to the
docs and to the code."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "docs" / "deploy" / "redline.service"
DASHBOARD = ROOT / "docs" / "deploy" / "grafana-dashboard.json"
OPERATIONS = (ROOT / "docs" / "OPERATIONS.md").read_text()


def test_the_unit_in_operations_md_is_the_shipped_file() -> None:
    block = re.search(r"A systemd unit.*?```ini\n(.*?)```", OPERATIONS, re.S)
    assert block is not None and block.group(1) == UNIT.read_text()


def test_the_unit_is_hardened() -> None:
    unit = UNIT.read_text()
    for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ReadWritePaths=/srv/redline/eucom", "User=redline",
                 "UMask=0077", "KillSignal=SIGTERM", "CapabilityBoundingSet=\n", "PrivateDevices=yes"):
        assert line in unit, line


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not on this machine")
def test_systemd_analyze_verify_accepts_the_unit(tmp_path: Path) -> None:
    # The unit names where redline is installed; here it is this venv's command.
    redline = Path(sys.executable).with_name("redline")
    unit = tmp_path / "redline.service"
    unit.write_text(UNIT.read_text().replace("/opt/redline/.venv/bin/redline", str(redline)))
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "redline.service" not in out.stderr, out.stderr  # no warning about the unit itself


def test_the_dashboard_queries_only_metrics_the_station_exports() -> None:
    documented = set(re.findall(r"`(redline_[a-z_]+)`", OPERATIONS))
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", m) for e in exprs for m in re.findall(r"redline_[a-z_]+", e)}
    assert used and used <= documented, used - documented
    # the things a watch looks at first are on it
    for must in ("redline_line_in_sync", "redline_path_up", "redline_flash_pending", "redline_line_disk_bytes"):
        assert must in used
