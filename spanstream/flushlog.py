"""Exactly-once flushes per shard: a write-ahead record of the range being flushed.

The sinks are idempotent for a given `FlushRange`: archive keys come from the
range, dead-letter keys from record positions, and the aggregate writer skips
a delta whose range is at or below the item's per-shard high-water mark. What
a crash can break is the *boundaries*: a new lease owner replays from the last
checkpoint and, left alone, would cut the records into different ranges, and
a range that overlaps one already written is written twice.

So before a flush writes anything, its range is recorded in the ``shard-state``
table (`ShardFlushLog.begin`); after the checkpoint it is cleared
(`ShardFlushLog.commit`). A new owner first claims the record
(`ShardFlushLog.claim`); if a range is pending beyond its checkpoint, it
processes records up to exactly that range's last record and flushes them as
one range before anything else: the same writes, skipped where applied.
`ExactlyOnceShard` drives that protocol for one shard, independent of the
runtime; docs/kcl.md has the timeline of a crash at each step.

Every claim increments the record's ``epoch``, and `begin`/`commit` are
conditional on the claimer's epoch, so a stalled former owner (a zombie that
has not noticed its lease is gone) can no longer start a flush once the new
owner has claimed the shard.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from botocore.exceptions import ClientError

from spanstream.config import Settings
from spanstream.errors import SpanstreamError
from spanstream.model import KinesisRecord, sequence_key
from spanstream.sinks.keys import join_key
from spanstream.sinks.retry import RetryPolicy, error_code

logger = logging.getLogger(__name__)

TABLE = "shard-state"
_CONDITION_FAILED = "ConditionalCheckFailedException"

#: Checkpoint values the KCL reports instead of a sequence number.
BEFORE_FIRST_RECORD = frozenset({"TRIM_HORIZON", "LATEST", "AT_TIMESTAMP"})
AFTER_LAST_RECORD = "SHARD_END"


class FlushLogError(SpanstreamError):
    """The write-ahead record of a shard could not be read or written."""


class ShardFencedError(FlushLogError):
    """Another process claimed the shard; this one must write nothing more."""


class Position(NamedTuple):
    """A record's place in its shard (sub-sequence numbers for KPL user records)."""

    sequence_number: str
    sub_sequence_number: int = 0

    def key(self) -> tuple[int, int]:
        return sequence_key(self.sequence_number, self.sub_sequence_number)


class FlushIntent(NamedTuple):
    """A flush about to be written: the records from ``first_sequence_number``
    (the first since the previous flush) up to and including ``last``.

    ``clock_secs`` is the clock the flush was given, if any, and
    ``everything`` whether it was the final flush at shard end: a repeat
    passes both again so that it produces the same output.
    """

    first_sequence_number: str
    last: Position
    clock_secs: float | None = None
    everything: bool = False


