"""The end-to-end run against AWS emulators: a steady put loop and the
local runner consuming it, every call counted.

`steady_run` creates a stream, tables and bucket, puts generated traces at a
steady rate of spans per second, and runs the `LocalRunner` on the stream
with the default flush interval until every span is read and flushed. It
returns what item 4 (requests per span) and item 5 (lag) need:

* the calls of the runner's clients (`bench.calls.CallCounter`);
* for each record: its shard, sequence number, span count and put time;
* each flush: when it completed and the last sequence number it covered per
  shard, so a record's lag is the completion of the first flush covering it
  minus its put time: the moment its spans are in its window's running
  aggregate in DynamoDB.

``backend`` is ``"emulators"`` (kinesis-mock and a moto server on loopback,
`devenv.emulators.Emulators`; the put loop then runs in its own process) or
``"moto"`` (moto in this process, for the quick smoke run; the put loop is a
thread).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from moto import mock_aws

from bench.calls import CallCounter
from consumers.local.runner import LocalRunner
from devenv.emulators import Emulators
from devenv.resources import create_resources
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.sinks.factory import make_sinks
from spanstream.sinks.kinesis import MAX_BATCH_RECORDS as MAX_PUT_RECORDS
from spanstream.traffic.encode import Form, LabelledRecord, encode_labelled_records
from spanstream.traffic.generator import TrafficGenerator

logger = logging.getLogger(__name__)

RUN_DIR = Path(__file__).resolve().parents[1] / ".run" / "bench"
#: How often the put loop puts, and the span of time one record covers: every
#: service instance's SDK exports its spans once a second (OpenTelemetry's
#: batch span processor exports every few seconds, up to 512 spans), and the
#: Collector's Kinesis exporter writes one record per resource of an export.
#: So a record holds one resource's spans of one second: about 150 spans at
#: 5,000 spans/s over the workload's 32 resources.
TICK_SECS = 1.0


@dataclass
class PutRecord:
    """One record the put loop put: where it landed, its spans, and when."""

    shard_id: str
    sequence_number: str
    span_count: int
    put_unix_secs: float


@dataclass
class Flush:
    """One flush of the runner: completion time, last sequence per shard."""

    done_unix_secs: float
    covered: dict[str, int]


@dataclass
class SteadyRun:
    """What an end-to-end run did, for the cost and lag measurements."""

    settings: Settings
    spans_per_sec: float
    duration_secs: float
    shard_count: int
    puts: list[PutRecord] = field(default_factory=list)
    flushes: list[Flush] = field(default_factory=list)
    runner_calls: CallCounter = field(default_factory=CallCounter)
    producer_calls: CallCounter = field(default_factory=CallCounter)
    spans_read: int = 0
    wall_secs: float = 0.0
    seed: int = 42
    in_process_producer: bool = False

    @property
    def spans_put(self) -> int:
        return sum(p.span_count for p in self.puts)

    @property
    def achieved_spans_per_sec(self) -> float:
        """Spans put per second between the first and the last put."""
        if len(self.puts) < 2:
            return 0.0
        span = self.puts[-1].put_unix_secs - self.puts[0].put_unix_secs
        return self.spans_put / max(span, 1e-9)


@contextlib.contextmanager
def aws_backend(backend: str, settings: Settings) -> Iterator[Settings]:
    """Yield settings pointing at a fresh backend (emulators or in-process moto)."""
    if backend == "emulators":
        with Emulators(RUN_DIR) as emulators:
            for key, value in emulators.settings_env().items():
                os.environ.setdefault(key, value)
            yield replace(
                settings,
                kinesis_endpoint_url=emulators.kinesis_endpoint_url,
                dynamodb_endpoint_url=emulators.dynamodb_endpoint_url,
                s3_endpoint_url=emulators.s3_endpoint_url,
            )
    elif backend == "moto":
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")
        with mock_aws():
            yield settings
    else:
        raise ValueError(f"backend must be 'emulators' or 'moto', got {backend!r}")


def put_steadily(
    settings: Settings, spans_per_sec: float, duration_secs: float, seed: int
) -> tuple[list[PutRecord], CallCounter]:
    """Put fresh traces on the stream every `TICK_SECS` at ``spans_per_sec``.

    Traces are generated as they are put (ending at most 10 s before), so
    their windows are current. Returns every record put and the calls made.
    """
    calls = CallCounter()
    puts: list[PutRecord] = []
    for tick in put_ticks(settings, spans_per_sec, duration_secs, seed, calls):
        puts.extend(tick)
    return puts, calls


def put_ticks(
    settings: Settings,
    spans_per_sec: float,
    duration_secs: float,
    seed: int,
    calls: CallCounter | None = None,
) -> Iterator[list[PutRecord]]:
    """Put traces every `TICK_SECS` at ``spans_per_sec``; yield each tick's records.

    ``calls`` (if given) counts the puts' calls. Raises RuntimeError when
    PutRecords rejects records.
    """
    client = make_client("kinesis", settings)
    kinesis = calls.attach(client) if calls is not None else client
    generator = TrafficGenerator(seed, spread_secs=10.0)
    started = time.monotonic()
    spans_put = 0
    ticks = 0
    while time.monotonic() - started < duration_secs:
        # What is due so far, so a slow tick is made up by the next ones.
        spans_due = spans_per_sec * (time.monotonic() - started + TICK_SECS) - spans_put
        traces = []
        now = time.time_ns()
        while spans_due > 0:
            trace = generator.trace(now)
            traces.append(trace)
            spans_due -= len(trace.spans)
            spans_put += len(trace.spans)
        labelled = encode_labelled_records(
            traces,
            Form.OTLP_PROTO,
            seed + ticks,
            batch_spans=max(1, sum(len(trace.spans) for trace in traces)),
        )
        yield _put(kinesis, settings.stream_name, labelled)
        ticks += 1
        next_tick = started + ticks * TICK_SECS
        time.sleep(max(0.0, next_tick - time.monotonic()))


def _put(
    kinesis: Any, stream_name: str, labelled: list[LabelledRecord]
) -> list[PutRecord]:
    puts: list[PutRecord] = []
    put_unix_secs = time.time()
    for chunk in _chunks(labelled, MAX_PUT_RECORDS):
        response = kinesis.put_records(
            StreamName=stream_name,
            Records=[
                {"Data": r.record.data, "PartitionKey": r.record.partition_key}
                for r in chunk
            ],
        )
        if response.get("FailedRecordCount"):
            raise RuntimeError(
                f"PutRecords to {stream_name} rejected "
                f"{response['FailedRecordCount']} of {len(chunk)} records"
            )
        for entry, record in zip(response["Records"], chunk, strict=True):
            puts.append(
                PutRecord(
                    entry["ShardId"],
                    entry["SequenceNumber"],
                    record.span_count,
                    put_unix_secs,
                )
            )
    return puts


def _chunks(records: list[LabelledRecord], size: int) -> list[list[LabelledRecord]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


class RecordingRunner(LocalRunner):
    """The local runner, noting what each flush covered and when its spans
    were counted: when the shards' aggregate write (their windows' running
    aggregates) returned. The trace stage's summaries and edges, written
    after it, are not what item 5 waits for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.flush_log: list[Flush] = []

    def flush_shards(self) -> None:
        covered = {
            shard_id: int(reader.last_sequence_number)
            for shard_id, reader in self.readers.items()
            if reader.last_sequence_number is not None
        }
        super().flush_shards()
        self.flush_log.append(Flush(time.time(), covered))


