"""Event-source-mapping records as the core's `KinesisRecord` values.

Lambda hands the handler each Kinesis record with its data in base64 and
its shard in the ``eventID`` (``shardId-000000000006:<sequence number>``);
the stream's name is the last part of ``eventSourceARN``. KPL aggregates
arrive as they were put: the core's decoder de-aggregates them.
"""

from __future__ import annotations

import base64
from typing import Any

from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamRecord,
)

from spanstream.model import KinesisRecord, RecordRef


def stream_name(event_source_arn: str) -> str:
    """Return the stream name of ``arn:aws:kinesis:<region>:<acct>:stream/<name>``.

    Raises ValueError if the ARN does not name a Kinesis stream.
    """
    _, marker, name = event_source_arn.partition(":stream/")
    if not marker or not name:
        raise ValueError(f"not a Kinesis stream ARN: {event_source_arn!r}")
    return name


def shard_id(record: KinesisStreamRecord) -> str:
    """Return the shard of ``record``, the part of ``eventID`` before the colon."""
    shard, marker, _ = record.event_id.partition(":")
    if not marker:
        raise ValueError(f"eventID without a shard: {record.event_id!r}")
    return shard


def to_kinesis_record(record: KinesisStreamRecord) -> KinesisRecord:
    """Return ``record`` with its data decoded from base64, as a `KinesisRecord`.

    Raises ValueError if the record does not say which stream and shard it is
    from; its data is not looked at (bad data is the decoder's business).
    """
    payload = record.kinesis
    return KinesisRecord(
        payload.data_as_bytes(),
        RecordRef(
            stream_name(record.event_source_arn),
            shard_id(record),
            payload.sequence_number,
            0,
            payload.partition_key,
            round(payload.approximate_arrival_timestamp * 1000),
        ),
    )


def event_record(
    kinesis_record: KinesisRecord, stream_arn: str, region: str
) -> dict[str, Any]:
    """Return the event-source-mapping form of ``kinesis_record`` (inverse of above).

    Used by the local event-source mapping and the tests' event factories.
    """
    ref = kinesis_record.ref
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": ref.partition_key,
            "sequenceNumber": ref.sequence_number,
            "data": base64.b64encode(kinesis_record.data).decode("ascii"),
            "approximateArrivalTimestamp": ref.arrival_unix_millis / 1000,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{ref.shard_id}:{ref.sequence_number}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::000000000000:role/spanstream-local",
        "awsRegion": region,
        "eventSourceARN": stream_arn,
    }
