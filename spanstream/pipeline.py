"""The core pipeline as the runtimes drive it: one `ShardProcessor` per shard.

A runtime (local runner, KCL record processor, Lambda handler) hands a
shard's records to `ShardProcessor.process` in sequence order and calls
`ShardProcessor.flush` every flush interval, at shard end and at shutdown.
``flush`` makes every effect of the records processed so far durable, and
only once all of them are returns the sequence number that is safe to
checkpoint:

- the span archive objects and the dead letters (S3, deterministic keys);
- the shard's aggregate delta (DynamoDB, skipped item by item where the
  shard's high-water mark shows it was already applied).

The two are written at the same time (neither depends on the other), so a
flush lasts as long as the slower of them, not their sum.

Writing the same records again therefore changes nothing, provided the
flush covers the same range of records: see docs/architecture.md.

Trace-level work (summaries and service graph edges) needs every span of a
trace in one place, while randomly keyed records scatter a trace over all
shards. Spans are therefore routed by trace id to a `TraceStage` (in-process
for the local runner), which owns its own flushes.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from spanstream.aggregate.aggregator import ShardAggregator
from spanstream.aggregate.nativetraces import AnyTraceAssembler, make_trace_assembler
from spanstream.aggregate.types import AggregateDelta, FlushRange, TraceSummary
from spanstream.config import Settings
from spanstream.decode import DecodeStats, RecordDecoder
from spanstream.errors import RecordError
from spanstream.model import DeadLetter, KinesisRecord, SpanBatch
from spanstream.rekey import SourceProgress, decode_rekeyed
from spanstream.sinks.workers import WorkerPool

logger = logging.getLogger(__name__)

Clock = Callable[[], float]

#: The thread that writes a flush's S3 objects while the calling thread
#: writes its aggregates, shared by every flush of the process (a flush
#: submits one task; a pool of one would run it inline). One thread, not
#: one per shard: encoding the archive mostly holds the GIL, and measured
#: against the emulators, shards' objects written side by side made the
#: flush no shorter.
_OBJECT_WRITES = WorkerPool(2, "spanstream-flush-objects")


class ArchiveSink(Protocol):
    def write(self, batch: SpanBatch, flush_range: FlushRange) -> list[str]: ...


class DeadLetterSink(Protocol):
    def write(self, dead_letters: list[DeadLetter]) -> list[str]: ...


class AggregateSink(Protocol):
    def write(self, deltas: list[AggregateDelta]) -> object: ...

    def write_summaries(self, summaries: list[TraceSummary]) -> object: ...


class ForwardSink(Protocol):
    def write(
        self,
        batch: SpanBatch,
        source: str,
        watermark_millis: int,
        ended: bool = False,
    ) -> int: ...


@dataclass
class Sinks:
    """Where a pipeline's effects go; tests may pass in-memory fakes.

    ``forward``, when set, receives every decoded span at flush time for the
    trace stage of another process (`spanstream.rekey.KinesisForwarder`).
    """

    archive: ArchiveSink
    dead_letters: DeadLetterSink
    aggregates: AggregateSink
    forward: ForwardSink | None = None


class SpanRouter(Protocol):
    """Receives the spans of every shard, for the trace-level stage."""

    def add(self, batch: SpanBatch) -> None: ...


@dataclass
class FlushResult:
    """What one flush made durable.

    ``checkpoint_sequence_number`` is the last sequence number a runtime may
    checkpoint now (None: nothing new may be checkpointed).
    """

    flush_range: FlushRange | None
    spans: int = 0
    dead_letters: int = 0
    checkpoint_sequence_number: str | None = None


@dataclass
class _FlushUnit:
    """A sealed range of records and every effect computed from it.

    Once sealed, a unit never changes: if writing it fails, the same writes
    are retried, so a partial write is completed rather than duplicated.
    """

    flush_range: FlushRange
    batch: SpanBatch
    dead_letters: list[DeadLetter]
    delta: AggregateDelta
    #: the shard's watermark after these records (latest arrival time read)
    watermark_millis: int = 0


class ShardProcessor:
    """Decodes, aggregates and buffers one shard's records until `flush`."""

    def __init__(
        self,
        settings: Settings,
        stream: str,
        shard_id: str,
        sinks: Sinks,
        router: SpanRouter | None = None,
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.shard_id = shard_id
        self._sinks = sinks
        self._router = router
        self._decoder = RecordDecoder(settings)
        self._sealed: _FlushUnit | None = None
        self._watermark_millis = 0
        self._reset()

    def _reset(self) -> None:
        self._aggregator = ShardAggregator(self.settings)
        self._pending = SpanBatch()
        self._dead_letters: list[DeadLetter] = []
        self._first_sequence_number: str | None = None
        self._last_sequence_number: str | None = None

    @property
    def decode_stats(self) -> DecodeStats:
        return self._decoder.stats

    @property
    def has_pending(self) -> bool:
        """True when records were processed since the last successful flush."""
        return self._last_sequence_number is not None or self._sealed is not None

    def process(self, records: list[KinesisRecord]) -> int:
        """Decode and aggregate ``records`` (in sequence order); return span count.

        Writes nothing; effects are buffered until `flush`. Poison records are
        set aside as dead letters and never stop the batch.
        """
        if not records:
            return 0
        batch = SpanBatch()
        for record in records:
            self._decoder.decode(record, batch, self._dead_letters)
        if self._first_sequence_number is None:
            self._first_sequence_number = records[0].ref.sequence_number
        self._last_sequence_number = records[-1].ref.sequence_number
        self._watermark_millis = max(
            self._watermark_millis, *(r.ref.arrival_unix_millis for r in records)
        )
        if batch:
            self._aggregator.add(batch)
            self._pending.extend(batch)
            if self._router is not None:
                self._router.add(batch)
        return len(batch)

    def flush(self, final: bool = False) -> FlushResult:
        """Make every buffered effect durable; return what may be checkpointed.

        ``final``: the shard has been read to its end (the trace stage then
        stops waiting for it, see `spanstream.rekey`). Raises
        `spanstream.errors.SinkError` if a write did not become durable. The
        failed range stays sealed and the next `flush` retries exactly the
        same writes before it seals anything newer.
        """
        result = FlushResult(None)
        while self.has_pending:
            result = flush_together([self], self._sinks)[self.shard_id]
        if final and self._sinks.forward is not None:
            self._sinks.forward.write(
                SpanBatch(), self.shard_id, self._watermark_millis, ended=True
            )
        return result

    def heartbeat(self, now_unix_millis: int) -> None:
        """Tell the trace stage this idle, caught-up shard has read up to now.

        Only with a forward sink and nothing buffered; raises `SinkError` if
        the progress records could not be put.
        """
        if self._sinks.forward is None or self.has_pending:
            return
        self._watermark_millis = max(self._watermark_millis, now_unix_millis)
        self._sinks.forward.write(SpanBatch(), self.shard_id, self._watermark_millis)

    def next_flush_unit(self) -> _FlushUnit | None:
        """Return the unit the next flush must write (None: nothing to write).

        That is the unit sealed earlier whose write failed, if any (it is
        written again unchanged); else everything processed since the last
        flush, sealed now.
        """
        if self._sealed is None and self._last_sequence_number is not None:
            self._sealed = self._seal()
        return self._sealed

    def flushed(self, unit: _FlushUnit) -> FlushResult:
        """Record that every effect of ``unit`` is durable; return its result."""
        if unit is self._sealed:
            self._sealed = None
        return FlushResult(
            unit.flush_range,
            spans=len(unit.batch),
            dead_letters=len(unit.dead_letters),
            checkpoint_sequence_number=unit.flush_range.last_sequence_number,
        )

    def _seal(self) -> _FlushUnit:
        assert self._first_sequence_number is not None
        assert self._last_sequence_number is not None
        flush_range = FlushRange(
            self.stream,
            self.shard_id,
            self._first_sequence_number,
            self._last_sequence_number,
        )
        unit = _FlushUnit(
            flush_range,
            self._pending,
            self._dead_letters,
            self._aggregator.drain(flush_range),
            self._watermark_millis,
        )
        self._reset()
        return unit

    def discard(self) -> None:
        """Drop everything buffered without writing (the lease was lost)."""
        self._sealed = None
        self._reset()


def flush_together(
    processors: list[ShardProcessor], sinks: Sinks
) -> dict[str, FlushResult]:
    """Flush several shards' processors with one aggregate write.

    Archive objects and dead letters are written per shard range, on another
    thread while the aggregates are written. The aggregate deltas of all
    shards go to the aggregate sink in one call, which merges deltas of the
    same series into one DynamoDB write. With N shards that is up to N times
    fewer writes than flushing each shard alone, which is what keeps the
    DynamoDB bill per span low.

    With a forward sink, each unit's spans go to the trace stream with its
    shard's progress (on the objects' thread). Returns each flushed
    processor's `FlushResult` by shard id. Raises
    `spanstream.errors.SinkError` when a write did not become durable; every
    unit then stays sealed in its processor and is written again, unchanged,
    by the next flush.
    """
    units = [
        (processor, unit)
        for processor in processors
        if (unit := processor.next_flush_unit()) is not None
    ]

    def write_objects() -> None:
        for _, unit in units:
            if unit.batch:
                sinks.archive.write(unit.batch, unit.flush_range)
            if sinks.forward is not None:
                sinks.forward.write(
                    unit.batch, unit.flush_range.shard_id, unit.watermark_millis
                )
            if unit.dead_letters:
                sinks.dead_letters.write(unit.dead_letters)

    deltas = [unit.delta for _, unit in units if not unit.delta.is_empty()]
    if deltas:
        # Objects on the pool's thread, aggregates here: leaving the block
        # waits for both, and a failure of either leaves every unit sealed.
        with _OBJECT_WRITES.tasks(2) as tasks:
            objects = tasks.submit(write_objects)
            sinks.aggregates.write(deltas)
        objects.result()
    else:
        write_objects()
    results = {}
    for processor, unit in units:
        results[processor.shard_id] = processor.flushed(unit)
        logger.debug(
            "flushed %s: %d spans, %d dead letters",
            unit.flush_range.object_stem(),
            len(unit.batch),
            len(unit.dead_letters),
        )
    return results


class TraceStage:
    """Assembles traces from all shards and writes summaries and graph edges.

    ``stage_id`` names this stage's writes: its edge deltas carry a
    `FlushRange` of shard ``stage_id`` whose sequence number is a strictly
    growing wall-clock count of nanoseconds, so a retried write of the same
    delta is applied once and a restarted stage never reuses a number.
    """

    def __init__(
        self,
        settings: Settings,
        aggregates: AggregateSink,
        stage_id: str,
        clock: Clock = time.monotonic,
    ) -> None:
        self.settings = settings
        self._aggregates = aggregates
        self._stage_id = stage_id
        self._assembler = make_trace_assembler(settings, clock)
        self._flush_counter = 0
        self._unwritten: tuple[AggregateDelta | None, list[TraceSummary]] | None = None
        self.summaries_written = 0

    def add(self, batch: SpanBatch) -> None:
        self._assembler.add(batch)

    @property
    def assembler(self) -> AnyTraceAssembler:
        return self._assembler

    def flush(self, everything: bool = False) -> int:
        """Write summaries and edges of idle traces (all traces if ``everything``).

        Returns the number of summaries written. If a write fails, what was
        taken from the assembler is kept and written first by the next call.
        """
        if self._unwritten is None:
            output = (
                self._assembler.flush_all() if everything else self._assembler.poll()
            )
            delta = None
            if output.edges:
                # Wall-clock nanoseconds keep growing across restarts, so the
                # sinks' per-shard high-water mark never mistakes a new delta
                # of this stage for one it has already applied.
                self._flush_counter = max(self._flush_counter + 1, time.time_ns())
                sequence = str(self._flush_counter)
                delta = AggregateDelta(
                    FlushRange(
                        self.settings.stream_name, self._stage_id, sequence, sequence
                    ),
                    edges=output.edges,
                )
            self._unwritten = (delta, output.summaries)
        delta, summaries = self._unwritten
        if delta is not None:
            self._aggregates.write([delta])
            self._unwritten = (None, summaries)
        if summaries:
            self._aggregates.write_summaries(summaries)
        self._unwritten = None
        self.summaries_written += len(summaries)
        return len(summaries)


class TraceShardProcessor:
    """Stage 2: assembles the traces of one shard of the trace stream.

    The trace stream is keyed by trace id, so every span of a trace is on one
    shard and this processor sees the whole trace. Its clock is the smallest
    watermark of the stage-1 shards that have not ended, as their records
    report it (`spanstream.rekey.SourceProgress`); a stage-1 shard expected
    but not heard from yet holds the clock at zero. A trace therefore goes
    idle only once every stage-1 shard has read past its spans plus
    ``trace_idle_secs``, and since the clock comes from the records alone,
    replaying the same records makes the same traces idle at the same
    points, so the same summaries and edges come out.

    ``flush`` writes the summaries and edges of the traces that went idle and
    returns, as ``checkpoint_sequence_number``, the last record before the
    first record of any trace still held (pending or retained for late
    spans): after a crash the next owner replays from there and rebuilds every
    such trace whole. Edge deltas carry the flush's `FlushRange`, so a replayed
    flush of the same range is skipped by the sinks' high-water marks;
    summaries are full-state puts, which a replay rewrites unchanged.
    """

    def __init__(
        self, settings: Settings, stream: str, shard_id: str, sinks: Sinks
    ) -> None:
        self.settings = settings
        self.stream = stream
        self.shard_id = shard_id
        self._sinks = sinks
        self._reset()

    def _reset(self) -> None:
        # The clock: the slowest unfinished stage-1 shard's watermark.
        self._watermark_secs = 0.0
        # The fastest one's: a trace's spans arrive no later than that, so it
        # is when a trace was last seen.
        self._front_secs = 0.0
        self._assembler_now_secs = 0.0
        self._source_millis: dict[str, int] = {}
        self._expected_sources: set[str] = set()
        self._ended_sources: set[str] = set()
        self._assembler = make_trace_assembler(
            self.settings, lambda: self._assembler_now_secs
        )
        # (tenant, trace id) -> sequence number (int) of its first record,
        # ordered by last arrival like the assembler's own retention.
        self._first_sequence: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._last_sequence: dict[tuple[str, str], int] = {}
        self._last_arrival: dict[tuple[str, str], float] = {}
        # (first, last) record of traces forgotten since, until a checkpoint
        # has passed their last record (see `_safe_checkpoint`).
        self._forgotten: list[tuple[int, int]] = []
        self._processed: deque[str] = deque()
        self._dead_letters: list[DeadLetter] = []
        self._first_sequence_number: str | None = None
        self._last_sequence_number: str | None = None
        self._unwritten: tuple[AggregateDelta | None, list[TraceSummary]] | None = None
        self._processed_any = False
        self.spans = 0

    @property
    def has_pending(self) -> bool:
        """True when records were read since the last flush, or a write failed."""
        return self._first_sequence_number is not None or self._unwritten is not None

    @property
    def assembler(self) -> AnyTraceAssembler:
        return self._assembler

    def process(self, records: list[KinesisRecord]) -> int:
        """Add the spans of rekeyed ``records``; return how many. Writes nothing."""
        added = 0
        for record in records:
            ref = record.ref
            batch = None
            try:
                rekeyed = decode_rekeyed(record)
            except RecordError as exc:
                logger.warning("dead-lettering %s", exc)
                self._dead_letters.append(
                    DeadLetter(ref, record.data, exc.reason, "decode")
                )
            else:
                batch = rekeyed.batch
                self._advance(rekeyed.progress)
            if batch:
                self._assembler_now_secs = self._front_secs
                self._assembler.add(batch)
                sequence = int(ref.sequence_number)
                for key in set(zip(batch.tenant, batch.trace_id, strict=True)):
                    self._first_sequence.setdefault(key, sequence)
                    self._first_sequence.move_to_end(key)
                    self._last_sequence[key] = sequence
                    self._last_arrival[key] = self._front_secs
                added += len(batch)
            self._processed.append(ref.sequence_number)
            if self._first_sequence_number is None:
                self._first_sequence_number = ref.sequence_number
            self._last_sequence_number = ref.sequence_number
            self._processed_any = True
        self.spans += added
        return added

    def _advance(self, progress: SourceProgress) -> None:
        """Move the clock by what a stage-1 shard says of its progress."""
        source = progress.source
        self._source_millis[source] = max(
            self._source_millis.get(source, 0), progress.watermark_millis
        )
        self._expected_sources.update(progress.expected)
        if progress.ended:
            self._ended_sources.add(source)
        waiting = (self._expected_sources | set(self._source_millis)) - (
            self._ended_sources
        )
        front_millis = max(self._source_millis.values())
        if waiting:
            clock_millis = min(self._source_millis.get(s, 0) for s in waiting)
        else:
            clock_millis = front_millis
        self._watermark_secs = max(self._watermark_secs, clock_millis / 1000)
        self._front_secs = max(self._front_secs, front_millis / 1000)

    def idle(self, now_secs: float) -> None:
        """Nothing to do: the clock moves only with what stage 1 reports."""

    def flush(
        self, everything: bool = False, clock_secs: float | None = None
    ) -> FlushResult:
        """Write what idle traces produced; return the safe checkpoint.

        ``everything`` summarises every trace, idle or not (at shard end,
        where the checkpoint must reach the end). ``clock_secs`` is ignored:
        the clock is stage 1's progress. Raises `SinkError` if a write
        failed; the same output is written first by the next flush.
        """
        self._assembler_now_secs = self._watermark_secs
        flush_range = None
        if self._unwritten is None:
            flush_range = self._next_flush_range(everything)
        if flush_range is not None:
            output = (
                self._assembler.flush_all() if everything else self._assembler.poll()
            )
            delta = (
                AggregateDelta(flush_range, edges=output.edges)
                if output.edges
                else None
            )
            self._unwritten = (delta, output.summaries)
            self._first_sequence_number = None
        if self._unwritten is not None:
            delta, summaries = self._unwritten
            if self._dead_letters:
                self._sinks.dead_letters.write(self._dead_letters)
                self._dead_letters = []
            if delta is not None:
                self._sinks.aggregates.write([delta])
                self._unwritten = (None, summaries)
            if summaries:
                self._sinks.aggregates.write_summaries(summaries)
            self._unwritten = None
        self._forget()
        return FlushResult(
            flush_range,
            spans=self.spans,
            checkpoint_sequence_number=self._safe_checkpoint(),
        )

    def _next_flush_range(self, everything: bool) -> FlushRange | None:
        """Return the range the next output is written under (None: nothing new).

        A final flush at shard end may find no new records; its output then
        goes under the shard id suffixed ``/end`` and the last sequence number,
        a range no other flush uses and a replay reproduces.
        """
        if self._first_sequence_number is not None:
            assert self._last_sequence_number is not None
            return FlushRange(
                self.stream,
                self.shard_id,
                self._first_sequence_number,
                self._last_sequence_number,
            )
        if everything and self._assembler.pending_trace_count and self._processed_any:
            last = self._last_sequence_number
            assert last is not None
            return FlushRange(self.stream, f"{self.shard_id}/end", last, last)
        return None

    def _forget(self) -> None:
        """Stop tracking traces the assembler no longer holds (same rule)."""
        retention = self.settings.trace_retention_secs
        while self._first_sequence:
            key = next(iter(self._first_sequence))
            if self._watermark_secs - self._last_arrival[key] < retention:
                break
            first = self._first_sequence.pop(key)
            self._forgotten.append((first, self._last_sequence.pop(key)))
            del self._last_arrival[key]

    def _safe_checkpoint(self) -> str | None:
        """Return the last processed record a replay may safely start after.

        A replay must rebuild every trace it touches whole. So the checkpoint
        stays before the first record of every trace still held (pending or
        retained), and never falls inside a forgotten trace's records: a
        replay from there would see only the trace's later fragments and put
        a partial summary over the whole one.
        """
        oldest_needed = min(self._first_sequence.values(), default=None)
        self._forgotten.sort()
        forgotten = self._forgotten
        checkpoint = None
        reach = -1  # the furthest last record of forgotten traces begun so far
        index = 0
        processed = self._processed
        while processed and (
            oldest_needed is None or int(processed[0]) < oldest_needed
        ):
            sequence = int(processed[0])
            while index < len(forgotten) and forgotten[index][0] <= sequence:
                reach = max(reach, forgotten[index][1])
                index += 1
            candidate = processed.popleft()
            if reach <= sequence:
                checkpoint = candidate
        if checkpoint is not None:
            passed = int(checkpoint)
            self._forgotten = [span for span in forgotten if span[1] > passed]
        return checkpoint

    def discard(self) -> None:
        """Drop everything held without writing (the lease was lost)."""
        self._reset()
