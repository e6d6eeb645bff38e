"""The per-shard write-ahead flush record and the exactly-once protocol.

`ShardFlushLog` runs against moto's DynamoDB. `ExactlyOnceShard` is driven
first with a recording processor (to check the ranges and checkpoints
exactly) and then with the real `ShardProcessor` and real sinks on moto,
crashing at every step of a flush with different batch boundaries on each
restart: whatever the crash points, every span lands in the archive and in
the RED counts exactly once.
"""

from __future__ import annotations

import json
import logging
import random
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from otlpfactory import make_request, make_span

from bench.kcl import flushes_logged
from consumers.logs import JsonFormatter
from spanstream.aggregate.types import FlushRange
from spanstream.config import Settings
from spanstream.flushlog import (
    ClocklessFlushes,
    ExactlyOnceShard,
    FlushIntent,
    FlushLogError,
    Position,
    ShardFencedError,
    ShardFlushLog,
    is_after_checkpoint,
)
from spanstream.model import KinesisRecord, RecordRef
from spanstream.pipeline import FlushResult, ShardProcessor
from spanstream.sinks import readers
from spanstream.sinks.factory import make_sinks
from spanstream.sinks.retry import RetryPolicy

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "dynamodb"
SHARD = "shardId-000000000001"
BUCKET = "test-archive"
#: A window well in the past and arrival times inside it: nothing is late.
START_UNIX_NANOS = 1_700_000_000_000_000_000
ARRIVAL_UNIX_MILLIS = 1_700_000_001_000


@pytest.fixture
def settings() -> Settings:
    return Settings(table_prefix="test-", bucket=BUCKET, stream_name="spans")


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("dynamodb", region_name="us-east-1")
        for path in sorted(SCHEMAS.glob("*.json")):
            table = json.loads(path.read_text())
            table["TableName"] = settings.table_name(table["TableName"])
            client.create_table(**table)
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield


@pytest.fixture
def dynamodb(aws: None) -> Any:
    return boto3.client("dynamodb", region_name="us-east-1")


@pytest.fixture
def s3(aws: None) -> Any:
    return boto3.client("s3", region_name="us-east-1")


def flush_log(dynamodb: Any, settings: Settings, owner: str = "a") -> ShardFlushLog:
    return ShardFlushLog(
        dynamodb,
        settings,
        "spans",
        SHARD,
        owner=owner,
        retry=RetryPolicy(deadline_secs=2.0, sleep=lambda _: None),
    )


def intent(
    first: int,
    last: int,
    sub: int = 0,
    clock_secs: float | None = None,
    everything: bool = False,
) -> FlushIntent:
    return FlushIntent(str(first), Position(str(last), sub), clock_secs, everything)


# -- ShardFlushLog ---------------------------------------------------------


def test_a_new_shard_has_nothing_pending(dynamodb: Any, settings: Settings) -> None:
    log = flush_log(dynamodb, settings)
    assert log.claim() == []
    assert log.epoch == 1


def test_a_begun_flush_is_pending_for_the_next_claimer(
    dynamodb: Any, settings: Settings
) -> None:
    first = flush_log(dynamodb, settings, "a")
    first.claim()
    first.begin(intent(100, 200, sub=3))

    second = flush_log(dynamodb, settings, "b")
    assert second.claim() == [intent(100, 200, sub=3)]
    assert second.epoch == 2


def test_a_committed_flush_is_not_pending(dynamodb: Any, settings: Settings) -> None:
    log = flush_log(dynamodb, settings)
    log.claim()
    log.begin(intent(1, 9))
    log.commit(Position("9"))
    assert flush_log(dynamodb, settings, "b").claim() == []


def test_a_former_owner_can_neither_begin_nor_commit(
    dynamodb: Any, settings: Settings
) -> None:
    zombie = flush_log(dynamodb, settings, "a")
    zombie.claim()
    zombie.begin(intent(1, 9))
    flush_log(dynamodb, settings, "b").claim()
    with pytest.raises(ShardFencedError):
        zombie.begin(intent(10, 20))
    with pytest.raises(ShardFencedError):
        zombie.commit(Position("9"))


