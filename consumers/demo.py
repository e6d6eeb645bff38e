"""The demo: emulators, sample traffic, spanstream's workers, then what landed.

``python -m consumers.demo`` (``make demo``) starts kinesis-mock and a moto
server on free loopback ports (or uses the LocalStack that
``SPANSTREAM_TARGET=localstack`` names), creates a 4-shard span stream, a
trace stream, the tables and the bucket from ``schemas/``, puts generated
multi-tenant traces in every input form plus recorded real-world Zipkin
traces and a few poison records, runs spanstream over them until every
record is read and every trace summarised, and prints a summary of what is
in DynamoDB and S3. Everything it started is stopped on exit.

``--runtime`` picks the shell that runs the core:

``kcl``     (default) real KCL MultiLangDaemon workers, as in production:
            two for the span stage, two for the trace stage
            (``python -m consumers.kcl --workers 2``);
``local``   the local runner, one process reading every shard;
``lambda``  the Lambda handler, invoked by the local event-source mapping
            exactly as the service would (span stage only: no trace
            summaries or edges on Lambda).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from consumers.aws_lambda.checkpoints import table_spec
from consumers.aws_lambda.esm import LocalEventSourceMapping, MappingConfig
from consumers.aws_lambda.handler import LambdaRuntime, instrument
from consumers.aws_lambda.settings import LambdaSettings
from consumers.kcl.daemon import application_name
from consumers.kcl.progress import checkpoints_reached, last_sequence_numbers
from consumers.local.runner import LocalRunner
from devenv.emulators import emulators_from_env
from devenv.env import settings_to_env
from devenv.ports import wait_until
from devenv.resources import create_resources, create_table
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

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_DIR = REPO_ROOT / ".run" / "demo"
RUNTIMES = ("kcl", "local", "lambda")
#: Short enough that the demo's traces are summarised soon after the last put.
DEMO_TRACE_IDLE_SECS = 10
KCL_STOP_TIMEOUT_SECS = 120


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m consumers.demo", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--runtime", choices=RUNTIMES, default="kcl")
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
    backend = emulators_from_env(run_dir=RUN_DIR / "emulators")
    print("starting emulators ...", flush=True)
    with backend:
        for key, value in backend.settings_env().items():
            os.environ.setdefault(key, value)
        settings = backend.settings(
            stream_name="spanstream-demo",
            trace_stream_name="spanstream-demo-traces" if args.runtime == "kcl" else "",
            table_prefix="spanstream-demo-",
            bucket="spanstream-demo",
            trace_idle_secs=DEMO_TRACE_IDLE_SECS,
        )
        kinesis, dynamodb, s3 = (
            make_client(name, settings) for name in ("kinesis", "dynamodb", "s3")
        )
        create_resources(settings, kinesis, dynamodb, s3, args.shards)
        records, trace_ids = _traffic(args)
        started = time.monotonic()
        put_records(kinesis, settings.stream_name, records)
        print(
            f"put {len(records):,} records on {args.shards} shards "
            f"in {time.monotonic() - started:.1f} s",
            flush=True,
        )
        started = time.monotonic()
        if args.runtime == "kcl":
            environ = {
                **os.environ,
                **backend.settings_env(),
                **settings_to_env(settings),
            }
            run_kcl(
                settings,
                environ,
                kinesis,
                dynamodb,
                s3,
                trace_ids,
                args.deadline_secs,
            )
        elif args.runtime == "local":
            run_local(settings, kinesis, dynamodb, s3, len(records), args.deadline_secs)
        else:
            run_lambda(
                settings, kinesis, dynamodb, s3, len(records), args.deadline_secs
            )
        print(
            f"{args.runtime} runtime done in {time.monotonic() - started:.1f} s\n",
            flush=True,
        )
        print_summary(settings, dynamodb, s3)
    return 0


def run_kcl(
    settings: Settings,
    environ: dict[str, str],
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    trace_ids: set[str],
    deadline_secs: float,
) -> None:
    """Run the KCL launcher until every record and trace is done, then stop it.

    Done means: every shard of the span stream checkpointed at its last
    record, and a summary in DynamoDB for every generated trace. The
    launcher is stopped with SIGTERM, so each worker flushes and checkpoints.
    Raises RuntimeError if it exits early or does not stop cleanly.
    """
    run_dir = RUN_DIR / "kcl"
    run_dir.mkdir(parents=True, exist_ok=True)
    log_path = run_dir / "launcher.log"
    command = [sys.executable, "-m", "consumers.kcl", "--workers", "2", "--fast"]
    print(
        "starting 2 KCL workers per stage (spans, traces); logs in "
        f"{run_dir.relative_to(REPO_ROOT)}/ ...",
        flush=True,
    )
    with log_path.open("ab") as log:
        launcher = subprocess.Popen(
            [*command, "--run-dir", str(run_dir)],
            env=environ,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_kcl(
            settings, kinesis, dynamodb, s3, trace_ids, launcher, deadline_secs
        )
    finally:
        if launcher.poll() is None:
            launcher.send_signal(signal.SIGTERM)
            try:
                code = launcher.wait(timeout=KCL_STOP_TIMEOUT_SECS)
            except subprocess.TimeoutExpired:
                launcher.kill()
                code = launcher.wait()
            if code != 0:
                raise RuntimeError(
                    f"the KCL workers did not stop cleanly (status {code}); "
                    f"see {log_path}"
                )


def _wait_for_kcl(
    settings: Settings,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    trace_ids: set[str],
    launcher: subprocess.Popen[bytes],
    deadline_secs: float,
) -> None:
    def exited() -> str | None:
        code = launcher.poll()
        return None if code is None else f"the KCL launcher exited with {code}"

    targets = last_sequence_numbers(kinesis, settings.stream_name)
    app_name = application_name(settings, "spans")
    took = wait_until(
        lambda: checkpoints_reached(dynamodb, app_name, targets),
        timeout_secs=deadline_secs,
        what="the span stage to checkpoint every shard",
        poll_interval_secs=1.0,
        abort=exited,
    )
    print(f"span stage: every shard checkpointed after {took:.1f} s", flush=True)

    def summarised() -> bool:
        written = {
            row.trace_id for row in readers.scan_summaries(settings, s3, dynamodb)
        }
        return trace_ids <= written

    took = wait_until(
        summarised,
        timeout_secs=deadline_secs,
        what="the trace stage to summarise every generated trace",
        poll_interval_secs=2.0,
        abort=exited,
    )
    print(f"trace stage: every trace summarised {took:.1f} s later", flush=True)


def run_local(
    settings: Settings,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    record_count: int,
    deadline_secs: float,
) -> None:
    """Run the local runner until it has read ``record_count`` records."""
    runner = LocalRunner(settings, kinesis, make_sinks(settings, s3, dynamodb))
    stats = runner.run(lambda s: s.records >= record_count, deadline_secs=deadline_secs)
    print(
        f"local runner read {stats.records:,} records, {stats.spans:,} spans",
        flush=True,
    )


def run_lambda(
    settings: Settings,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    record_count: int,
    deadline_secs: float,
) -> None:
    """Invoke the Lambda handler through the local event-source mapping."""
    lambda_settings = LambdaSettings.from_env(settings, {})
    create_table(dynamodb, table_spec(lambda_settings.checkpoint_table), 60)
    clients = {"kinesis": kinesis, "dynamodb": dynamodb, "s3": s3}
    runtime = LambdaRuntime(settings, lambda_settings, clients)
    mapping = LocalEventSourceMapping(
        kinesis,
        settings.stream_name,
        instrument(runtime.handle),
        MappingConfig(batch_size=1000),
        region=settings.region,
    )
    stats = mapping.run(
        lambda s: s.records_checkpointed >= record_count, deadline_secs=deadline_secs
    )
    print(
        f"local event-source mapping: {stats.invocations:,} invocations, "
        f"{stats.invocation_secs:.1f} s in the handler",
        flush=True,
    )


def _traffic(args: argparse.Namespace) -> tuple[list[tuple[str, bytes]], set[str]]:
    """Return the records to put and the ids of the generated traces."""
    traces = generate_spans(args.spans, seed=args.seed, spread_secs=30.0)
    records: list[tuple[str, bytes]] = [
        (r.partition_key, r.data) for r in encode_records(traces, Form.MIXED, args.seed)
    ]
    if not args.no_real_traces:
        records += [(r.partition_key, r.data) for r in zipkin_records()]
    records += [
        (p.partition_key, p.data) for p in poison_records(args.poison, args.seed)
    ]
    return records, {trace.trace_id_hex for trace in traces}


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
    for cold_row in readers.scan_cold_starts(dynamodb, settings):
        totals = cold[cold_row.key.tenant, cold_row.key.function]
        totals[0] += cold_row.stats.cold_count
        totals[1] += cold_row.stats.cold_duration_sum_nanos
        totals[2] += cold_row.stats.warm_count
        totals[3] += cold_row.stats.warm_duration_sum_nanos
    print("\nCold starts per function")
    _table(
        ("tenant", "function", "cold", "warm", "added ms per cold start"),
        [
            (*key, f"{c:,}", f"{w:,}", _added_millis(c, cs, w, ws))
            for key, (c, cs, w, ws) in sorted(cold.items())
        ],
    )
    traces = readers.scan_summaries(settings, s3, dynamodb)
    late = sum(r.late_count for r in readers.scan_late(dynamodb, settings))
    archived = readers.read_archive(s3, settings).num_rows
    dead_letters = readers.count_dead_letters(s3, settings)
    print(
        f"\nS3 archive: {archived:,} spans in s3://{settings.bucket}/"
        f"{settings.archive_prefix}  |  dead letters: {dead_letters}  |  "
        f"late spans: {late:,}"
    )
    where = (
        f"DynamoDB {settings.table_name('traces')}"
        if settings.trace_summary_store == "table"
        else f"s3://{settings.bucket}/{settings.trace_archive_prefix}"
    )
    print(f"trace summaries: {len(traces):,} in {where}")


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
