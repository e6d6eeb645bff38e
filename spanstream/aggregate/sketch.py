"""A mergeable latency sketch with 1 % relative error (DDSketch).

The bucket mapping is ddsketch's `LogarithmicMapping`; the store is a plain
dict of bucket key -> count, which merges by adding counts and serialises to a
few bytes per bucket. Two sketches merge exactly: the merged sketch is the one
that would have seen every value, whatever the grouping, which is what lets
shards, workers and flushes each keep their own.
"""

from __future__ import annotations

import math
import struct
from collections import Counter
from collections.abc import Collection

from ddsketch.mapping import LogarithmicMapping

from spanstream.aggregate.varint import append_varint, read_varint, unzigzag, zigzag

RELATIVE_ACCURACY = 0.01
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
# LogarithmicMapping.key(v) is ceil(math.log(v, 2) * multiplier) + offset, and
# math.log(v, 2) is log(v) / log(2.0). Spelling it out here lets `add_many`
# bucket a whole list in one comprehension; tests check it against ddsketch.
_LN2 = math.log(2.0)
_MULTIPLIER = _MAPPING._multiplier
if _MAPPING._offset != 0.0:  # the inlined key below assumes no offset
    raise RuntimeError(f"unexpected ddsketch mapping offset {_MAPPING._offset!r}")

# Below this many values a plain loop beats building a Counter.
_BULK_MIN_VALUES = 16

_LEGACY_VERSION = 1  # fixed-width: <BQI header, then (int64 key, int64 count)
_LEGACY_HEADER = struct.Struct("<BQI")
_FORMAT_VERSION = 2  # varints: version, zero count, bucket count, keys, counts


def sketch_value(key: int) -> float:
    """Return the value `LatencySketch.quantile` reports for bucket ``key``."""
    return float(_MAPPING.value(key))


def bucket_key(value: float) -> int:
    """Return the bucket of ``value`` (>= 1), the same key ddsketch computes."""
    return math.ceil(math.log(value) / _LN2 * _MULTIPLIER)


