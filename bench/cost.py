"""Item 4: AWS requests and dollars per million spans, per runtime shape.

Every figure comes from counted calls (`bench.calls.CallCounter`) against
the backend of an end-to-end run (`bench.e2e.SteadyRun`):

* ``local`` is *measured*: the local runner's own calls during the run.
* ``lambda`` is *measured*: the real handler, fed live by the local
  event-source mapping while a put loop runs at the same rate
  (`bench.lambdarun`); requests are its invocations, GB-seconds its measured
  durations. Lambda runs only the span stage, so the trace stage's calls
  (summaries and edges, which run on KCL workers or the local runner) are
  added from the ``kcl`` replay's trace stage, per million spans, and
  labelled so.
* ``kcl`` is the KCL shape *replayed* on the records of the run's first
  `REPLAY_SECS` (same shards, same arrival times) through the core with the
  KCL's flush pattern, against the same backend, calls counted. What the
  KCL adds beyond the core's calls (lease renewals, checkpoint items,
  GetRecords polls) is *modelled* from the parameters below and labelled
  so: the daemon is Java, and its calls cannot be counted from here.
* ``naive`` is the baseline's one ``UpdateItem`` per span, *measured on a
  sample* of the run's records and extrapolated per span.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import lambdarun, naive
from bench.calls import CallCounter
from bench.e2e import SteadyRun
from bench.lambdarun import LAMBDA_MEMORY_MB
from consumers.local.runner import to_kinesis_record
from devenv.resources import create_resources, create_stream
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.model import KinesisRecord
from spanstream.pipeline import ShardProcessor, TraceStage
from spanstream.sinks.factory import make_sinks

PRICES_PATH = Path(__file__).with_name("prices.json")

#: KCL: polling reader, one GetRecords per shard per idle interval (the
#: KCL's ``idleTimeBetweenReadsInMillis`` default), and lease renewal by
#: the lease holder every failover time / 3 (``failoverTimeMillis`` 10 s).
KCL_POLL_SECS = 1.0
KCL_LEASE_RENEWAL_SECS = 10.0 / 3
#: Spans of the naive baseline's measured sample.
NAIVE_SAMPLE_SPANS = 500
#: The KCL replay takes the records of the run's first seconds of arrivals
#: (three flush intervals by default), and the Lambda run puts for as long,
#: which keeps the benchmark within its budget.
REPLAY_SECS = 30.0


def load_prices(path: Path = PRICES_PATH) -> dict[str, Any]:
    """Return the price table (USD, us-east-1, with its date and sources)."""
    return dict(json.loads(path.read_text(encoding="utf-8")))


@dataclass
class Usage:
    """What one runtime shape cost for ``spans`` spans."""

    shape: str
    spans: int
    counted: CallCounter
    how: str
    lambda_requests: float = 0
    lambda_gb_seconds: float = 0.0
    modelled_write_units: float = 0.0
    get_records: int = 0
    notes: list[str] = field(default_factory=list)
    spans_per_invocation_sec: float | None = None
    #: other shapes' figures added per million spans (the Lambda path's
    #: trace stage, which runs elsewhere)
    added: list[Usage] = field(default_factory=list)

    def per_million_spans(self) -> dict[str, float]:
        own = self._own_per_million_spans()
        for other in self.added:
            for key, value in other.per_million_spans().items():
                own[key] += value
        return own

    def _own_per_million_spans(self) -> dict[str, float]:
        scale = 1_000_000 / max(self.spans, 1)
        return {
            "dynamodb_write_units": (
                self.counted.write_units + self.modelled_write_units
            )
            * scale,
            "dynamodb_read_units": self.counted.read_units * scale,
            "s3_puts": self.counted.count("s3", "PutObject") * scale,
            "s3_gets": self.counted.count("s3", "GetObject") * scale,
            "kinesis_get_records": self.get_records * scale,
            "kinesis_put_payload_units": self.counted.put_payload_units * scale,
            "lambda_requests": self.lambda_requests * scale,
            "lambda_gb_seconds": self.lambda_gb_seconds * scale,
        }

    def usd_per_million_spans(self, prices: dict[str, Any]) -> dict[str, float]:
        per = self.per_million_spans()
        dynamodb = (
            per["dynamodb_write_units"] * prices["dynamodb_write_request_unit"]
            + per["dynamodb_read_units"] * prices["dynamodb_read_request_unit"]
        )
        s3 = (
            per["s3_puts"] * prices["s3_put_request"]
            + per["s3_gets"] * prices["s3_get_request"]
        )
        lambda_usd = (
            per["lambda_requests"] * prices["lambda_request"]
            + per["lambda_gb_seconds"] * prices["lambda_gb_second"]
        )
        # Re-keyed spans put on the trace stream are the consumer's cost too.
        kinesis = per["kinesis_put_payload_units"] * prices["kinesis_put_payload_unit"]
        return {
            "dynamodb": dynamodb,
            "s3": s3,
            "dynamodb_and_s3": dynamodb + s3,
            "lambda": lambda_usd,
            "trace_stream_puts": kinesis,
            "total": dynamodb + s3 + lambda_usd + kinesis,
        }

    def report(self, prices: dict[str, Any]) -> dict[str, Any]:
        found: dict[str, Any] = {
            "how": self.how,
            "spans": self.spans,
            "per_million_spans": {
                k: round(v, 1) for k, v in self.per_million_spans().items()
            },
            "usd_per_million_spans": {
                k: round(v, 5) for k, v in self.usd_per_million_spans(prices).items()
            },
            "calls": dict(sorted(self.counted.calls.items())),
            "notes": self.notes,
        }
        if self.added:
            found["added"] = [other.shape for other in self.added]
        if self.spans_per_invocation_sec is not None:
            found["spans_per_invocation_sec"] = round(self.spans_per_invocation_sec)
        return found


# -- measured: the local runner ------------------------------------------


def local_usage(run: SteadyRun) -> Usage:
    """The local runner's own calls during the run (all shards, one process)."""
    return Usage(
        "local",
        run.spans_read,
        run.runner_calls,
        "measured: every call of the local runner during the end-to-end run",
        get_records=run.runner_calls.count("kinesis", "GetRecords"),
        notes=[
            "one process flushes all shards together (one aggregate write per "
            "series per flush) and runs the trace stage in-process",
            "includes the final flush at shutdown",
        ],
    )


