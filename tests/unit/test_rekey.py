"""Re-keying by trace id, and the trace stage's exactly-once replays."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

import pytest

from spanstream.aggregate.types import AggregateDelta, TraceSummary
from spanstream.config import Settings
from spanstream.decode import RecordDecoder
from spanstream.errors import DecodeError
from spanstream.model import KinesisRecord, RecordRef, SpanBatch
from spanstream.pipeline import Sinks, TraceShardProcessor
from spanstream.rekey import (
    REKEYED_FIELDS,
    SourceProgress,
    decode_rekeyed,
    rekey_records,
    trace_bucket_key,
)
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_traces
from spanstream.traffic.model import truths
from spanstream.traffic.reference import expected

NOW_NANOS = 1_800_000_000_000_000_000


def decoded_batch(trace_count: int, seed: int) -> SpanBatch:
    traces = generate_traces(trace_count, seed, now_unix_nanos=NOW_NANOS)
    batch = SpanBatch()
    decoder = RecordDecoder(Settings())
    for index, (key, data) in enumerate(encode_records(traces, Form.OTLP_PROTO, seed)):
        ref = RecordRef("spans", "shard-0", str(index + 1), 0, key, 0)
        decoder.decode(KinesisRecord(data, ref), batch, [])
    return batch


PROGRESS = SourceProgress("shard-7", 1_000_000, False, ("shard-7", "shard-8"))


def test_rekeyed_records_round_trip_every_trace_field_and_the_progress() -> None:
    batch = decoded_batch(50, seed=3)
    records = rekey_records(batch, PROGRESS, buckets=8)
    # One record per bucket, every bucket: far fewer records than traces
    assert sorted(key for key, _ in records) == sorted(
        f"trace-bucket-{n}" for n in range(8)
    )
    assert len(set(batch.trace_id)) > 8
    rows = []
    for index, (key, data) in enumerate(records):
        rekeyed = decode_rekeyed(KinesisRecord(data, RecordRef("t", "s", str(index))))
        decoded = rekeyed.batch
        assert rekeyed.progress == PROGRESS
        assert {trace_bucket_key(t, 8) for t in decoded.trace_id} <= {key}
        assert all(
            len(getattr(decoded, name)) == len(decoded) for name in REKEYED_FIELDS
        )
        rows += zip(*(getattr(decoded, name) for name in REKEYED_FIELDS), strict=True)
    original = zip(*(getattr(batch, name) for name in REKEYED_FIELDS), strict=True)
    assert sorted(rows, key=repr) == sorted(original, key=repr)


def test_an_empty_batch_still_tells_every_bucket_the_progress() -> None:
    records = rekey_records(SpanBatch(), PROGRESS, buckets=4)
    assert len(records) == 4
    for _, data in records:
        rekeyed = decode_rekeyed(KinesisRecord(data, RecordRef("t", "s", "1")))
        assert len(rekeyed.batch) == 0 and rekeyed.progress == PROGRESS


@pytest.mark.parametrize("data", [b"", b"garbage", b"x\x9c\x03\x00\x00\x00\x00\x01"])
def test_bad_rekeyed_record_raises_decode_error_naming_it(data: bytes) -> None:
    with pytest.raises(DecodeError, match="trace-stream/shard-9@77"):
        decode_rekeyed(KinesisRecord(data, RecordRef("trace-stream", "shard-9", "77")))


class HighWaterMarkStore:
    """An aggregate sink with the sinks' idempotency rule, in memory."""

    def __init__(self) -> None:
        self.hwm: dict[str, int] = {}
        self.edges: dict[tuple, list[int]] = {}
        self.summaries: dict[tuple[str, str], TraceSummary] = {}
        self.fail_next = 0

    def write(self, deltas: Sequence[AggregateDelta]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise OSError("injected")
        for delta in deltas:
            last = int(delta.flush_range.last_sequence_number)
            if last <= self.hwm.get(delta.flush_range.shard_id, -1):
                continue
            self.hwm[delta.flush_range.shard_id] = last
            for key, stats in delta.edges.items():
                totals = self.edges.setdefault(tuple(key), [0, 0])
                totals[0] += stats.count
                totals[1] += stats.errors

    def write_summaries(self, summaries: Sequence[TraceSummary]) -> None:
        for summary in summaries:
            self.summaries[summary.tenant, summary.trace_id] = summary


class NoDeadLetters:
    def write(self, dead_letters: list) -> list[str]:  # type: ignore[type-arg]
        assert dead_letters == []
        return []


SOURCES = ("s-0", "s-1", "s-2")


def fragments(seed: int) -> tuple[list[SpanBatch], list]:  # type: ignore[type-arg]
    """Every trace of a generated stream cut into up to three fragments,
    as several stage-1 shards would forward them, neighbours interleaved."""
    traces = generate_traces(120, seed, now_unix_nanos=NOW_NANOS)
    batch = decoded_batch(0, seed)
    decoder = RecordDecoder(Settings())
    for index, (_, data) in enumerate(encode_records(traces, Form.OTLP_PROTO, seed)):
        decoder.decode(
            KinesisRecord(data, RecordRef("s", "p", str(index + 1))), batch, []
        )
    pieces = []
    rng = random.Random(seed)
    whole = SourceProgress("x", 0)
    for _, data in rekey_records(batch, whole, buckets=1):
        decoded = decode_rekeyed(KinesisRecord(data, RecordRef("x", "x", "0"))).batch
        by_trace: dict[str, list[int]] = {}
        for index, trace_id in enumerate(decoded.trace_id):
            by_trace.setdefault(trace_id, []).append(index)
        for indices in by_trace.values():
            cut = sorted(rng.sample(range(1, len(indices)), min(2, len(indices) - 1)))
            bounds = [0, *cut, len(indices)]
            for low, high in itertools.pairwise(bounds):
                pieces.append(decoded.take(indices[low:high]))
    ordered = [
        p for _, p in sorted(enumerate(pieces), key=lambda p: p[0] + rng.uniform(0, 6))
    ]
    return ordered, truths(traces)


def as_records(
    pieces: list[tuple[SpanBatch, SourceProgress]],
) -> list[KinesisRecord]:
    """The pieces as one trace-stream shard's records, in this order."""
    records = []
    for index, (piece, progress) in enumerate(pieces):
        ((key, data),) = rekey_records(piece, progress, buckets=1)
        ref = RecordRef("traces", "shard-0", str(1000 + index), 0, key, 0)
        records.append(KinesisRecord(data, ref))
    return records


def trace_stream(seed: int) -> tuple[list[KinesisRecord], list]:  # type: ignore[type-arg]
    """Fragments from three stage-1 shards advancing together, 250 ms apart."""
    pieces, spans = fragments(seed)
    return as_records(
        [
            (piece, SourceProgress(SOURCES[i % 3], 1_000_000 + i * 250, False, SOURCES))
            for i, piece in enumerate(pieces)
        ]
    ), spans


def run(
    records: list[KinesisRecord],
    store: HighWaterMarkStore,
    flush_every: int,
    crash_after_flush: int | None = None,
    start_after: str | None = None,
) -> str | None:
    """Process records from ``start_after`` in fixed flush groups; return the
    last checkpoint. Stops without flushing after ``crash_after_flush`` flushes."""
    settings = Settings(trace_idle_secs=3, trace_retention_secs=12)
    processor = TraceShardProcessor(
        settings,
        "traces",
        "shard-0",
        Sinks(None, NoDeadLetters(), store),  # type: ignore[arg-type]
    )
    checkpoint = start_after
    begin = (
        0
        if start_after is None
        else 1
        + next(i for i, r in enumerate(records) if r.ref.sequence_number == start_after)
    )
    flushes = 0
    # Flush boundaries are fixed positions in the stream, as the write-ahead
    # record of flush ranges makes them for a real runtime.
    for start in range(0, len(records), flush_every):
        group = [r for r in records[start : start + flush_every]]
        group = [r for r in group if records.index(r) >= begin]
        if not group:
            continue
        processor.process(group)
        result = processor.flush()
        flushes += 1
        if result.checkpoint_sequence_number is not None:
            checkpoint = result.checkpoint_sequence_number
        if crash_after_flush is not None and flushes == crash_after_flush:
            return checkpoint
    result = processor.flush(everything=True)
    return checkpoint


def assert_matches_reference(store: HighWaterMarkStore, spans: list) -> None:  # type: ignore[type-arg]
    want = expected(spans)
    assert {k: [v.count, v.errors] for k, v in want.edges.items()} == store.edges
    assert set(want.traces) == set(store.summaries)
    for key, trace in want.traces.items():
        got = store.summaries[key]
        assert (got.span_count, got.error_count, got.root_service, got.services) == (
            trace.span_count,
            trace.error_count,
            trace.root_service,
            trace.services,
        )


def test_trace_stage_output_equals_reference() -> None:
    records, spans = trace_stream(seed=21)
    store = HighWaterMarkStore()
    run(records, store, flush_every=40)
    assert_matches_reference(store, spans)


@pytest.mark.parametrize("crash_after", [1, 3, 7, 12])
def test_crash_and_replay_from_checkpoint_changes_nothing(crash_after: int) -> None:
    records, spans = trace_stream(seed=21)
    store = HighWaterMarkStore()
    checkpoint = run(records, store, flush_every=40, crash_after_flush=crash_after)
    # A new owner replays from the checkpoint with the same flush boundaries.
    run(records, store, flush_every=40, start_after=checkpoint)
    assert_matches_reference(store, spans)


def test_a_lagging_stage_1_shard_holds_traces_until_it_has_read_them() -> None:
    # GIVEN two stage-1 shards: one races ahead (its fragments first, its
    # watermark 30 s ahead), the other forwards the rest of every trace later
    pieces, spans = fragments(seed=22)
    ahead = [p for i, p in enumerate(pieces) if i % 2 == 0]
    behind = [p for i, p in enumerate(pieces) if i % 2 == 1]
    both = ("ahead", "behind")
    records = as_records(
        [
            (piece, SourceProgress("ahead", 1_000_000 + i * 250, False, both))
            for i, piece in enumerate(ahead)
        ]
        + [
            (piece, SourceProgress("behind", 1_000_000 + i * 250, False, both))
            for i, piece in enumerate(behind)
        ]
    )
    # WHEN the trace stage reads them, flushing as it goes
    store = HighWaterMarkStore()
    run(records, store, flush_every=40)
    # THEN no trace was summarised before its late fragments: every summary
    # and edge is exact
    assert_matches_reference(store, spans)


def test_a_stage_1_shard_never_heard_from_holds_the_clock() -> None:
    records, _ = trace_stream(seed=23)
    settings = Settings(trace_idle_secs=3, trace_retention_secs=12)
    store = HighWaterMarkStore()
    processor = TraceShardProcessor(
        settings,
        "traces",
        "shard-0",
        Sinks(None, NoDeadLetters(), store),  # type: ignore[arg-type]
    )
    # Every record names a fourth shard as expected, which never reports.
    silent = [
        KinesisRecord(
            rekey_records(
                (rekeyed := decode_rekeyed(r)).batch,
                SourceProgress(
                    rekeyed.progress.source,
                    rekeyed.progress.watermark_millis,
                    False,
                    (*SOURCES, "s-silent"),
                ),
                buckets=1,
            )[0][1],
            r.ref,
        )
        for r in records
    ]
    processor.process(silent)
    processor.flush()
    assert store.summaries == {}
