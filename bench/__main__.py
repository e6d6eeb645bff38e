"""``python -m bench``: run every measurement, print the table, write JSON.

``--quick`` is a smoke run on a tiny workload (in-process moto instead of
the emulators, a few seconds of traffic) for the unit test; its figures are
not benchmarks. ``--only`` runs some measurements; the others' keys are null.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import cost, e2e, kcl, lag, memory, report, throughput, workload
from bench.timing import machine
from spanstream.config import Settings
from spanstream.decode import native

logger = logging.getLogger("bench")

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_OUTPUT = BENCH_DIR / "results.json"
QUICK_OUTPUT = BENCH_DIR.parent / ".run" / "bench" / "results-quick.json"


@dataclass(frozen=True)
class Profile:
    """How big each measurement is."""

    spans: int
    repeats: int
    memory_series: int
    memory_traces: int
    memory_pending_rows: int
    backend: str
    steady_spans_per_sec: float
    steady_secs: float
    flush_interval_secs: float
    #: spans of the KCL backlog run; 0 skips the KCL measurement (it needs
    #: the emulators: the quick run's in-process moto cannot serve the daemon)
    kcl_backlog_spans: int


DEFAULT = Profile(
    spans=20_000,
    repeats=3,
    memory_series=10_000,
    memory_traces=50_000,
    memory_pending_rows=50_000,
    backend="emulators",
    steady_spans_per_sec=5_000,
    steady_secs=60,
    flush_interval_secs=Settings().flush_interval_secs,
    kcl_backlog_spans=20_000,
)
QUICK = Profile(
    spans=1_500,
    repeats=1,
    memory_series=500,
    memory_traces=1_000,
    memory_pending_rows=2_000,
    backend="moto",
    steady_spans_per_sec=400,
    steady_secs=3,
    flush_interval_secs=1.0,
    kcl_backlog_spans=0,
)


class Context:
    """The workload and profile shared by the measurements of one run."""

    def __init__(self, profile: Profile, seed: int) -> None:
        self.profile = profile
        self.seed = seed
        self._workload: workload.Workload | None = None

    @property
    def workload(self) -> workload.Workload:
        if self._workload is None:
            started = time.monotonic()
            self._workload = workload.build(self.profile.spans, self.seed)
            logger.info("workload built in %.1f s", time.monotonic() - started)
        return self._workload


def run_throughput(ctx: Context) -> dict[str, Any]:
    return throughput.measure_throughput(ctx.workload, ctx.profile.repeats)


def run_scaling(ctx: Context) -> dict[str, Any]:
    spans = ctx.profile.spans * throughput.SCALING_WORKLOAD_FACTOR
    return {
        "spans": spans,
        **throughput.measure_scaling(
            workload.build(spans, ctx.seed), ctx.profile.repeats
        ),
    }


def run_memory(ctx: Context) -> dict[str, Any]:
    p = ctx.profile
    return memory.measure_memory(
        p.memory_series, p.memory_traces, 10, p.memory_pending_rows
    )


def run_end_to_end(ctx: Context) -> dict[str, Any]:
    """Items 4 and 5 share one end-to-end run against the backend."""
    p = ctx.profile
    settings = Settings(
        stream_name="bench-spans",
        table_prefix="bench-local-",
        bucket="bench-local-archive",
        flush_interval_secs=p.flush_interval_secs,
    )
    with e2e.aws_backend(p.backend, settings) as live:
        run = e2e.steady_run(
            live,
            p.steady_spans_per_sec,
            p.steady_secs,
            seed=ctx.seed,
            in_process_producer=p.backend == "moto",
        )
        return {"lag": lag.lag_percentiles(run), "cost": cost.measure_cost(run)}


def run_kcl(ctx: Context) -> dict[str, Any]:
    """The KCL path's throughput per worker process and its lag (issue 4)."""
    p = ctx.profile
    if not p.kcl_backlog_spans:
        return {"kcl": None}
    settings = Settings(
        stream_name="bench-kcl",
        table_prefix="bench-kcl-",
        bucket="bench-kcl-archive",
        flush_interval_secs=p.flush_interval_secs,
    )
    with e2e.aws_backend("emulators", settings) as live:
        return {
            "kcl": kcl.measure_kcl(
                live,
                p.kcl_backlog_spans,
                p.steady_spans_per_sec,
                p.steady_secs,
                ctx.seed,
            )
        }


MEASUREMENTS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "throughput": run_throughput,
    "memory": run_memory,
    "scaling": run_scaling,
    "e2e": run_end_to_end,
    "kcl": run_kcl,
}


def versions() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for package in ("protobuf", "pyarrow", "boto3", "moto", "opentelemetry-proto"):
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = None
    found["spanstream_native"] = native.is_available()
    try:
        found["spanstream_commit"] = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=BENCH_DIR.parent,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        found["spanstream_commit"] = None
    return found


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument(
        "--only", nargs="+", choices=sorted(MEASUREMENTS), help="measurements to run"
    )
    parser.add_argument("--output", type=Path, help="results JSON path")
    parser.add_argument("--seed", type=int, default=workload.SEED)
    parser.add_argument("--spans", type=int, help="reference workload size")
    parser.add_argument("--repeats", type=int, help="repeats of each timing")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("botocore", "urllib3", "devenv", "spanstream", "consumers"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    profile = QUICK if args.quick else DEFAULT
    if args.spans:
        profile = replace(profile, spans=args.spans)
    if args.repeats:
        profile = replace(profile, repeats=args.repeats)
    output = args.output or (QUICK_OUTPUT if args.quick else DEFAULT_OUTPUT)
    ctx = Context(profile, args.seed)
    started = time.monotonic()
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "python -m bench "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "versions": versions(),
        "profile": vars(profile),
    }
    measurements: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for name in args.only or MEASUREMENTS:
        step_started = time.monotonic()
        logger.info("measuring %s", name)
        try:
            found = MEASUREMENTS[name](ctx)
        except Exception as exc:
            # The other measurements still run and are written; the run
            # fails at the end, naming this one.
            logger.exception("measurement %s failed", name)
            failed[name] = f"{type(exc).__name__}: {exc}"
            continue
        measurements.update(found if name in ("e2e", "kcl") else {name: found})
        logger.info("%s took %.1f s", name, time.monotonic() - step_started)
    results["workload"] = workload.describe(ctx.workload)
    results["measurements"] = measurements
    results["failed"] = failed
    keys = report.headline(measurements)
    results.update(keys)
    results["targets"] = report.targets(keys, measurements)
    results["elapsed_secs"] = round(time.monotonic() - started, 1)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(report.render(results))
    print(f"\nwrote {output} in {results['elapsed_secs']} s")
    for name, error in failed.items():
        print(f"FAILED: measurement {name}: {error}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
