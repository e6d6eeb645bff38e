"""The DynamoDB item layout: keys and attributes of every aggregate table.

Shared by the writer (`spanstream.sinks.dynamodb`) and the readers
(`spanstream.sinks.readers`) so that both sides agree on one layout, which
``docs/data-model.md`` describes. Items are in the low-level client's typed
form (``{"S": ...}``, ``{"N": ...}``); names inside keys are encoded with
`spanstream.sinks.keys`, and every item also holds the raw names as plain
attributes, which is what the readers return.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from spanstream.aggregate.sketch import LatencySketch, sketch_value
from spanstream.aggregate.types import (
    ColdStartKey,
    ColdStartStats,
    EdgeKey,
    LateKey,
    LatencyStats,
    RedKey,
    TraceSummary,
)
from spanstream.sinks.keys import (
    MAX_COMPONENT_CHARS,
    SEPARATOR,
    encode_component,
    join_key,
)

logger = logging.getLogger(__name__)

Item = dict[str, Any]

METRICS = "metrics"
EDGES = "edges"
COLDSTARTS = "coldstarts"
TRACES = "traces"
TRACES_BY_SERVICE_INDEX = "by_service"
LATE_MARKER = "__late__"
#: Second sort key component of the item holding a service's RED series of
#: one window (a late counter's is `LATE_MARKER`).
SERIES_MARKER = "__series__"
#: Operation of the series that takes the spans of series an item had no
#: room for (see `bound_series`).
ITEM_OVERFLOW = "__overflow__"
#: What the ``series`` map of one metrics item may take, in DynamoDB's
#: measure. The rest of the item (tenant and service names of at most
#: `spanstream.config.MAX_ATTRIBUTE_VALUE_CHARS_LIMIT` characters, keys,
#: ``hwm``) stays below 160 KB, so the item stays below DynamoDB's 400 KB.
MAX_SERIES_MAP_BYTES = 240 * 1024
#: Longest key component: `MAX_COMPONENT_CHARS`, ``~`` and 32 hex digits.
_MAX_KEY_COMPONENT_CHARS = MAX_COMPONENT_CHARS + 33
UNKNOWN_SERVICE = "unknown"
QUANTILES = {"p50_nanos": 0.5, "p90_nanos": 0.9, "p99_nanos": 0.99}
_WINDOW_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def window_label(window_start_secs: int) -> str:
    """Return ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), which sorts like the time."""
    return datetime.fromtimestamp(window_start_secs, UTC).strftime(_WINDOW_FORMAT)


def nanos_label(unix_nanos: int) -> str:
    """Return ``YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`` (UTC), which sorts like the time."""
    secs, nanos = divmod(unix_nanos, 1_000_000_000)
    return f"{window_label(secs)[:-1]}.{nanos:09d}Z"


def s(value: str) -> dict[str, str]:
    return {"S": value}


def n(value: int) -> dict[str, str]:
    return {"N": str(value)}


def get_int(item: Mapping[str, Any], name: str, default: int = 0) -> int:
    """Return the number attribute ``name`` of ``item``, or ``default``."""
    value = item.get(name)
    return default if value is None else int(value["N"])


def get_str(item: Mapping[str, Any], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else str(value["S"])


def describe_key(table_name: str, key: Mapping[str, Any]) -> str:
    """Return ``table pk=... sk=...`` for errors: encoded names, never values."""
    parts = " ".join(f"{name}={value['S']!r}" for name, value in sorted(key.items()))
    return f"{table_name} {parts}"


# Keys -------------------------------------------------------------------------


class MetricGroup(NamedTuple):
    """The RED series of one service in one window: one metrics item."""

    tenant: str
    service: str
    window_start_secs: int


def metric_group(key: RedKey) -> MetricGroup:
    return MetricGroup(key.tenant, key.service, key.window_start_secs)


def metric_key(group: MetricGroup) -> Item:
    return {
        "pk": s(join_key(group.tenant, group.service)),
        "sk": s(f"{window_label(group.window_start_secs)}{SEPARATOR}{SERIES_MARKER}"),
    }


def late_key(key: LateKey) -> Item:
    # Two components where a RED series has four, so the two never collide.
    return {
        "pk": s(join_key(key.tenant, key.service)),
        "sk": s(f"{window_label(key.window_start_secs)}{SEPARATOR}{LATE_MARKER}"),
    }


def is_late_item(item: Mapping[str, Any]) -> bool:
    return str(item["sk"]["S"]).endswith(SEPARATOR + LATE_MARKER)


def edge_key(key: EdgeKey) -> Item:
    sort_names = join_key(key.client, key.server, key.connection_type)
    return {
        "pk": s(encode_component(key.tenant)),
        "sk": s(f"{window_label(key.window_start_secs)}{SEPARATOR}{sort_names}"),
    }


def cold_start_key(key: ColdStartKey) -> Item:
    return {
        "pk": s(join_key(key.tenant, key.function)),
        "sk": s(window_label(key.window_start_secs)),
    }


def trace_key(tenant: str, trace_id: str) -> Item:
    return {"pk": s(join_key(tenant, trace_id))}


def service_key(tenant: str, service: str) -> str:
    """Return the ``by_service`` index partition key of a tenant's service."""
    return join_key(tenant, service)


