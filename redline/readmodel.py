"""The one conversion between typed read views and JSON: ``to_obj`` for the control socket and the
HTTP API, ``from_obj`` for the CLI, which reads a running station's views over the socket and
renders the same frozen dataclasses the station built (``ops/views.py``, ``redline.status``).

cattrs does the work; a view's field names are its JSON keys. ``from_obj`` of a malformed answer
is a ``ControlError`` (one line), never a traceback.
"""

from __future__ import annotations

from typing import Any, TypeVar

import cattrs

from redline.errors import ControlError

T = TypeVar("T")

_converter = cattrs.Converter(forbid_extra_keys=True)


def to_obj(view: Any) -> Any:
    """A view (a dataclass, or a tuple of them) as plain JSON-ready data."""
    return _converter.unstructure(view)


def from_obj(obj: Any, cls: type[T], what: str = "view") -> T:
    """``obj`` (parsed JSON) as the view ``cls``; refuses anything that is not exactly that shape."""
    try:
        return _converter.structure(obj, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError) as exc:
        raise ControlError(f"the station's {what} answer has an unexpected shape: {_first(exc)}") from None


def _first(exc: BaseException) -> str:
    """The first concrete reason inside a cattrs error group, in one line."""
    while isinstance(exc, cattrs.BaseValidationError) and exc.exceptions:
        exc = exc.exceptions[0]
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
