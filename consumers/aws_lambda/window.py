"""Tumbling-window state: a shard's aggregates carried in ``event.state``.

With a tumbling window on the event-source mapping, Lambda passes each
invocation the state the previous one returned and, on the window's last
invocation (``isFinalInvokeForWindow``), the handler writes the aggregates:
one DynamoDB write per series per window instead of one per batch.

The state is a map of strings (what every Lambda runtime's window types
use): ``aggregates`` is the window's RED series, cold starts and late
counters as zlib-compressed JSON in base64, latency sketches inside it as
`LatencySketch.to_bytes` in base64. ``first`` and ``through`` are the first
and last record whose aggregates the state holds (``through`` stays after a
write, so a redone unit is never counted twice).
"""

from __future__ import annotations

import base64
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from consumers.aws_lambda.checkpoints import SequenceRange
from spanstream.aggregate.sketch import LatencySketch
from spanstream.aggregate.types import (
    AggregateDelta,
    ColdStartKey,
    ColdStartStats,
    FlushRange,
    LateKey,
    LatencyStats,
    RedKey,
)

FORMAT_VERSION = "1"


class WindowStateError(ValueError):
    """``event.state`` is not a state this handler wrote."""


@dataclass
class WindowState:
    """The aggregates of a window so far, and which records they cover."""

    first_sequence_number: str | None = None
    merged_through: str | None = None
    metrics: dict[RedKey, LatencyStats] = field(default_factory=dict)
    cold_starts: dict[ColdStartKey, ColdStartStats] = field(default_factory=dict)
    late: dict[LateKey, int] = field(default_factory=dict)

    def has_merged(self, unit: SequenceRange) -> bool:
        """Return True if ``unit``'s aggregates are already in this state."""
        return self.merged_through is not None and int(unit.last) <= int(
            self.merged_through
        )

    def add(self, unit: SequenceRange, delta: AggregateDelta) -> None:
        """Fold the aggregates ``delta`` computed from ``unit`` into the state."""
        for key, stats in delta.metrics.items():
            held = self.metrics.get(key)
            if held is None:
                self.metrics[key] = stats
            else:
                held.merge(stats)
        for cold_key, cold in delta.cold_starts.items():
            held_cold = self.cold_starts.get(cold_key)
            if held_cold is None:
                self.cold_starts[cold_key] = cold
            else:
                held_cold.merge(cold)
        for late_key, count in delta.late.items():
            self.late[late_key] = self.late.get(late_key, 0) + count
        self.mark_merged(unit)

    def mark_merged(self, unit: SequenceRange) -> None:
        """Record that ``unit`` is accounted for (even if it had no aggregates)."""
        if self.first_sequence_number is None:
            self.first_sequence_number = unit.first
        self.merged_through = unit.last

    def take(self, stream: str, shard_id: str) -> AggregateDelta | None:
        """Return the held aggregates as one delta over their records, and clear them.

        None when no record was merged since the last take.
        """
        if self.first_sequence_number is None or self.merged_through is None:
            return None
        delta = AggregateDelta(
            FlushRange(
                stream, shard_id, self.first_sequence_number, self.merged_through
            ),
            metrics=self.metrics,
            cold_starts=self.cold_starts,
            late=self.late,
        )
        self.first_sequence_number = None
        self.metrics, self.cold_starts, self.late = {}, {}, {}
        return delta

    # Event form -----------------------------------------------------------

    def to_event(self) -> dict[str, str]:
        """Return the state as the string map the handler returns to Lambda."""
        document = {
            "metrics": [
                [*key, *_stats_row(stats)] for key, stats in self.metrics.items()
            ],
            "cold_starts": [
                [
                    *key,
                    cold.cold_count,
                    cold.cold_duration_sum_nanos,
                    cold.warm_count,
                    cold.warm_duration_sum_nanos,
                ]
                for key, cold in self.cold_starts.items()
            ],
            "late": [[*key, count] for key, count in self.late.items()],
        }
        packed = zlib.compress(json.dumps(document, separators=(",", ":")).encode())
        state = {"v": FORMAT_VERSION, "aggregates": base64.b64encode(packed).decode()}
        if self.first_sequence_number is not None:
            state["first"] = self.first_sequence_number
        if self.merged_through is not None:
            state["through"] = self.merged_through
        return state

    @classmethod
    def from_event(cls, state: dict[str, Any] | None) -> WindowState:
        """Return the state Lambda passed in (empty at a window's start).

        Raises `WindowStateError` for a state of another format.
        """
        if not state:
            return cls()
        if state.get("v") != FORMAT_VERSION or "aggregates" not in state:
            raise WindowStateError(f"unknown window state, keys {sorted(state)!r}")
        try:
            document = json.loads(
                zlib.decompress(base64.b64decode(state["aggregates"]))
            )
            metrics = {
                RedKey(*row[:6]): _stats_from_row(row[6:])
                for row in document["metrics"]
            }
            cold_starts = {
                ColdStartKey(*row[:3]): ColdStartStats(*row[3:])
                for row in document["cold_starts"]
            }
            late = {LateKey(*row[:3]): row[3] for row in document["late"]}
        except (ValueError, KeyError, TypeError, zlib.error) as exc:
            raise WindowStateError(f"window state does not decode: {exc!r}") from exc
        return cls(state.get("first"), state.get("through"), metrics, cold_starts, late)


def state_size_bytes(state: dict[str, str]) -> int:
    """Return the size of ``state`` as Lambda measures a response: its JSON."""
    return len(json.dumps(state, separators=(",", ":")))


def _stats_row(stats: LatencyStats) -> list[Any]:
    return [
        stats.count,
        stats.errors,
        stats.duration_sum_nanos,
        stats.duration_min_nanos,
        stats.duration_max_nanos,
        base64.b64encode(stats.sketch.to_bytes()).decode(),
    ]


def _stats_from_row(row: list[Any]) -> LatencyStats:
    count, errors, total, low, high, sketch = row
    return LatencyStats(
        count,
        errors,
        total,
        low,
        high,
        LatencySketch.from_bytes(base64.b64decode(sketch)),
    )
