"""Idempotent writes of aggregate deltas and trace summaries to DynamoDB.

DynamoDB can add numbers in place but cannot take a minimum, a maximum or
merge two sketches, so every aggregate item is written read-merge-put:

1. read every affected item with consistent ``BatchGetItem`` calls;
2. merge in Python the deltas whose `FlushRange` the item has not seen: the
   item keeps ``hwm``, shard id -> last applied sequence number, and a delta
   is already applied when ``hwm[shard] >= last_sequence_number``;
3. ``PutItem`` the merged item with ``hwm`` advanced, on condition that
   ``version`` is still what was read (``attribute_not_exists(pk)`` for a
   new item). When another writer got there first, the put fails with the
   current item (``ReturnValuesOnConditionCheckFailure``), and the merge is
   redone on it.

A replayed delta therefore changes nothing, and concurrent writers never lose
each other's counts. Deltas of several shards for one item become one put.

Step 1 is skipped for an item this writer put last time (`ItemCache`): the
item as put is the item as read, unless another writer changed it since, and
then the version condition fails and returns the item as it is. The cached
copy is used only while it wins: an item whose cached put lost a race is
read first from then on (every item of its partition key, as busy series
stay busy), because a lost put costs as many write units as the item has
kilobytes, several times what a read costs. So a single writer of its
series (the local runner, a Lambda container of a shard keyed by service)
reads nothing back, and writers that share series read as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from functools import partial
from typing import Any, NamedTuple

from botocore.exceptions import ClientError

from spanstream.aggregate.types import (
    AggregateDelta,
    ColdStartStats,
    FlushRange,
    LatencyStats,
    RedKey,
    TraceSummary,
)
from spanstream.config import Settings
from spanstream.errors import SinkError
from spanstream.sinks import items
from spanstream.sinks.items import Item
from spanstream.sinks.retry import RetryPolicy
from spanstream.sinks.workers import TaskGroup, WorkerPool

logger = logging.getLogger(__name__)

DEFAULT_RETENTION_SECS = 30 * 86_400
MAX_BATCH_GET_KEYS = 100
MAX_BATCH_WRITE_ITEMS = 25
MAX_CONFLICT_RETRIES = 10
#: Items an `AggregateWriter` keeps as it last put them (a few kilobytes
#: each): two windows of 500 series groups.
DEFAULT_CACHED_ITEMS = 1_000
_CONDITION_FAILED = "ConditionalCheckFailedException"


@dataclass
class WriteStats:
    """What a write cost and did; add two with ``+``.

    ``requests`` counts successful API calls by operation; ``read_units``
    and ``write_units`` sum ``ConsumedCapacity``. A put that lost a version
    race (``conflicts``) is billed at least one write unit that DynamoDB
    does not report; neither are throttled attempts counted.
    """

    requests: Counter[str] = field(default_factory=Counter)
    read_units: float = 0.0
    write_units: float = 0.0
    items_written: int = 0
    items_unchanged: int = 0
    deltas_skipped: int = 0
    conflicts: int = 0
    #: items merged from the copy this writer put, without a read
    items_from_cache: int = 0

    @property
    def request_count(self) -> int:
        return sum(self.requests.values())

    def __add__(self, other: WriteStats) -> WriteStats:
        return WriteStats(
            requests=self.requests + other.requests,
            read_units=self.read_units + other.read_units,
            write_units=self.write_units + other.write_units,
            items_written=self.items_written + other.items_written,
            items_unchanged=self.items_unchanged + other.items_unchanged,
            deltas_skipped=self.deltas_skipped + other.deltas_skipped,
            conflicts=self.conflicts + other.conflicts,
            items_from_cache=self.items_from_cache + other.items_from_cache,
        )

    def count(self, operation: str, response: dict[str, Any]) -> None:
        """Count one call of ``operation`` and the capacity it reports."""
        self.requests[operation] += 1
        consumed = response.get("ConsumedCapacity")
        if consumed is None:
            return
        for entry in consumed if isinstance(consumed, list) else [consumed]:
            units = float(entry.get("CapacityUnits", 0.0))
            if operation in ("BatchGetItem", "GetItem", "Query", "Scan"):
                self.read_units += units
            else:
                self.write_units += units


class _Layout(NamedTuple):
    """How one kind of series becomes an item and merges into one."""

    table: str
    key: Callable[[Any], Item]
    identity: Callable[[Any], Item]
    decode: Callable[[Item | None], Any]
    encode: Callable[[Any], Item]
    merge: Callable[[Any, Any], Any]


def _merge_in_place(state: Any, value: Any) -> Any:
    state.merge(value)
    return state


def _merge_series(
    state: dict[RedKey, LatencyStats], value: dict[RedKey, LatencyStats]
) -> dict[RedKey, LatencyStats]:
    for key, stats in value.items():
        held = state.get(key)
        if held is None:
            held = state[key] = LatencyStats()
        held.merge(stats)
    return state


def _encode_series(state: dict[RedKey, LatencyStats]) -> Item:
    items.bound_series(state)
    return items.series_attribute(state)


# One item per service and window holds all its RED series: DynamoDB bills
# a put by the kilobyte, with one at least, and a series takes about half.
_METRICS = _Layout(
    items.METRICS,
    items.metric_key,
    items.metric_identity,
    items.metric_series,
    _encode_series,
    _merge_series,
)
_EDGES = _Layout(
    items.EDGES,
    items.edge_key,
    items.edge_identity,
    lambda item: items.latency_stats(item) if item else LatencyStats(),
    items.latency_attributes,
    _merge_in_place,
)
_COLD_STARTS = _Layout(
    items.COLDSTARTS,
    items.cold_start_key,
    items.cold_start_identity,
    lambda item: items.cold_start_stats(item) if item else ColdStartStats(),
    items.cold_start_attributes,
    _merge_in_place,
)
_LATE = _Layout(
    items.METRICS,
    items.late_key,
    items.late_identity,
    lambda item: items.late_count(item) if item else 0,
    items.late_attributes,
    lambda state, value: state + value,
)


ItemId = tuple[str, str, str]


class ItemCache:
    """The items a writer put last, and the partition keys that contend.

    Thread-safe. Holds at most ``max_items`` items, the least recently put
    dropped first; 0 keeps none (every item is read before its put).
    """

    def __init__(self, max_items: int) -> None:
        self.max_items = max_items
        self._items: OrderedDict[ItemId, Item] = OrderedDict()
        self._contended: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def get(self, item_id: ItemId) -> Item | None:
        """Return the item as last put, unless its partition key contends."""
        with self._lock:
            if item_id[:2] in self._contended:
                return None
            return self._items.get(item_id)

    def put(self, item_id: ItemId, item: Item) -> None:
        if not self.max_items:
            return
        with self._lock:
            self._items[item_id] = item
            self._items.move_to_end(item_id)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def forget(self, item_id: ItemId) -> None:
        """Drop the copy (its put is under way or failed: it may be stale)."""
        with self._lock:
            self._items.pop(item_id, None)

    def contended(self, item_id: ItemId) -> None:
        """Read every item of ``item_id``'s partition key before its put."""
        with self._lock:
            if len(self._contended) >= 16 * max(self.max_items, 1):
                self._contended.clear()
            self._contended.add(item_id[:2])
            self._items.pop(item_id, None)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Pending:
    """One item to update and the delta values (by flush range) to merge in."""

    layout: _Layout
    table_name: str
    key: Item
    series: Any
    window_start_secs: int
    contributions: list[tuple[FlushRange, Any]] = field(default_factory=list)

    def describe(self) -> str:
        return items.describe_key(self.table_name, self.key)


