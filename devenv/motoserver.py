"""moto's server with DynamoDB's conditional writes made atomic, as on AWS.

moto's server is threaded, and its DynamoDB backend checks a write's
condition and then stores the item without a lock, so two conditional puts
that read the same ``version`` can both succeed when their threads
interleave: a lost update that DynamoDB itself never allows. spanstream's
aggregate writer relies on that guarantee (read, merge, put on condition
``version = :read``), so against unpatched moto several writers of one busy
item lose counts now and then (seen with 8 concurrent writers: two puts
stored the same version in 2 of 4 runs, and one run lost 2 % of the counts).

This entry point serialises every DynamoDB write of the backend (put,
update, delete, transactions, batch writes) under one lock, then runs
``moto.server`` with the same arguments. Reads are left concurrent: each
sees one item or the next, never a half-written one. `devenv.emulators`
starts this instead of ``python -m moto.server``.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from moto.dynamodb.models import DynamoDBBackend
from moto.server import main as moto_main

#: The backend's methods that change items.
WRITES = (
    "put_item",
    "update_item",
    "delete_item",
    "transact_write_items",
    "batch_write_item",
)

_WRITE_LOCK = threading.RLock()


def _serialised(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _WRITE_LOCK:
            return method(*args, **kwargs)

    return locked


def make_writes_atomic() -> None:
    """Serialise the DynamoDB backend's writes (idempotent)."""
    for name in WRITES:
        method = getattr(DynamoDBBackend, name, None)
        if method is None or getattr(method, "_spanstream_serialised", False):
            continue
        locked = _serialised(method)
        locked._spanstream_serialised = True  # type: ignore[attr-defined]
        setattr(DynamoDBBackend, name, locked)


def main() -> None:
    make_writes_atomic()
    moto_main()


if __name__ == "__main__":
    main()
