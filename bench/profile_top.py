"""Summarise py-spy raw (collapsed-stack) files: where the samples went, inclusive and self.

``.venv/bin/python -m bench.profile_top FILE...`` (files written by ``bench.line_bench --profile``).
A collapsed line is ``frame;frame;...;leaf COUNT``; each frame is ``function (file:line)``.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_LINE_NO = re.compile(r":\d+\)$")
IDLE = ("select (selectors.py", "_run_once (asyncio/base_events.py")


def frame_name(frame: str, *, keep_line: bool) -> str:
    return frame if keep_line else _LINE_NO.sub(")", frame)


def summarise(path: Path, top: int, *, keep_line: bool = False, under: str | None = None) -> str:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for raw in path.read_text().splitlines():
        stack, _, count_text = raw.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame_name(f, keep_line=keep_line) for f in stack.split(";")]
        if under is not None:
            if not any(under in f for f in frames):
                continue
            frames = frames[next(i for i, f in enumerate(frames) if under in f) :]
        total += count
        for f in set(frames):
            inclusive[f] += count
        own[frames[-1]] += count
    idle = sum(c for f, c in own.items() if f.startswith("select (selectors.py"))
    lines = [f"== {path.name}: {total} samples" + (f" under {under!r}" if under else "")
             + f", {100 * idle / max(total, 1):.0f}% waiting in select()"]  # fmt: skip
    lines.append("-- inclusive (function and what it calls)")
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    lines.append("-- self (the leaf frame itself)")
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--lines", action="store_true", help="keep line numbers (split a function by line)")
    parser.add_argument("--under", help="only stacks through a frame containing this text, re-rooted there")
    args = parser.parse_args(argv)
    for path in args.files:
        print(summarise(path, args.top, keep_line=args.lines, under=args.under))
        print()


if __name__ == "__main__":
    main()