def test_a_checkpoint_forgets_only_the_flushes_it_covers(
    dynamodb: Any, settings: Settings
) -> None:
    log = flush_log(dynamodb, settings)
    log.claim()
    log.begin(intent(1, 9, clock_secs=12.5))
    log.begin(intent(10, 20, everything=True))
    log.begin(intent(10, 20, everything=True))  # a repeat is recorded once
    log.commit(Position("5"))
    assert flush_log(dynamodb, settings, "b").claim() == [
        intent(1, 9, clock_secs=12.5),
        intent(10, 20, everything=True),
    ]


def test_writing_before_claiming_is_refused(dynamodb: Any, settings: Settings) -> None:
    with pytest.raises(FlushLogError, match="before claim"):
        flush_log(dynamodb, settings).begin(intent(1, 2))


@pytest.mark.parametrize(
    ("checkpoint", "after"),
    [
        (Position("TRIM_HORIZON"), True),
        (Position("SHARD_END"), False),
        (Position("99"), True),
        (Position("100", 2), True),
        (Position("100", 3), False),
        (Position("1000"), False),
    ],
)
def test_position_after_checkpoint(checkpoint: Position, after: bool) -> None:
    assert is_after_checkpoint(Position("100", 3), checkpoint) is after


# -- ExactlyOnceShard with a recording processor ------------------------------


@dataclass
class RecordingProcessor:
    """Counts processed records; `flush` returns the range processed since."""

    processed: list[KinesisRecord] = field(default_factory=list)
    flushed: list[tuple[str, str]] = field(default_factory=list)
    discarded: int = 0

    def process(self, records: list[KinesisRecord]) -> int:
        self.processed.extend(records)
        return len(records)

    def flush(
        self, everything: bool = False, clock_secs: float | None = None
    ) -> FlushResult:
        if not self.processed:
            return FlushResult(None)
        first = self.processed[0].ref.sequence_number
        last = self.processed[-1].ref.sequence_number
        self.flushed.append((first, last))
        self.processed = []
        return FlushResult(
            FlushRange("spans", SHARD, first, last), checkpoint_sequence_number=last
        )

    def discard(self) -> None:
        self.processed = []
        self.discarded += 1


def plain_records(first: int, last: int) -> list[KinesisRecord]:
    return [
        KinesisRecord(b"", RecordRef("spans", SHARD, str(n), 0, "k", 0))
        for n in range(first, last + 1)
    ]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Checkpoints:
    calls: list[tuple[str | None, int | None]] = field(default_factory=list)

    def __call__(self, sequence_number: str | None, sub: int | None) -> None:
        self.calls.append((sequence_number, sub))


def test_flushes_when_the_interval_passed_and_checkpoints_after(
    dynamodb: Any, settings: Settings
) -> None:
    clock, checkpoints, processor = Clock(), Checkpoints(), RecordingProcessor()
    shard = ExactlyOnceShard(processor, flush_log(dynamodb, settings), 10.0, clock)
    shard.start(Position("TRIM_HORIZON"))
    shard.process(plain_records(1, 5), checkpoints)
    assert processor.flushed == []
    clock.now = 10.0
    shard.process(plain_records(6, 7), checkpoints)
    assert processor.flushed == [("1", "7")]
    assert checkpoints.calls == [("7", 0)]
    assert flush_log(dynamodb, settings, "b").claim() == []


