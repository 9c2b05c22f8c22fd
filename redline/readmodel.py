"""The one conversion between typed read views and JSON: ``to_obj`` for the control socket and the
HTTP API, ``from_obj`` for the CLI, which reads a running station's views over the socket and
renders the same frozen dataclasses the station built (``ops/views.py``, ``redline.status``).

cattrs does the work; a view's field names are its JSON keys. ``from_obj`` of a malformed answer
is a ``ControlError`` (one line), never a traceback.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args, get_origin

import cattrs
from cattrs.cols import homogenous_tuple_structure_factory, mapping_structure_factory
from cattrs.gen import make_dict_structure_fn

from redline.errors import ControlError

T = TypeVar("T")

_converter = cattrs.Converter(forbid_extra_keys=True)


def _exact(kind: type) -> Any:
    def check(value: Any, _: Any) -> Any:
        if type(value) is kind or (kind is float and type(value) is int):
            return value
        raise TypeError(f"expected {kind.__name__}, got {type(value).__name__}")

    return check


for _kind in (str, int, bool, float):
    _converter.register_structure_hook(_kind, _exact(_kind))


def _is_tuple(cls: Any) -> bool:
    return get_origin(cls) is tuple


def _is_mapping(cls: Any) -> bool:
    return get_origin(cls) in (Mapping, dict)


def _tuple_hook(cls: Any, conv: cattrs.Converter) -> Any:
    """``tuple[X, ...]`` by cattrs; a fixed ``tuple[X, Y]`` item by item, of exactly that length."""
    args = get_args(cls)
    if len(args) == 2 and args[1] is Ellipsis:
        return homogenous_tuple_structure_factory(cls, conv)
    hooks = [conv.get_structure_hook(a) for a in args]

    def fixed(value: Any, _: Any) -> Any:
        if len(value) != len(hooks):
            raise ValueError(f"expected {len(hooks)} items, got {len(value)}")
        return tuple(h(v, a) for h, v, a in zip(hooks, value, args, strict=True))

    return fixed


def _json(json_type: type, name: str, make: Callable[[Any, cattrs.Converter], Any]) -> Any:
    """A hook factory: cattrs' hook for the class (``make``), taking only ``json_type`` (a list for a
    tuple, an object for a mapping or a view): cattrs alone would take any iterable or mapping."""

    def factory(cls: Any, conv: cattrs.Converter) -> Any:
        inner = make(cls, conv)

        def check(value: Any, t: Any) -> Any:
            if type(value) is not json_type:
                raise TypeError(f"expected {name}, got {type(value).__name__}")
            return inner(value, t)

        return check

    return factory


def _view_hook(cls: Any, conv: cattrs.Converter) -> Any:
    return make_dict_structure_fn(cls, conv, _cattrs_forbid_extra_keys=True)


_converter.register_structure_hook_factory(dataclasses.is_dataclass, _json(dict, "an object", _view_hook))
_converter.register_structure_hook_factory(_is_mapping, _json(dict, "an object", mapping_structure_factory))
_converter.register_structure_hook_factory(_is_tuple, _json(list, "a list", _tuple_hook))


def to_obj(view: Any) -> Any:
    """A view (a dataclass, or a tuple of them) as plain JSON-ready data."""
    return _converter.unstructure(view)


def from_obj(obj: Any, cls: type[T], what: str = "view") -> T:
    """``obj`` (parsed JSON) as the view ``cls``; refuses anything that is not exactly that shape."""
    try:
        return _converter.structure(obj, cls)
    except (cattrs.BaseValidationError, TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ControlError(f"the station's {what} answer has an unexpected shape: {_first(exc)}") from None


def _first(exc: BaseException) -> str:
    """The first reason cattrs found, with where it is ("expected int @ $.tests[0].seq"), in one line."""
    reasons = cattrs.transform_error(exc) if isinstance(exc, cattrs.BaseValidationError) else [str(exc)]
    first = (reasons[0] if reasons else "") or type(exc).__name__
    return first.splitlines()[0]
