"""ShardProcessor and flush_together with in-memory sinks.

The real sinks are tested against moto and the emulators; here the fakes
record what would have been written, so the flush protocol itself (ranges,
sealing, retries after a failed write) can be checked exactly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import pytest
from otlpfactory import make_request, make_span

from spanstream.aggregate.types import AggregateDelta, FlushRange, TraceSummary
from spanstream.config import Settings
from spanstream.errors import SinkError
from spanstream.model import DeadLetter, KinesisRecord, RecordRef, SpanBatch
from spanstream.pipeline import ShardProcessor, Sinks, TraceStage, flush_together


class _Archive:
    def __init__(self, owner: Recorder) -> None:
        self.owner = owner

    def write(self, batch: SpanBatch, flush_range: FlushRange) -> list[str]:
        self.owner.archived.append((flush_range, len(batch)))
        return [flush_range.object_stem()]


class _DeadLetters:
    def __init__(self, owner: Recorder) -> None:
        self.owner = owner

    def write(self, dead_letters: list[DeadLetter]) -> list[str]:
        self.owner.dead_letters.extend(dead_letters)
        return []


class _Aggregates:
    def __init__(self, owner: Recorder) -> None:
        self.owner = owner

    def write(self, deltas: list[AggregateDelta]) -> None:
        if self.owner.fail_next:
            self.owner.fail_next -= 1
            raise SinkError("injected failure")
        self.owner.aggregate_writes.append(list(deltas))

    def write_summaries(self, summaries: list[TraceSummary]) -> None:
        self.owner.summaries.extend(summaries)


@dataclass
class Recorder:
    archived: list[tuple[FlushRange, int]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    aggregate_writes: list[list[AggregateDelta]] = field(default_factory=list)
    summaries: list[TraceSummary] = field(default_factory=list)
    fail_next: int = 0

    def sinks(self) -> Sinks:
        return Sinks(
            archive=_Archive(self),
            dead_letters=_DeadLetters(self),
            aggregates=_Aggregates(self),
        )


def record(
    shard: str, sequence: int, span_count: int = 2, data: bytes | None = None
) -> KinesisRecord:
    if data is None:
        spans = [
            make_span(span_id=(sequence * 100 + i + 1).to_bytes(8, "big"))
            for i in range(span_count)
        ]
        data = make_request(spans).SerializeToString()
    return KinesisRecord(data, RecordRef("spans", shard, str(sequence), 0, "pk", 0))


def total_count(deltas: list[AggregateDelta]) -> int:
    return sum(stats.count for delta in deltas for stats in delta.metrics.values())


def test_flush_covers_exactly_the_processed_range() -> None:
    recorder = Recorder()
    processor = ShardProcessor(Settings(), "spans", "shard-0", recorder.sinks())
    processor.process([record("shard-0", 10), record("shard-0", 11)])
    processor.process([record("shard-0", 12, data=b"\x00poison")])
    result = processor.flush()
    assert result.checkpoint_sequence_number == "12"
    assert recorder.archived == [(FlushRange("spans", "shard-0", "10", "12"), 4)]
    assert [d.ref.sequence_number for d in recorder.dead_letters] == ["12"]
    assert total_count(recorder.aggregate_writes[0]) == 4
    assert not processor.has_pending
    assert processor.flush().checkpoint_sequence_number is None


def test_failed_flush_is_retried_with_the_same_range_before_newer_records() -> None:
    recorder = Recorder(fail_next=1)
    processor = ShardProcessor(Settings(), "spans", "shard-0", recorder.sinks())
    processor.process([record("shard-0", 1)])
    with pytest.raises(SinkError):
        processor.flush()
    assert processor.has_pending
    processor.process([record("shard-0", 2)])
    result = processor.flush()
    ranges = [flush_range for flush_range, _ in recorder.archived]
    # The first range is written twice (same key: replaced, not added), then
    # the newer record in a range of its own.
    assert ranges == [
        FlushRange("spans", "shard-0", "1", "1"),
        FlushRange("spans", "shard-0", "1", "1"),
        FlushRange("spans", "shard-0", "2", "2"),
    ]
    assert [
        w[0].flush_range.last_sequence_number for w in recorder.aggregate_writes
    ] == ["1", "2"]
    assert result.checkpoint_sequence_number == "2"


def test_flush_together_writes_all_shards_deltas_in_one_call() -> None:
    recorder = Recorder()
    sinks = recorder.sinks()
    processors = [
        ShardProcessor(Settings(), "spans", f"shard-{i}", sinks) for i in range(3)
    ]
    for index, processor in enumerate(processors):
        processor.process(
            [record(processor.shard_id, 100 + index, span_count=index + 1)]
        )
    results = flush_together(processors, sinks)
    assert len(recorder.aggregate_writes) == 1
    assert {d.flush_range.shard_id for d in recorder.aggregate_writes[0]} == {
        "shard-0",
        "shard-1",
        "shard-2",
    }
    assert total_count(recorder.aggregate_writes[0]) == 6
    assert {k: r.checkpoint_sequence_number for k, r in results.items()} == {
        "shard-0": "100",
        "shard-1": "101",
        "shard-2": "102",
    }


class _OverlapArchive:
    """Writes only once the aggregate write has started (or fails)."""

    def __init__(self, aggregate_started: threading.Event, fail: bool) -> None:
        self.aggregate_started = aggregate_started
        self.fail = fail
        self.overlapped: list[bool] = []

    def write(self, batch: SpanBatch, flush_range: FlushRange) -> list[str]:
        self.overlapped.append(self.aggregate_started.wait(timeout=10))
        if self.fail:
            self.fail = False
            raise SinkError("injected archive failure")
        return [flush_range.object_stem()]


class _SignallingAggregates(_Aggregates):
    def __init__(self, owner: Recorder, started: threading.Event) -> None:
        super().__init__(owner)
        self.started = started

    def write(self, deltas: list[AggregateDelta]) -> None:
        self.started.set()
        super().write(deltas)


@pytest.mark.parametrize("archive_fails", [False, True])
def test_objects_and_aggregates_are_written_at_the_same_time(
    archive_fails: bool,
) -> None:
    # The archive write waits for the aggregate write to begin: written one
    # after the other, it would time out and record False.
    recorder = Recorder()
    started = threading.Event()
    archive = _OverlapArchive(started, fail=archive_fails)
    sinks = Sinks(
        archive, _DeadLetters(recorder), _SignallingAggregates(recorder, started)
    )
    processor = ShardProcessor(Settings(), "spans", "shard-0", sinks)
    processor.process([record("shard-0", 7)])
    if archive_fails:
        with pytest.raises(SinkError, match="injected archive failure"):
            flush_together([processor], sinks)
        # The aggregates were written, the unit stays sealed: the next flush
        # writes both again (the sinks skip what they already hold).
        assert processor.has_pending
        assert len(recorder.aggregate_writes) == 1
    results = flush_together([processor], sinks)
    assert results["shard-0"].checkpoint_sequence_number == "7"
    assert archive.overlapped == [True] * (2 if archive_fails else 1)
    assert not processor.has_pending


def test_discard_drops_unflushed_state() -> None:
    recorder = Recorder()
    processor = ShardProcessor(Settings(), "spans", "shard-0", recorder.sinks())
    processor.process([record("shard-0", 1)])
    processor.discard()
    assert processor.flush().checkpoint_sequence_number is None
    assert recorder.archived == []
    assert recorder.aggregate_writes == []


def test_trace_stage_retries_unwritten_output_and_sequences_grow() -> None:
    now = [0.0]
    recorder = Recorder()
    settings = Settings(trace_idle_secs=5, trace_retention_secs=10)
    stage = TraceStage(
        settings, recorder.sinks().aggregates, "stage", clock=lambda: now[0]
    )
    client = make_span(
        name="call", kind=3, span_id=b"\x01" * 8, attributes={"db.system": "redis"}
    )
    processor = ShardProcessor(
        settings, "spans", "shard-0", recorder.sinks(), router=stage
    )
    processor.process(
        [
            KinesisRecord(
                make_request([client]).SerializeToString(),
                RecordRef("spans", "shard-0", "1"),
            )
        ]
    )
    assert stage.flush() == 0  # not idle yet
    now[0] = 6.0
    recorder.fail_next = 1
    with pytest.raises(SinkError):
        stage.flush()
    assert stage.flush() == 1
    assert len(recorder.summaries) == 1
    edge_writes = [w for w in recorder.aggregate_writes if w[0].edges]
    assert len(edge_writes) == 1
    assert int(edge_writes[0][0].flush_range.last_sequence_number) > 1_000_000_000
