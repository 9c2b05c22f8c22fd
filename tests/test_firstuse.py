"""A dataclass made on first use (redline/firstuse.py) is, once used, the dataclass ``@dataclass``
makes with the same arguments; the content types of ``redline.kinds`` are such classes."""

from __future__ import annotations

import abc
import dataclasses
import pickle
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

import pytest

from redline import firstuse, kinds
from redline.firstuse import dataclass_on_first_use


@dataclass(frozen=True, kw_only=True)
class Eager:
    a: int
    b: str = "x"

    def twice(self) -> int:
        return 2 * self.a


def lazy_twin() -> type[Any]:
    @dataclass_on_first_use(frozen=True, kw_only=True)
    class Eager:  # the same name, so reprs compare
        a: int
        b: str = "x"

        def twice(self) -> int:
            return 2 * self.a

    return Eager


def test_reading_the_fields_builds_the_class_as_dataclass_would() -> None:
    lazy = lazy_twin()
    assert lazy in firstuse.unbuilt()
    assert [(f.name, f.type, f.default, f.kw_only) for f in dataclasses.fields(lazy)] == [
        (f.name, f.type, f.default, f.kw_only) for f in dataclasses.fields(Eager)
    ]
    assert lazy not in firstuse.unbuilt()
    assert dataclasses.is_dataclass(lazy) and lazy.__dataclass_params__.frozen  # type: ignore[attr-defined]
    # the parameters as asked (init included, though the class itself is made with init=False)
    assert repr(lazy.__dataclass_params__) == repr(Eager.__dataclass_params__)  # type: ignore[attr-defined]
    assert lazy.__match_args__ == Eager.__match_args__ == ()  # type: ignore[attr-defined]  # kw_only: none


def test_the_first_instance_builds_it_and_it_behaves_as_the_eager_one() -> None:
    lazy = lazy_twin()
    one, eager = lazy(a=3), Eager(a=3)
    assert lazy not in firstuse.unbuilt()
    assert repr(one).endswith("." + repr(eager)) and one.twice() == 6
    assert one == lazy(a=3) and one != lazy(a=3, b="y") and hash(one) == hash(lazy(a=3))
    assert dataclasses.replace(one, b="z").b == "z" and dataclasses.asdict(one) == dataclasses.asdict(eager)
    with pytest.raises(dataclasses.FrozenInstanceError):
        one.a = 4
    with pytest.raises(TypeError):
        lazy(3)  # keyword-only, as before
    with pytest.raises(TypeError):
        lazy(b="y")  # 'a' is required