# Identity attributes: the raw names, which the readers return ---------------


def metric_identity(group: MetricGroup) -> Item:
    return {
        "tenant": s(group.tenant),
        "service": s(group.service),
        "window_start_secs": n(group.window_start_secs),
    }


def metric_group_of(item: Mapping[str, Any]) -> MetricGroup:
    return MetricGroup(
        tenant=item["tenant"]["S"],
        service=item["service"]["S"],
        window_start_secs=get_int(item, "window_start_secs"),
    )


def series_name(key: RedKey) -> str:
    """Return the name of ``key``'s entry in its item's ``series`` map."""
    return join_key(key.operation, key.span_kind, key.status_class)


def series_attribute(series: Mapping[RedKey, LatencyStats]) -> Item:
    """Return the ``series`` map attribute of a metrics item."""
    return {
        "series": {
            "M": {
                series_name(key): {"M": series_entry(key, stats)}
                for key, stats in sorted(series.items())
            }
        }
    }


def series_entry(key: RedKey, stats: LatencyStats) -> Item:
    return {
        "operation": s(key.operation),
        "span_kind": s(key.span_kind),
        "status_class": s(key.status_class),
        **latency_attributes(stats),
    }


def metric_series(item: Mapping[str, Any] | None) -> dict[RedKey, LatencyStats]:
    """Return the RED series of a metrics item (empty for None)."""
    if item is None:
        return {}
    group = metric_group_of(item)
    found: dict[RedKey, LatencyStats] = {}
    for entry in item.get("series", {}).get("M", {}).values():
        fields = entry["M"]
        key = RedKey(
            group.tenant,
            group.service,
            fields["operation"]["S"],
            fields["span_kind"]["S"],
            fields["status_class"]["S"],
            group.window_start_secs,
        )
        found[key] = latency_stats(fields)
    return found


def bound_series(series: dict[RedKey, LatencyStats]) -> int:
    """Fold series into overflow series until the map fits its budget.

    While the ``series`` map would take more than `MAX_SERIES_MAP_BYTES`,
    the series last in key order (never an overflow series) is merged into
    the series of operation `ITEM_OVERFLOW` with its span kind and status
    class, so every span stays counted. Changes ``series`` in place and
    returns how many series were folded (0 for every ordinary service: the
    budget holds hundreds of series).
    """
    if sum(map(_entry_size_bound, series.items())) <= MAX_SERIES_MAP_BYTES:
        return 0  # the usual case: no entry needs encoding to be measured
    sizes = {key: _entry_size(key, stats) for key, stats in series.items()}
    total = sum(sizes.values())
    folded = 0
    while total > MAX_SERIES_MAP_BYTES:
        movable = [key for key in series if key.operation != ITEM_OVERFLOW]
        if not movable:
            break
        key = max(movable)
        stats = series.pop(key)
        total -= sizes.pop(key)
        target = key._replace(operation=ITEM_OVERFLOW)
        if target in series:
            total -= sizes[target]
            series[target].merge(stats)
        else:
            series[target] = stats
        sizes[target] = _entry_size(target, series[target])
        total += sizes[target]
        folded += 1
    if folded:
        logger.warning(
            "metrics item of %r/%r at %d: %d series folded into %s (item size limit)",
            next(iter(series)).tenant[:64],
            next(iter(series)).service[:64],
            next(iter(series)).window_start_secs,
            folded,
            ITEM_OVERFLOW,
        )
    return folded


