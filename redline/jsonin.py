"""JSON from outside: a browser's request or message, a bundle or area file, a control request.

``json.loads`` raises RecursionError (a RuntimeError, not a ValueError) for text nested about a
thousand levels deep, which readers that catch ValueError let through as a traceback; and a value
nested a few hundred levels deep parses, then overflows the stack of whatever walks it next (the
API's coordinate conversion, the encoder). So every untrusted read goes through ``loads``: nesting
is bounded (``MAX_DEPTH``; nothing redline reads nests past ten), and whatever is wrong with the
text is one ``EncodingError`` with its reason. Signed bytes are read by ``canonical.decode``, which
does the same for its stricter form.
"""

from __future__ import annotations

import json
from typing import Any

from redline.errors import EncodingError

MAX_DEPTH = 64  # objects and arrays inside one another (a GeoJSON MultiPolygon in a request: 6)


def loads(data: str | bytes, *, max_depth: int = MAX_DEPTH, **hooks: Any) -> Any:
    """The value of ``data``; ``hooks`` are ``json.loads``'s (``parse_float=Decimal``, ...), and
    what they raise passes through. Not JSON, not UTF-8, or nested deeper than ``max_depth``:
    ``EncodingError``."""
    try:
        value = json.loads(data, **hooks)
    except RecursionError:
        raise EncodingError(f"nested more than {max_depth} levels deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of over 4300 digits
        raise EncodingError(f"not JSON: {exc}") from None
    if _opening_brackets(data) > max_depth and _deeper_than(value, max_depth):
        raise EncodingError(f"nested more than {max_depth} levels deep")
    return value


def _opening_brackets(data: str | bytes) -> int:
    """How many ``[`` and ``{`` the text holds, strings included: a bound on its nesting (every level
    opens with one), counted in C. A control request or a console form holds a handful, so the walk
    below, 3.4 of a control request's 10 us to read, runs only for text that could nest too deep.
    In bytes the count is of the byte 0x5B / 0x7B, which each bracket holds in UTF-8, -16 and -32
    alike (other characters may hold it too: a count too high only means the walk runs)."""
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def _deeper_than(value: Any, max_depth: int) -> bool:
    """Whether ``value`` nests containers more than ``max_depth`` deep (iterative: no recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else None
        if children is None:
            continue
        if depth > max_depth:
            return True
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return False
