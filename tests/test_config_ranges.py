"""Attack (HA pass, findings 6 and 9): config.json limits were checked for type only. One malformed
``test_times_utc`` ("0800") made every tick of every line raise (FLASH escalation, line-test
deadlines and call expiry stopped) and ``redline doctor`` print a traceback; NaN, negative and zero
values were accepted (a NaN heartbeat interval: no heartbeat ever); ``listen: [7401]`` was a
traceback at serve; a damaged ``last-backup.json`` a traceback in doctor. Now every Limits field
has a rule in one table (``config._LIMIT_RULES``), refused in one line naming key, value and range.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from redline import backup
from redline.config import Limits, StationConfig
from redline.errors import ConfigError
from redline.ops.linetests import slot_times
from redline.testing import make_station
from tests.procs import free_ports

ENV = {**os.environ, "REDLINE_PWHASH_COST": "interactive", "COLUMNS": "200"}
BASE: dict[str, Any] = {"name": "EUCOM", "lang": "en", "listen": ["127.0.0.1:7401"]}


def _load(limits: dict[str, Any] | None = None, **top: Any) -> StationConfig:
    return StationConfig.from_obj({**BASE, **top, "limits": limits or {}})


def _refused_in_one_line(limits: dict[str, Any] | None = None, **top: Any) -> str:
    with pytest.raises(ConfigError) as info:
        _load(limits, **top)
    text = str(info.value)
    assert "\n" not in text
    return text


# What each kind of field must refuse, whatever its range: every field is tried, so a limit added
# later without a rule in the table fails here (Limits() itself raises KeyError for it).
NUMBER_BAD: list[Any] = [math.nan, math.inf, -1, -0.5, "1", None, [1], True]


@pytest.mark.parametrize("f", dataclasses.fields(Limits), ids=lambda f: f.name)
def test_every_limit_has_a_rule_and_refuses_bad_values_in_one_line(f: dataclasses.Field[Any]) -> None:
    default = getattr(Limits(), f.name)
    if isinstance(default, bool):
        bad: list[Any] = [0, 1, "true", None, math.nan]
    elif isinstance(default, int | float):
        bad = [*NUMBER_BAD]
        if f.name != "line_disk_reserve_bytes":  # the one size for which 0 (no reserve) is meaningful
            bad.append(0)
        if isinstance(default, int):
            bad.append(1.5)
    else:  # a list of strings
        bad = ["08:00", [1], None, ["a", "a"], [""], ["x" * 100]]
    for value in bad:
        text = _refused_in_one_line({f.name: value})
        assert f"limits.{f.name}" in text, text
    _load({f.name: default if not isinstance(default, tuple) else list(default)})  # its default passes


@pytest.mark.parametrize("times", [["0800"], ["8h"], ["08:00:00"], ["8am"], ["24:00"], ["08:60"], ["08:00", "08:00"]])
def test_a_malformed_test_time_is_refused_when_config_is_read(times: list[str]) -> None:
    text = _refused_in_one_line({"test_times_utc": times})
    assert "limits.test_times_utc" in text and "HH:MM" in text and json.dumps(times)[:20] in text


def test_the_test_schedule_is_parsed_once_and_the_line_uses_it() -> None:
    limits = _load({"test_times_utc": ["20:30", "00:05"]}).limits
    assert limits.test_slots == ((20, 30), (0, 5))
    assert _load({"test_times_utc": []}).limits.test_slots == ()
    day = 1_652_400_000_000  # 2022-05-13T00:00Z
    assert slot_times(day + 21 * 3_600_000, limits.test_slots)[0][0] == "2022-05-13T20:30Z"


@pytest.mark.parametrize("limits", [
    {"heartbeat_interval": math.nan}, {"heartbeat_interval": -1}, {"window": 0}, {"max_text_bytes": -5},
    {"line_disk_warn_fraction": 7}, {"lease_seconds": 0}, {"max_frame_bytes": 0}, {"checkpoint_every_seconds": 0},
    {"escalation_levels": []}, {"escalation_levels": ["duty", "duty"]}, {"redial_initial": 9, "redial_max": 1},
    {"peer_window_min_seconds": 0.5},
], ids=repr)  # fmt: skip
def test_the_reported_values_are_refused_naming_key_value_and_range(limits: dict[str, Any]) -> None:
    text = _refused_in_one_line(limits)
    assert any(f"limits.{k}" in text for k in limits)


def test_an_open_set_of_escalation_levels_is_kept() -> None:
    assert _load({"escalation_levels": ["boss"]}).limits.escalation_levels == ("boss",)


@pytest.mark.parametrize("top", [{"listen": [7401]}, {"listen": "127.0.0.1:7401"}, {"listen": []},
                                 {"listen": ["7401"]}, {"advertise": [7401]}, {"advertise": "h:1"}], ids=repr)
def test_listen_and_advertise_must_be_lists_of_host_port(top: dict[str, Any]) -> None:
    _refused_in_one_line(**top)


def test_listen_addresses_that_are_numbers_get_one_line_at_serve(tmp_path: Path) -> None:
    home = make_station(tmp_path, "EUCOM", "en", free_ports(1)[0])
    c = json.loads(home.config_path.read_text())
    c["listen"] = [7401]
    home.config_path.write_text(json.dumps(c))
    out = subprocess.run([sys.executable, "-m", "redline", "serve", "--station", str(home.path)],
                         capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert out.returncode == 1 and "Traceback" not in out.stderr and "listen" in out.stderr + out.stdout


def test_a_malformed_test_time_gets_one_line_from_doctor(tmp_path: Path) -> None:
    home = make_station(tmp_path, "EUCOM", "en", free_ports(1)[0])
    c = json.loads(home.config_path.read_text())
    c["limits"]["test_times_utc"] = ["0800"]
    home.config_path.write_text(json.dumps(c))
    out = subprocess.run([sys.executable, "-m", "redline", "doctor", "--station", str(home.path)],
                         capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert "Traceback" not in out.stderr and "test_times_utc" in out.stderr + out.stdout


@pytest.mark.parametrize("record", ["[]", '{"taken_at": "x", "path": "/tmp"}', '{"taken_at": 1e400, "path": "/tmp"}',
                                    '{"taken_at": 5}', '"text"'])
def test_a_damaged_last_backup_record_gets_one_line_from_doctor(tmp_path: Path, record: str) -> None:
    home = make_station(tmp_path, "EUCOM", "en", free_ports(1)[0])
    (home.path / backup.LAST_BACKUP).write_text(record)
    assert backup.last_backup(home) is None
    out = subprocess.run([sys.executable, "-m", "redline", "doctor", "--station", str(home.path)],
                         capture_output=True, text=True, env=ENV, timeout=60)  # fmt: skip
    assert "Traceback" not in out.stderr, out.stderr[-300:]