def test_threads_racing_to_the_first_instance_build_it_once(monkeypatch: pytest.MonkeyPatch) -> None:
    lazy, built, start = lazy_twin(), [], threading.Barrier(8)
    real = dataclasses.dataclass

    def counted(cls: Any = None, /, **kwargs: Any) -> Any:
        built.append(cls)
        return real(cls, **kwargs)

    monkeypatch.setattr(firstuse.dataclasses, "dataclass", counted)
    made: list[Any] = []

    def make(i: int) -> None:
        start.wait()
        made.append(lazy(a=i))

    threads = [threading.Thread(target=make, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [c for c in built if c is lazy] == [lazy] and sorted(m.a for m in made) == list(range(8))


def test_a_thread_reaching_the_class_while_another_builds_it_waits_for_the_dataclass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The build is made slow, so the second thread surely arrives in the middle of it: it must get
    # the dataclass's __init__ and fields, not the base's (a TypeError, and no fields at all).
    lazy, building, got = lazy_twin(), threading.Event(), {}
    real = dataclasses.dataclass

    def slow(cls: Any = None, /, **kwargs: Any) -> Any:
        building.set()
        time.sleep(0.05)
        return real(cls, **kwargs)

    monkeypatch.setattr(firstuse.dataclasses, "dataclass", slow)

    def meanwhile() -> None:
        building.wait()
        got["made"], got["fields"] = lazy(a=2), [f.name for f in dataclasses.fields(lazy)]

    second = threading.Thread(target=meanwhile)
    second.start()
    first = lazy(a=1)
    second.join()
    assert got == {"made": lazy(a=2), "fields": ["a", "b"]} and first != got["made"]
    assert lazy.__doc__ == Eager.__doc__ and lazy.__dataclass_params__.init  # as dataclass() makes them


def test_an_instance_unpickled_where_its_class_is_unbuilt_is_the_dataclass_instance() -> None:
    # as in a spawned worker: the first instance of the class there comes out of pickle, not __init__
    ref = kinds.Ref(sender="a" * 64, seq=1, id="b" * 64)
    ack = kinds.Ack(ref=ref, person=kinds.PersonSig(name="Anna", role="duty", key="c" * 64, sig="d" * 128))
    code = (
        "import dataclasses, pickle, sys\n"
        "from redline import firstuse, kinds\n"
        "assert kinds.Ack in firstuse.unbuilt() and kinds.Ref in firstuse.unbuilt()\n"
        "ack = pickle.loads(sys.stdin.buffer.read())\n"
        "assert not {kinds.Ack, kinds.Ref, kinds.PersonSig} & firstuse.unbuilt()\n"
        "assert ack == kinds.Ack(ref=kinds.Ref(sender='a' * 64, seq=1, id='b' * 64), person=ack.person)\n"
        "assert hash(ack.ref) == hash(kinds.Ref(sender='a' * 64, seq=1, id='b' * 64))\n"
        "try:\n"
        "    ack.ref.seq = 2\n"
        "except dataclasses.FrozenInstanceError:\n"
        "    print(repr(ack))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], input=pickle.dumps(ack), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode().strip() == repr(ack)


def test_a_class_with_a_metaclass_is_built_with_it() -> None:
    class Shape(abc.ABC):
        @abc.abstractmethod
        def area(self) -> int: ...

    @dataclass_on_first_use(frozen=True)
    class Square(Shape):
        side: int

        def area(self) -> int:
            return self.side**2

    assert Square(side=3).area() == 9 and isinstance(Square(side=1), Shape) and type(Square) is abc.ABCMeta


def test_a_class_with_its_own_init_is_refused() -> None:
    with pytest.raises(TypeError, match="no __init__ of its own"):

        @dataclass_on_first_use(frozen=True)
        class Own:
            a: int

            def __init__(self) -> None:
                pass


def test_every_content_type_of_kinds_is_a_frozen_keyword_only_dataclass() -> None:
    types = [v for v in vars(kinds).values() if isinstance(v, type) and v.__module__ == "redline.kinds"]
    content = [t for t in types if dataclasses.is_dataclass(t)]  # builds each
    assert len(content) >= 35 and not firstuse.unbuilt() & set(content)
    for t in content:
        params = t.__dataclass_params__  # type: ignore[attr-defined]
        assert params.frozen and all(f.kw_only for f in dataclasses.fields(t)), t.__name__


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"frozen": True}, {"order": True}, {"eq": False}, {"repr": False, "match_args": False},
     {"unsafe_hash": True}, {"init": False}],
    ids=lambda kw: ",".join(kw) or "plain",
)
def test_a_class_built_on_first_use_has_what_dataclass_gives_it_for_each_argument(kwargs: dict[str, bool]) -> None:
    def make(decorate: Any) -> Any:
        @decorate(**kwargs)
        class Point:
            x: int = 1
            y: int = 2

        return Point

    lazy, eager = make(dataclass_on_first_use), make(dataclass)
    dataclasses.fields(lazy)  # builds it
    assert repr(lazy.__dataclass_params__) == repr(eager.__dataclass_params__)
    for name in ("__init__", "__repr__", "__eq__", "__lt__", "__hash__", "__match_args__", "__setattr__"):
        assert (name in lazy.__dict__) == (name in eager.__dict__), name
    assert lazy.__hash__ is None if eager.__hash__ is None else lazy.__hash__ is not None
    if not kwargs.get("init", True):
        assert lazy().__dict__ == eager().__dict__ == {}  # object's __init__: no fields set
        return
    one, other = lazy(x=3), eager(x=3)
    assert (one.x, one.y) == (other.x, other.y) == (3, 2)
    assert (one == lazy(x=3)) == (other == eager(x=3))  # by value, or by identity with eq=False
    if kwargs.get("repr", True):
        assert repr(one) == repr(other)  # the same qualified name: both made in make()
