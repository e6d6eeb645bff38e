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

from ddsketch.mapping import LogarithmicMapping

RELATIVE_ACCURACY = 0.01
_MAPPING = LogarithmicMapping(RELATIVE_ACCURACY)
_FORMAT_VERSION = 1


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
        key = _MAPPING.key(value)
        self.bins[key] = self.bins.get(key, 0) + count

    def merge(self, other: LatencySketch) -> None:
        """Add every count of ``other`` to this sketch."""
        self.zero_count += other.zero_count
        bins = self.bins
        for key, count in other.bins.items():
            bins[key] = bins.get(key, 0) + count

    def quantile(self, q: float) -> float | None:
        """Return the ``q`` quantile (0 <= q <= 1), or None for an empty sketch."""
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
        """Serialise as version, zero count, bucket count, then (key, count) pairs."""
        keys = sorted(self.bins)
        header = struct.pack("<BQI", _FORMAT_VERSION, self.zero_count, len(keys))
        body = struct.pack(
            f"<{2 * len(keys)}q", *(v for k in keys for v in (k, self.bins[k]))
        )
        return header + body

    @classmethod
    def from_bytes(cls, data: bytes) -> LatencySketch:
        """Inverse of `to_bytes`; raises ValueError on bytes it did not write."""
        header_size = struct.calcsize("<BQI")
        if len(data) < header_size:
            raise ValueError(f"sketch bytes too short: {len(data)} bytes")
        version, zero_count, n = struct.unpack_from("<BQI", data)
        if version != _FORMAT_VERSION or len(data) != header_size + 16 * n:
            raise ValueError(f"not a sketch of format {_FORMAT_VERSION}: {data[:16]!r}")
        values = struct.unpack_from(f"<{2 * n}q", data, header_size)
        sketch = cls()
        sketch.zero_count = zero_count
        sketch.bins = dict(zip(values[::2], values[1::2], strict=True))
        return sketch

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LatencySketch):
            return NotImplemented
        return self.zero_count == other.zero_count and self.bins == other.bins

    def __repr__(self) -> str:
        return f"LatencySketch(count={self.count}, buckets={len(self.bins)})"


def relative_error(estimate: float, actual: float) -> float:
    """Return ``|estimate - actual| / actual`` (0 when both are 0)."""
    if actual == 0:
        return 0.0 if estimate == 0 else math.inf
    return abs(estimate - actual) / actual