def _entry_size_bound(entry: tuple[RedKey, LatencyStats]) -> int:
    """Return at least what `_entry_size` would, without encoding anything.

    Names count 4 bytes a character as raw names, and 12 (``%XX`` of 4
    bytes) in the map key, whose components are capped
    (`spanstream.sinks.keys.MAX_COMPONENT_CHARS` plus the hash mark);
    a sketch bucket at most 20 bytes (two varints); the numbers and the
    attribute names at most 512 bytes together.
    """
    key, stats = entry
    name_chars = len(key.operation) + len(key.span_kind) + len(key.status_class)
    key_chars = min(12 * name_chars + 5, 3 * _MAX_KEY_COMPONENT_CHARS + 2)
    return 4 * name_chars + key_chars + 20 * (len(stats.sketch.bins) + 1) + 512


def _entry_size(key: RedKey, stats: LatencyStats) -> int:
    name = series_name(key)
    return len(name.encode("utf-8", "surrogatepass")) + attribute_size(
        {"M": series_entry(key, stats)}
    )


def attribute_size(value: Mapping[str, Any]) -> int:
    """Return the size DynamoDB counts for one typed attribute value (bytes).

    Strings and binaries count their bytes, numbers their digits (an upper
    bound of DynamoDB's ~1 byte per 2 digits), maps and lists 3 bytes plus 1
    per element plus their contents, names included.
    """
    [(kind, content)] = value.items()
    if kind == "S":
        return len(str(content).encode("utf-8", "surrogatepass"))
    if kind == "N":
        return len(str(content)) + 1
    if kind == "B":
        return len(content)
    if kind in {"BOOL", "NULL"}:
        return 1
    if kind == "M":
        return 3 + sum(
            len(name.encode("utf-8", "surrogatepass")) + 1 + attribute_size(v)
            for name, v in content.items()
        )
    if kind == "L":
        return 3 + sum(1 + attribute_size(v) for v in content)
    raise ValueError(f"unknown DynamoDB attribute type {kind!r}")


def late_identity(key: LateKey) -> Item:
    return {
        "tenant": s(key.tenant),
        "service": s(key.service),
        "window_start_secs": n(key.window_start_secs),
    }


def late_series(item: Mapping[str, Any]) -> LateKey:
    return LateKey(
        tenant=item["tenant"]["S"],
        service=item["service"]["S"],
        window_start_secs=get_int(item, "window_start_secs"),
    )


def edge_identity(key: EdgeKey) -> Item:
    return {
        "tenant": s(key.tenant),
        "client": s(key.client),
        "server": s(key.server),
        "connection_type": s(key.connection_type),
        "window_start_secs": n(key.window_start_secs),
    }


def edge_series(item: Mapping[str, Any]) -> EdgeKey:
    return EdgeKey(
        tenant=item["tenant"]["S"],
        client=item["client"]["S"],
        server=item["server"]["S"],
        connection_type=item["connection_type"]["S"],
        window_start_secs=get_int(item, "window_start_secs"),
    )


def cold_start_identity(key: ColdStartKey) -> Item:
    return {
        "tenant": s(key.tenant),
        "function": s(key.function),
        "window_start_secs": n(key.window_start_secs),
    }


def cold_start_series(item: Mapping[str, Any]) -> ColdStartKey:
    return ColdStartKey(
        tenant=item["tenant"]["S"],
        function=item["function"]["S"],
        window_start_secs=get_int(item, "window_start_secs"),
    )


# Values -----------------------------------------------------------------------


def latency_attributes(stats: LatencyStats) -> Item:
    """Return the stats attributes, with p50/p90/p99 derived from the sketch."""
    attributes: Item = {
        "count": n(stats.count),
        "errors": n(stats.errors),
        "duration_sum_nanos": n(stats.duration_sum_nanos),
        "sketch": {"B": stats.sketch.to_bytes()},
    }
    if stats.duration_min_nanos is not None:
        attributes["duration_min_nanos"] = n(stats.duration_min_nanos)
    if stats.duration_max_nanos is not None:
        attributes["duration_max_nanos"] = n(stats.duration_max_nanos)
    for name, value in zip(QUANTILES, _quantiles(stats.sketch), strict=True):
        if value is not None:
            attributes[name] = n(round(value))
    return attributes


def _quantiles(sketch: LatencySketch) -> list[float | None]:
    """Return ``sketch.quantile(q)`` for each of `QUANTILES`, in one pass.

    The same walk as `LatencySketch.quantile`, sorting the buckets once
    instead of once a quantile (QUANTILES are in increasing order).
    """
    total = sketch.count
    if total == 0:
        return [None] * len(QUANTILES)
    ranks = [q * (total - 1) for q in QUANTILES.values()]
    values: list[float | None] = []
    seen = sketch.zero_count
    bins = sketch.bins
    keys = iter(sorted(bins))
    key = None
    for rank in ranks:
        while seen <= rank:
            key = next(keys, None)
            if key is None:
                break
            seen += bins[key]
        if seen > rank:
            values.append(0.0 if key is None else sketch_value(key))
        else:
            values.append(sketch_value(max(bins)))
    return values


