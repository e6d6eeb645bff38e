"""What a span should become after enrichment, and the rules that say so.

`SpanTruth` is the per-span answer the reference computation works from. The
generator fills it from what it *meant* to produce (it knows the route
template it filled in, the status it chose); the robot-shop loader fills it
by applying the rules below to recorded attributes. Tests check that both
routes agree on generated traffic, so a drift between the generator and the
rules shows up as a failing test, not as a silently wrong reference.

The rules, exactly as the enrichment stage implements them:

* tenant: resource attribute ``tenant.id``, else ``"default"``.
* operation: the span name, except for a SERVER span whose name is only an
  HTTP method (any case), ``HTTP`` or empty: then ``"{METHOD} {http.route}"``
  when a route is present, else ``"{METHOD} "`` plus the templated path
  (`template_path`) of ``url.path``, ``http.target``, ``url.full`` or
  ``http.url``; METHOD is the method attribute, else the name, upper-cased.
* is_error: status ERROR, or a SERVER span with HTTP status >= 500, or a
  CLIENT span with HTTP status >= 400, or a span event named ``exception``.
* status_class: ``"Nxx"`` from the HTTP status code when there is one, else
  the OTel status code name (``UNSET``, ``OK``, ``ERROR``).
* window_start_secs: ``end_unix_nanos // 1e9 // 60 * 60``.
* peer service (CLIENT and PRODUCER spans): ``peer.service``, else
  ``server.address`` / ``net.peer.name``, else ``db.system`` (or
  ``db.system.name``), else ``messaging.system``.
* service: resource ``service.name``, else ``unknown_service``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

DEFAULT_TENANT = "default"
UNKNOWN_SERVICE = "unknown_service"
TENANT_ATTRIBUTE = "tenant.id"
WINDOW_SECS = 60
NANOS_PER_SEC = 1_000_000_000

HTTP_METHODS = frozenset(
    ("GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")
)

_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_HEX = re.compile(r"[0-9a-fA-F]{8,}")


class SpanTruth(NamedTuple):
    """The enriched view of one span that the pipeline should arrive at.

    Ids are lowercase hex; ``parent_span_id`` is None for a root span.
    ``caller_span_id`` is set on a SERVER (CONSUMER) span whose parent is a
    CLIENT (PRODUCER) span of the same trace. ``edge_server`` and
    ``edge_type`` are what the generator intended as the service-graph edge
    of a CLIENT or PRODUCER span (None when it meant no edge, or unknown).
    """

    tenant: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    operation: str
    span_name: str
    span_kind: str
    start_unix_nanos: int
    end_unix_nanos: int
    duration_nanos: int
    is_error: bool
    status_code: str
    status_class: str
    http_status_code: int | None
    is_cold_start: bool
    faas_name: str | None
    peer_service: str | None
    db_system: str | None
    messaging_system: str | None
    caller_span_id: str | None = None
    edge_server: str | None = None
    edge_type: str | None = None

    @property
    def window_start_secs(self) -> int:
        return window_start_secs(self.end_unix_nanos)


def window_start_secs(end_unix_nanos: int, window_secs: int = WINDOW_SECS) -> int:
    """Return the start (unix seconds) of the window a span ending then is in."""
    return end_unix_nanos // NANOS_PER_SEC // window_secs * window_secs


def template_segment(segment: str) -> str:
    """Return the placeholder for one path segment, or the segment itself."""
    if segment.isdigit():
        return "{num}"
    if _UUID.fullmatch(segment):
        return "{uuid}"
    if _HEX.fullmatch(segment):
        return "{hex}"
    if any(ch.isdigit() for ch in segment):
        return "{id}"
    return segment


def template_path(path: str) -> str:
    """Return ``path`` without its query string and with id segments replaced.

    ``/orders/42/items/u12?x=1`` becomes ``/orders/{num}/items/{id}``.
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    return "/".join(template_segment(segment) for segment in path.split("/"))


def is_method_only(name: str) -> bool:
    """Return True if a span name says no more than the HTTP method (or nothing)."""
    return not name or name == "HTTP" or name.upper() in HTTP_METHODS


def path_of(url_or_path: str) -> str:
    """Return the path of a full URL, or ``url_or_path`` itself."""
    if "://" not in url_or_path:
        return url_or_path
    rest = url_or_path.split("://", 1)[1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


def http_method(attributes: Mapping[str, Any]) -> str | None:
    """Return the request method under the new or the old attribute name."""
    value = attributes.get("http.request.method", attributes.get("http.method"))
    return str(value) if value not in (None, "") else None


def http_status_code(attributes: Mapping[str, Any]) -> int | None:
    """Return the response status under the new or the old attribute name."""
    value = attributes.get(
        "http.response.status_code", attributes.get("http.status_code")
    )
    if value in (None, ""):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def operation_for(name: str, span_kind: str, attributes: Mapping[str, Any]) -> str:
    """Return the operation a span is counted under (see the module rules)."""
    if span_kind != "SERVER" or not is_method_only(name):
        return name
    method = (http_method(attributes) or name or "HTTP").upper()
    route = attributes.get("http.route")
    if route:
        return f"{method} {route}"
    for key in ("url.path", "http.target", "url.full", "http.url"):
        path = attributes.get(key)
        if path:
            return f"{method} {template_path(path_of(str(path)))}"
    return name or method


def is_error_for(
    span_kind: str,
    status_code: str,
    attributes: Mapping[str, Any],
    event_names: list[str] | tuple[str, ...] = (),
) -> bool:
    """Return whether a span counts as an error (see the module rules)."""
    if status_code == "ERROR" or "exception" in event_names:
        return True
    code = http_status_code(attributes)
    if code is None:
        return False
    return (span_kind == "SERVER" and code >= 500) or (
        span_kind == "CLIENT" and code >= 400
    )


def status_class_for(status_code: str, attributes: Mapping[str, Any]) -> str:
    """Return ``"4xx"`` etc. for HTTP spans, else the OTel status code name."""
    code = http_status_code(attributes)
    if code is None:
        return status_code
    return f"{code // 100}xx"


def peer_service_for(attributes: Mapping[str, Any]) -> str | None:
    """Return who a client span talks to, by the first attribute present."""
    for name in (
        "peer.service",
        "server.address",
        "net.peer.name",
        "db.system",
        "db.system.name",
        "messaging.system",
    ):
        value = attributes.get(name)
        if value not in (None, ""):
            return str(value)
    return None
