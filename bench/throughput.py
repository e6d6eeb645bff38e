"""Items 1, 2 and 6: spans per second per core, the naive baseline, scaling.

One pass of a form's records is timed in three ways, all on one pinned CPU:

* ``decode``: `RecordDecoder.decode` into a `SpanBatch` (spanstream decodes
  and enriches in one pass, so this is decode + enrich);
* ``aggregate``: the same pass, then `ShardAggregator` and the trace
  assembler on its batches (RED with sketches, cold starts, traces, edges),
  timed apart from the decode: decode + aggregate is the sum of both. The
  ``native`` decoder's passes use the compiled assembler too
  (`make_trace_assembler`), the ``python`` ones the Python reference;
* ``full``: a separate pass through the real runtime path, `ShardProcessor`
  and `TraceStage` flushing to the real sinks (Parquet archive encoding,
  DynamoDB item encoding) over `bench.nullaws` clients.

The naive baseline (`bench.naive`) runs on the same records right after,
and each speed-up is the ratio of the two measured back to back; the
reported figure is the median of those ratios over the repeats.

Garbage collection: the workload is frozen out of the collector's sight
before anything is timed (`freeze_fixtures`: no consumer holds it), and
spanstream's passes run with the young-generation threshold its shells set
(`spanstream.heap`); the naive baseline keeps CPython's defaults, as a
consumer written without thought for the collector would.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from bench import naive
from bench.nullaws import NullDynamoDB, NullS3
from bench.timing import median, pinned, timed, timed_with_collector
from bench.workload import FORMS, REFERENCE_FORM, STREAM, Workload
from spanstream import heap
from spanstream.aggregate.aggregator import ShardAggregator
from spanstream.aggregate.nativetraces import make_trace_assembler
from spanstream.aggregate.types import FlushRange
from spanstream.config import Settings
from spanstream.decode import RecordDecoder, native
from spanstream.model import DeadLetter, KinesisRecord, SpanBatch
from spanstream.pipeline import ShardProcessor, Sinks, TraceStage
from spanstream.sinks.archive import ArchiveWriter
from spanstream.sinks.deadletter import DeadLetterWriter
from spanstream.sinks.factory import make_aggregates

#: Records per `ShardProcessor.process` call: one GetRecords page of the
#: local runner.
PAGE_RECORDS = 1_000


def decoders() -> list[str]:
    """Return the decoders to measure: python, and native when installed."""
    return ["python", "native"] if native.is_available() else ["python"]


def default_decoder() -> str:
    """Return the decoder a worker uses by default (``auto``)."""
    return "native" if native.use_native("auto") else "python"


@contextmanager
def decoder_choice(decoder: str | None) -> Iterator[None]:
    """Set ``SPANSTREAM_DECODER`` while a pipeline is built (None: leave it)."""
    if decoder is None:
        yield
        return
    before = os.environ.get(native.DECODER_VARIABLE)
    os.environ[native.DECODER_VARIABLE] = decoder
    try:
        yield
    finally:
        if before is None:
            del os.environ[native.DECODER_VARIABLE]
        else:
            os.environ[native.DECODER_VARIABLE] = before


def _pages(records: list[KinesisRecord]) -> list[list[KinesisRecord]]:
    return [records[i : i + PAGE_RECORDS] for i in range(0, len(records), PAGE_RECORDS)]


def stage_seconds(
    records: list[KinesisRecord], settings: Settings, decoder: str
) -> tuple[float, float, int]:
    """Return (decode secs, aggregate secs, spans) for one pass of ``records``."""
    record_decoder = RecordDecoder(settings, decoder=decoder)
    dead_letters: list[DeadLetter] = []
    batches: list[SpanBatch] = []

    def decode() -> None:
        for page in _pages(records):
            batch = SpanBatch()
            for record in page:
                record_decoder.decode(record, batch, dead_letters)
            batches.append(batch)

    def aggregate() -> None:
        aggregator = ShardAggregator(settings)
        assembler = make_trace_assembler(settings, time.monotonic, decoder)
        for batch in batches:
            aggregator.add(batch)
            assembler.add(batch)
        first, last = records[0].ref, records[-1].ref
        aggregator.drain(
            FlushRange(
                STREAM, first.shard_id, first.sequence_number, last.sequence_number
            )
        )
        assembler.flush_all()

    decode_secs = timed(decode)
    aggregate_secs = timed(aggregate)
    return decode_secs, aggregate_secs, sum(len(b) for b in batches)


def null_sinks(settings: Settings) -> Sinks:
    """Return the production sinks (trace summaries where ``settings`` says)
    over clients that accept every call and keep nothing."""
    s3 = NullS3()
    return Sinks(
        archive=ArchiveWriter(s3, settings),
        dead_letters=DeadLetterWriter(s3, settings),
        aggregates=make_aggregates(settings, s3, NullDynamoDB()),
    )


def run_full_path(
    records: list[KinesisRecord], settings: Settings, decoder: str | None = None
) -> int:
    """Drive ``records`` through the runtime path into null sinks; return spans."""
    sinks = null_sinks(settings)
    # The switch that picks the decoder picks the trace assembler too.
    with decoder_choice(decoder):
        stage = TraceStage(
            settings, sinks.aggregates, "bench-trace-stage", time.monotonic
        )
        processor = ShardProcessor(
            settings, STREAM, records[0].ref.shard_id, sinks, router=stage
        )
    spans = 0
    for page in _pages(records):
        spans += processor.process(page)
    processor.flush()
    stage.flush(everything=True)
    return spans


_DIGITS = {"naive": 2, "share": 3}  # (..._over_)naive: ratios


@dataclass
class FormResult:
    """Median rates of one form and decoder, and the paired speed-ups."""

    decode: list[float] = field(default_factory=list)
    decode_aggregate: list[float] = field(default_factory=list)
    full: list[float] = field(default_factory=list)
    naive: list[float] = field(default_factory=list)
    full_over_naive: list[float] = field(default_factory=list)
    decode_aggregate_over_naive: list[float] = field(default_factory=list)
    #: shares of each pass's time spent in the garbage collector
    full_gc_share: list[float] = field(default_factory=list)
    naive_gc_share: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, float]:
        return {
            name: round(median(values), _DIGITS.get(name.rpartition("_")[2], 0))
            for name, values in vars(self).items()
            if values
        }


def measure_throughput(
    workload: Workload, repeats: int, settings: Settings | None = None
) -> dict[str, Any]:
    """Measure items 1 and 2 on one pinned CPU; return medians per form.

    Returns ``{"pinned_cpu", "repeats", "decoders", "by_form":
    {decoder: {form: {...rates, speed-ups}}}}``, spans per second.
    """
    settings = settings or Settings()
    results = {d: {form: FormResult() for form in FORMS} for d in decoders()}
    freeze_fixtures()
    with pinned() as cpu:
        for _ in range(repeats):
            for form in FORMS:
                records = workload.records[form]
                naive_rate, naive_gc_share = _rate_and_gc_share(
                    partial(naive.consume, records), workload
                )
                for decoder, by_form in results.items():
                    with heap.tuned_thresholds():
                        decode_secs, aggregate_secs, spans = stage_seconds(
                            records, settings, decoder
                        )
                        full_rate, full_gc_share = _rate_and_gc_share(
                            partial(run_full_path, records, settings, decoder),
                            workload,
                        )
                    result = by_form[form]
                    result.decode.append(spans / decode_secs)
                    result.decode_aggregate.append(
                        spans / (decode_secs + aggregate_secs)
                    )
                    result.full.append(full_rate)
                    result.naive.append(naive_rate)
                    result.full_gc_share.append(full_gc_share)
                    result.naive_gc_share.append(naive_gc_share)
                    result.full_over_naive.append(full_rate / naive_rate)
                    result.decode_aggregate_over_naive.append(
                        spans / (decode_secs + aggregate_secs) / naive_rate
                    )
    return {
        "pinned_cpu": cpu,
        "repeats": repeats,
        "default_decoder": default_decoder(),
        "by_decoder": {
            decoder: {form: r.summary() for form, r in by_form.items()}
            for decoder, by_form in results.items()
        },
    }


def freeze_fixtures() -> None:
    """Move what the benchmark built so far (the workload's traces and
    records in every form) out of the garbage collector's sight.

    No consumer holds a generator's objects or the stream's whole content,
    but a full collection would walk them on every measurement, the naive
    baseline's and spanstream's alike, and charge the walk to whichever ran.
    """
    gc.collect()
    gc.freeze()


def _rate_and_gc_share(
    function: Callable[[], object], workload: Workload
) -> tuple[float, float]:
    secs, collector_secs = timed_with_collector(function)
    return workload.span_count / secs, collector_secs / secs


# -- item 6: two workers on two cores ------------------------------------

#: How many times the reference workload's spans the scaling run reads: a
#: flush's item writes cost the same for 10,000 spans as for 100,000, so the
#: run must be about what a worker reads in a flush interval, or that fixed
#: cost, not the spans, is what is measured.
SCALING_WORKLOAD_FACTOR = 5


def _scaling_worker(
    records: list[KinesisRecord],
    cpu: int | None,
    ready: Any,
    go: Any,
    results: Any,
) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    settings = Settings()
    heap.tune_thresholds()  # as the shells do; the parent froze the fixtures
    ready.release()
    go.wait()
    started = time.monotonic()
    run_full_path(records, settings)
    results.put((started, time.monotonic()))


def _wall_secs(parts: list[list[KinesisRecord]], cpus: list[int | None]) -> float:
    context = multiprocessing.get_context("fork")
    ready = context.Semaphore(0)
    go = context.Event()
    results = context.Queue()
    workers = [
        context.Process(target=_scaling_worker, args=(part, cpu, ready, go, results))
        for part, cpu in zip(parts, cpus, strict=True)
    ]
    for worker in workers:
        worker.start()
    for _ in workers:
        ready.acquire()
    go.set()
    spans = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return max(end for _, end in spans) - min(start for start, _ in spans)


def measure_scaling(workload: Workload, repeats: int) -> dict[str, Any]:
    """Item 6: wall time of 1 worker on every record vs 2 workers on half each.

    Each worker is a forked process running the full path, pinned to its own
    CPU where there are two (one worker reads every record, two workers half
    each). ``workload`` should be `SCALING_WORKLOAD_FACTOR` times the
    reference one. Returns the median of
    the paired ratios ``t(1 worker) / t(2 workers)`` (2.0 is perfect scaling).
    """
    records = workload.records[REFERENCE_FORM]
    half = len(records) // 2
    freeze_fixtures()  # before the workers fork, so that they inherit it
    cpus: list[int | None]
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except AttributeError:
        allowed = []
    cpus = [allowed[0], allowed[1]] if len(allowed) >= 2 else [None, None]
    ratios, one_secs, two_secs = [], [], []
    for _ in range(repeats):
        one = _wall_secs([records], cpus[:1])
        two = _wall_secs([records[:half], _other_shard(records[half:])], cpus)
        one_secs.append(one)
        two_secs.append(two)
        ratios.append(one / two)
    return {
        "cpus": cpus,
        "repeats": repeats,
        "one_worker_secs": round(median(one_secs), 3),
        "two_workers_secs": round(median(two_secs), 3),
        "scaling_2_workers": round(median(ratios), 2),
    }


def _other_shard(records: list[KinesisRecord]) -> list[KinesisRecord]:
    shard_id = "shardId-000000000001"
    return [
        KinesisRecord(record.data, record.ref._replace(shard_id=shard_id))
        for record in records
    ]
