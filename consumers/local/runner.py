"""The local runtime: one process reading every shard of a stream.

One reader per shard polls GetRecords and feeds a `ShardProcessor`; all
shards route their spans into one in-process `TraceStage`, so trace-level
aggregates are right even when records are keyed randomly. Every
``flush_interval_secs`` each processor flushes and the trace stage writes the
traces that went idle.

Resharding: a shard is read only after its parents have been read to their
end and flushed, so a child's spans come after its parents'. Children are
found from the ``ChildShards`` of the parent's last GetRecords response and
from ListShards.

Kinesis reads are retried under a `RetryPolicy` on top of botocore's own
retries, as the sinks' writes are: botocore's retry quota runs dry under a
sustained error rate, and then it hands back the first error of a call. A
read or write that still fails past the policy's deadline ends `run` with a
`SinkError` (after one more flush of what was read).

Checkpoints are kept in memory: the local runner starts from the oldest
record (or the newest, with ``start_at_latest``) each time it starts. It is
for development, demos and tests; the KCL worker is the runtime that survives
restarts.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from consumers.getrecords import to_kinesis_record
from spanstream.config import Settings
from spanstream.pipeline import ShardProcessor, Sinks, TraceStage, flush_together
from spanstream.sinks.retry import RetryPolicy

logger = logging.getLogger(__name__)

Clock = Callable[[], float]
#: Small pages keep the shards' read positions (and so their event time) close
#: together, which the trace stage's clock depends on.
GET_RECORDS_LIMIT = 1_000


@dataclass
class ShardReader:
    """Where one shard is being read from, and what has been read."""

    shard_id: str
    parent_ids: tuple[str, ...]
    processor: ShardProcessor
    iterator: str | None = None
    ended: bool = False
    records_read: int = 0
    last_sequence_number: str | None = None
    millis_behind_latest: int = 0
    #: The last GetRecords page was empty at the tip: nothing left to read.
    #: A page *with* records proves less, even at MillisBehindLatest 0: that
    #: is a time, and records put in the same millisecond as the tip's may
    #: still follow it.
    caught_up: bool = False
    #: Latest record arrival time read from this shard (unix seconds).
    arrival_watermark_secs: float = 0.0


@dataclass
class RunnerStats:
    records: int = 0
    spans: int = 0
    flushes: int = 0
    get_records_calls: int = 0
    shards_ended: list[str] = field(default_factory=list)


class LocalRunner:
    """Reads all shards of ``settings.stream_name`` and drives the core.

    ``get_records_limit`` is the most records one GetRecords call returns;
    ``retry`` the policy of the Kinesis reads.
    """

    def __init__(
        self,
        settings: Settings,
        kinesis: Any,
        sinks: Sinks,
        clock: Clock = time.monotonic,
        start_at_latest: bool = False,
        poll_interval_secs: float = 0.2,
        get_records_limit: int = GET_RECORDS_LIMIT,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        self._kinesis = kinesis
        self._get_records_limit = get_records_limit
        self._retry = retry or RetryPolicy()
        self._sinks = sinks
        self._clock = clock
        self._start_at_latest = start_at_latest
        self._poll_interval_secs = poll_interval_secs
        self._wall_clock = time.time
        self.trace_stage = TraceStage(
            settings,
            sinks.aggregates,
            stage_id="trace-stage-local",
            clock=self.event_time_secs,
        )
        self.readers: dict[str, ShardReader] = {}
        self._finished: set[str] = set()
        self.stats = RunnerStats()
        self._last_flush = clock()

    # -- shard discovery -------------------------------------------------
    def discover_shards(self) -> None:
        """Add a reader for every shard not yet known (ListShards)."""
        kwargs: dict[str, Any] = {"StreamName": self.settings.stream_name}
        while True:
            response = self._retry.call(
                partial(self._kinesis.list_shards, **kwargs),
                f"ListShards of {self.settings.stream_name}",
            )
            for shard in response["Shards"]:
                self._add_shard(shard)
            token = response.get("NextToken")
            if not token:
                break
            kwargs = {"NextToken": token}

    def _add_shard(self, shard: dict[str, Any]) -> None:
        shard_id = shard["ShardId"]
        if shard_id in self.readers:
            return
        parents = tuple(
            parent
            for parent in (
                shard.get("ParentShardId"),
                shard.get("AdjacentParentShardId"),
            )
            if parent
        )
        processor = ShardProcessor(
            self.settings,
            self.settings.stream_name,
            shard_id,
            self._sinks,
            router=self.trace_stage,
        )
        self.readers[shard_id] = ShardReader(shard_id, parents, processor)
        logger.info("found shard %s (parents %s)", shard_id, parents or "none")

    def _is_ready(self, reader: ShardReader) -> bool:
        return all(
            parent in self._finished or parent not in self.readers
            for parent in reader.parent_ids
        )

    def event_time_secs(self) -> float:
        """Return how far every shard has been read, as an arrival time.

        The trace stage judges a trace idle by this clock: a trace is idle
        only once every shard has been read past its last span's arrival plus
        the idle time, however unevenly the shards progress. A shard that is
        caught up (its last page was empty at the tip) or ended does not hold
        the clock back: it counts as now. Nor does a shard that has returned
        no record yet: it has no arrival time to hold the clock at, and
        holding it at zero would make every trace stamped meanwhile look
        idle for decades once the clock moved on.
        """
        now = self._wall_clock()
        behind = [
            reader.arrival_watermark_secs
            for reader in self.readers.values()
            if not reader.ended
            and self._is_ready(reader)
            and reader.arrival_watermark_secs > 0
            and not reader.caught_up
        ]
        return min(behind, default=now)

    def _iterator_for(self, reader: ShardReader) -> str:
        kwargs: dict[str, Any] = {
            "StreamName": self.settings.stream_name,
            "ShardId": reader.shard_id,
        }
        if reader.last_sequence_number is not None:
            kwargs["ShardIteratorType"] = "AFTER_SEQUENCE_NUMBER"
            kwargs["StartingSequenceNumber"] = reader.last_sequence_number
        elif self._start_at_latest and not reader.parent_ids:
            kwargs["ShardIteratorType"] = "LATEST"
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        response = self._retry.call(
            partial(self._kinesis.get_shard_iterator, **kwargs),
            f"GetShardIterator of {self.settings.stream_name}/{reader.shard_id}",
        )
        return str(response["ShardIterator"])

    # -- reading ---------------------------------------------------------
    def poll_once(self) -> int:
        """Read one GetRecords page from every readable shard; return records read."""
        read = 0
        for reader in list(self.readers.values()):
            if reader.ended or not self._is_ready(reader):
                continue
            read += self._read(reader)
        if self._clock() - self._last_flush >= self.settings.flush_interval_secs:
            self.flush()
        return read

    def _read(self, reader: ShardReader) -> int:
        if reader.iterator is None:
            reader.iterator = self._iterator_for(reader)
        response = self._retry.call(
            partial(
                self._kinesis.get_records,
                ShardIterator=reader.iterator,
                Limit=self._get_records_limit,
            ),
            f"GetRecords of {self.settings.stream_name}/{reader.shard_id}",
        )
        self.stats.get_records_calls += 1
        records = [
            to_kinesis_record(self.settings.stream_name, reader.shard_id, record)
            for record in response["Records"]
        ]
        # Before processing: the trace stage stamps these spans' traces with
        # the clock, which must already count this page.
        reader.millis_behind_latest = response.get("MillisBehindLatest", 0)
        reader.caught_up = not records and reader.millis_behind_latest == 0
        if records:
            reader.arrival_watermark_secs = max(
                reader.arrival_watermark_secs,
                records[-1].ref.arrival_unix_millis / 1000,
            )
            self.stats.spans += reader.processor.process(records)
            self.stats.records += len(records)
            reader.records_read += len(records)
            reader.last_sequence_number = records[-1].ref.sequence_number
        reader.iterator = response.get("NextShardIterator")
        if reader.iterator is None:
            self._end_shard(reader, response.get("ChildShards") or [])
        return len(records)

    def _end_shard(
        self, reader: ShardReader, child_shards: list[dict[str, Any]]
    ) -> None:
        """Flush a shard that was read to its end, then let its children start."""
        reader.processor.flush()
        reader.ended = True
        self._finished.add(reader.shard_id)
        self.stats.shards_ended.append(reader.shard_id)
        logger.info(
            "shard %s ended after %d records", reader.shard_id, reader.records_read
        )
        for child in child_shards:
            parents = child.get("ParentShards") or []
            self._add_shard(
                {
                    "ShardId": child["ShardId"],
                    "ParentShardId": parents[0] if parents else None,
                    "AdjacentParentShardId": parents[1] if len(parents) > 1 else None,
                }
            )
        if not child_shards:
            self.discover_shards()

    def flush(self, everything: bool = False) -> None:
        """Flush every shard processor, then the trace stage.

        ``everything`` also summarises traces that are not idle yet (used at
        shutdown).
        """
        started = self._clock()
        self.flush_shards()
        self.trace_stage.flush(everything=everything)
        self.stats.flushes += 1
        # A cadence from the flushes' starts: timed from the end, each flush's
        # own duration would add to the interval, and so to the lag.
        self._last_flush = started

    def flush_shards(self) -> None:
        """Make every shard's spans durable: archive, dead letters and the
        aggregates their windows count (one aggregate write for all shards)."""
        processors = [
            r.processor for r in self.readers.values() if r.processor.has_pending
        ]
        while processors:
            flush_together(processors, self._sinks)
            processors = [p for p in processors if p.has_pending]

    def run(
        self,
        should_stop: Callable[[RunnerStats], bool],
        deadline_secs: float,
        rediscover_every_secs: float = 5.0,
    ) -> RunnerStats:
        """Poll until ``should_stop(stats)`` is true, then flush everything.

        Raises TimeoutError if ``deadline_secs`` pass first, and
        `spanstream.errors.SinkError` if a Kinesis read or a write still
        fails after its retries; either after flushing what was read once
        more, so that nothing read is left unwritten if the sinks allow.
        """
        start = time.monotonic()
        self.discover_shards()
        last_discovery = start
        try:
            while not should_stop(self.stats):
                now = time.monotonic()
                if now - start > deadline_secs:
                    raise TimeoutError(
                        f"local runner still running after {deadline_secs} s: "
                        f"read {self.stats.records} records, {self.stats.spans} spans"
                    )
                if now - last_discovery > rediscover_every_secs:
                    self.discover_shards()
                    last_discovery = now
                if self.poll_once() == 0:
                    time.sleep(self._poll_interval_secs)
        finally:
            self.flush(everything=True)
        return self.stats
