"""Item 3: peak resident memory of a worker holding a large state.

``python -m bench.memory`` builds, in its own process, what a busy worker
holds between two flushes: ``--series`` active RED series in a
`ShardAggregator` (4 tenants, one window, sketches folded as a worker folds
them), ``--traces`` traces of ``--spans-per-trace`` spans awaiting their
summary in the trace assembler a worker builds (`make_trace_assembler`: the
compiled one when the extension is installed), and one flush interval of rows
pending for the archive (``--pending-rows``, 5,000 spans/s x 10 s by
default). It prints one
JSON object with ``peak_rss_mb`` (the process's peak resident size, see
`bench.timing.peak_rss_mb`) and the resident size right after start-up.
`measure_memory` runs it in a subprocess so nothing else of the benchmark is
counted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import spanstream.sinks.factory  # noqa: F401  (a worker has pyarrow and boto3 loaded)
from bench.timing import maxrss_mb, peak_rss_mb
from spanstream.aggregate.aggregator import ShardAggregator
from spanstream.aggregate.nativetraces import make_trace_assembler
from spanstream.aggregate.types import FlushRange
from spanstream.config import Settings
from spanstream.model import SpanBatch

TENANTS = 4
NANOS_PER_SEC = 1_000_000_000


def synthetic_batch(
    first_trace: int,
    trace_count: int,
    spans_per_trace: int,
    series: int,
    window_start_nanos: int,
) -> SpanBatch:
    """Return ``trace_count`` traces of ``spans_per_trace`` spans, column by
    column, whose spans spread evenly over ``series`` RED series of the
    window starting at ``window_start_nanos``."""
    batch = SpanBatch()
    n = trace_count * spans_per_trace
    first = first_trace * spans_per_trace
    rows = range(first, first + n)
    now_nanos = window_start_nanos
    per_tenant = max(1, series // TENANTS)
    series_of = [i % series for i in rows]
    batch.tenant = [f"tenant-{s // per_tenant}" for s in series_of]
    batch.trace_id = [f"{i // spans_per_trace:032x}" for i in rows]
    batch.span_id = [f"{i + 1:016x}" for i in rows]
    batch.parent_span_id = [
        None if i % spans_per_trace == 0 else f"{i:016x}" for i in rows
    ]
    batch.service = [f"service-{s % per_tenant // 100}" for s in series_of]
    batch.operation = [f"GET /api/v1/resource-{s % 100}" for s in series_of]
    batch.span_name = batch.operation
    batch.span_kind = ["SERVER" if s % 2 else "CLIENT" for s in series_of]
    batch.start_unix_nanos = [now_nanos + i for i in rows]
    batch.duration_nanos = [1_000_000 + (i * 7919) % 50_000_000 for i in rows]
    batch.end_unix_nanos = [
        s + d for s, d in zip(batch.start_unix_nanos, batch.duration_nanos, strict=True)
    ]
    batch.status_code = ["UNSET"] * n
    batch.status_message = [None] * n
    batch.is_error = [i % 50 == 0 for i in rows]
    batch.http_method = ["GET"] * n
    batch.http_route = batch.operation
    batch.http_status_code = [200] * n
    batch.peer_service = [None] * n
    batch.db_system = [None] * n
    batch.messaging_system = [None] * n
    batch.cloud_region = ["us-east-1"] * n
    batch.cloud_account_id = ["123456789012"] * n
    batch.faas_name = [None] * n
    batch.is_cold_start = [False] * n
    batch.event_count = [0] * n
    resource = {"service.name": "service", "telemetry.sdk.language": "go"}
    batch.resource_attributes = [resource] * n
    batch.span_attributes = [
        {"http.method": "GET", "http.route": op, "http.status_code": "200"}
        for op in batch.operation
    ]
    batch.scope_name = ["instrumentation"] * n
    batch.source_shard_id = ["shardId-000000000000"] * n
    batch.source_sequence_number = [str(49_000_000_000 + i) for i in rows]
    batch.source_sub_sequence_number = [0] * n
    batch.arrival_unix_millis = [now_nanos // 1_000_000] * n
    return batch


def build_state(
    series: int, traces: int, spans_per_trace: int, pending_rows: int
) -> dict[str, Any]:
    """Build the worker state in this process; return its counts and peak RSS."""
    startup_rss_mb = peak_rss_mb()
    settings = Settings(max_series_per_tenant=max(10_000, series))
    aggregator = ShardAggregator(settings)
    assembler = make_trace_assembler(settings, lambda: 0.0)
    chunk_traces = max(1, pending_rows // spans_per_trace)
    pending = SpanBatch()
    window_nanos = settings.window_secs * NANOS_PER_SEC
    window_start_nanos = time.time_ns() // window_nanos * window_nanos
    for first in range(0, traces, chunk_traces):
        batch = synthetic_batch(
            first,
            min(chunk_traces, traces - first),
            spans_per_trace,
            series,
            window_start_nanos,
        )
        aggregator.add(batch)
        assembler.add(batch)
        pending = batch  # the archive holds one flush interval of rows
    delta = aggregator.drain(FlushRange("bench", "shardId-000000000000", "1", "2"))
    return {
        "series": len(delta.metrics),
        "pending_traces": assembler.pending_trace_count,
        "spans_per_trace": spans_per_trace,
        "pending_archive_rows": len(pending),
        "startup_rss_mb": round(startup_rss_mb, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "ru_maxrss_mb": round(maxrss_mb(), 1),
    }


def measure_memory(
    series: int = 10_000,
    traces: int = 50_000,
    spans_per_trace: int = 10,
    pending_rows: int = 50_000,
) -> dict[str, Any]:
    """Run `build_state` in a fresh interpreter; return what it printed.

    Raises RuntimeError with its stderr if the subprocess fails.
    """
    argv = [
        sys.executable,
        "-m",
        "bench.memory",
        f"--series={series}",
        f"--traces={traces}",
        f"--spans-per-trace={spans_per_trace}",
        f"--pending-rows={pending_rows}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr[-2000:]}")
    return dict(json.loads(done.stdout))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--traces", type=int, default=50_000)
    parser.add_argument("--spans-per-trace", type=int, default=10)
    parser.add_argument("--pending-rows", type=int, default=50_000)
    args = parser.parse_args(argv)
    state = build_state(
        args.series, args.traces, args.spans_per_trace, args.pending_rows
    )
    print(json.dumps(state))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