def _producer_process(
    settings: Settings,
    spans_per_sec: float,
    duration_secs: float,
    seed: int,
    results: Any,
) -> None:
    puts, calls = put_steadily(settings, spans_per_sec, duration_secs, seed)
    results.put((puts, calls.as_dict(), dict(calls.calls)))
    results.close()
    results.join_thread()


def steady_run(
    settings: Settings,
    spans_per_sec: float,
    duration_secs: float,
    shard_count: int = 4,
    seed: int = 42,
    in_process_producer: bool = False,
    drain_deadline_secs: float = 120.0,
) -> SteadyRun:
    """Run the put loop and the local runner together; return what happened.

    ``settings`` must point at a live backend (`aws_backend`). Raises
    TimeoutError if the runner has not read every span put within
    ``drain_deadline_secs`` after the put loop ended.
    """
    kinesis, dynamodb, s3 = (
        make_client(name, settings) for name in ("kinesis", "dynamodb", "s3")
    )
    create_resources(settings, kinesis, dynamodb, s3, shard_count=shard_count)
    run = SteadyRun(
        settings,
        spans_per_sec,
        duration_secs,
        shard_count,
        seed=seed,
        in_process_producer=in_process_producer,
    )
    kinesis, dynamodb, s3 = (
        run.runner_calls.attach(make_client(name, settings))
        for name in ("kinesis", "dynamodb", "s3")
    )
    runner = RecordingRunner(settings, kinesis, make_sinks(settings, s3, dynamodb))
    runner.discover_shards()
    producer = Producer(
        settings, spans_per_sec, duration_secs, seed, in_process_producer
    )
    started = time.monotonic()
    puts: list[PutRecord] | None = None
    while True:
        if runner.poll_once() == 0:
            time.sleep(0.05)
        if puts is None and producer.finished():
            puts, run.producer_calls = producer.result()
            deadline = time.monotonic() + drain_deadline_secs
        if puts is not None:
            if runner.stats.spans >= sum(p.span_count for p in puts):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"runner read {runner.stats.spans} of "
                    f"{sum(p.span_count for p in puts)} spans in time"
                )
    runner.flush(everything=True)
    producer.join()
    run.wall_secs = time.monotonic() - started
    run.puts = puts
    run.flushes = runner.flush_log
    run.spans_read = runner.stats.spans
    return run


class Producer:
    """The put loop, in a thread (in-process backend) or a forked process."""

    def __init__(
        self,
        settings: Settings,
        spans_per_sec: float,
        duration_secs: float,
        seed: int,
        in_process: bool,
    ) -> None:
        args = (settings, spans_per_sec, duration_secs, seed)
        self._result: tuple[list[PutRecord], CallCounter] | None = None
        self._queue: Any = None
        self._thread: threading.Thread | None = None
        self._process: Any = None
        if in_process:
            self._thread = threading.Thread(
                target=self._run_thread, args=args, name="bench-producer", daemon=True
            )
            self._thread.start()
        else:
            context = multiprocessing.get_context("fork")
            self._queue = context.Queue()
            self._process = context.Process(
                target=_producer_process,
                args=(*args, self._queue),
                name="bench-producer",
            )
            self._process.start()

    def _run_thread(self, *args: Any) -> None:
        self._result = put_steadily(*args)

    def finished(self) -> bool:
        """Return True once the loop ended and its results are here."""
        if self._thread is not None:
            return not self._thread.is_alive()
        if self._result is None:
            try:
                puts, summary, calls = self._queue.get_nowait()
            except queue.Empty:
                return False
            counter = CallCounter()
            counter.calls.update(calls)
            counter.put_payload_units = summary["kinesis_put_payload_units"]
            self._result = (puts, counter)
        return True

    def result(self) -> tuple[list[PutRecord], CallCounter]:
        if self._result is None:
            raise RuntimeError("the put loop died without results")
        return self._result

    def join(self) -> None:
        if self._process is not None:
            self._process.join(timeout=30)
