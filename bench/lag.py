"""Item 5: lag from put to the span counted in DynamoDB, at a steady rate.

A span is counted in DynamoDB when the flush covering its record has
completed: that flush wrote the running aggregate of the span's window (RED
series, and every other aggregate of the record). `lag_percentiles` matches
each record put in a `bench.e2e.SteadyRun` to the first flush whose covered
sequence number on its shard reaches it, weights it by its spans, and
returns the percentiles of completion time minus put time.
"""

from __future__ import annotations

import bisect
import os
from typing import Any

from bench.e2e import SteadyRun


def lag_percentiles(run: SteadyRun) -> dict[str, Any]:
    """Return p50/p99/max lag in seconds, and how many spans were matched.

    Raises ValueError if some record was never covered by a flush.
    """
    by_shard: dict[str, tuple[list[int], list[float]]] = {}
    for flush in sorted(run.flushes, key=lambda f: f.done_unix_secs):
        for shard_id, covered in flush.covered.items():
            sequences, times = by_shard.setdefault(shard_id, ([], []))
            if not sequences or covered > sequences[-1]:
                sequences.append(covered)
                times.append(flush.done_unix_secs)
    weighted: list[tuple[float, int]] = []
    for put in run.puts:
        sequences, times = by_shard.get(put.shard_id, ([], []))
        index = bisect.bisect_left(sequences, int(put.sequence_number))
        if index == len(sequences):
            raise ValueError(
                f"record {put.sequence_number} of {put.shard_id} was never flushed"
            )
        weighted.append((times[index] - put.put_unix_secs, put.span_count))
    return {
        "spans": sum(count for _, count in weighted),
        "p50_secs": round(weighted_percentile(weighted, 0.50), 2),
        "p99_secs": round(weighted_percentile(weighted, 0.99), 2),
        "max_secs": round(max(lag for lag, _ in weighted), 2),
        "flushes": len(run.flushes),
        "flush_interval_secs": run.settings.flush_interval_secs,
        "spans_per_sec": run.spans_per_sec,
        "achieved_spans_per_sec": round(run.achieved_spans_per_sec),
        "load_average_after": list(os.getloadavg()),
        "duration_secs": run.duration_secs,
    }


def weighted_percentile(weighted: list[tuple[float, int]], fraction: float) -> float:
    ordered = sorted(weighted)
    total = sum(count for _, count in ordered)
    threshold = fraction * total
    seen = 0
    for lag, count in ordered:
        seen += count
        if seen >= threshold:
            return lag
    return ordered[-1][0]
