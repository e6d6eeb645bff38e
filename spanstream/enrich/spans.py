"""Turn OTLP spans into enriched `SpanBatch` rows.

This is the one place where protobuf span objects become columns. Every
derived column follows a rule documented in docs/enrichment.md:

* tenant: the resource attribute named by ``Settings.tenant_attribute``
  (the last one of that name, even past the attribute count limit), else
  ``Settings.default_tenant``;
* service: resource ``service.name``, else ``unknown_service``;
* operation: see `spanstream.enrich.operation`;
* is_error: OTel status ERROR, a server span with HTTP status >= 500, a client
  span with HTTP status >= 400, or an ``exception`` span event;
* peer_service (client and producer spans): ``peer.service``, else
  ``server.address`` / ``net.peer.name``, else ``db.system``, else
  ``messaging.system``;
* HTTP attributes are read under both the current (``http.request.method``,
  ``http.response.status_code``, ``url.path``) and the older
  (``http.method``, ``http.status_code``, ``http.target``) names.

Every name taken from the input that can reach a DynamoDB item or key
(tenant, service, span name and operation, peer service, database and
messaging system, function name) is cut to ``Settings.max_attribute_value_chars``
characters like an attribute value, and each cut counted: one oversized name
must not make an aggregate item too large to write.

A span whose ids are malformed, or whose start or end time does not fit int64
nanoseconds, is skipped and counted; the other spans of the record are kept.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, NamedTuple

from spanstream.config import Settings
from spanstream.enrich.attributes import (
    AttributeCounters,
    AttributeLimits,
    any_value_to_python,
    cut_name,
    to_string_map,
)
from spanstream.enrich.operation import operation_name
from spanstream.model import SPAN_KINDS, STATUS_CODES, RecordRef, SpanBatch

logger = logging.getLogger(__name__)

UNKNOWN_SERVICE = "unknown_service"
_SERVER, _CLIENT, _PRODUCER = 2, 3, 4
_STATUS_ERROR = 2
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1
_INT64_MAX = 2**63 - 1


class ResourceContext(NamedTuple):
    """What a span inherits from its resource, derived once per resource."""

    tenant: str
    service: str
    cloud_region: str | None
    cloud_account_id: str | None
    faas_name: str | None
    attributes: dict[str, str]
    #: how many of tenant, service and function name were cut to the limit
    truncated_names: int = 0


@dataclass
class ExtractStats:
    """What happened to the spans of one payload."""

    spans: int = 0
    invalid_spans: int = 0
    dropped_attributes: int = 0
    truncated_attributes: int = 0
    #: derived names (tenant, service, operation...) cut to the value limit
    truncated_names: int = 0


def _first(typed: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = typed.get(name)
        if value is not None and value != "":
            return value
    return None


def _last_value(key_values: Any, key: str) -> Any:
    """Return the plain value of the last attribute named ``key``, else None.

    Unlike ``to_string_map`` this ignores the attribute count limit: the
    tenant decides whose prefix and partitions a span is written to, so a
    resource with many attributes must not move its spans to the default
    tenant.
    """
    found = None
    for key_value in key_values:
        if key_value.key == key:
            found = key_value.value
    return None if found is None else any_value_to_python(found)


def _as_int(value: Any) -> int | None:
    """Return ``value`` as an int that fits the archive's int32 column, else None.

    Infinite, out-of-range and non-numeric values are no status code: one
    span must not make its whole batch fail to archive.
    """
    if value is None or isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return number if _INT32_MIN <= number <= _INT32_MAX else None


def _as_str(value: Any) -> str | None:
    return None if value is None else str(value)


def _cut_optional(
    name: str | None, max_chars: int, counters: AttributeCounters
) -> str | None:
    return None if name is None else cut_name(name, max_chars, counters)


class SpanExtractor:
    """Appends the spans of OTLP ``TracesData`` messages to a `SpanBatch`."""

    def __init__(self, settings: Settings) -> None:
        self._tenant_attribute = settings.tenant_attribute
        self._default_tenant = settings.default_tenant
        self._limits = AttributeLimits(
            settings.max_attributes_per_span, settings.max_attribute_value_chars
        )
        self._max_name_chars = settings.max_attribute_value_chars

    def resource_context(self, pb_resource: Any) -> ResourceContext:
        """Return the derived columns every span of ``pb_resource`` shares.

        Names are cut to the value limit; ``truncated_names`` says how many.
        The resource's own attribute cuts and drops are counted nowhere.
        """
        counters = AttributeCounters()
        rendered, typed = to_string_map(pb_resource.attributes, self._limits, counters)
        max_chars = self._max_name_chars
        tenant = _last_value(pb_resource.attributes, self._tenant_attribute)
        service = typed.get("service.name")
        return ResourceContext(
            tenant=(
                cut_name(str(tenant), max_chars, counters)
                if tenant
                else self._default_tenant
            ),
            service=(
                cut_name(str(service), max_chars, counters)
                if service
                else UNKNOWN_SERVICE
            ),
            cloud_region=_as_str(typed.get("cloud.region")),
            cloud_account_id=_as_str(typed.get("cloud.account.id")),
            faas_name=_cut_optional(
                _as_str(_first(typed, "faas.name")), max_chars, counters
            ),
            attributes=rendered,
            truncated_names=counters.truncated_names,
        )

    def extract(self, pb_traces: Any, ref: RecordRef, batch: SpanBatch) -> ExtractStats:
        """Append every valid span of ``pb_traces`` to ``batch``; return counts.

        ``pb_traces`` is an ``ExportTraceServiceRequest`` or ``TracesData``.
        Writes nothing but ``batch``; never raises for a bad span (it is
        skipped, counted, and logged with the record's location).
        """
        stats = ExtractStats()
        counters = AttributeCounters()
        for pb_resource_spans in pb_traces.resource_spans:
            context = self.resource_context(pb_resource_spans.resource)
            counters.truncated_names += context.truncated_names
            for pb_scope_spans in pb_resource_spans.scope_spans:
                scope_name = pb_scope_spans.scope.name or None
                for pb_span in pb_scope_spans.spans:
                    if self._append(pb_span, context, scope_name, ref, batch, counters):
                        stats.spans += 1
                    else:
                        stats.invalid_spans += 1
        if stats.invalid_spans:
            logger.warning(
                "%s: skipped %d spans with malformed ids or times",
                ref.describe(),
                stats.invalid_spans,
            )
        stats.dropped_attributes = counters.dropped
        stats.truncated_attributes = counters.truncated
        stats.truncated_names = counters.truncated_names
        return stats

    def _append(
        self,
        pb_span: Any,
        context: ResourceContext,
        scope_name: str | None,
        ref: RecordRef,
        batch: SpanBatch,
        counters: AttributeCounters,
    ) -> bool:
        trace_id = pb_span.trace_id
        span_id = pb_span.span_id
        parent_span_id = pb_span.parent_span_id
        if (
            len(trace_id) != 16
            or len(span_id) != 8
            or len(parent_span_id) not in (0, 8)
            or trace_id == b"\0" * 16
            # Past the archive's int64 columns (the year 2262): no real time.
            or pb_span.start_time_unix_nano > _INT64_MAX
            or pb_span.end_time_unix_nano > _INT64_MAX
        ):
            return False
        rendered, typed = to_string_map(pb_span.attributes, self._limits, counters)
        kind = pb_span.kind
        kind_name = SPAN_KINDS[kind] if 0 <= kind < len(SPAN_KINDS) else SPAN_KINDS[0]
        status_code = pb_span.status.code
        status_name = (
            STATUS_CODES[status_code]
            if 0 <= status_code < len(STATUS_CODES)
            else "UNSET"
        )
        http_method = _as_str(_first(typed, "http.request.method", "http.method"))
        http_route = _as_str(typed.get("http.route"))
        http_status = _as_int(
            _first(typed, "http.response.status_code", "http.status_code")
        )
        has_exception = False
        for pb_event in pb_span.events:
            if pb_event.name == "exception":
                has_exception = True
                break
        is_error = (
            status_code == _STATUS_ERROR
            or has_exception
            or (
                http_status is not None
                and (
                    (kind == _SERVER and http_status >= 500)
                    or (kind == _CLIENT and http_status >= 400)
                )
            )
        )
        name = pb_span.name
        if kind == _SERVER:
            path = _first(typed, "url.path", "http.target", "url.full", "http.url")
            operation = operation_name(name, True, http_method, http_route, path)
        else:
            operation = name
        max_chars = self._max_name_chars
        operation = cut_name(operation, max_chars, counters)
        db_system = _cut_optional(
            _as_str(_first(typed, "db.system", "db.system.name")), max_chars, counters
        )
        messaging_system = _cut_optional(
            _as_str(typed.get("messaging.system")), max_chars, counters
        )
        peer_service = None
        if kind in (_CLIENT, _PRODUCER):
            peer_service = _cut_optional(
                _as_str(
                    _first(
                        typed,
                        "peer.service",
                        "server.address",
                        "net.peer.name",
                        "db.system",
                        "db.system.name",
                        "messaging.system",
                    )
                ),
                max_chars,
                counters,
            )
        cold = typed.get("faas.coldstart")
        start = pb_span.start_time_unix_nano
        end = pb_span.end_time_unix_nano

        batch.tenant.append(context.tenant)
        batch.trace_id.append(trace_id.hex())
        batch.span_id.append(span_id.hex())
        batch.parent_span_id.append(parent_span_id.hex() if parent_span_id else None)
        batch.service.append(context.service)
        batch.operation.append(operation)
        batch.span_name.append(cut_name(name, max_chars, counters))
        batch.span_kind.append(kind_name)
        batch.start_unix_nanos.append(start)
        batch.end_unix_nanos.append(end)
        batch.duration_nanos.append(end - start if end > start else 0)
        batch.status_code.append(status_name)
        batch.status_message.append(pb_span.status.message or None)
        batch.is_error.append(is_error)
        batch.http_method.append(http_method)
        batch.http_route.append(http_route)
        batch.http_status_code.append(http_status)
        batch.peer_service.append(peer_service)
        batch.db_system.append(db_system)
        batch.messaging_system.append(messaging_system)
        batch.cloud_region.append(context.cloud_region)
        batch.cloud_account_id.append(context.cloud_account_id)
        batch.faas_name.append(context.faas_name)
        batch.is_cold_start.append(cold is True or cold == "true")
        batch.event_count.append(len(pb_span.events))
        batch.resource_attributes.append(context.attributes)
        batch.span_attributes.append(rendered)
        batch.scope_name.append(scope_name)
        batch.source_shard_id.append(ref.shard_id)
        batch.source_sequence_number.append(ref.sequence_number)
        batch.source_sub_sequence_number.append(ref.sub_sequence_number)
        batch.arrival_unix_millis.append(ref.arrival_unix_millis)
        return True
