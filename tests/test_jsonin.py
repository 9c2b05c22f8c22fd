"""jsonin.loads, the one reader of JSON from outside: nesting bounded however the text is encoded,
and the bracket count that spares the walk never lets a deep value through."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from redline import jsonin
from redline.errors import EncodingError

ENCODINGS = ("utf-8", "utf-16", "utf-16-le", "utf-32")


def nested(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


def depth_of(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


@pytest.mark.parametrize("encoding", [None, *ENCODINGS])
def test_a_value_nested_one_past_the_bound_is_refused_in_every_encoding(encoding: str | None) -> None:
    for depth, refused in ((jsonin.MAX_DEPTH, False), (jsonin.MAX_DEPTH + 1, True)):
        text = json.dumps(nested(depth))
        data: str | bytes = text if encoding is None else text.encode(encoding)
        if refused:
            with pytest.raises(EncodingError, match="nested more than 64 levels deep"):
                jsonin.loads(data)
        else:
            assert depth_of(jsonin.loads(data)) == depth


def test_brackets_inside_strings_cannot_hide_a_deep_value() -> None:
    # the count includes brackets in strings: it can only be too high, never too low
    text = json.dumps(nested(jsonin.MAX_DEPTH + 1, leaf="]]]]}}}}"))
    with pytest.raises(EncodingError):
        jsonin.loads(text)
    with pytest.raises(EncodingError):
        jsonin.loads(text.encode("utf-16"))


def test_the_bracket_count_bounds_the_nesting_of_random_values() -> None:
    rng = random.Random(7)

    def value(budget: int) -> Any:
        pick = rng.random()
        if budget <= 0 or pick < 0.3:
            return rng.choice([1, "x[", "{y", None, True, 2.5, "\u005b"])
        if pick < 0.65:
            return [value(budget - 1) for _ in range(rng.randint(0, 3))]
        return {f"k{i}": value(budget - 1) for i in range(rng.randint(0, 3))}

    for _ in range(500):
        v = value(rng.randint(0, 12))
        text = json.dumps(v, ensure_ascii=rng.random() < 0.5)
        for data in (text, *(text.encode(e) for e in ENCODINGS)):
            assert jsonin._opening_brackets(data) >= depth_of(v)
            if depth_of(v) <= 6:
                assert jsonin.loads(data, max_depth=6) == v
            else:
                with pytest.raises(EncodingError):
                    jsonin.loads(data, max_depth=6)
