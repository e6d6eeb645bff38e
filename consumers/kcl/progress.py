"""How far KCL workers have got: their lease table, and the stream's ends.

The demo and the tests wait on these (with deadlines) for workers to hold
leases and to checkpoint everything on a stream.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import ClientError

from spanstream.model import sequence_key


def read_leases(dynamodb: Any, app_name: str) -> dict[str, dict[str, Any]]:
    """Return the KCL lease table's items by lease key ({} before it exists)."""
    try:
        pages = dynamodb.get_paginator("scan").paginate(
            TableName=app_name, ConsistentRead=True
        )
        return {item["leaseKey"]["S"]: item for page in pages for item in page["Items"]}
    except ClientError as exc:
        if exc.response["Error"]["Code"] == "ResourceNotFoundException":
            return {}
        raise


def lease_owners(dynamodb: Any, app_name: str) -> dict[str, str | None]:
    return {
        key: item.get("leaseOwner", {}).get("S")
        for key, item in read_leases(dynamodb, app_name).items()
    }


def last_sequence_numbers(kinesis: Any, stream_name: str) -> dict[str, str | None]:
    """Read every shard to its current end; return each one's last sequence number."""
    last: dict[str, str | None] = {}
    for shard in kinesis.list_shards(StreamName=stream_name)["Shards"]:
        shard_id = shard["ShardId"]
        iterator = kinesis.get_shard_iterator(
            StreamName=stream_name, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        last[shard_id] = None
        while iterator:
            response = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            if response["Records"]:
                last[shard_id] = response["Records"][-1]["SequenceNumber"]
            if not response["Records"] and response.get("MillisBehindLatest", 0) == 0:
                break
            iterator = response.get("NextShardIterator")
    return last


def checkpoints_reached(
    dynamodb: Any, app_name: str, targets: dict[str, str | None]
) -> bool:
    """True when every shard is checkpointed at its target (or at SHARD_END)."""
    leases = read_leases(dynamodb, app_name)
    for shard_id, target in targets.items():
        lease = leases.get(shard_id)
        if lease is None:
            if target is None:
                continue
            return False
        checkpoint = lease.get("checkpoint", {}).get("S", "")
        if checkpoint == "SHARD_END" or target is None:
            continue
        if not checkpoint.isdigit():
            return False
        if sequence_key(checkpoint) < sequence_key(target):
            return False
    return True
