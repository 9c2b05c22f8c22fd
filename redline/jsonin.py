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
    if _deeper_than(value, max_depth):
        raise EncodingError(f"nested more than {max_depth} levels deep")
    return value


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
