"""The demo: emulators, sample traffic, the local runner, then what landed.

``python -m consumers.local.demo`` (``make demo``) starts kinesis-mock and a
moto server on free loopback ports (or uses the LocalStack that
``SPANSTREAM_TARGET=localstack`` names), creates a 4-shard stream, the tables
and the bucket from ``schemas/``, puts generated multi-tenant traces in every
input form plus recorded real-world Zipkin traces and a few poison records,
runs the local runner until every record is read, and prints a summary of
what is in DynamoDB and S3. Everything it started is stopped on exit.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consumers.local.runner import LocalRunner
from devenv.emulators import emulators_from_env
from devenv.resources import create_resources
from spanstream.aggregate.types import LatencyStats
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.sinks import readers
from spanstream.sinks.factory import make_sinks
from spanstream.sinks.kinesis import put_records
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans
from spanstream.traffic.poison import poison_records
from spanstream.traffic.real import zipkin_records

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=50_000, help="generated spans")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--poison", type=int, default=8, help="poison records to mix in"
    )
    parser.add_argument(
        "--no-real-traces",
        action="store_true",
        help="skip the recorded Zipkin traces from ../shared/data",
    )
    parser.add_argument("--deadline-secs", type=float, default=900.0)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=os.environ.get("SPANSTREAM_LOG_LEVEL", "WARNING"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    backend = emulators_from_env(run_dir=REPO_ROOT / ".run" / "demo")
    print("starting emulators ...", flush=True)
    with backend:
        for key, value in backend.settings_env().items():
            os.environ.setdefault(key, value)
        settings = backend.settings(
            stream_name="spanstream-demo",
            table_prefix="spanstream-demo-",
            bucket="spanstream-demo",
        )
        kinesis, dynamodb, s3 = (
            make_client(name, settings) for name in ("kinesis", "dynamodb", "s3")
        )
        create_resources(settings, kinesis, dynamodb, s3, args.shards)
        records = _traffic(args)
        started = time.monotonic()
        put_records(kinesis, settings.stream_name, records)
        print(
            f"put {len(records):,} records on {args.shards} shards "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        runner = LocalRunner(settings, kinesis, make_sinks(settings, s3, dynamodb))
        started = time.monotonic()
        stats = runner.run(
            lambda s: s.records >= len(records), deadline_secs=args.deadline_secs
        )
        elapsed = time.monotonic() - started
        print(
            f"local runner read {stats.records:,} records, {stats.spans:,} spans "
            f"in {elapsed:.1f} s\n",
            flush=True,
        )
        print_summary(settings, dynamodb, s3)
    return 0


def _traffic(args: argparse.Namespace) -> list[tuple[str, bytes]]:
    traces = generate_spans(args.spans, seed=args.seed, spread_secs=30.0)
    records: list[tuple[str, bytes]] = [
        (r.partition_key, r.data) for r in encode_records(traces, Form.MIXED, args.seed)
    ]
    if not args.no_real_traces:
        records += [(r.partition_key, r.data) for r in zipkin_records()]
    records += [
        (p.partition_key, p.data) for p in poison_records(args.poison, args.seed)
    ]
    return records


def print_summary(settings: Settings, dynamodb: Any, s3: Any) -> None:
    """Print RED per service, slowest operations, edges and archive counts."""
    metrics = readers.scan_metrics(dynamodb, settings)
    by_service: dict[tuple[str, str], LatencyStats] = defaultdict(LatencyStats)
    by_operation: dict[tuple[str, str, str], LatencyStats] = defaultdict(LatencyStats)
    for row in metrics:
        by_service[row.key.tenant, row.key.service].merge(row.stats)
        by_operation[row.key.tenant, row.key.service, row.key.operation].merge(
            row.stats
        )
    print("RED metrics per service (all windows)")
    _table(
        ("tenant", "service", "spans", "errors", "error %", "p50 ms", "p99 ms"),
        [
            (*key, *_red_cells(stats))
            for key, stats in sorted(by_service.items(), key=lambda kv: -kv[1].count)
        ],
    )
    print("\nSlowest operations by p99")
    slowest = sorted(
        by_operation.items(),
        key=lambda kv: -(kv[1].sketch.quantile(0.99) or 0),
    )[:10]
    _table(
        ("tenant", "service", "operation", "spans", "p99 ms"),
        [(*key, f"{stats.count:,}", _millis(stats, 0.99)) for key, stats in slowest],
    )
    edges: dict[tuple[str, str, str, str], LatencyStats] = defaultdict(LatencyStats)
    for edge in readers.scan_edges(dynamodb, settings):
        key = edge.key
        edges[key.tenant, key.client, key.server, key.connection_type].merge(edge.stats)
    print("\nService graph edges")
    _table(
        ("tenant", "client", "server", "type", "calls", "errors", "p99 ms"),
        [
            (*key, f"{stats.count:,}", f"{stats.errors:,}", _millis(stats, 0.99))
            for key, stats in sorted(edges.items())
        ],
    )
    cold: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for row in readers.scan_cold_starts(dynamodb, settings):
        totals = cold[row.key.tenant, row.key.function]
        totals[0] += row.stats.cold_count
        totals[1] += row.stats.cold_duration_sum_nanos
        totals[2] += row.stats.warm_count
        totals[3] += row.stats.warm_duration_sum_nanos
    print("\nCold starts per function")
    _table(
        ("tenant", "function", "cold", "warm", "added ms per cold start"),
        [
            (*key, f"{c:,}", f"{w:,}", _added_millis(c, cs, w, ws))
            for key, (c, cs, w, ws) in sorted(cold.items())
        ],
    )
    traces = readers.scan_traces(dynamodb, settings)
    late = sum(row.late_count for row in readers.scan_late(dynamodb, settings))
    archived = readers.read_archive(s3, settings).num_rows
    dead_letters = readers.count_dead_letters(s3, settings)
    print(
        f"\nS3 archive: {archived:,} spans in s3://{settings.bucket}/"
        f"{settings.archive_prefix}  |  dead letters: {dead_letters}  |  "
        f"trace summaries: {len(traces):,}  |  late spans: {late:,}"
    )


def _red_cells(stats: LatencyStats) -> tuple[str, ...]:
    error_pct = 100.0 * stats.errors / stats.count if stats.count else 0.0
    return (
        f"{stats.count:,}",
        f"{stats.errors:,}",
        f"{error_pct:.1f}",
        _millis(stats, 0.5),
        _millis(stats, 0.99),
    )


def _millis(stats: LatencyStats, q: float) -> str:
    value = stats.sketch.quantile(q)
    return "-" if value is None else f"{value / 1e6:.1f}"


def _added_millis(cold: int, cold_sum: int, warm: int, warm_sum: int) -> str:
    if not cold or not warm:
        return "-"
    return f"{(cold_sum / cold - warm_sum / warm) / 1e6:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    if not rows:
        print("  (none)")
        return
    widths = [
        max(len(str(cell)) for cell in column)
        for column in zip(header, *rows, strict=True)
    ]
    for row in (header, *rows):
        print(
            "  "
            + "  ".join(
                str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)
            )
        )


if __name__ == "__main__":
    sys.exit(main())
