"""Faster item building gives the items the plain rules give."""

from __future__ import annotations

import random

import pytest

from spanstream.aggregate.sketch import LatencySketch
from spanstream.sinks import keys
from spanstream.sinks.items import QUANTILES, _quantiles


def _sketch(seed: int) -> LatencySketch:
    rng = random.Random(seed)
    sketch = LatencySketch()
    for _ in range(rng.randrange(0, 50)):
        sketch.add(rng.choice([0, 0.5, 1, rng.expovariate(1e-6)]), rng.randrange(1, 4))
    return sketch


@pytest.mark.parametrize("seed", range(200))
def test_quantiles_in_one_pass_equal_each_quantile(seed: int) -> None:
    sketch = _sketch(seed)
    assert _quantiles(sketch) == [sketch.quantile(q) for q in QUANTILES.values()]


def test_quantiles_of_empty_and_zero_only_sketches() -> None:
    assert _quantiles(LatencySketch()) == [None, None, None]
    zeros = LatencySketch()
    zeros.add(0, 5)
    assert _quantiles(zeros) == [0.0, 0.0, 0.0]


def test_quantiles_are_listed_in_increasing_order() -> None:
    assert list(QUANTILES.values()) == sorted(QUANTILES.values())


NAMES = [
    "acme",
    "",
    "~",
    "a.b",
    "..",
    "x#y/z",
    "é",
    "\ud800",
    "a" * 200,
    "a" * 201,
    "é" * 100,
    "%" * 256,
    "b" * 257,
    "c" * 100_000,
]


@pytest.mark.parametrize("name", NAMES)
def test_cached_encoding_equals_the_encoding(name: str) -> None:
    assert keys.encode_component(name) == keys._encoding(name)
    assert keys.encode_component(name) == keys._encoding(name)  # from the cache


def test_the_cache_is_bounded_and_skips_long_names() -> None:
    keys._cached_encoding.cache_clear()
    for index in range(keys.ENCODING_CACHE_SIZE + 100):
        keys.encode_component(f"service-{index}")
    info = keys._cached_encoding.cache_info()
    assert info.maxsize == keys.ENCODING_CACHE_SIZE
    assert info.currsize == keys.ENCODING_CACHE_SIZE

    keys._cached_encoding.cache_clear()
    keys.encode_component("x" * (keys.CACHED_NAME_CHARS + 1))
    assert keys._cached_encoding.cache_info().currsize == 0
    keys.encode_component("x" * keys.CACHED_NAME_CHARS)
    assert keys._cached_encoding.cache_info().currsize == 1


def test_a_non_string_name_still_raises_type_error() -> None:
    with pytest.raises(TypeError):
        keys.encode_component(None)  # type: ignore[arg-type]