class LatencySketch:
    """Counts non-negative values (nanoseconds) in logarithmic buckets.

    `quantile` returns a value within 1 % of the true quantile's value (the
    DDSketch guarantee). Values below 1 are counted in a zero bucket.
    """

    __slots__ = ("bins", "zero_count")

    def __init__(self) -> None:
        self.bins: dict[int, int] = {}
        self.zero_count = 0

    @property
    def count(self) -> int:
        return self.zero_count + sum(self.bins.values())

    def add(self, value: float, count: int = 1) -> None:
        """Count ``value`` ``count`` times."""
        if value < 1:
            self.zero_count += count
            return
        key = bucket_key(value)
        self.bins[key] = self.bins.get(key, 0) + count

    def add_many(
        self, values: Collection[float], smallest: float | None = None
    ) -> None:
        """Count every value of ``values`` once; same result as `add` on each.

        ``smallest`` is ``min(values)`` if the caller already knows it; it only
        saves a pass over the values.
        """
        if not values:
            return
        if smallest is None:
            smallest = min(values)
        if smallest < 1:
            positives = [value for value in values if value >= 1]
            self.zero_count += len(values) - len(positives)
            values = positives
        log, ln2, multiplier, ceil = math.log, _LN2, _MULTIPLIER, math.ceil
        bins = self.bins
        if len(values) < _BULK_MIN_VALUES:
            for value in values:
                key = ceil(log(value) / ln2 * multiplier)
                bins[key] = bins.get(key, 0) + 1
            return
        counts = Counter([ceil(log(value) / ln2 * multiplier) for value in values])
        for key, count in counts.items():
            bins[key] = bins.get(key, 0) + count

    def merge(self, other: LatencySketch) -> None:
        """Add every count of ``other`` to this sketch."""
        self.zero_count += other.zero_count
        bins = self.bins
        for key, count in other.bins.items():
            bins[key] = bins.get(key, 0) + count

    def quantile(self, q: float) -> float | None:
        """Return the ``q`` quantile (0 <= q <= 1), or None for an empty sketch.

        The value returned is within 1 % of the value at rank
        ``floor(q * (count - 1))`` of the sorted values.
        """
        if not 0 <= q <= 1:
            raise ValueError(f"quantile must be within [0, 1], got {q!r}")
        total = self.count
        if total == 0:
            return None
        rank = q * (total - 1)
        seen = self.zero_count
        if seen > rank:
            return 0.0
        for key in sorted(self.bins):
            seen += self.bins[key]
            if seen > rank:
                return float(_MAPPING.value(key))
        return float(_MAPPING.value(max(self.bins)))

    def to_bytes(self) -> bytes:
        """Serialise compactly: a few bytes per bucket.

        Layout (format 2): version byte, then varints: zero count, bucket
        count, the first key zigzagged, the gaps between the following sorted
        keys, then the count of each bucket in key order.
        """
        keys = sorted(self.bins)
        out = bytearray((_FORMAT_VERSION,))
        append_varint(out, self.zero_count)
        append_varint(out, len(keys))
        previous = None
        for key in keys:
            append_varint(out, zigzag(key) if previous is None else key - previous)
            previous = key
        for key in keys:
            append_varint(out, self.bins[key])
        return bytes(out)

    @classmethod
    def from_bytes(cls, data: bytes) -> LatencySketch:
        """Inverse of `to_bytes` (also reads the fixed-width format 1).

        Raises ValueError on bytes it did not write: unknown version,
        truncation, trailing bytes, unsorted keys or zero counts.
        """
        if not data:
            raise ValueError("sketch bytes are empty")
        if data[0] == _LEGACY_VERSION:
            return cls._from_legacy_bytes(data)
        if data[0] != _FORMAT_VERSION:
            raise ValueError(f"unknown sketch format {data[0]}: {data[:16]!r}")
        zero_count, offset = read_varint(data, 1)
        n, offset = read_varint(data, offset)
        if n > len(data):  # each bucket takes at least two bytes
            raise ValueError(f"sketch claims {n} buckets in {len(data)} bytes")
        keys: list[int] = []
        for index in range(n):
            value, offset = read_varint(data, offset)
            if index == 0:
                keys.append(unzigzag(value))
            elif value == 0:
                raise ValueError(f"sketch keys not strictly increasing: {data[:16]!r}")
            else:
                keys.append(keys[-1] + value)
        bins: dict[int, int] = {}
        for key in keys:
            count, offset = read_varint(data, offset)
            if count == 0:
                raise ValueError(f"sketch bucket {key} has count 0")
            bins[key] = count
        if offset != len(data):
            raise ValueError(f"{len(data) - offset} trailing bytes after sketch")
        sketch = cls()
        sketch.zero_count = zero_count
        sketch.bins = bins
        return sketch

    @classmethod
    def _from_legacy_bytes(cls, data: bytes) -> LatencySketch:
        if len(data) < _LEGACY_HEADER.size:
            raise ValueError(f"sketch bytes too short: {len(data)} bytes")
        _, zero_count, n = _LEGACY_HEADER.unpack_from(data)
        if len(data) != _LEGACY_HEADER.size + 16 * n:
            raise ValueError(f"not a sketch of format 1: {data[:16]!r}")
        values = struct.unpack_from(f"<{2 * n}q", data, _LEGACY_HEADER.size)
        sketch = cls()
        sketch.zero_count = zero_count
        sketch.bins = dict(zip(values[::2], values[1::2], strict=True))
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencySketch):
            return NotImplemented
        return self.zero_count == other.zero_count and self.bins == other.bins

    __hash__ = None  # type: ignore[assignment]  # mutable: equal by value, unhashable

    def __repr__(self) -> str:
        return f"LatencySketch(count={self.count}, buckets={len(self.bins)})"


def relative_error(estimate: float, actual: float) -> float:
    """Return ``|estimate - actual| / actual`` (0 when both are 0)."""
    if actual == 0:
        return 0.0 if estimate == 0 else math.inf
    return abs(estimate - actual) / actual
