"""The docs must not fall behind the code (datasette's test_docs way)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from redline.cli import main
from redline.config import Limits
from redline.envelope import KINDS
from redline.protocol.framing import FrameType

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
OPERATIONS = (ROOT / "docs" / "OPERATIONS.md").read_text()
PROTOCOL = (ROOT / "docs" / "PROTOCOL.md").read_text()


def test_readme_gives_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert "./scripts/demo" in README and "./scripts/test" in README
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()


def test_every_limit_is_documented_in_operations() -> None:
    missing = [f.name for f in dataclasses.fields(Limits) if f"`{f.name}`" not in OPERATIONS]
    assert not missing, f"docs/OPERATIONS.md does not describe: {missing}"


def test_every_frame_type_and_kind_is_in_the_protocol() -> None:
    missing = [t.name for t in FrameType if f"| {t.value} | {t.name} |" not in PROTOCOL]
    assert not missing, f"docs/PROTOCOL.md §8.2 lacks frame types: {missing}"
    missing_kinds = [k for k in KINDS if f"`{k}`" not in PROTOCOL]
    assert not missing_kinds, f"docs/PROTOCOL.md lacks kinds: {missing_kinds}"


def test_every_command_is_documented() -> None:
    docs = README + OPERATIONS
    missing = [name for name in main.commands if f"redline {name}" not in docs]
    assert not missing, f"README.md / docs/OPERATIONS.md never show: {['redline ' + m for m in missing]}"
