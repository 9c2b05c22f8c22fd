"""Dataclasses made when first used, not at import: ``@dataclass_on_first_use(frozen=True, kw_only=True)``.

Making a dataclass compiles its ``__init__``, ``__repr__``, ``__eq__`` (and, frozen, ``__hash__``,
``__setattr__`` and ``__delattr__``) from source: about 0.4 ms a class on this machine. A module of
thirty such types costs a short command (``redline log`` reads two or three kinds of content) a
tenth of its run. A class so decorated stays the plain class as written until it is first used:
its first instance, made or unpickled (as in a spawned worker), or the first look at its fields
(``dataclasses.fields``, ``is_dataclass``, ``__dataclass_fields__``). It is then made exactly what
``@dataclass(...)`` with the same arguments makes, once, whatever thread gets there first; a thread
that arrives meanwhile waits for it (``build``), at the price of making ``__init__`` on a twin of
the class (the twin gets nothing else: about 0.6 ms at first use instead of 0.4; with the twin a
whole dataclass too, it was 0.8). Type checkers see a dataclass
(``dataclass_transform``).

Not for ``slots=True`` (dataclass then makes a new class, which names bound at import cannot follow).
Before it is built, a class's ``__doc__`` is its own (``dataclass`` writes the signature into an
empty one when it builds it) and ``inspect.signature`` sees the stand-in ``__init__``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from typing import Any, TypeVar, dataclass_transform

_T = TypeVar("_T")
_UNBUILT: dict[type, dict[str, Any]] = {}  # class -> the arguments for dataclass()
_BUILDING = threading.RLock()  # two threads reaching a class first make it once
_OWN_SLOTS = ("__dict__", "__weakref__")  # every class's own descriptors: a twin gets its own
_INIT_ONLY = {"repr": False, "eq": False, "order": False, "unsafe_hash": False, "match_args": False}


def unbuilt() -> frozenset[type]:
    """The classes not yet made dataclasses (for tests: what a command left unbuilt)."""
    return frozenset(_UNBUILT)


def build(cls: type) -> None:
    """Make ``cls`` and its bases that wait the dataclasses their decorator names (bases first).

    Each stand-in stays until the real attribute replaces it in one step: another thread that
    reaches the class meanwhile goes through a stand-in, which waits here, and never past the class
    to a base's ``__init__`` or fields (tests/test_firstuse.py widens that moment to show it)."""
    with _BUILDING:
        for c in reversed(cls.__mro__):
            kwargs = _UNBUILT.get(c)
            if kwargs is None:
                continue
            own_doc = c.__dict__.get("__doc__")
            # dataclass() leaves a class's own __init__ (here the stand-in) alone: the class is made
            # without one, and its __init__ is a twin's, made from the same namespace (a frozen
            # dataclass's __setattr__ names its class, so the rest must be made on the class itself).
            space = {k: v for k, v in c.__dict__.items() if k not in _STAND_INS and k not in _OWN_SLOTS}
            twin = type(c)(c.__name__, c.__bases__, space)  # its metaclass too (ABCMeta...)
            twin.__qualname__ = c.__qualname__
            # The twin is made for its __init__ (and docstring) only: no __repr__, __eq__ or __hash__,
            # which cost as much to make as __init__ (frozen stays: it decides how __init__ sets fields).
            dataclasses.dataclass(twin, **{**kwargs, **_INIT_ONLY})
            dataclasses.dataclass(c, **{**kwargs, "init": False})  # sets __dataclass_fields__ in one step
            if "__init__" in twin.__dict__:
                setattr(c, "__init__", twin.__dict__["__init__"])  # noqa: B010 (mypy refuses assigning a method)
            else:
                delattr(c, "__init__")  # init=False: the base's, as dataclass() leaves it
            c.__dict__["__dataclass_params__"].init = kwargs["init"]  # made with init=False: say it as asked
            if own_doc is None:
                c.__doc__ = twin.__doc__  # the signature dataclass() writes into an empty docstring
            delattr(c, "__setstate__")
            del _UNBUILT[c]


class _FieldsOnFirstUse:
    """A class's ``__dataclass_fields__`` until it is built: reading it builds the class."""

    def __get__(self, instance: object, owner: type) -> Any:
        build(owner)
        return getattr(owner, "__dataclass_fields__")  # noqa: B009 (mypy: no such attribute on type)


def _init_on_first_use(self: Any, *args: Any, **kwargs: Any) -> None:
    build(type(self))
    type(self).__init__(self, *args, **kwargs)


def _setstate_on_first_use(self: Any, state: Any) -> None:
    """An instance made without ``__init__`` (unpickled, as in a spawned worker) builds its class
    too, then takes its state as pickle does for a class without ``__setstate__``."""
    build(type(self))
    own = getattr(type(self), "__setstate__", None)
    if own is not None:
        own(self, state)
        return
    slots = None
    if isinstance(state, tuple) and len(state) == 2:
        state, slots = state
    if state:
        self.__dict__.update(state)
    for name, value in (slots or {}).items():
        object.__setattr__(self, name, value)


# What a class holds until it is built; each use that needs the dataclass goes through one of them.
_STAND_INS: dict[str, Any] = {
    "__init__": _init_on_first_use,
    "__setstate__": _setstate_on_first_use,
    "__dataclass_fields__": _FieldsOnFirstUse(),
}


@dataclass_transform(field_specifiers=(dataclasses.field, dataclasses.Field))  # as typing sees dataclass
def dataclass_on_first_use(
    *, init: bool = True, repr: bool = True, eq: bool = True, order: bool = False, unsafe_hash: bool = False,
    frozen: bool = False, match_args: bool = True, kw_only: bool = False,
) -> Callable[[type[_T]], type[_T]]:  # fmt: skip
    """``@dataclass(...)`` with these arguments, made when the class is first used."""
    kwargs = {"init": init, "repr": repr, "eq": eq, "order": order, "unsafe_hash": unsafe_hash, "frozen": frozen,
              "match_args": match_args, "kw_only": kw_only}  # fmt: skip

    def wait(cls: type[_T]) -> type[_T]:
        own = sorted(set(_STAND_INS) & set(cls.__dict__))
        if own:
            raise TypeError(f"{cls.__name__}: a class built on first use defines no {', '.join(own)} of its own")
        with _BUILDING:
            _UNBUILT[cls] = kwargs
            for name, stand_in in _STAND_INS.items():
                setattr(cls, name, stand_in)
        return cls

    return wait