def test_flushes_keep_a_cadence_from_their_starts(
    dynamodb: Any, settings: Settings
) -> None:
    # GIVEN a processor whose flush takes 3 s
    clock, checkpoints = Clock(), Checkpoints()

    class SlowProcessor(RecordingProcessor):
        def flush(
            self, everything: bool = False, clock_secs: float | None = None
        ) -> FlushResult:
            clock.now += 3.0
            return super().flush(everything, clock_secs)

    processor = SlowProcessor()
    shard = ExactlyOnceShard(processor, flush_log(dynamodb, settings), 10.0, clock)
    shard.start(Position("TRIM_HORIZON"))
    clock.now = 10.0
    shard.process(plain_records(1, 5), checkpoints)
    assert processor.flushed == [("1", "5")]
    # WHEN records come 10 s after that flush started (7 s after it ended)
    clock.now = 20.0
    shard.process(plain_records(6, 7), checkpoints)
    # THEN they are flushed: the interval runs from start to start
    assert processor.flushed == [("1", "5"), ("6", "7")]


def test_a_new_owner_repeats_the_pending_flush_exactly(
    dynamodb: Any, settings: Settings
) -> None:
    # GIVEN a flush of records 1..7 begun, then a crash before the checkpoint
    log = flush_log(dynamodb, settings, "a")
    log.claim()
    log.begin(intent(1, 7))
    # WHEN a new owner reads from the old checkpoint in other batches
    clock, checkpoints, processor = Clock(), Checkpoints(), RecordingProcessor()
    shard = ExactlyOnceShard(processor, flush_log(dynamodb, settings, "b"), 10, clock)
    shard.start(Position("TRIM_HORIZON"))
    assert shard.is_repeating
    shard.process(plain_records(1, 4), checkpoints)
    shard.process(plain_records(5, 9), checkpoints)
    # THEN it flushes exactly 1..7 at once, however early, and goes on after
    assert processor.flushed == [("1", "7")]
    assert checkpoints.calls == [("7", 0)]
    assert not shard.is_repeating
    clock.now = 10.0
    shard.process([], checkpoints)
    assert processor.flushed == [("1", "7"), ("8", "9")]


def test_a_pending_flush_already_checkpointed_is_not_repeated(
    dynamodb: Any, settings: Settings
) -> None:
    log = flush_log(dynamodb, settings, "a")
    log.claim()
    log.begin(intent(1, 7))  # crash after the checkpoint, before the commit
    shard = ExactlyOnceShard(
        RecordingProcessor(), flush_log(dynamodb, settings, "b"), 10, Clock()
    )
    shard.start(Position("7"))
    assert not shard.is_repeating
    assert flush_log(dynamodb, settings, "c").claim() == []


def test_shutdown_while_repeating_writes_and_checkpoints_nothing(
    dynamodb: Any, settings: Settings
) -> None:
    log = flush_log(dynamodb, settings, "a")
    log.claim()
    log.begin(intent(1, 7))
    checkpoints, processor = Checkpoints(), RecordingProcessor()
    shard = ExactlyOnceShard(processor, flush_log(dynamodb, settings, "b"), 0, Clock())
    shard.start(Position("TRIM_HORIZON"))
    shard.process(plain_records(1, 3), checkpoints)
    shard.shutdown(checkpoints)
    assert processor.flushed == []
    assert checkpoints.calls == []
    assert flush_log(dynamodb, settings, "c").claim() == [intent(1, 7)]


def test_shard_end_flushes_and_checkpoints_the_end(
    dynamodb: Any, settings: Settings
) -> None:
    checkpoints, processor = Checkpoints(), RecordingProcessor()
    shard = ExactlyOnceShard(processor, flush_log(dynamodb, settings), 60, Clock())
    shard.start(Position("TRIM_HORIZON"))
    shard.process(plain_records(1, 3), checkpoints)
    shard.end_of_shard(checkpoints)
    assert processor.flushed == [("1", "3")]
    assert checkpoints.calls == [(None, None)]


def test_a_lost_lease_drops_state_and_ignores_what_follows(
    dynamodb: Any, settings: Settings
) -> None:
    checkpoints, processor = Checkpoints(), RecordingProcessor()
    shard = ExactlyOnceShard(processor, flush_log(dynamodb, settings), 0, Clock())
    shard.start(Position("TRIM_HORIZON"))
    shard.process([], checkpoints)
    shard.lease_lost()
    shard.process(plain_records(1, 3), checkpoints)
    shard.shutdown(checkpoints)
    assert processor.flushed == []
    assert processor.discarded == 1
    assert checkpoints.calls == []


