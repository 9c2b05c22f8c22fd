"""config.json is read from a file an operator edits by hand: every setting of the wrong type is
refused in one line naming it, never kept (a string where a number belongs) nor misread (a string
where a list of names belongs, taken one letter per name), and never a traceback."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from redline.config import ApiConfig, Limits, StationConfig
from redline.errors import ConfigError

BASE: dict[str, Any] = {"name": "EUCOM", "lang": "en", "listen": ["127.0.0.1:7001"]}
WRONG = {"int": ["2048", 2048.5, True, None], "float": ["1.0", False, [1]], "bool": [1, "true"],
         "tuple[str, ...]": ["console.example.org", [1], {"a": 1}]}  # fmt: skip


def _every_field() -> list[tuple[str, str, str, Any]]:
    return [(section, f.name, str(f.type), bad)
            for section, cls in (("limits", Limits), ("api", ApiConfig))
            for f in dataclasses.fields(cls) for bad in WRONG[str(f.type)]]  # fmt: skip


@pytest.mark.parametrize(("section", "name", "kind", "bad"), _every_field())
def test_a_setting_of_the_wrong_type_is_refused_in_one_line_naming_it(
    section: str, name: str, kind: str, bad: Any
) -> None:
    with pytest.raises(ConfigError) as refused:
        StationConfig.from_obj({**BASE, section: {name: bad}})
    assert f"{section}.{name} must be" in str(refused.value) and "\n" not in str(refused.value)


@pytest.mark.parametrize("section", ["limits", "api"])
@pytest.mark.parametrize("bad", [[], "x", 3])
def test_a_section_that_is_not_an_object_is_refused(section: str, bad: Any) -> None:
    with pytest.raises(ConfigError, match=f"{section} must be an object"):
        StationConfig.from_obj({**BASE, section: bad})


def test_every_default_reads_back_as_written() -> None:
    config = StationConfig.from_obj(BASE)
    again = StationConfig.from_obj(config.to_obj())  # what 'redline init' writes, read back
    assert again == config and again.limits.test_times_utc == Limits().test_times_utc
    assert StationConfig.from_obj({**BASE, "limits": {"heartbeat_interval": 2}}).limits.heartbeat_interval == 2
