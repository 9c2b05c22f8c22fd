"""Untrusted text on a terminal or in a log: always data, never markup or control codes.

Message text, subjects, readouts, notice names, station and person names and ERROR reasons come
from the peer, a user or a file. Printed as they are, they can carry Rich markup (``[/b]`` raises
``MarkupError``; ``[link=…]`` forges a link), ANSI escapes that rewrite the operator's screen, and
bidirectional overrides that make ``EUCOM`` read as something else. So every terminal console of
the package is a ``SafeConsole`` (markup, emoji and highlighting off; every string it renders is
passed through ``shown``), every log line goes through ``logs.SafeFormatter``, and our own emphasis is
built with ``styled`` from ``Text`` parts rather than markup. ``tests/test_attacks_text.py`` checks
that no other ``Console`` is made anywhere in the package.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

# Bidirectional controls (Unicode category Cf) that reorder what follows them on screen.
_BIDI = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_KEEP = frozenset("\n\t")


def _visible(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def shown(text: str, limit: int | None = None, *, newlines: bool = True) -> str:
    """``text`` with every control character and bidi override made visible as an escape, cut to
    ``limit`` characters (with an ellipsis) when given. Newlines and tabs stay unless
    ``newlines`` is false (one-line contexts such as log lines and table cells)."""
    if limit is not None and len(text) > limit:
        text = text[: max(limit - 1, 0)] + "…"
    if text.isprintable() and not (_BIDI & set(text)):
        return text
    out = []
    for ch in text:
        if ch in _KEEP and newlines:
            out.append(ch)
        elif ch in _BIDI or (not ch.isprintable() and unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")):
            out.append(_visible(ch))
        else:
            out.append(ch)
    return "".join(out)


def styled(*parts: str | tuple[str, str]) -> Text:
    """Our own emphasis around data: ``styled("Station ", (name, "bold"), " created")``. Every
    part is data: markup in it is printed as written."""
    text = Text()
    for part in parts:
        if isinstance(part, tuple):
            text.append(shown(part[0]), style=part[1])
        else:
            text.append(shown(part))
    return text


def columns(
    console: Console, header: Sequence[str], rows: Iterable[Sequence[str | Text]], *, free_min: int = 30,
    indent: int = 0,
) -> Text:  # fmt: skip
    """``rows`` as aligned columns for ``console`` (its width): the last column is free text, wrapped
    under itself, or, when fewer than ``free_min`` cells are left for it, on lines of its own below
    the row (indented), so a narrow terminal or a pipe (80 columns) still reads whole words. The
    other cells stay on one line (the caller cuts a long one: a peer's name may be 64 characters).
    Every line starts with ``indent`` spaces.

    Every ``str`` cell is data (``shown``; a ``Text`` cell is ours, built with ``styled``): the
    result is a ``Text``, which no console parses for markup. One pass over the cells instead of
    rich's ``Table``, which measures and renders each cell as a renderable of its own (a 50-row
    ``redline log`` page: about 30 ms of its run, against a few here)."""
    table: list[list[str | Text]] = [[styled((h, "bold")) for h in header]]
    table += [[c if isinstance(c, Text) else shown(c, newlines=False) for c in r[:-1]]
              + [r[-1] if isinstance(r[-1], Text) else shown(r[-1])] for r in rows]  # fmt: skip
    widths = [max(map(_cells, col)) for col in zip(*(r[:-1] for r in table), strict=True)]
    prefix = indent + sum(widths) + 2 * len(widths)
    below = console.width - prefix < free_min  # the free text on lines of its own
    free = max(console.width - (indent + 4 if below else prefix), 1)
    hang = " " * (indent + 4 if below else prefix)  # where the free text's lines start
    out = Text()
    for r in table:
        plain = " " * indent  # plain text not yet added (added together: each Text.append has a cost)
        for cell, width in zip(r[:-1], widths, strict=True):
            if isinstance(cell, Text):
                out.append(plain)
                out.append_text(cell)
                plain = ""
            else:
                plain += cell
            plain += " " * (width - _cells(cell) + 2)
        if below:
            out.append(plain.rstrip() + "\n")
            plain = hang
        last = r[-1]
        if isinstance(last, str) and "\n" not in last and "\t" not in last and cell_len(last) <= free:
            out.append((plain + last).rstrip() + "\n")  # fits as it is: nothing to wrap
            continue
        for i, part in enumerate((last if isinstance(last, Text) else Text(last)).wrap(console, free) or [Text()]):
            out.append(hang if i else plain)
            out.append_text(part)
            out.append("\n")
    out.rstrip()
    return out


def _cells(cell: str | Text) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


def json_text(data: object) -> str:
    """JSON for a terminal or a script: readable (not every letter escaped) but with every bidi
    override, DEL and C1 control written as a ``\\uXXXX`` escape, which is the same JSON value and
    cannot reorder or rewrite what an operator sees (json already escapes C0 controls)."""
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False)
    return "".join(f"\\u{ord(ch):04x}" if ch in _BIDI or 0x7F <= ord(ch) <= 0x9F else ch for ch in text)


class SafeConsole(Console):
    """A Rich console for which every string is data: no markup, no emoji codes, no highlighting,
    control characters shown as escapes. Tables and ``print`` render strings through
    ``render_str``, so cells are covered too."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(markup=False, emoji=False, highlight=False, **kwargs)

    def render_str(self, text: str, **kwargs: Any) -> Text:
        kwargs["markup"] = False
        kwargs["emoji"] = False
        return super().render_str(shown(text), **kwargs)


# Hex digits of an envelope id shown wherever someone must act on the entry (flashes, tests, calls,
# log rows, status): what 'redline ack', 'answer', 'show' and 'call reply' take (6 or more digits of
# an id name it, ops/engine.py), with room to spare so two of a line's ids rarely share the prefix.
ID_SHOWN = 8
ID_PREFIX_MIN = 6  # the fewest hex digits of an id that name an envelope (ops/engine.py _resolve)


def short_id(envelope_id: str | None) -> str:
    """An envelope id as the tools print it for a person to type back: its first ``ID_SHOWN`` digits."""
    return envelope_id[:ID_SHOWN] if envelope_id else "-"


def line_word(line: str) -> str:
    """The LINE of a printed command line as it was typed, shell-quoted; a whole line id cut to the
    8 digits that name it (``ledger.model.LINE_PREFIX_MIN``), so the command fits on one line."""
    import re
    import shlex

    if re.fullmatch(r"[0-9a-fA-F]{9,}", line):
        return line[:8]
    return shlex.quote(shown(line, 80, newlines=False))


def awaits_ack(ours: bool, acked_by: str | None, state: str) -> bool:
    """A FLASH (its view's fields) of the peer nobody here has acknowledged yet: still to act on."""
    return not ours and acked_by is None and state in ("waiting for acknowledgement", "deadline missed")
