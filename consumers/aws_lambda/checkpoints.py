"""Per-shard checkpoint items: which unit of records a shard last started.

Lambda's event-source mapping keeps its own checkpoint, but it can hand the
handler a record again (a retry from a reported sequence number, a bisected
batch, a duplicate delivery) in a batch cut differently from the first time.
The archive keys and the DynamoDB high-water marks are idempotent only for
the *same* range of records, so the handler writes the range it is about to
make durable (a *unit*) here first, and redoes exactly that unit when its
records come again. See docs/lambda.md.

One item per shard in the checkpoint table (``pk`` = ``enc(stream)#enc(shard)``),
about 200 bytes, written with a version condition so that two invocations on
one shard can never both believe they own it. A put whose answer was lost
after it was applied fails that condition when it is retried; the item it
finds is then exactly the one it wrote, which is no conflict.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from spanstream.errors import SinkError
from spanstream.sinks.keys import encode_component
from spanstream.sinks.retry import RetryPolicy

logger = logging.getLogger(__name__)

_CONDITION_FAILED = "ConditionalCheckFailedException"
_OPTIONAL_FIELDS = ("done_through", "aggregates_through")


class SequenceRange(NamedTuple):
    """First and last sequence number (inclusive) of a unit of records."""

    first: str
    last: str

    def holds(self, sequence_number: str) -> bool:
        """Return True if ``sequence_number`` lies within this range."""
        return int(self.first) <= int(sequence_number) <= int(self.last)


class CheckpointConflictError(SinkError):
    """Another invocation wrote the shard's checkpoint since it was read."""


@dataclass(frozen=True)
class ShardMark:
    """What the checkpoint table says about one shard.

    ``unit``: the last unit of records whose effects were started; every
    record before it is durable (with a tumbling window, its aggregates may
    still be in the window state, which Lambda keeps). ``done_through``: the
    last record whose effects are known durable (the unit's last once it
    completed, without a tumbling window). ``aggregates_through``: (tumbling windows)
    the last record whose aggregates are in DynamoDB.
    """

    stream: str
    shard_id: str
    unit: SequenceRange | None = None
    done_through: str | None = None
    aggregates_through: str | None = None
    version: int = 0


def table_spec(table_name: str) -> dict[str, Any]:
    """Return the CreateTable input of the checkpoint table."""
    return {
        "TableName": table_name,
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "BillingMode": "PAY_PER_REQUEST",
    }


def _key(stream: str, shard_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"{encode_component(stream)}#{encode_component(shard_id)}"}}


class CheckpointStore:
    """Reads and conditionally writes `ShardMark` items in one table."""

    def __init__(
        self, dynamodb_client: Any, table_name: str, retry: RetryPolicy | None = None
    ) -> None:
        self._client = dynamodb_client
        self.table_name = table_name
        self._retry = retry or RetryPolicy()

    def read(self, stream: str, shard_id: str) -> ShardMark:
        """Return the shard's mark (version 0 if it has none yet).

        Raises `SinkError` if the table cannot be read within the retry policy.
        """
        key = _key(stream, shard_id)
        response = self._retry.call(
            partial(
                self._client.get_item,
                TableName=self.table_name,
                Key=key,
                ConsistentRead=True,
            ),
            f"GetItem {self.table_name} {key['pk']['S']}",
        )
        item = response.get("Item")
        if item is None:
            return ShardMark(stream, shard_id)
        unit = None
        if "unit_first" in item:
            unit = SequenceRange(item["unit_first"]["S"], item["unit_last"]["S"])
        optional = {name: item[name]["S"] for name in _OPTIONAL_FIELDS if name in item}
        return ShardMark(
            stream, shard_id, unit, version=int(item["version"]["N"]), **optional
        )

    def write(self, mark: ShardMark, **changes: Any) -> ShardMark:
        """Put ``mark`` with ``changes`` applied, if nobody wrote since it was read.

        Returns the new mark (version + 1). Raises `CheckpointConflictError` if
        the item's version moved on (other than to this very put, applied
        with its answer lost), and `SinkError` for other failures.
        """
        new = replace(mark, version=mark.version + 1, **changes)
        key = _key(new.stream, new.shard_id)
        item: dict[str, Any] = {**key, "version": {"N": str(new.version)}}
        if new.unit is not None:
            item["unit_first"] = {"S": new.unit.first}
            item["unit_last"] = {"S": new.unit.last}
        for name in _OPTIONAL_FIELDS:
            value = getattr(new, name)
            if value is not None:
                item[name] = {"S": value}
        request: dict[str, Any] = {"TableName": self.table_name, "Item": item}
        if mark.version == 0:
            request["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            request["ConditionExpression"] = "version = :read"
            request["ExpressionAttributeValues"] = {":read": {"N": str(mark.version)}}
        request["ReturnValuesOnConditionCheckFailure"] = "ALL_OLD"
        what = f"PutItem {self.table_name} {key['pk']['S']}"
        try:
            self._retry.call(
                partial(self._client.put_item, **request),
                what,
                passthrough=(_CONDITION_FAILED,),
            )
        except ClientError as exc:
            if exc.response.get("Item") != item:
                raise CheckpointConflictError(
                    f"{what}: version {mark.version} was replaced by another "
                    "invocation on the same shard (is ParallelizationFactor "
                    "above 1?)"
                ) from exc
            logger.info(
                "%s: version %d is this invocation's own put, whose answer was lost",
                what,
                new.version,
            )
        logger.debug("checkpoint %s: %s", key["pk"]["S"], new)
        return new
