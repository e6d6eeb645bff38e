"""The KCL path end to end: real MultiLangDaemon workers against the emulators.

Two runs on the same emulators, each on a fresh stream:

* **backlog**: a backlog of generated spans on a 2-shard stream is read by
  one KCL worker (its JVM and one record processor per shard) and, in the
  same run, by the local runner; each rate is the backlog's spans over the
  time from the first read to the last record durable (checkpointed, for
  the KCL). The emulator is part of both paths, so the ratio says what the
  KCL's daemon, its protocol and one process per lease cost next to one
  process reading every shard;
* **steady**: one worker reads while a put loop writes at a steady rate with
  the default flush interval; a span's lag is the completion of the first
  flush covering its record (the workers log one line per flush,
  `spanstream.flushlog`) minus its put time.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench.e2e import RUN_DIR, Flush, Producer, SteadyRun
from bench.lag import lag_percentiles
from bench.workload import EXPORT_BATCH_SPANS
from consumers.kcl.daemon import Daemon, KclTuning, application_name, render_properties
from consumers.kcl.progress import (
    checkpoints_reached,
    last_sequence_numbers,
    lease_owners,
)
from consumers.local.runner import LocalRunner
from devenv.env import settings_to_env
from devenv.ports import wait_until
from devenv.resources import create_resources
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.sinks.factory import make_sinks
from spanstream.sinks.kinesis import put_records
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans

logger = logging.getLogger(__name__)

SHARD_COUNT = 2
#: A new lease table makes the KCL wait 1-30 s before its first lease.
FIRST_LEASE_SECS = 90.0
DRAIN_SECS = 300.0
_FLUSHED = "flushed "
_FLUSH_TIMING = re.compile(
    r" in (?P<total>[0-9.]+) s \(written in (?P<written>[0-9.]+) s\)"
)


def measure_kcl(
    settings: Settings,
    backlog_spans: int,
    steady_spans_per_sec: float,
    steady_secs: float,
    seed: int,
) -> dict[str, Any]:
    """Run both measurements on the live backend ``settings`` points at."""
    backlog = _backlog(
        replace(settings, table_prefix="bench-kcl-b-"), backlog_spans, seed
    )
    steady = _steady(
        replace(settings, table_prefix="bench-kcl-s-", stream_name="bench-steady"),
        steady_spans_per_sec,
        steady_secs,
        seed,
    )
    return {"backlog": backlog, "steady": steady}


def _backlog(settings: Settings, span_count: int, seed: int) -> dict[str, Any]:
    kcl_settings = replace(settings, stream_name="bench-kcl-backlog")
    local_settings = replace(
        settings, stream_name="bench-local-backlog", table_prefix="bench-kcl-l-"
    )
    traces = generate_spans(span_count, seed=seed, spread_secs=30.0)
    records = [
        (r.partition_key, r.data)
        for r in encode_records(traces, Form.MIXED, seed, EXPORT_BATCH_SPANS)
    ]
    spans = sum(len(trace.spans) for trace in traces)
    for target in (kcl_settings, local_settings):
        kinesis, dynamodb, s3 = (
            make_client(name, target) for name in ("kinesis", "dynamodb", "s3")
        )
        create_resources(target, kinesis, dynamodb, s3, SHARD_COUNT)
        put_records(kinesis, target.stream_name, records)
    kinesis = make_client("kinesis", kcl_settings)
    dynamodb = make_client("dynamodb", kcl_settings)
    targets = last_sequence_numbers(kinesis, kcl_settings.stream_name)
    app_name = application_name(kcl_settings, "spans")
    with _worker(kcl_settings, "backlog") as daemon:
        wait_until(
            lambda: any(lease_owners(dynamodb, app_name).values()),
            timeout_secs=FIRST_LEASE_SECS,
            what="the KCL worker to take a lease",
            poll_interval_secs=0.2,
            abort=lambda: _exited(daemon),
        )
        kcl_secs = wait_until(
            lambda: checkpoints_reached(dynamodb, app_name, targets),
            timeout_secs=DRAIN_SECS,
            what="the KCL worker to checkpoint the backlog",
            poll_interval_secs=0.2,
            abort=lambda: _exited(daemon),
        )
    local_kinesis = make_client("kinesis", local_settings)
    runner = LocalRunner(
        local_settings,
        local_kinesis,
        make_sinks(
            local_settings,
            make_client("s3", local_settings),
            make_client("dynamodb", local_settings),
        ),
    )
    started = time.monotonic()
    runner.run(lambda s: s.records >= len(records), deadline_secs=DRAIN_SECS)
    local_secs = time.monotonic() - started
    return {
        "spans": spans,
        "records": len(records),
        "shards": SHARD_COUNT,
        "kcl_worker_secs": round(kcl_secs, 1),
        "local_runner_secs": round(local_secs, 1),
        "kcl_spans_per_sec_per_worker": round(spans / kcl_secs),
        "local_runner_spans_per_sec": round(spans / local_secs),
        "kcl_over_local": round(local_secs / kcl_secs, 2),
    }


def _steady(
    settings: Settings, spans_per_sec: float, duration_secs: float, seed: int
) -> dict[str, Any]:
    kinesis, dynamodb, s3 = (
        make_client(name, settings) for name in ("kinesis", "dynamodb", "s3")
    )
    create_resources(settings, kinesis, dynamodb, s3, SHARD_COUNT)
    app_name = application_name(settings, "spans")
    run = SteadyRun(settings, spans_per_sec, duration_secs, SHARD_COUNT)
    with _worker(settings, "steady") as daemon:
        # Lag counts from the put: the worker holds its leases first.
        wait_until(
            lambda: (
                len([o for o in lease_owners(dynamodb, app_name).values() if o])
                == SHARD_COUNT
            ),
            timeout_secs=FIRST_LEASE_SECS,
            what="the KCL worker to take every lease",
            poll_interval_secs=0.2,
            abort=lambda: _exited(daemon),
        )
        producer = Producer(settings, spans_per_sec, duration_secs, seed, False)
        wait_until(
            producer.finished,
            timeout_secs=duration_secs + 120,
            what="the put loop to finish",
            poll_interval_secs=0.5,
        )
        run.puts, run.producer_calls = producer.result()
        producer.join()
        targets = last_sequence_numbers(kinesis, settings.stream_name)
        wait_until(
            lambda: checkpoints_reached(dynamodb, app_name, targets),
            timeout_secs=DRAIN_SECS,
            what="the KCL worker to checkpoint the steady traffic",
            poll_interval_secs=0.5,
            abort=lambda: _exited(daemon),
        )
        run.flushes = flushes_logged(daemon.log_path, settings.stream_name)
    return lag_percentiles(run)


class _worker:
    """One span-stage KCL worker with the default flush interval, stopped on exit."""

    def __init__(self, settings: Settings, name: str) -> None:
        run_dir = RUN_DIR / "kcl" / name
        run_dir.mkdir(parents=True, exist_ok=True)
        properties = run_dir / "spans.properties"
        properties.write_text(render_properties(settings, "spans", KclTuning.fast()))
        log_path = run_dir / "worker.log"
        log_path.unlink(missing_ok=True)
        env = {
            **os.environ,
            **settings_to_env(settings),
            "SPANSTREAM_KCL_STAGE": "spans",
            "PYTHONUNBUFFERED": "1",
        }
        self.daemon = Daemon(f"bench-{name}", properties, log_path, settings, env)

    def __enter__(self) -> Daemon:
        self.daemon.start()
        return self.daemon

    def __exit__(self, *_: object) -> None:
        if not self.daemon.stop(60.0):
            logger.warning("KCL worker %s did not stop cleanly", self.daemon.name)


def _exited(daemon: Daemon) -> str | None:
    code = daemon.poll()
    return None if code is None else f"KCL worker exited with {code}"


def flushes_logged(log_path: Path, stream_name: str) -> list[Flush]:
    """Return the flushes the worker's record processors logged, in order.

    Each ``flushed <stream>/<shard> through <sequence number> in <t> s
    (written in <w> s)`` line becomes a `Flush` covering that shard up to
    that record, done when its writes were: the line's time less the
    checkpoint that followed them (``t - w``).
    """
    flushes = []
    prefix = f"{_FLUSHED}{stream_name}/"
    for line in log_path.read_text(errors="replace").splitlines():
        if not line.startswith("{") or prefix not in line:
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("message", "")
        if not message.startswith(prefix):
            continue
        shard_id, _, rest = message[len(prefix) :].partition(" through ")
        timing = _FLUSH_TIMING.search(rest)
        if timing is None:
            raise ValueError(f"{log_path}: a flush line without its timing: {line}")
        checkpoint_secs = float(timing["total"]) - float(timing["written"])
        flushes.append(
            Flush(
                float(entry["unix_secs"]) - checkpoint_secs,
                {shard_id: int(rest.split()[0])},
            )
        )
    return sorted(flushes, key=lambda flush: flush.done_unix_secs)
