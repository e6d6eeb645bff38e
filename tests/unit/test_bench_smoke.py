"""The benchmark harness runs end to end on a tiny workload.

GIVEN the quick profile (a tiny workload, in-process moto for the AWS part)
WHEN ``python -m bench --quick`` runs
THEN it exits cleanly, prints the table and writes every headline key of
``bench/results.json`` as a number. The figures themselves are not checked:
a smoke run measures nothing worth comparing.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import bench.__main__ as bench_main
from bench.e2e import Flush, PutRecord, SteadyRun
from bench.lag import lag_percentiles
from bench.report import HEADLINE_KEYS
from bench.timing import timed_with_collector
from spanstream.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_quick_run_writes_every_headline_key_as_a_number(tmp_path: Path) -> None:
    output = tmp_path / "results.json"
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--output", str(output)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    results = json.loads(output.read_text(encoding="utf-8"))
    for key in HEADLINE_KEYS:
        value = results[key]
        assert isinstance(value, int | float) and not isinstance(value, bool), key
    assert results["mode"] == "quick"
    assert results["workload"]["spans"] >= 1_500
    assert "full path" in done.stdout
    # The Lambda shape is the real handler's measured run, not a model.
    lambda_shape = results["measurements"]["cost"]["shapes"]["lambda"]
    assert lambda_shape["how"].startswith("measured")
    assert lambda_shape["spans"] > 0
    assert lambda_shape["spans_per_invocation_sec"] > 0
    assert lambda_shape["per_million_spans"]["lambda_requests"] > 0
    assert lambda_shape["per_million_spans"]["lambda_gb_seconds"] > 0
    assert lambda_shape["calls"]["dynamodb:PutItem"] > 0  # its checkpoints
    assert lambda_shape["added"] == ["kcl-trace-stage"]
    protobuf = results["measurements"]["throughput"]["by_decoder"]["python"]["protobuf"]
    assert 0 <= protobuf["full_gc_share"] < 1
    assert 0 <= protobuf["naive_gc_share"] < 1
    assert "gc full" in done.stdout


def test_collector_time_is_the_time_collections_took() -> None:
    class Cycle:
        def __init__(self) -> None:
            self.me = self

    def collects() -> None:
        for _ in range(20):
            _ = [Cycle() for _ in range(2_000)]
            gc.collect()

    secs, collector_secs = timed_with_collector(collects)
    assert 0 < collector_secs <= secs

    gc.disable()
    try:
        _, none = timed_with_collector(lambda: [Cycle() for _ in range(2_000)])
    finally:
        gc.enable()
    assert none == 0.0


def test_lag_is_the_first_covering_flush_minus_the_put_time() -> None:
    run = SteadyRun(Settings(flush_interval_secs=10), 100, 20, 1)
    run.puts = [
        PutRecord("shard-0", "5", 10, 100.0),
        PutRecord("shard-0", "7", 30, 101.0),
        PutRecord("shard-1", "3", 60, 102.0),
    ]
    run.flushes = [
        Flush(110.0, {"shard-0": 5, "shard-1": 2}),
        Flush(120.0, {"shard-0": 9, "shard-1": 3}),
    ]
    lag = lag_percentiles(run)
    # shard-0 #5 at 110 (10 s), #7 at 120 (19 s), shard-1 #3 at 120 (18 s)
    assert lag["spans"] == 100
    assert lag["p50_secs"] == 18.0
    assert lag["p99_secs"] == 19.0
    assert lag["max_secs"] == 19.0


def test_a_failed_measurement_fails_the_run_and_keeps_the_others(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    # GIVEN a run whose KCL measurement fails after the memory one worked
    def broken(ctx: Any) -> dict[str, Any]:
        raise RuntimeError("kinesis-mock stopped answering")

    monkeypatch.setitem(bench_main.MEASUREMENTS, "kcl", broken)
    output = tmp_path / "results.json"

    # WHEN it runs
    code = bench_main.main(
        ["--quick", "--only", "memory", "kcl", "--output", str(output)]
    )

    # THEN it fails naming the measurement, with the memory figure written
    assert code == 1
    results = json.loads(output.read_text(encoding="utf-8"))
    assert results["failed"] == {"kcl": "RuntimeError: kinesis-mock stopped answering"}
    assert results["peak_rss_mb"] > 0
    assert "FAILED: measurement kcl" in capsys.readouterr().err
