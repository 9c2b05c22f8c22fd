"""``display.columns``: how ``redline log`` and ``redline status`` lay out rows (aligned columns, the
last one free text wrapped under itself or below the row), with every cell printed as data."""

from __future__ import annotations

import re

import pytest
from click.testing import CliRunner
from rich.cells import cell_len

from redline.cli.common import main
from redline.display import SafeConsole, columns, styled
from redline.testing import SessionPair
from tests.test_attacks_text import ESC, HOSTILE

HEADER = ("time (UTC)", "from", "seq", "text")


def _lines(width: int, rows: list[tuple[str, ...]], **kwargs: int) -> list[str]:
    console = SafeConsole(record=True, width=width, force_terminal=True, color_system="standard")
    console.print(columns(console, HEADER, rows, **kwargs), soft_wrap=True)
    return console.export_text(styles=False).splitlines()


@pytest.mark.parametrize("text", HOSTILE)
def test_hostile_text_in_any_cell_prints_as_written_never_as_markup_or_control(text: str) -> None:
    console = SafeConsole(record=True, width=120, force_terminal=True, color_system="standard")
    console.print(columns(console, HEADER, [(text[:40], text[:40], "1", text)]), soft_wrap=True)
    out = console.export_text(styles=False)
    assert ESC not in out and "\u202e" not in out and "\x00" not in out and "\r" not in out
    if "[/draft]" in text:
        assert "[/draft]" in out
    if "[link=" in text:
        assert "[link=https://evil.example]" in out  # the markup itself, shown: no link made


def _cells(line: str) -> str:
    """``line`` with each wide character followed by a filler, so an index is a terminal cell."""
    return "".join(ch + "\0" * (cell_len(ch) - 1) for ch in line)


def test_the_free_text_wraps_under_its_own_column_and_the_other_cells_stay_aligned() -> None:
    rows = [("2026-12-03 09:00:00.000Z", "us", "1", "short"),
            ("2026-12-03 09:00:01.000Z", "НЦУО", "12", "word " * 30),
            ("2026-12-03 09:00:02.000Z", "東京局", "123", "wide 東京 " * 12)]  # fmt: skip
    lines = _lines(100, rows)
    assert lines[0].split() == ["time", "(UTC)", "from", "seq", "text"]
    assert all(cell_len(line) <= 100 for line in lines)
    starts = [lines[0].index(h) for h in ("from", "seq", "text")]  # cells: the header is ASCII
    firsts = [i for i, line in enumerate(lines) if line.startswith("2026")]
    assert len(firsts) == 3 and len(lines) > 4  # two of the texts wrap
    for i, line in enumerate(lines[1:], 1):
        cells = _cells(line)
        if i in firsts:  # each cell in its column, whatever the width of the name before it
            assert all(cells[at - 1] == " " and cells[at] != " " for at in starts), line
        else:  # a continuation: only text, from the text column on
            assert cells[: starts[-1]].strip() == "" and cells[starts[-1]] != " ", line
    text = " ".join(" ".join(lines).split())
    assert ("word " * 30).strip() in text and ("wide 東京 " * 12).strip() in text  # every word, in order


def test_a_narrow_terminal_or_a_pipe_gets_the_text_below_each_row_in_whole_words() -> None:
    rows = [("2026-12-03 09:00:00.000Z", "NDMC", "7", "hello there, " * 8)]
    lines = _lines(40, rows)
    assert lines[0].split() == ["time", "(UTC)", "from", "seq"] and lines[1] == "    text"
    assert lines[2].split() == ["2026-12-03", "09:00:00.000Z", "NDMC", "7"]
    assert all(line.startswith("    ") and cell_len(line) <= 40 for line in lines[3:])
    assert " ".join(" ".join(lines[3:]).split()) == ("hello there, " * 8).strip()


def test_text_of_several_lines_keeps_them_and_an_empty_text_keeps_its_row() -> None:
    rows = [("2026-12-03 09:00:00.000Z", "us", "1", "first\nsecond"), ("2026-12-03 09:00:01.000Z", "us", "2", "")]
    lines = _lines(120, rows)
    assert lines[1].endswith("first") and lines[2].strip() == "second" and lines[3].split()[-1] == "2"


def test_our_own_emphasis_in_a_text_cell_is_kept_and_its_data_shown() -> None:
    console = SafeConsole(record=True, width=120, force_terminal=True, color_system="standard")
    cell = styled(("REVOKED: [b]x[/b]\x1b[2J", "bold red"), "\nhello")
    console.print(columns(console, HEADER, [("t", "us", "1", cell)]), soft_wrap=True)
    out = console.export_text(styles=True)
    assert "\x1b[1;31mREVOKED: [b]x[/b]\\x1b[2J\x1b[0m" in out  # bold red, its data shown, then reset
    assert len(re.findall("\x1b\\[[0-9;]*m", out)) == out.count(ESC)  # no escape but our styles


def test_log_shows_every_row_of_the_page_with_its_whole_text_in_columns(tmp_path: object) -> None:
    pair = SessionPair(tmp_path)  # type: ignore[arg-type]
    pair.send("a", "hello from EUCOM: the line test is at 0800Z [bold]not markup[/bold]")
    pair.send("b", "привет от НЦУО")
    pair.run()
    pair.close()
    for width in (200, 80):  # a wide terminal; a pipe (rich's 80 columns)
        res = CliRunner(env={"COLUMNS": str(width)}).invoke(main, ["log", "--station", str(pair.dir_a.path), pair.line])
        assert res.exit_code == 0, res.output
        lines = res.output.splitlines()
        assert lines[0].split()[:3] == ["time", "(UTC)", "from"]
        text = " ".join(res.output.split())
        assert "hello from EUCOM: the line test is at 0800Z [bold]not markup[/bold]" in text
        assert "привет от НЦУО" in text and "NDMC" in text and "✓ stored" in text
        assert all(cell_len(line) <= width for line in lines)
