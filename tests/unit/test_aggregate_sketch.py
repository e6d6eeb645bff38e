"""LatencySketch: bucket keys, accuracy, bulk adds and the byte format."""

from __future__ import annotations

import math
import random
import struct

import pytest
from ddsketch.mapping import LogarithmicMapping
from hypothesis import given
from hypothesis import strategies as st

from spanstream.aggregate.sketch import LatencySketch, bucket_key, relative_error
from spanstream.aggregate.types import LatencyStats

DDSKETCH_MAPPING = LogarithmicMapping(0.01)
INT64_MAX = 2**63 - 1


@given(st.integers(min_value=1, max_value=INT64_MAX))
def test_bucket_key_is_ddsketch_key_for_ints(value: int) -> None:
    assert bucket_key(value) == DDSKETCH_MAPPING.key(value)


@given(st.floats(min_value=1, max_value=1e300, allow_nan=False))
def test_bucket_key_is_ddsketch_key_for_floats(value: float) -> None:
    assert bucket_key(value) == DDSKETCH_MAPPING.key(value)


def test_bucket_key_matches_ddsketch_around_every_bucket_boundary() -> None:
    # Boundaries are where an inlined formula would first disagree.
    for key in range(1, DDSKETCH_MAPPING.key(INT64_MAX)):
        edge = int(math.pow(2.0, key / DDSKETCH_MAPPING._multiplier))
        for value in range(max(1, edge - 2), edge + 3):
            assert bucket_key(value) == DDSKETCH_MAPPING.key(value), value


@given(st.lists(st.integers(min_value=-5, max_value=10**13), max_size=60))
def test_add_many_equals_add_one_by_one(values: list[int]) -> None:
    one_by_one = LatencySketch()
    for value in values:
        one_by_one.add(value)
    bulk = LatencySketch()
    bulk.add_many(values)
    assert bulk == one_by_one
    assert bulk.count == len(values)


@given(
    st.lists(st.integers(min_value=0, max_value=10**12), max_size=40),
    st.integers(min_value=0, max_value=40),
)
def test_latency_stats_add_many_equals_add(values: list[int], error_count: int) -> None:
    error_count = min(error_count, len(values))
    one_by_one = LatencyStats()
    for index, value in enumerate(values):
        one_by_one.add(value, index < error_count)
    bulk = LatencyStats()
    bulk.add_many(values, error_count)
    assert bulk == one_by_one


@pytest.mark.parametrize("q", [0.0, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])
def test_quantiles_within_one_percent_on_lognormal_durations(q: float) -> None:
    rng = random.Random(7)
    durations = [int(rng.lognormvariate(15, 1.2)) for _ in range(10_000)]
    sketch = LatencySketch()
    sketch.add_many(durations)
    exact = sorted(durations)[math.floor(q * (len(durations) - 1))]
    estimate = sketch.quantile(q)
    assert estimate is not None
    assert relative_error(estimate, exact) <= 0.01


def test_quantile_of_empty_sketch_is_none_and_bad_q_raises() -> None:
    assert LatencySketch().quantile(0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        LatencySketch().quantile(1.5)


def test_zero_and_negative_durations_count_in_the_zero_bucket() -> None:
    sketch = LatencySketch()
    sketch.add_many([0, -3, 5])
    assert sketch.zero_count == 2
    assert sketch.quantile(0.0) == 0.0


@given(
    st.dictionaries(
        st.integers(min_value=-3000, max_value=3000),
        st.integers(min_value=1, max_value=2**63),
        max_size=50,
    ),
    st.integers(min_value=0, max_value=2**40),
)
def test_bytes_round_trip(bins: dict[int, int], zero_count: int) -> None:
    sketch = LatencySketch()
    sketch.bins = dict(bins)
    sketch.zero_count = zero_count
    assert LatencySketch.from_bytes(sketch.to_bytes()) == sketch


def test_bytes_are_compact() -> None:
    rng = random.Random(3)
    sketch = LatencySketch()
    sketch.add_many([int(rng.lognormvariate(15, 1.2)) for _ in range(10_000)])
    # 1 version byte + 2 header varints + about 3 bytes a bucket
    assert len(sketch.to_bytes()) <= 4 + 4 * len(sketch.bins)


def test_reads_the_fixed_width_format_1() -> None:
    legacy = struct.pack("<BQI", 1, 4, 2) + struct.pack("<4q", 690, 3, 700, 1)
    sketch = LatencySketch.from_bytes(legacy)
    assert sketch.zero_count == 4
    assert sketch.bins == {690: 3, 700: 1}


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x07",  # unknown version
        b"\x02\x00",  # truncated header
        b"\x02\x00\x01\x80",  # truncated key varint
        b"\x02\x00\x02\x02\x00\x01\x01",  # repeated key (gap 0)
        b"\x02\x00\x01\x02\x00",  # zero count
        b"\x02\x00\x01\x02\x01\xff",  # trailing byte
        b"\x02\x00\xff\xff\xff\x0f",  # more buckets than bytes
        b"\x01\x00",  # format 1, too short
    ],
)
def test_from_bytes_rejects_foreign_bytes(data: bytes) -> None:
    with pytest.raises(ValueError):
        LatencySketch.from_bytes(data)


def test_merge_equals_seeing_all_values() -> None:
    left, right, both = LatencySketch(), LatencySketch(), LatencySketch()
    for value in range(0, 5000, 7):
        (left if value % 2 else right).add(value)
        both.add(value)
    left.merge(right)
    assert left == both
