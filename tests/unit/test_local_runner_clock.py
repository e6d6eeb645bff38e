"""The local runner's event-time clock, which decides when traces are idle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from consumers.local.runner import LocalRunner, ShardReader
from spanstream.config import Settings
from spanstream.pipeline import Sinks

PUT_UNIX_SECS = 1_800_000_000.0
NOW_UNIX_SECS = PUT_UNIX_SECS + 120.0


class Pages:
    """A Kinesis client whose GetRecords answers the given pages in turn."""

    def __init__(self, pages: list[tuple[int, int]]) -> None:
        self.pages = pages  # (records, MillisBehindLatest)
        self.sequence = 0

    def get_records(self, **_: Any) -> dict[str, Any]:
        count, behind = self.pages.pop(0)
        records = []
        for _index in range(count):
            self.sequence += 1
            records.append(
                {
                    "Data": b"",
                    "SequenceNumber": str(self.sequence),
                    "PartitionKey": "k",
                    "ApproximateArrivalTimestamp": datetime.fromtimestamp(
                        PUT_UNIX_SECS, UTC
                    ),
                }
            )
        return {
            "Records": records,
            "MillisBehindLatest": behind,
            "NextShardIterator": "next",
        }


class CountingProcessor:
    def process(self, records: list[Any]) -> int:
        return len(records)


def runner_reading(pages: list[tuple[int, int]]) -> tuple[LocalRunner, ShardReader]:
    sinks = Sinks(None, None, None)  # type: ignore[arg-type]
    runner = LocalRunner(Settings(), Pages(pages), sinks)
    runner._wall_clock = lambda: NOW_UNIX_SECS  # type: ignore[method-assign]
    reader = ShardReader("shard-0", (), CountingProcessor(), iterator="first")  # type: ignore[arg-type]
    runner.readers[reader.shard_id] = reader
    return runner, reader


def test_a_page_at_the_tips_millisecond_does_not_count_as_caught_up() -> None:
    # GIVEN a backlog put in one millisecond: every page reports 0 ms behind
    runner, reader = runner_reading([(100, 0), (100, 0), (0, 0)])

    # WHEN the first page is read, records of the same millisecond remain
    runner._read(reader)

    # THEN the shard holds the clock at what it has read, not at now
    assert runner.event_time_secs() == PUT_UNIX_SECS
    runner._read(reader)
    assert runner.event_time_secs() == PUT_UNIX_SECS
    # AND only an empty page at the tip lets the clock move to now
    runner._read(reader)
    assert runner.event_time_secs() == NOW_UNIX_SECS


def test_a_shard_behind_the_tip_holds_the_clock() -> None:
    runner, reader = runner_reading([(0, 5_000), (10, 0), (0, 0)])
    other = ShardReader("shard-1", (), CountingProcessor(), iterator="first")  # type: ignore[arg-type]
    other.arrival_watermark_secs = PUT_UNIX_SECS + 50
    runner.readers[other.shard_id] = other
    runner._read(reader)
    # nothing read from shard-0 yet: it has no arrival time to hold the clock
    # at (zero would make every trace look idle once it moved on)
    assert runner.event_time_secs() == PUT_UNIX_SECS + 50
    runner._read(reader)
    assert runner.event_time_secs() == PUT_UNIX_SECS
    other.caught_up = True
    runner._read(reader)
    assert runner.event_time_secs() == NOW_UNIX_SECS