def test_a_fenced_owner_drops_its_state_without_writing(
    dynamodb: Any, settings: Settings
) -> None:
    clock, checkpoints, processor = Clock(), Checkpoints(), RecordingProcessor()
    shard = ExactlyOnceShard(processor, flush_log(dynamodb, settings, "a"), 10, clock)
    shard.start(Position("TRIM_HORIZON"))
    shard.process(plain_records(1, 3), checkpoints)
    flush_log(dynamodb, settings, "b").claim()  # the lease moved meanwhile
    clock.now = 10.0
    shard.process(plain_records(4, 5), checkpoints)
    assert processor.flushed == []
    assert checkpoints.calls == []
    assert shard.fenced


def test_kpl_user_records_checkpoint_with_their_sub_sequence_number(
    dynamodb: Any, settings: Settings
) -> None:
    checkpoints, processor = Checkpoints(), RecordingProcessor()
    shard = ExactlyOnceShard(processor, flush_log(dynamodb, settings), 0, Clock())
    shard.start(Position("TRIM_HORIZON"))
    shard.process(
        [
            KinesisRecord(b"", RecordRef("spans", SHARD, "5", sub, "k", 0))
            for sub in range(3)
        ],
        checkpoints,
    )
    assert checkpoints.calls == [("5", 2)]


def test_a_pending_flush_whose_records_are_gone_is_abandoned(
    dynamodb: Any, settings: Settings
) -> None:
    log = flush_log(dynamodb, settings, "a")
    log.claim()
    log.begin(intent(1, 7))
    checkpoints, processor = Checkpoints(), RecordingProcessor()
    shard = ExactlyOnceShard(processor, flush_log(dynamodb, settings, "b"), 0, Clock())
    shard.start(Position("TRIM_HORIZON"))
    shard.process(plain_records(8, 9), checkpoints)  # 1..7 were trimmed
    assert not shard.is_repeating
    assert processor.flushed == [("8", "9")]


# -- crashes at every step, with the real processor and sinks ----------------


class Crash(Exception):
    """Stands for the process dying at that point."""


class Crasher:
    """Raises `Crash` at the ``at``-th step passed through `step`."""

    def __init__(self, at: int | None) -> None:
        self.at = at
        self.steps = 0

    def step(self) -> None:
        self.steps += 1
        if self.steps == self.at:
            raise Crash(self.steps)


