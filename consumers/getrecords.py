"""GetRecords response records as the core's `KinesisRecord` values.

Every runtime that reads a shard itself (the local runner, the Lambda
handler reading a unit back, the local event-source mapping) turns boto3's
record dicts into `KinesisRecord` here, so they all see the same arrival
time and partition key for the same record.
"""

from __future__ import annotations

from typing import Any

from spanstream.model import KinesisRecord, RecordRef


def arrival_unix_millis(record: dict[str, Any]) -> int:
    """Return a GetRecords record's arrival time in whole milliseconds (0: none).

    Rounded, not truncated: boto3 parses the arrival time into a float of
    seconds first, so a whole millisecond can come back a hair below itself.
    """
    arrival = record.get("ApproximateArrivalTimestamp")
    return round(arrival.timestamp() * 1000) if arrival is not None else 0


def to_kinesis_record(
    stream: str, shard_id: str, record: dict[str, Any]
) -> KinesisRecord:
    """Return a GetRecords response record of ``stream``/``shard_id``.

    Raises KeyError if ``record`` has no ``Data`` or ``SequenceNumber``.
    """
    return KinesisRecord(
        record["Data"],
        RecordRef(
            stream,
            shard_id,
            record["SequenceNumber"],
            0,
            record.get("PartitionKey", ""),
            arrival_unix_millis(record),
        ),
    )
