"""AWS clients that answer at once and keep nothing: the full path minus I/O.

The sinks run their real code (Parquet encoding, item encoding, key
building, thread pools); only the network round trip is missing.
"""

from __future__ import annotations

from typing import Any


class NullS3:
    """Accepts every ``put_object``; counts calls and bytes."""

    def __init__(self) -> None:
        self.puts = 0
        self.bytes = 0

    def put_object(self, **params: Any) -> dict[str, Any]:
        self.puts += 1
        self.bytes += len(params.get("Body", b""))
        return {}


class NullDynamoDB:
    """Finds no item and accepts every write."""

    def batch_get_item(self, **params: Any) -> dict[str, Any]:
        return {"Responses": {}, "UnprocessedKeys": {}}

    def put_item(self, **params: Any) -> dict[str, Any]:
        return {}

    def batch_write_item(self, **params: Any) -> dict[str, Any]:
        return {"UnprocessedItems": {}}