# -- replayed shapes -------------------------------------------------------


def read_back(settings: Settings) -> dict[str, list[KinesisRecord]]:
    """Return every record of the run's stream by shard (calls not counted)."""
    kinesis = make_client("kinesis", settings)
    records: dict[str, list[KinesisRecord]] = {}
    shards = kinesis.list_shards(StreamName=settings.stream_name)["Shards"]
    for shard in shards:
        shard_id = shard["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=settings.stream_name,
            ShardId=shard_id,
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        found = records.setdefault(shard_id, [])
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            found.extend(
                to_kinesis_record(settings.stream_name, shard_id, r)
                for r in response["Records"]
            )
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
    return records


def first_seconds(
    records: dict[str, list[KinesisRecord]], secs: float
) -> dict[str, list[KinesisRecord]]:
    """Return the records that arrived within ``secs`` of the first one."""
    start = min(_arrival_secs(r[0]) for r in records.values() if r)
    return {
        shard_id: [r for r in shard if _arrival_secs(r) < start + secs]
        for shard_id, shard in records.items()
    }


class _Replay:
    """Sinks for one shape under its own tables, with calls counted: the
    span stage's in ``counter``, the trace stage's in ``trace_counter``."""

    def __init__(self, settings: Settings, shape: str) -> None:
        self.settings = replace(
            settings,
            table_prefix=f"bench-{shape}-",
            bucket=f"bench-{shape}-archive",
            trace_stream_name=f"bench-{shape}-traces",
        )
        self.counter = CallCounter()
        self.trace_counter = CallCounter()
        kinesis, dynamodb, s3 = (
            make_client(name, self.settings) for name in ("kinesis", "dynamodb", "s3")
        )
        create_resources(self.settings, kinesis, dynamodb, s3, shard_count=1)
        create_stream(kinesis, self.settings.trace_stream_name, 2, 60.0)
        for client in (kinesis, dynamodb, s3):
            self.counter.attach(client)
        self.sinks = make_sinks(self.settings, s3, dynamodb, kinesis)
        trace_sinks = make_sinks(
            self.settings,
            *(
                self.trace_counter.attach(make_client(name, self.settings))
                for name in ("s3", "dynamodb", "kinesis")
            ),
        )
        self.now_secs = 0.0
        self.trace_stage = TraceStage(
            self.settings,
            trace_sinks.aggregates,
            f"bench-{shape}-trace-stage",
            clock=lambda: self.now_secs,
        )
        self._next_trace_flush = 0.0

    def processor(self, shard_id: str) -> ShardProcessor:
        return ShardProcessor(
            self.settings,
            self.settings.stream_name,
            shard_id,
            self.sinks,
            router=self.trace_stage,
        )

    def advance(self, now_secs: float) -> None:
        """Move the replay clock; the trace stage flushes every interval."""
        self.now_secs = now_secs
        if now_secs >= self._next_trace_flush:
            self.trace_stage.flush()
            self._next_trace_flush = now_secs + self.settings.flush_interval_secs


def _arrival_secs(record: KinesisRecord) -> float:
    return record.ref.arrival_unix_millis / 1000


def replay_kcl(
    run: SteadyRun, records: dict[str, list[KinesisRecord]]
) -> tuple[Usage, Usage]:
    """The KCL shape: one processor per shard, each flushing alone every
    flush interval (no cross-shard merge), GetRecords per shard per poll.

    Returns the shape's usage and, apart, its trace stage's alone.
    """
    replay = _Replay(run.settings, "kcl")
    interval = replay.settings.flush_interval_secs
    start = min(_arrival_secs(r[0]) for r in records.values() if r)
    end = max(_arrival_secs(r[-1]) for r in records.values() if r)
    polls: list[tuple[float, str, list[KinesisRecord]]] = []
    for shard_id, shard_records in records.items():
        by_poll: dict[int, list[KinesisRecord]] = {}
        for record in shard_records:
            index = int((_arrival_secs(record) - start) // KCL_POLL_SECS)
            by_poll.setdefault(index, []).append(record)
        polls.extend(
            (start + (index + 1) * KCL_POLL_SECS, shard_id, page)
            for index, page in by_poll.items()
        )
    processors = {shard_id: replay.processor(shard_id) for shard_id in records}
    next_flush = dict.fromkeys(records, start + interval)
    flushes = 0
    spans = 0
    for poll_secs, shard_id, page in sorted(polls, key=lambda p: p[0]):
        replay.advance(poll_secs)
        spans += processors[shard_id].process(page)
        if poll_secs >= next_flush[shard_id]:
            processors[shard_id].flush()
            flushes += 1
            next_flush[shard_id] = poll_secs + interval
    for processor in processors.values():
        processor.flush()
        flushes += 1
    replay.trace_stage.flush(everything=True)
    duration_secs = max(end - start, KCL_POLL_SECS)
    shards = len(records)
    lease_writes = shards * duration_secs / KCL_LEASE_RENEWAL_SECS
    usage = Usage(
        "kcl",
        spans,
        replay.counter.merged(replay.trace_counter),
        "core calls measured (replayed per shard, each shard flushing alone); "
        "GetRecords polls, lease renewals and checkpoints modelled",
        modelled_write_units=lease_writes + flushes,
        get_records=math.ceil(shards * duration_secs / KCL_POLL_SECS),
        notes=[
            f"{shards} shards, flush every {interval:g} s per shard, "
            f"{flushes} shard flushes",
            f"modelled: {lease_writes:.0f} lease renewals (every "
            f"{KCL_LEASE_RENEWAL_SECS:.2f} s per shard) and {flushes} checkpoints, "
            "1 WRU each",
            "trace stage replayed in-process on the same spans; spans forwarded "
            "to the trace stream are measured PutRecords",
        ],
    )
    trace_stage = Usage(
        "kcl-trace-stage",
        spans,
        replay.trace_counter,
        "the KCL replay's trace stage alone (summaries and edges)",
    )
    return usage, trace_stage


def lambda_usage(run: SteadyRun, trace_stage: Usage) -> Usage:
    """The Lambda path, measured live (`bench.lambdarun`), plus ``trace_stage``
    per million spans: Lambda runs the span stage only."""
    window_secs = min(
        lambdarun.LAMBDA_BATCHING_WINDOW_SECS, run.settings.flush_interval_secs
    )
    measured = lambdarun.measure_lambda(
        run.settings,
        run.spans_per_sec,
        min(REPLAY_SECS, run.duration_secs),
        shard_count=run.shard_count,
        seed=run.seed,
        in_process_producer=run.in_process_producer,
        batching_window_secs=window_secs,
    )
    trace_write_units = trace_stage.per_million_spans()["dynamodb_write_units"]
    return Usage(
        "lambda",
        measured.spans,
        measured.counted,
        "measured: the real handler fed live by the local event-source mapping "
        f"while {REPLAY_SECS:g} s of traffic were put; requests and GB-seconds "
        "counted from its invocations; the trace stage (which Lambda does not "
        "run) added from the kcl replay's",
        lambda_requests=measured.invocations,
        lambda_gb_seconds=measured.billed_gb_seconds,
        added=[trace_stage],
        notes=[
            f"batch size {lambdarun.LAMBDA_BATCH_RECORDS} records, batching window "
            f"{window_secs:g} s, {measured.memory_mb} MB, "
            f"{measured.invocations} invocations of {measured.records} records, "
            f"median {measured.median_invocation_secs():.3f} s, "
            f"{measured.spans_per_invocation_sec:,.0f} spans per invocation-second "
            "(against the emulators, sharing the CPU with the put loop)",
            "checkpoint items are the handler's measured writes",
            f"trace stage added: {trace_write_units:,.0f} write units "
            "per million spans",
        ],
        spans_per_invocation_sec=measured.spans_per_invocation_sec,
    )


def naive_usage(
    run: SteadyRun,
    records: dict[str, list[KinesisRecord]],
    lambda_invocations_per_span: float,
) -> Usage:
    """The baseline's per-span ``UpdateItem``: measured on a sample of about
    `NAIVE_SAMPLE_SPANS` spans of the run, extrapolated per span. Its Lambda
    cost uses the same invocations per span as the Lambda shape and its
    measured time per span (decode, dicts and the writes)."""
    settings = replace(
        run.settings, table_prefix="bench-naive-", bucket="bench-naive-archive"
    )
    setup = [make_client(name, settings) for name in ("kinesis", "dynamodb", "s3")]
    create_resources(settings, *setup, shard_count=1)
    counter = CallCounter()
    dynamodb = counter.attach(make_client("dynamodb", settings))
    table_name = settings.table_name("metrics")
    spans_per_record = run.spans_put / max(1, len(run.puts))
    wanted = math.ceil(NAIVE_SAMPLE_SPANS / max(spans_per_record, 1.0))
    sample = next(r for r in records.values() if r)[:wanted]

    def write(key: tuple[Any, ...], duration_nanos: int, is_error: bool) -> None:
        dynamodb.update_item(
            **naive.update_item_params(table_name, key, duration_nanos, is_error)
        )

    started = time.perf_counter()
    aggregates = naive.consume(sample, on_span=write)
    elapsed = time.perf_counter() - started
    spans = aggregates.spans
    memory_gb = LAMBDA_MEMORY_MB / 1024
    invocations = lambda_invocations_per_span * spans
    return Usage(
        "naive",
        spans,
        counter,
        f"measured on a sample of {spans} spans (one UpdateItem each), "
        "extrapolated per span; Lambda modelled like the Lambda shape",
        lambda_requests=invocations,
        lambda_gb_seconds=elapsed * memory_gb,
        notes=[
            "writes RED counters only: no archive, no trace summaries, no edges",
            f"{elapsed / spans * 1000:.2f} ms per span including its UpdateItem "
            "round trip to the emulator",
        ],
    )


def measure_cost(run: SteadyRun) -> dict[str, Any]:
    """Item 4 for every shape; returns per-million-span requests and dollars."""
    prices = load_prices()
    records = first_seconds(read_back(run.settings), REPLAY_SECS)
    usages = {"local": local_usage(run)}
    usages["kcl"], trace_stage = replay_kcl(run, records)
    usages["lambda"] = lambda_usage(run, trace_stage)
    usages["naive"] = naive_usage(
        run, records, usages["lambda"].lambda_requests / usages["lambda"].spans
    )
    stream = _stream_usd_per_million(run, prices)
    return {
        "prices_as_of": prices["as_of"],
        "region": prices["region"],
        "steady_spans_per_sec": run.spans_per_sec,
        "achieved_spans_per_sec": round(run.achieved_spans_per_sec),
        "replayed_secs": REPLAY_SECS,
        "shapes": {shape: usage.report(prices) for shape, usage in usages.items()},
        "stream_usd_per_million_spans": stream,
    }


def _stream_usd_per_million(run: SteadyRun, prices: dict[str, Any]) -> dict[str, Any]:
    """The stream's own cost per million spans, the same for every shape."""
    payload_units = run.producer_calls.put_payload_units / run.spans_put * 1_000_000
    spans_per_sec = run.achieved_spans_per_sec or run.spans_per_sec
    shard_hours = run.shard_count * (1_000_000 / spans_per_sec) / 3600
    return {
        "put_payload_units": round(payload_units, 1),
        "shard_hours": round(shard_hours, 4),
        "usd": round(
            payload_units * prices["kinesis_put_payload_unit"]
            + shard_hours * prices["kinesis_shard_hour"],
            5,
        ),
        "how": "payload units measured from the put loop's PutRecords; shard hours "
        f"for {run.shard_count} shards at {spans_per_sec:,.0f} spans/s",
    }