def latency_stats(item: Mapping[str, Any]) -> LatencyStats:
    """Return the `LatencyStats` of an item; raises ValueError on a bad sketch."""
    sketch_bytes = item.get("sketch", {}).get("B")
    return LatencyStats(
        count=get_int(item, "count"),
        errors=get_int(item, "errors"),
        duration_sum_nanos=get_int(item, "duration_sum_nanos"),
        duration_min_nanos=_optional_int(item, "duration_min_nanos"),
        duration_max_nanos=_optional_int(item, "duration_max_nanos"),
        sketch=(
            LatencySketch.from_bytes(bytes(sketch_bytes))
            if sketch_bytes is not None
            else LatencySketch()
        ),
    )


def _optional_int(item: Mapping[str, Any], name: str) -> int | None:
    value = item.get(name)
    return None if value is None else int(value["N"])


def cold_start_attributes(stats: ColdStartStats) -> Item:
    return {
        "cold_count": n(stats.cold_count),
        "cold_duration_sum_nanos": n(stats.cold_duration_sum_nanos),
        "warm_count": n(stats.warm_count),
        "warm_duration_sum_nanos": n(stats.warm_duration_sum_nanos),
    }


def cold_start_stats(item: Mapping[str, Any]) -> ColdStartStats:
    return ColdStartStats(
        cold_count=get_int(item, "cold_count"),
        cold_duration_sum_nanos=get_int(item, "cold_duration_sum_nanos"),
        warm_count=get_int(item, "warm_count"),
        warm_duration_sum_nanos=get_int(item, "warm_duration_sum_nanos"),
    )


def late_attributes(late_count: int) -> Item:
    return {"late_count": n(late_count)}


def late_count(item: Mapping[str, Any]) -> int:
    return get_int(item, "late_count")


def high_water_marks(item: Mapping[str, Any] | None) -> dict[str, str]:
    """Return the item's shard id -> last applied sequence number map."""
    if item is None:
        return {}
    return {
        shard: value["S"] for shard, value in item.get("hwm", {}).get("M", {}).items()
    }


def high_water_mark_attribute(marks: Mapping[str, str]) -> Item:
    return {"M": {shard: s(sequence) for shard, sequence in marks.items()}}


# Trace summaries --------------------------------------------------------------


def trace_item(summary: TraceSummary, expires_at_secs: int) -> Item:
    """Return the full item of a trace summary (a full state, not a delta)."""
    root_service = summary.root_service or UNKNOWN_SERVICE
    item: Item = {
        **trace_key(summary.tenant, summary.trace_id),
        "service_key": s(service_key(summary.tenant, root_service)),
        "start_key": s(f"{nanos_label(summary.start_unix_nanos)}#{summary.trace_id}"),
        "tenant": s(summary.tenant),
        "trace_id": s(summary.trace_id),
        "start_unix_nanos": n(summary.start_unix_nanos),
        "end_unix_nanos": n(summary.end_unix_nanos),
        "duration_nanos": n(summary.duration_nanos),
        "span_count": n(summary.span_count),
        "error_count": n(summary.error_count),
        "services": {"L": [s(service) for service in summary.services]},
        "cold_start_count": n(summary.cold_start_count),
        "expires_at": n(expires_at_secs),
    }
    if summary.root_service is not None:
        item["root_service"] = s(summary.root_service)
    if summary.root_operation is not None:
        item["root_operation"] = s(summary.root_operation)
    if summary.services_omitted:
        item["services_omitted"] = n(summary.services_omitted)
    return item


def trace_summary(item: Mapping[str, Any]) -> TraceSummary:
    return TraceSummary(
        tenant=item["tenant"]["S"],
        trace_id=item["trace_id"]["S"],
        root_service=get_str(item, "root_service"),
        root_operation=get_str(item, "root_operation"),
        start_unix_nanos=get_int(item, "start_unix_nanos"),
        end_unix_nanos=get_int(item, "end_unix_nanos"),
        span_count=get_int(item, "span_count"),
        error_count=get_int(item, "error_count"),
        services=[value["S"] for value in item.get("services", {}).get("L", [])],
        cold_start_count=get_int(item, "cold_start_count"),
        services_omitted=get_int(item, "services_omitted"),
    )
