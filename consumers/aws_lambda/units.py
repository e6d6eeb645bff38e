"""Cutting a batch into units, and reading a unit's records back from the stream.

A *unit* is a range of one shard's records whose effects are made durable
together, under keys derived from the range. A batch of an invocation falls
into three parts relative to the shard's last started unit (`ShardMark.unit`):

* records before it, or inside it once it is marked done: durable already
  (a duplicate delivery), dropped;
* records inside it otherwise: that unit is redone, exactly, with all of
  its records (read back from the stream when the batch holds only some of
  them, as a bisected batch does);
* records after it: a new unit.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from consumers.aws_lambda.checkpoints import SequenceRange
from consumers.getrecords import to_kinesis_record
from spanstream.errors import SinkError
from spanstream.model import KinesisRecord
from spanstream.sinks.retry import RetryPolicy

logger = logging.getLogger(__name__)

GET_RECORDS_LIMIT = 10_000


class UnitUnavailableError(SinkError):
    """A unit's records could not all be read back from the stream."""


@dataclass
class BatchPlan:
    """A batch split by the shard's last started unit."""

    duplicates: list[KinesisRecord] = field(default_factory=list)
    redo: list[KinesisRecord] = field(default_factory=list)
    fresh: list[KinesisRecord] = field(default_factory=list)

    @property
    def first_effective_sequence_number(self) -> str | None:
        """Return the first record that is not a duplicate (None: all are)."""
        for part in (self.redo, self.fresh):
            if part:
                return part[0].ref.sequence_number
        return None


def plan_batch(
    records: list[KinesisRecord],
    unit: SequenceRange | None,
    done_through: str | None = None,
) -> BatchPlan:
    """Split ``records`` (one shard, in sequence order) around ``unit``.

    Records up to ``done_through`` are duplicates even inside ``unit``: its
    effects are known to be durable, so it needs no redo.
    """
    plan = BatchPlan()
    if unit is None:
        plan.fresh = list(records)
        return plan
    first, last = int(unit.first), int(unit.last)
    done = int(done_through) if done_through is not None else -1
    for record in records:
        sequence = int(record.ref.sequence_number)
        if sequence < first or sequence <= done:
            plan.duplicates.append(record)
        elif sequence <= last:
            plan.redo.append(record)
        else:
            plan.fresh.append(record)
    return plan


def covers(records: list[KinesisRecord], unit: SequenceRange) -> bool:
    """Return True if ``records`` (contiguous in the shard) are all of ``unit``."""
    return bool(records) and (
        records[0].ref.sequence_number == unit.first
        and records[-1].ref.sequence_number == unit.last
    )


def unit_of(records: list[KinesisRecord]) -> SequenceRange:
    """Return the range ``records`` (non-empty, in order) span."""
    return SequenceRange(
        records[0].ref.sequence_number, records[-1].ref.sequence_number
    )


class StreamReader:
    """Reads ranges of a shard with GetShardIterator and GetRecords."""

    def __init__(self, kinesis_client: Any, retry: RetryPolicy | None = None) -> None:
        self._client = kinesis_client
        self._retry = retry or RetryPolicy()

    def read_unit(
        self, stream: str, shard_id: str, unit: SequenceRange
    ) -> list[KinesisRecord]:
        """Return every record of ``unit``, in order.

        Raises `UnitUnavailableError` if the stream no longer has them all
        (trimmed by retention) and `SinkError` if Kinesis cannot be read.
        """
        records = self.read(stream, shard_id, unit.last, at=unit.first)
        if not covers(records, unit):
            raise UnitUnavailableError(
                f"{stream}/{shard_id}: records {unit.first}..{unit.last} "
                f"are no longer all in the stream ({len(records)} read)"
            )
        return records

    def read(
        self,
        stream: str,
        shard_id: str,
        through: str,
        at: str | None = None,
        after: str | None = None,
    ) -> list[KinesisRecord]:
        """Return the records from ``at`` (or after ``after``, or the oldest)
        through ``through``, in order."""
        kwargs: dict[str, Any] = {"StreamName": stream, "ShardId": shard_id}
        if at is not None:
            kwargs.update(
                ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=at
            )
        elif after is not None:
            kwargs.update(
                ShardIteratorType="AFTER_SEQUENCE_NUMBER", StartingSequenceNumber=after
            )
        else:
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
        what = f"reading {stream}/{shard_id} through {through}"
        response = self._retry.call(
            partial(self._client.get_shard_iterator, **kwargs), what
        )
        iterator = response["ShardIterator"]
        last = int(through)
        records: list[KinesisRecord] = []
        while iterator:
            page = self._retry.call(
                partial(
                    self._client.get_records,
                    ShardIterator=iterator,
                    Limit=GET_RECORDS_LIMIT,
                ),
                what,
            )
            for record in page["Records"]:
                if int(record["SequenceNumber"]) > last:
                    return records
                records.append(to_kinesis_record(stream, shard_id, record))
            if records and records[-1].ref.sequence_number == through:
                return records
            if not page["Records"] and not page.get("MillisBehindLatest"):
                break
            iterator = page.get("NextShardIterator")
        logger.warning("%s: stream ended before %s", what, through)
        return records
