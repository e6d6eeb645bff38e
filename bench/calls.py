"""Counting the AWS requests a run actually makes, from botocore's events.

`CallCounter.attach` hooks a client's ``before-parameter-build`` event (once
per API call; retries of a call are not counted again) and, for DynamoDB,
``after-call`` to see what reads returned. Capacity units are computed from
the items sent and returned, the way DynamoDB bills them (a write: 1 unit a
KB of the item; a consistent read: 1 unit per 4 KB, 1 for a key not found),
because moto's ``ConsumedCapacity`` does not follow item sizes. A put that
replaces a larger item is billed by the larger one; the new size is used
here. Kinesis PUT payload units are each record's data and partition key in
25 KB chunks.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

PUT_PAYLOAD_UNIT_BYTES = 25 * 1024
WRITE_UNIT_BYTES = 1024
READ_UNIT_BYTES = 4096


@dataclass
class CallCounter:
    """API calls by ``service:Operation`` and the capacity they consumed."""

    calls: Counter[str] = field(default_factory=Counter)
    read_units: float = 0.0
    write_units: float = 0.0
    put_payload_units: int = 0
    s3_put_bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def attach(self, client: Any) -> Any:
        """Count every call ``client`` makes from now on; return the client."""
        events = client.meta.events
        events.register("before-parameter-build", self._count_call)
        events.register("after-call.dynamodb", self._count_capacity)
        return client

    def merged(self, other: CallCounter) -> CallCounter:
        """Return a new counter holding this one's counts plus ``other``'s."""
        total = CallCounter()
        total.calls = self.calls + other.calls
        total.read_units = self.read_units + other.read_units
        total.write_units = self.write_units + other.write_units
        total.put_payload_units = self.put_payload_units + other.put_payload_units
        total.s3_put_bytes = self.s3_put_bytes + other.s3_put_bytes
        return total

    def count(self, service: str, operation: str) -> int:
        return self.calls[f"{service}:{operation}"]

    def _count_call(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        service = model.service_model.endpoint_prefix
        name = f"{service}:{model.name}"
        units = 0
        if name == "kinesis:PutRecords":
            units = sum(_payload_units(entry) for entry in params.get("Records", []))
        elif name == "kinesis:PutRecord":
            units = _payload_units(params)
        body_bytes = _size(params.get("Body")) if name == "s3:PutObject" else 0
        write_units = _write_units(model.name, params) if service == "dynamodb" else 0
        read_keys = (
            sum(len(t.get("Keys", [])) for t in params.get("RequestItems", {}).values())
            if name == "dynamodb:BatchGetItem"
            else 0
        )
        with self._lock:
            self.calls[name] += 1
            self.put_payload_units += units
            self.s3_put_bytes += body_bytes
            self.write_units += write_units
            # Keys not found cost one unit each; found ones are recounted below.
            self.read_units += read_keys

    def _count_capacity(self, parsed: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name == "BatchGetItem":
            found = [i for items in parsed.get("Responses", {}).values() for i in items]
            units = sum(_units(item_bytes(i), READ_UNIT_BYTES) - 1 for i in found)
        elif model.name == "GetItem":
            units = _units(item_bytes(parsed.get("Item", {})), READ_UNIT_BYTES)
        else:
            return
        with self._lock:
            self.read_units += units

    def as_dict(self) -> dict[str, Any]:
        return {
            "calls": dict(sorted(self.calls.items())),
            "dynamodb_read_units": round(self.read_units, 1),
            "dynamodb_write_units": round(self.write_units, 1),
            "kinesis_put_payload_units": self.put_payload_units,
            "s3_put_bytes": self.s3_put_bytes,
        }


def _payload_units(entry: dict[str, Any]) -> int:
    size = len(entry.get("Data", b"")) + len(entry.get("PartitionKey", "").encode())
    return max(1, math.ceil(size / PUT_PAYLOAD_UNIT_BYTES))


def _size(body: Any) -> int:
    if body is None:
        return 0
    if isinstance(body, bytes | bytearray):
        return len(body)
    if hasattr(body, "getbuffer"):  # botocore may have wrapped it in BytesIO
        return int(body.getbuffer().nbytes)
    return 0


def _units(size: int, unit_bytes: int) -> int:
    return max(1, math.ceil(size / unit_bytes))


def _write_units(operation: str, params: dict[str, Any]) -> int:
    if operation == "PutItem":
        return _units(item_bytes(params.get("Item", {})), WRITE_UNIT_BYTES)
    if operation in ("UpdateItem", "DeleteItem"):
        # The benchmark's updates touch items far below 1 KB.
        return 1
    if operation == "BatchWriteItem":
        return sum(
            _units(item_bytes(r["PutRequest"]["Item"]), WRITE_UNIT_BYTES)
            if "PutRequest" in r
            else 1
            for requests in params.get("RequestItems", {}).values()
            for r in requests
        )
    return 0


def item_bytes(item: dict[str, Any]) -> int:
    """Return a DynamoDB item's size as DynamoDB counts it (closely)."""
    return sum(len(name.encode()) + _value_bytes(v) for name, v in item.items())


def _value_bytes(value: dict[str, Any]) -> int:
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        return (len(inner.lstrip("-").replace(".", "")) + 1) // 2 + 1
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "M":
        return 3 + sum(1 + item_bytes({k: v}) for k, v in inner.items())
    if kind == "L":
        return 3 + sum(1 + _value_bytes(v) for v in inner)
    if kind in ("SS", "NS", "BS"):
        return sum(len(str(v)) for v in inner)
    return 0