def owner_name() -> str:
    """Return ``host:pid``, how a claim names its process in the record."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ShardFlushLog:
    """The ``shard-state`` item of one stream's shard.

    Item: ``pk`` (``enc(stream)#enc(shard)``), ``stream``, ``shard_id``,
    ``epoch`` (N), ``owner``, ``flushes`` (L of M: the flushes begun and
    not yet covered by a checkpoint, oldest first), ``checkpoint`` (M: the
    last checkpoint committed) and ``updated_unix_millis``. Only the process
    holding the current epoch writes, so it keeps the list in memory and
    writes it whole. Retryable AWS errors are retried under ``retry``; other
    failures raise `FlushLogError`, a lost epoch `ShardFencedError`.
    """

    def __init__(
        self,
        dynamodb: Any,
        settings: Settings,
        stream: str,
        shard_id: str,
        owner: str | None = None,
        retry: RetryPolicy | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._dynamodb = dynamodb
        self._table = settings.table_name(TABLE)
        self._key = {"pk": {"S": join_key(stream, shard_id)}}
        self.stream = stream
        self.shard_id = shard_id
        self.owner = owner or owner_name()
        self._retry = retry or RetryPolicy()
        self._wall_clock = wall_clock
        self.epoch: int | None = None
        self._flushes: list[FlushIntent] = []

    @property
    def flushes(self) -> list[FlushIntent]:
        """The flushes begun and not yet covered by a checkpoint, oldest first."""
        return list(self._flushes)

    def claim(self) -> list[FlushIntent]:
        """Become the shard's writer; return the flushes left uncheckpointed.

        Increments the epoch, which fences off every earlier claimer.
        """
        response = self._update(
            "SET #owner = :owner, #stream = :stream, shard_id = :shard, "
            "updated_unix_millis = :now ADD epoch :one",
            {
                ":owner": {"S": self.owner},
                ":stream": {"S": self.stream},
                ":shard": {"S": self.shard_id},
                ":one": {"N": "1"},
            },
            condition=None,
            return_values="ALL_NEW",
        )
        item = response["Attributes"]
        self.epoch = int(item["epoch"]["N"])
        self._flushes = [
            _intent_from_item(entry["M"])
            for entry in item.get("flushes", {}).get("L", [])
        ]
        logger.info(
            "claimed %s/%s at epoch %d with %d uncheckpointed flushes",
            self.stream,
            self.shard_id,
            self.epoch,
            len(self._flushes),
        )
        return self.flushes

    def begin(self, intent: FlushIntent) -> None:
        """Record ``intent`` before any of its writes; raises `ShardFencedError`.

        An intent already recorded (a flush being repeated) is not added again.
        """
        if any(entry.last == intent.last for entry in self._flushes):
            return
        self._store([*self._flushes, intent], extra="")

    def commit(self, checkpoint: Position) -> None:
        """Forget the flushes ``checkpoint`` covers; raises `ShardFencedError`."""
        remaining = [
            entry
            for entry in self._flushes
            if is_after_checkpoint(entry.last, checkpoint)
        ]
        self._store(
            remaining,
            extra=", #checkpoint = :checkpoint",
            values={":checkpoint": {"M": _position_to_item(checkpoint)}},
        )

    def _store(
        self,
        flushes: list[FlushIntent],
        extra: str,
        values: dict[str, Any] | None = None,
    ) -> None:
        self._update(
            f"SET flushes = :flushes, updated_unix_millis = :now{extra}",
            {
                ":flushes": {"L": [{"M": _intent_to_item(f)} for f in flushes]},
                **(values or {}),
            },
            condition="epoch = :epoch",
        )
        self._flushes = flushes

    def _update(
        self,
        expression: str,
        values: dict[str, Any],
        condition: str | None,
        return_values: str = "NONE",
    ) -> Any:
        values = {**values, ":now": {"N": str(int(self._wall_clock() * 1000))}}
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "Key": self._key,
            "UpdateExpression": expression,
            "ReturnValues": return_values,
        }
        # Reserved words in DynamoDB expressions.
        names = {
            name: name[1:]
            for name in ("#owner", "#stream", "#checkpoint")
            if name in expression
        }
        if names:
            kwargs["ExpressionAttributeNames"] = names
        if condition is not None:
            if self.epoch is None:
                raise FlushLogError(
                    f"{self.stream}/{self.shard_id}: write before claim()"
                )
            kwargs["ConditionExpression"] = condition
            values[":epoch"] = {"N": str(self.epoch)}
        kwargs["ExpressionAttributeValues"] = values
        what = f"{self._table} {self.stream}/{self.shard_id}"
        try:
            return self._retry.call(
                lambda: self._dynamodb.update_item(**kwargs),
                what,
                passthrough=(_CONDITION_FAILED,),
            )
        except ClientError as exc:
            if error_code(exc) == _CONDITION_FAILED:
                raise ShardFencedError(
                    f"{what}: epoch {self.epoch} no longer owns the shard"
                ) from exc
            raise
        except SpanstreamError as exc:
            raise FlushLogError(str(exc)) from exc


def _position_to_item(position: Position) -> dict[str, Any]:
    return {
        "sequence_number": {"S": position.sequence_number},
        "sub_sequence_number": {"N": str(position.sub_sequence_number)},
    }


def _intent_to_item(intent: FlushIntent) -> dict[str, Any]:
    item: dict[str, Any] = {
        "first_sequence_number": {"S": intent.first_sequence_number},
        "last": {"M": _position_to_item(intent.last)},
        "everything": {"BOOL": intent.everything},
    }
    if intent.clock_secs is not None:
        item["clock_secs"] = {"N": repr(intent.clock_secs)}
    return item


def _intent_from_item(item: dict[str, Any]) -> FlushIntent:
    last = item["last"]["M"]
    return FlushIntent(
        item["first_sequence_number"]["S"],
        Position(last["sequence_number"]["S"], int(last["sub_sequence_number"]["N"])),
        float(item["clock_secs"]["N"]) if "clock_secs" in item else None,
        item["everything"]["BOOL"],
    )


def is_after_checkpoint(position: Position, checkpoint: Position) -> bool:
    """Return True if ``position`` lies beyond ``checkpoint`` (a KCL value)."""
    if checkpoint.sequence_number in BEFORE_FIRST_RECORD:
        return True
    if checkpoint.sequence_number == AFTER_LAST_RECORD:
        return False
    return position.key() > checkpoint.key()


# -- the protocol, for any runtime -------------------------------------------


class FlushResultLike(Protocol):
    @property
    def checkpoint_sequence_number(self) -> str | None: ...


class Flushable(Protocol):
    """What `ExactlyOnceShard` needs of a processor (`TraceShardProcessor`)."""

    def process(self, records: list[KinesisRecord]) -> int: ...

    def flush(
        self, everything: bool = False, clock_secs: float | None = None
    ) -> FlushResultLike: ...

    def idle(self, now_secs: float) -> None: ...

    def discard(self) -> None: ...


class _PlainFlushable(Protocol):
    def process(self, records: list[KinesisRecord]) -> int: ...

    def flush(self, final: bool = False) -> FlushResultLike: ...

    def heartbeat(self, now_unix_millis: int) -> None: ...

    def discard(self) -> None: ...


class ClocklessFlushes:
    """Adapts a processor whose flush takes no clock (`ShardProcessor`)."""

    def __init__(self, processor: _PlainFlushable) -> None:
        self._processor = processor

    def process(self, records: list[KinesisRecord]) -> int:
        return self._processor.process(records)

    def flush(
        self, everything: bool = False, clock_secs: float | None = None
    ) -> FlushResultLike:
        return self._processor.flush(final=everything)

    def idle(self, now_secs: float) -> None:
        self._processor.heartbeat(int(now_secs * 1000))

    def discard(self) -> None:
        self._processor.discard()


#: ``checkpoint(sequence_number, sub_sequence_number)``; ``(None, None)``
#: checkpoints at the end of the shard. The KCL checkpointer has this shape.
Checkpoint = Callable[[str | None, int | None], None]


@dataclass
class ShardStats:
    records: int = 0
    spans: int = 0
    flushes: int = 0
    repeated_flushes: int = 0


class ExactlyOnceShard:
    """Drives one shard's processor so that a replay repeats its flushes exactly.

    The runtime calls `start` once with the checkpoint it resumes from, then
    `process` per batch (in order), and one of `end_of_shard`, `shutdown` or
    `lease_lost`. A flush happens when ``flush_interval_secs`` have passed
    since the last one (checked after each batch; runtimes that can, call
    `process` with empty batches so idle shards flush too), at shard end and
    at shutdown. Each flush is recorded before it writes, and forgotten once a
    checkpoint covers it.

    After `start`, the flushes a former owner recorded beyond the checkpoint
    are repeated first, each at exactly its recorded last record, with its
    recorded clock. Until they are, `shutdown` writes nothing (a shorter
    range would not repeat them; the next owner will).

    A flush that fails raises (`spanstream.errors.SinkError`, `FlushLogError`)
    and leaves its range recorded: the process should stop without
    checkpointing, and the next owner repeats the flush. `ShardFencedError`
    is not raised: another process owns the shard, so the buffered state is
    dropped and every later call is ignored (`fenced`).
    """

    def __init__(
        self,
        processor: Flushable,
        flush_log: ShardFlushLog,
        flush_interval_secs: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._processor = processor
        self._log = flush_log
        self._flush_interval_secs = flush_interval_secs
        self._clock = clock
        self._last_flush = clock()
        self._first: str | None = None
        self._last: Position | None = None
        self._repeat: deque[FlushIntent] = deque()
        self.fenced = False
        self.stats = ShardStats()

    @property
    def is_repeating(self) -> bool:
        """True until the flushes recorded by a former owner are repeated."""
        return bool(self._repeat)

    def start(self, checkpoint: Position) -> None:
        """Claim the shard and find the recorded flushes to repeat."""
        recorded = self._log.claim()
        pending = [f for f in recorded if is_after_checkpoint(f.last, checkpoint)]
        if len(pending) < len(recorded):
            self._guard(lambda: self._log.commit(checkpoint))
        if pending and checkpoint.sequence_number in ("LATEST", "AT_TIMESTAMP"):
            # Reading starts after those records: they cannot be repeated.
            logger.error(
                "%s: cannot repeat %d recorded flushes from checkpoint %s",
                self._describe(),
                len(pending),
                checkpoint.sequence_number,
            )
            return
        if pending:
            logger.info(
                "%s: repeating %d flushes first", self._describe(), len(pending)
            )
        self._repeat = deque(pending)

    def process(
        self,
        records: list[KinesisRecord],
        checkpoint: Checkpoint,
        clock_secs: float | None = None,
    ) -> None:
        """Process a batch; flush and checkpoint when a flush is due.

        ``clock_secs``, when given, says the shard is caught up at that wall
        clock time: it is passed to the processor's flush and recorded, and
        when nothing is buffered the processor is told it is idle (a span
        stage then reports its progress to the trace stage) once a flush
        interval.
        """
        if self.fenced:
            return
        if self._repeat:
            records = self._repeat_flushes(records, checkpoint)
        if records:
            self._add(records)
        due = self._clock() - self._last_flush >= self._flush_interval_secs
        if self._repeat or not due:
            return
        if self._last is not None:
            self._flush(checkpoint, clock_secs=clock_secs)
        elif clock_secs is not None and self._guard(
            lambda: self._processor.idle(clock_secs)
        ):
            self._last_flush = self._clock()

    def end_of_shard(self, checkpoint: Checkpoint) -> None:
        """Flush everything and checkpoint the end of the shard."""
        if self.fenced:
            return
        if self._repeat:
            raise FlushLogError(
                f"{self._describe()}: shard ended before the recorded flush "
                f"{self._repeat[0]} was repeated"
            )
        self._flush(checkpoint, everything=True)

    def shutdown(self, checkpoint: Checkpoint) -> None:
        """Flush and checkpoint before the lease is given up (see class doc)."""
        if self.fenced:
            return
        if self._repeat:
            logger.info(
                "%s: shutdown before the recorded flushes were repeated",
                self._describe(),
            )
            self._processor.discard()
            return
        if self._last is not None:
            self._flush(checkpoint)

    def lease_lost(self) -> None:
        """Drop everything buffered without writing anything."""
        self._processor.discard()
        self._first = self._last = None
        self.fenced = True

    def _describe(self) -> str:
        return f"{self._log.stream}/{self._log.shard_id}"

    def _repeat_flushes(
        self, records: list[KinesisRecord], checkpoint: Checkpoint
    ) -> list[KinesisRecord]:
        """Process and flush the recorded flushes these records complete.

        Returns the records after the last of them.
        """
        if self._last is None and records:
            first = records[0].ref
            first_key = sequence_key(first.sequence_number, first.sub_sequence_number)
            if first_key > self._repeat[0].last.key():
                logger.error(
                    "%s: recorded flush %s cannot be repeated: reading resumed "
                    "after its records, at %s (trimmed?)",
                    self._describe(),
                    self._repeat[0],
                    first.sequence_number,
                )
                self._repeat.clear()
                return records
        while self._repeat and records:
            target = self._repeat[0]
            split = len(records)
            for index, record in enumerate(records):
                ref = record.ref
                position = Position(ref.sequence_number, ref.sub_sequence_number)
                if position.key() > target.last.key():
                    split = index
                    break
            if split:
                self._add(records[:split])
            records = records[split:]
            if self._last is not None and self._last.key() >= target.last.key():
                self._repeat.popleft()
                self._flush(
                    checkpoint,
                    everything=target.everything,
                    clock_secs=target.clock_secs,
                )
                self.stats.repeated_flushes += 1
                if self.fenced:
                    return []
        return records

    def _add(self, records: list[KinesisRecord]) -> None:
        self.stats.spans += self._processor.process(records)
        self.stats.records += len(records)
        if self._first is None:
            self._first = records[0].ref.sequence_number
        ref = records[-1].ref
        self._last = Position(ref.sequence_number, ref.sub_sequence_number)

    def _flush(
        self,
        checkpoint: Checkpoint,
        everything: bool = False,
        clock_secs: float | None = None,
    ) -> None:
        intent = None
        if self._first is not None and self._last is not None:
            intent = FlushIntent(self._first, self._last, clock_secs, everything)

        written_secs = 0.0

        def write_and_checkpoint() -> None:
            nonlocal written_secs
            if intent is not None:
                self._log.begin(intent)
            result = self._processor.flush(everything=everything, clock_secs=clock_secs)
            written_secs = self._clock() - started
            self.stats.flushes += 1
            position = self._checkpoint_position(result, intent)
            if everything:
                checkpoint(None, None)
                position = Position(AFTER_LAST_RECORD)
            elif position is not None:
                checkpoint(position.sequence_number, position.sub_sequence_number)
            if position is not None:
                self._log.commit(position)

        started = self._clock()
        if not self._guard(write_and_checkpoint):
            return
        if intent is not None:
            # Lifecycle at info: one line a flush interval per shard. The
            # benchmark reads lag from these lines: a span counts once the
            # writes are done, before the checkpoint that follows them.
            logger.info(
                "flushed %s through %s in %.3f s (written in %.3f s)",
                self._describe(),
                intent.last.sequence_number,
                self._clock() - started,
                written_secs,
            )
        self._first = self._last = None
        # Flushes keep a cadence from their starts: timed from the end, every
        # flush's own duration would add to the interval, and so to the lag.
        self._last_flush = started

    @staticmethod
    def _checkpoint_position(
        result: FlushResultLike, intent: FlushIntent | None
    ) -> Position | None:
        sequence_number = result.checkpoint_sequence_number
        if sequence_number is None:
            return None
        if intent is not None and sequence_number == intent.last.sequence_number:
            return intent.last
        # An earlier record (the trace stage holds traces back). Its stream is
        # written by spanstream's forwarder, never KPL-aggregated.
        return Position(sequence_number, 0)

    def _guard(self, action: Callable[[], None]) -> bool:
        """Run ``action``; on `ShardFencedError` drop all state, return False."""
        try:
            action()
        except ShardFencedError:
            logger.warning(
                "%s is owned by another process now; dropping buffered state",
                self._describe(),
            )
            self.lease_lost()
            return False
        return True
