"""The one conversion between typed read views and JSON: ``to_obj`` for the control socket and the
HTTP API, ``from_obj`` for the CLI, which reads a running station's views over the socket and
renders the same frozen dataclasses the station built (``ops/views.py``, ``redline.status``).

A view's dataclass is its one definition: its field names are the JSON keys and its field types say
what each holds, for both directions. ``to_obj`` is cattrs' (the station's side; cattrs is
imported there, not by the CLI). ``from_obj`` reads the fields and their types straight from the
dataclass (``_reader``, made once per type) and takes exactly that shape: a string is not a number
or a bool, null is not a string, a list is not an object, an unknown key or a missing field is
refused, with where it is ("expected int, got str @ $.tests[0].seq"). It is a ``ControlError``
(one line), never a traceback. It does what cattrs did here without loading it (cattrs and attrs:
about 20 ms of a short command's start); tests/test_readviews.py holds every view, after real
traffic, to ``from_obj(to_obj(view)) == view`` and each malformed shape to one line.
"""

from __future__ import annotations

import dataclasses
import functools
import sys
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any, TypeVar, get_args, get_origin

from redline.errors import ControlError

T = TypeVar("T")

Reader = Callable[[Any, str], Any]  # (JSON value, where it is: "$.tests[0]") -> the typed value


class _Shape(Exception):
    """Why a value is not the shape asked for, and where (one line)."""


def _exact(kind: type) -> Reader:
    def read(value: Any, at: str) -> Any:
        if type(value) is kind or (kind is float and type(value) is int):
            return value
        raise _Shape(f"expected {kind.__name__}, got {type(value).__name__} @ {at}")

    return read


def _json(value: Any, json_type: type, name: str, at: str) -> None:
    """Only ``json_type`` (a list for a tuple, an object for a mapping or a view)."""
    if type(value) is not json_type:
        raise _Shape(f"expected {name}, got {type(value).__name__} @ {at}")


def _none(value: Any, at: str) -> None:
    if value is not None:
        raise _Shape(f"expected null, got {type(value).__name__} @ {at}")


def _any(value: Any, at: str) -> Any:
    return value


_READERS: dict[Any, Reader] = {str: _exact(str), int: _exact(int), bool: _exact(bool), float: _exact(float),
                               type(None): _none, None: _none, Any: _any}  # fmt: skip


def _reader(cls: Any) -> Reader:
    """How to read ``cls`` from JSON, made once per type."""
    held = _READERS.get(cls)
    if held is None:
        held = _READERS[cls] = _make(cls)
    return held


def _make(cls: Any) -> Reader:
    origin, args = get_origin(cls), get_args(cls)
    if origin in (types.UnionType, typing.Union):
        return _union(args)
    if origin is tuple:
        return _tuple(args)
    if origin is list:
        return _items(_reader(args[0]), list)
    if origin in (Mapping, dict):
        return _mapping(_reader(args[0]), _reader(args[1]))
    if dataclasses.is_dataclass(cls):
        return _view(cls)
    raise TypeError(f"readmodel: no reader for {cls!r}")  # a view type we do not know: our bug, not input


def _union(args: tuple[Any, ...]) -> Reader:
    options = [_reader(a) for a in args if a is not type(None)]
    optional = len(options) < len(args)

    def read(value: Any, at: str) -> Any:
        if value is None and optional:
            return None
        reasons = []
        for option in options:  # the first that takes it whole (a view refuses another view's keys)
            try:
                return option(value, at)
            except _Shape as exc:
                reasons.append(str(exc))
        raise _Shape(reasons[0] if len(reasons) == 1 else f"matches none of {len(reasons)} shapes ({reasons[0]})")

    return read


def _items(item: Reader, make: Callable[[Any], Any]) -> Reader:
    """A list of ``item``, as ``make`` (list, or tuple for ``tuple[X, ...]``)."""

    def read(value: Any, at: str) -> Any:
        _json(value, list, "a list", at)
        return make(item(x, f"{at}[{i}]") for i, x in enumerate(value))

    return read


def _mapping(key: Reader, item: Reader) -> Reader:
    def read(value: Any, at: str) -> Any:
        _json(value, dict, "an object", at)
        return {key(k, f"{at}.{k}"): item(x, f"{at}.{k}") for k, x in value.items()}

    return read


def _tuple(args: tuple[Any, ...]) -> Reader:
    """``tuple[X, ...]`` from a list; a fixed ``tuple[X, Y]`` item by item, of exactly that length."""
    if len(args) == 2 and args[1] is Ellipsis:
        return _items(_reader(args[0]), tuple)
    items = [_reader(a) for a in args]

    def fixed(value: Any, at: str) -> Any:
        _json(value, list, "a list", at)
        if len(value) != len(items):
            raise _Shape(f"expected {len(items)} items, got {len(value)} @ {at}")
        return tuple(read(x, f"{at}[{i}]") for i, (read, x) in enumerate(zip(items, value, strict=True)))

    return fixed


def _view(cls: Any) -> Reader:
    """A dataclass from an object of exactly its fields (those with a default may be left out)."""
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    fields = [f for f in dataclasses.fields(cls) if f.init]
    names = frozenset(f.name for f in fields)
    required = [f.name for f in fields
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]  # fmt: skip
    readers: dict[str, Reader] = {}
    # A view whose JSON is not its fields one to one (LineStatus: 'confirmed' {local, peer}) says how
    # its JSON maps to them (json_fields), refusing any other shape with a ValueError.
    adapt: Callable[[dict[str, Any]], dict[str, Any]] | None = getattr(cls, "json_fields", None)

    def read(value: Any, at: str) -> Any:
        _json(value, dict, "an object", at)
        if adapt is not None:
            try:
                value = adapt(value)
            except ValueError as exc:
                raise _Shape(f"{exc} @ {at}") from None
        extra = [k for k in value if k not in names]
        if extra:
            raise _Shape(f"extra fields found ({', '.join(map(str, extra))}) @ {at}")
        missing = [k for k in required if k not in value]
        if missing:
            raise _Shape(f"required field missing @ {at}.{missing[0]}")
        if not readers:  # the fields' readers, made at first use (a view may hold itself)
            readers.update({f.name: _reader(hints[f.name]) for f in fields})
        try:
            return cls(**{k: readers[k](v, f"{at}.{k}") for k, v in value.items()})
        except (TypeError, ValueError) as exc:  # the view's own checks (__post_init__)
            raise _Shape(f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__} @ {at}") from None

    return read


def to_obj(view: Any) -> Any:
    """A view (a dataclass, or a tuple of them) as plain JSON-ready data."""
    return _unstructurer().unstructure(view)


@functools.cache
def _unstructurer() -> Any:
    import cattrs  # the station's side (and --json): the CLI reads views without it

    return cattrs.Converter()


def from_obj(obj: Any, cls: type[T] | Any, what: str = "view") -> T:
    """``obj`` (parsed JSON) as the view ``cls``; refuses anything that is not exactly that shape."""
    try:
        return _reader(cls)(obj, "$")  # type: ignore[no-any-return]
    except _Shape as exc:
        raise ControlError(f"the station's {what} answer has an unexpected shape: {exc}") from None