class AggregateWriter:
    """Writes `AggregateDelta` values and `TraceSummary` values to DynamoDB.

    ``clock`` (unix seconds) stamps ``updated_unix_millis``; ``expires_at``
    (the TTL attribute) is the window start plus ``retention_secs``, so it
    does not depend on when a write happens.
    """

    def __init__(
        self,
        dynamodb_client: Any,
        settings: Settings,
        clock: Callable[[], float] = time.time,
        retry: RetryPolicy | None = None,
        retention_secs: int = DEFAULT_RETENTION_SECS,
        cached_items: int = DEFAULT_CACHED_ITEMS,
    ) -> None:
        self.client = dynamodb_client
        self.settings = settings
        self.clock = clock
        self.retry = retry or RetryPolicy()
        self.retention_secs = retention_secs
        #: everything this writer has done, for benchmarks and metrics
        self.totals = WriteStats()
        # Kept across writes: starting threads per write cost more than
        # the writes once DynamoDB answers fast.
        self._pool = WorkerPool(
            settings.dynamodb_write_concurrency, thread_name_prefix="ddb"
        )
        self.cache = ItemCache(cached_items)

    def close(self) -> None:
        """Stop the writer's threads (a later write starts them again)."""
        self._pool.close()

    # Aggregates -----------------------------------------------------------

    def write(self, deltas: Sequence[AggregateDelta]) -> WriteStats:
        """Apply ``deltas`` (any shards, any order of shards) and return the cost.

        Deltas of one shard must come in sequence order, within a call and
        across calls, as their ranges are applied. Each affected item is read
        at most once (not at all when this writer's cached copy is used) and
        put at most once (more only after losing a race to another writer).
        Raises `SinkError` naming a table and key if an item could
        not be written; every other item has been written by then, and
        writing the same deltas again completes the rest without double
        counting.
        """
        pending = self._collect(deltas)
        stats = WriteStats()
        if not pending:
            return stats
        cached = {
            item_id: item
            for item_id in pending
            if (item := self.cache.get(item_id)) is not None
        }
        with self._pool.tasks() as pool:
            current, read_stats = self._read_all(
                pool, [e for i, e in pending.items() if i not in cached]
            )
            stats += read_stats
            futures = [
                pool.submit(
                    self._apply,
                    item_id,
                    entry,
                    cached.get(item_id) or current.get(item_id),
                    item_id in cached,
                )
                for item_id, entry in pending.items()
            ]
            stats += _gather(futures, "aggregate items")
        self.totals += stats
        logger.debug(
            "aggregates: %d items written, %d unchanged, %d requests, %.1f WCU",
            stats.items_written,
            stats.items_unchanged,
            stats.request_count,
            stats.write_units,
        )
        return stats

    def _collect(self, deltas: Iterable[AggregateDelta]) -> dict[ItemId, _Pending]:
        pending: dict[ItemId, _Pending] = {}

        def add(
            layout: _Layout, values: dict[Any, Any], flush_range: FlushRange
        ) -> None:
            for series, value in values.items():
                key = layout.key(series)
                table_name = self.settings.table_name(layout.table)
                item_id = (table_name, key["pk"]["S"], key["sk"]["S"])
                entry = pending.get(item_id)
                if entry is None:
                    entry = pending[item_id] = _Pending(
                        layout, table_name, key, series, series.window_start_secs
                    )
                entry.contributions.append((flush_range, value))

        for delta in deltas:
            add(_METRICS, _by_group(delta.metrics), delta.flush_range)
            add(_EDGES, delta.edges, delta.flush_range)
            add(_COLD_STARTS, delta.cold_starts, delta.flush_range)
            add(_LATE, delta.late, delta.flush_range)
        return pending

    def _read_all(
        self, pool: TaskGroup, pending: list[_Pending]
    ) -> tuple[dict[ItemId, Item], WriteStats]:
        chunks = [
            pending[i : i + MAX_BATCH_GET_KEYS]
            for i in range(0, len(pending), MAX_BATCH_GET_KEYS)
        ]
        futures = [pool.submit(self._batch_get, chunk) for chunk in chunks]
        found: dict[ItemId, Item] = {}
        stats = WriteStats()
        for future in futures:
            chunk_found, chunk_stats = future.result()
            found.update(chunk_found)
            stats += chunk_stats
        return found, stats

    def _batch_get(
        self, chunk: list[_Pending]
    ) -> tuple[dict[ItemId, Item], WriteStats]:
        stats = WriteStats()
        request: dict[str, Any] = {}
        for entry in chunk:
            table = request.setdefault(
                entry.table_name, {"Keys": [], "ConsistentRead": True}
            )
            table["Keys"].append(entry.key)
        what = f"BatchGetItem of {len(chunk)} keys from {sorted(request)}"
        backoff = self.retry.start(what)
        found: dict[ItemId, Item] = {}
        while request:
            response = self.retry.call(
                partial(
                    self.client.batch_get_item,
                    RequestItems=request,
                    ReturnConsumedCapacity="TOTAL",
                ),
                what,
            )
            stats.count("BatchGetItem", response)
            for table_name, table_items in response.get("Responses", {}).items():
                for item in table_items:
                    found[table_name, item["pk"]["S"], item["sk"]["S"]] = item
            request = response.get("UnprocessedKeys") or {}
            if request:
                backoff.wait(
                    f"{sum(len(t['Keys']) for t in request.values())} keys unprocessed"
                )
        return found, stats

    def _apply(
        self, item_id: ItemId, entry: _Pending, item: Item | None, from_cache: bool
    ) -> WriteStats:
        stats = WriteStats()
        stats.items_from_cache = int(from_cache)
        # Until the put is known to have landed, the copy may be stale.
        self.cache.forget(item_id)
        for _attempt in range(MAX_CONFLICT_RETRIES):
            put_request, skipped = self._merge(entry, item)
            stats.deltas_skipped = skipped
            if put_request is None:
                stats.items_unchanged += 1
                if item is not None:
                    self.cache.put(item_id, item)
                return stats
            try:
                response = self.retry.call(
                    partial(self.client.put_item, **put_request),
                    f"PutItem {entry.describe()}",
                    passthrough=(_CONDITION_FAILED,),
                )
            except ClientError as exc:
                # The put still cost a write; the failure returns the item
                # as the other writer left it, so no extra read is needed.
                stats.conflicts += 1
                stats.requests["PutItem"] += 1
                logger.debug("version conflict on %s; merging again", entry.describe())
                if from_cache:
                    self.cache.contended(item_id)
                    from_cache = False
                item = exc.response.get("Item") or self._get(entry, stats)
                continue
            stats.count("PutItem", response)
            stats.items_written += 1
            self.cache.put(item_id, put_request["Item"])
            return stats
        raise SinkError(
            f"PutItem {entry.describe()}: still conflicting after "
            f"{MAX_CONFLICT_RETRIES} attempts"
        )

    def _get(self, entry: _Pending, stats: WriteStats) -> Item | None:
        response = self.retry.call(
            lambda: self.client.get_item(
                TableName=entry.table_name,
                Key=entry.key,
                ConsistentRead=True,
                ReturnConsumedCapacity="TOTAL",
            ),
            f"GetItem {entry.describe()}",
        )
        stats.count("GetItem", response)
        item: Item | None = response.get("Item")
        return item

    def _merge(
        self, entry: _Pending, item: Item | None
    ) -> tuple[dict[str, Any] | None, int]:
        """Return the PutItem request (None if every delta is applied) and skips."""
        layout = entry.layout
        marks = items.high_water_marks(item)
        state = layout.decode(item)
        applied = skipped = 0
        for flush_range, value in sorted(
            entry.contributions, key=lambda c: int(c[0].last_sequence_number)
        ):
            seen = marks.get(flush_range.shard_id)
            if seen is not None and int(seen) >= int(flush_range.last_sequence_number):
                skipped += 1
                continue
            state = layout.merge(state, value)
            marks[flush_range.shard_id] = flush_range.last_sequence_number
            applied += 1
        if not applied:
            return None, skipped
        version = items.get_int(item, "version") if item else 0
        request: dict[str, Any] = {
            "TableName": entry.table_name,
            "Item": {
                **entry.key,
                **layout.identity(entry.series),
                **layout.encode(state),
                "hwm": items.high_water_mark_attribute(marks),
                "version": items.n(version + 1),
                "expires_at": items.n(entry.window_start_secs + self.retention_secs),
                "updated_unix_millis": items.n(int(self.clock() * 1000)),
            },
            "ReturnConsumedCapacity": "TOTAL",
            "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
        }
        if item is None:
            request["ConditionExpression"] = "attribute_not_exists(pk)"
        else:
            request["ConditionExpression"] = "version = :read_version"
            request["ExpressionAttributeValues"] = {":read_version": items.n(version)}
        return request, skipped

    # Trace summaries ------------------------------------------------------

    def write_summaries(self, summaries: Sequence[TraceSummary]) -> WriteStats:
        """Put each summary's full state; returns the cost.

        Puts are idempotent. Of two summaries of one trace in one call, the
        later in ``summaries`` wins. Raises `SinkError` naming the table if a
        batch could not be written within the retry deadline.
        """
        table_name = self.settings.table_name(items.TRACES)
        by_key: dict[str, Item] = {}
        for summary in summaries:
            expires_at = summary.start_unix_nanos // 1_000_000_000 + self.retention_secs
            item = items.trace_item(summary, expires_at)
            by_key[item["pk"]["S"]] = item
        puts = [{"PutRequest": {"Item": item}} for item in by_key.values()]
        chunks = [
            puts[i : i + MAX_BATCH_WRITE_ITEMS]
            for i in range(0, len(puts), MAX_BATCH_WRITE_ITEMS)
        ]
        stats = WriteStats()
        if not chunks:
            return stats
        workers = min(self.settings.dynamodb_write_concurrency, len(chunks))
        with self._pool.tasks(workers) as pool:
            futures = [
                pool.submit(self._batch_write, table_name, chunk) for chunk in chunks
            ]
            stats += _gather(futures, "trace summary batches")
        stats.items_written = len(puts)
        self.totals += stats
        logger.debug(
            "traces: %d summaries, %d requests, %.1f WCU",
            len(puts),
            stats.request_count,
            stats.write_units,
        )
        return stats

    def _batch_write(self, table_name: str, chunk: list[Item]) -> WriteStats:
        stats = WriteStats()
        what = f"BatchWriteItem of {len(chunk)} items to {table_name}"
        backoff = self.retry.start(what)
        request: dict[str, Any] = {table_name: chunk}
        while request:
            response = self.retry.call(
                partial(
                    self.client.batch_write_item,
                    RequestItems=request,
                    ReturnConsumedCapacity="TOTAL",
                ),
                what,
            )
            stats.count("BatchWriteItem", response)
            request = response.get("UnprocessedItems") or {}
            if request:
                backoff.wait(f"{len(request.get(table_name, []))} items unprocessed")
        return stats


def _by_group(
    metrics: dict[RedKey, LatencyStats],
) -> dict[items.MetricGroup, dict[RedKey, LatencyStats]]:
    groups: dict[items.MetricGroup, dict[RedKey, LatencyStats]] = {}
    for key, stats in metrics.items():
        group = items.metric_group(key)
        series = groups.get(group)
        if series is None:
            series = groups[group] = {}
        series[key] = stats
    return groups


def _gather(futures: list[Future[WriteStats]], what: str) -> WriteStats:
    """Return the summed stats, or raise one `SinkError` once all have finished."""
    stats = WriteStats()
    failures: list[BaseException] = []
    for future in futures:
        exc = future.exception()
        if exc is None:
            stats += future.result()
        else:
            failures.append(exc)
    if failures:
        first = failures[0]
        detail = str(first) if isinstance(first, SinkError) else type(first).__name__
        raise SinkError(
            f"{len(failures)} of {len(futures)} {what} failed; first: {detail}"
        ) from first
    return stats