def crashing(crasher: Crasher, function: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        crasher.step()  # before the effect
        result = function(*args, **kwargs)
        crasher.step()  # after the effect
        return result

    return call


def span_records(count: int, spans_per_record: int = 3) -> list[KinesisRecord]:
    records = []
    for n in range(count):
        spans = [
            make_span(
                name="GET /cart",
                span_id=(n * 10 + i + 1).to_bytes(8, "big"),
                trace_id=(n + 1).to_bytes(16, "big"),
                start_unix_nanos=START_UNIX_NANOS + n * 1_000_000,
            )
            for i in range(spans_per_record)
        ]
        records.append(
            KinesisRecord(
                make_request(spans).SerializeToString(),
                RecordRef(
                    "spans", SHARD, str(1000 + n), 0, "k", ARRIVAL_UNIX_MILLIS + n
                ),
            )
        )
    return records


class StoredCheckpoint:
    def __init__(self) -> None:
        self.position = Position("TRIM_HORIZON")

    def __call__(self, sequence_number: str | None, sub: int | None) -> None:
        assert sequence_number is not None
        self.position = Position(sequence_number, sub or 0)


def run_owner(
    records: list[KinesisRecord],
    stored: StoredCheckpoint,
    settings: Settings,
    dynamodb: Any,
    s3: Any,
    crasher: Crasher,
    rng: random.Random,
    owner: str,
) -> None:
    """One lease owner from the stored checkpoint to the end, or to a crash."""
    sinks = make_sinks(settings, s3, dynamodb)
    sinks.archive.write = crashing(crasher, sinks.archive.write)  # type: ignore[method-assign]
    sinks.aggregates.write = crashing(crasher, sinks.aggregates.write)  # type: ignore[method-assign]
    log = flush_log(dynamodb, settings, owner)
    log.begin = crashing(crasher, log.begin)  # type: ignore[method-assign]
    log.commit = crashing(crasher, log.commit)  # type: ignore[method-assign]
    clock = Clock()
    shard = ExactlyOnceShard(
        ClocklessFlushes(ShardProcessor(settings, "spans", SHARD, sinks)),
        log,
        10.0,
        clock,
    )
    shard.start(stored.position)
    checkpoint = crashing(crasher, stored)
    start = 0
    if stored.position.sequence_number != "TRIM_HORIZON":
        start = int(stored.position.sequence_number) - 1000 + 1
    while start < len(records):
        size = rng.randint(1, 7)
        shard.process(records[start : start + size], checkpoint)
        start += size
        clock.now += rng.choice([0.0, 5.0, 10.0])
    shard.shutdown(checkpoint)


@pytest.mark.parametrize("seed", range(12))
def test_crashes_at_any_step_lose_and_double_nothing(
    seed: int, settings: Settings, dynamodb: Any, s3: Any
) -> None:
    # GIVEN 40 records of 3 spans, and owners that crash at random steps
    rng = random.Random(seed)
    records = span_records(40)
    stored = StoredCheckpoint()
    crashes = 0
    # WHEN each owner reads from the stored checkpoint with its own batch
    # sizes and flush times, until one gets through without crashing
    for attempt in range(12):
        crasher = Crasher(rng.randint(3, 24) if attempt < 10 else None)
        try:
            run_owner(
                records, stored, settings, dynamodb, s3, crasher, rng, f"o{attempt}"
            )
            break
        except Crash:
            crashes += 1
    # THEN every span is archived once and counted once
    assert crashes >= 1
    table = readers.read_archive(s3, settings)
    archived = Counter(table.column("span_id").to_pylist())
    assert len(archived) == 120
    assert set(archived.values()) == {1}
    rows = readers.scan_metrics(dynamodb, settings)
    assert sum(row.stats.count for row in rows) == 120
    assert stored.position == Position(records[-1].ref.sequence_number)


def test_flush_lines_say_when_the_writes_were_done_before_the_checkpoint(
    dynamodb: Any,
    settings: Settings,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
) -> None:
    # GIVEN writes that take 3 s and a checkpoint that takes 2 s more
    clock = Clock()

    class SlowProcessor(RecordingProcessor):
        def flush(
            self, everything: bool = False, clock_secs: float | None = None
        ) -> FlushResult:
            clock.now += 3.0
            return super().flush(everything, clock_secs)

    def slow_checkpoint(sequence_number: str | None, sub: int | None) -> None:
        clock.now += 2.0

    shard = ExactlyOnceShard(
        SlowProcessor(), flush_log(dynamodb, settings), 10.0, clock
    )
    shard.start(Position("TRIM_HORIZON"))
    clock.now = 10.0
    with caplog.at_level(logging.INFO, logger="spanstream.flushlog"):
        shard.process(plain_records(1, 5), slow_checkpoint)
    # WHEN the benchmark reads the worker's JSON log line of that flush
    formatter = JsonFormatter()
    lines = [formatter.format(r) for r in caplog.records if "flushed" in r.message]
    assert len(lines) == 1
    log_path = tmp_path / "worker.log"
    log_path.write_text("\n".join(lines) + "\n")
    (flush,) = flushes_logged(log_path, "spans")
    # THEN the flush counts as done when its writes were, 2 s before the line
    logged_at = json.loads(lines[0])["unix_secs"]
    assert flush.done_unix_secs == pytest.approx(logged_at - 2.0, abs=0.01)
    assert flush.covered == {SHARD: 5}
