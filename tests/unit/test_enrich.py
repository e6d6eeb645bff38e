"""Enrichment rules: operation, errors, peers, tenants, cold starts, limits."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from otlpfactory import make_record, make_request, make_span

from spanstream.config import Settings
from spanstream.decode import RecordDecoder
from spanstream.enrich.attributes import TRUNCATION_MARKER
from spanstream.enrich.operation import template_path
from spanstream.model import DeadLetter, SpanBatch

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CLIENT = trace_pb2.Span.SPAN_KIND_CLIENT
PRODUCER = trace_pb2.Span.SPAN_KIND_PRODUCER
INTERNAL = trace_pb2.Span.SPAN_KIND_INTERNAL


def enrich_one(
    span: trace_pb2.Span,
    resource: dict[str, Any] | None = None,
    settings: Settings | None = None,
) -> dict[str, Any]:
    batch = SpanBatch()
    dead_letters: list[DeadLetter] = []
    data = make_request([span], resource).SerializeToString()
    RecordDecoder(settings or Settings()).decode(make_record(data), batch, dead_letters)
    assert dead_letters == []
    assert len(batch) == 1
    return batch.row(0)


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/users/12345", "/users/{num}"),
        ("/orders/550e8400-e29b-41d4-a716-446655440000/items", "/orders/{uuid}/items"),
        ("/blobs/deadbeefcafe0123", "/blobs/{hex}"),
        ("/u/u12345/profile?tab=1", "/u/{id}/profile"),
        ("/health", "/health"),
        ("/", "/"),
    ],
)
def test_path_templating(path: str, template: str) -> None:
    assert template_path(path) == template


@pytest.mark.parametrize(
    ("name", "attributes", "operation"),
    [
        ("GET /cart", {"http.request.method": "GET"}, "GET /cart"),
        (
            "GET",
            {"http.request.method": "GET", "http.route": "/users/:id"},
            "GET /users/:id",
        ),
        (
            "GET",
            {"http.method": "GET", "http.target": "/users/42?x=1"},
            "GET /users/{num}",
        ),
        (
            "POST",
            {"http.request.method": "POST", "url.path": "/orders/ab12"},
            "POST /orders/{id}",
        ),
        (
            "HTTP",
            {"http.method": "PUT", "http.url": "https://h/api/7"},
            "PUT /api/{num}",
        ),
        ("GET", {}, "GET"),
    ],
)
def test_server_operation(
    name: str, attributes: dict[str, Any], operation: str
) -> None:
    assert (
        enrich_one(make_span(name=name, attributes=attributes))["operation"]
        == operation
    )


def test_client_span_named_by_method_keeps_its_name() -> None:
    span = make_span(name="GET", kind=CLIENT, attributes={"url.path": "/users/42"})
    assert enrich_one(span)["operation"] == "GET"


@pytest.mark.parametrize(
    ("kind", "attributes", "status", "events", "is_error"),
    [
        (SERVER, {"http.response.status_code": 500}, 0, (), True),
        (SERVER, {"http.status_code": 404}, 0, (), False),
        (CLIENT, {"http.status_code": 404}, 0, (), True),
        (CLIENT, {"http.response.status_code": "503"}, 0, (), True),
        (CLIENT, {"http.response.status_code": 302}, 0, (), False),
        (INTERNAL, {}, trace_pb2.Status.STATUS_CODE_ERROR, (), True),
        (INTERNAL, {}, trace_pb2.Status.STATUS_CODE_OK, (), False),
        (INTERNAL, {}, 0, ("exception",), True),
        (INTERNAL, {}, 0, ("log",), False),
    ],
)
def test_error_rules(
    kind: int,
    attributes: dict[str, Any],
    status: int,
    events: tuple[str, ...],
    is_error: bool,
) -> None:
    span = make_span(
        kind=kind, attributes=attributes, status_code=status, events=events
    )
    assert enrich_one(span)["is_error"] is is_error


@pytest.mark.parametrize(
    ("kind", "attributes", "peer"),
    [
        (
            CLIENT,
            {"peer.service": "payments", "server.address": "10.0.0.1"},
            "payments",
        ),
        (CLIENT, {"server.address": "cart.internal"}, "cart.internal"),
        (CLIENT, {"net.peer.name": "legacy-host"}, "legacy-host"),
        (CLIENT, {"db.system": "postgresql"}, "postgresql"),
        (PRODUCER, {"messaging.system": "kafka"}, "kafka"),
        (SERVER, {"peer.service": "ignored-for-servers"}, None),
    ],
)
def test_peer_service(kind: int, attributes: dict[str, Any], peer: str | None) -> None:
    assert (
        enrich_one(make_span(kind=kind, attributes=attributes))["peer_service"] == peer
    )


def test_resource_context_tenant_cloud_and_faas() -> None:
    resource = {
        "service.name": "resize",
        "tenant.id": "acme",
        "cloud.region": "eu-west-1",
        "cloud.account.id": "123456789012",
        "faas.name": "resize-image",
    }
    row = enrich_one(make_span(attributes={"faas.coldstart": True}), resource)
    assert row["tenant"] == "acme"
    assert row["service"] == "resize"
    assert (row["cloud_region"], row["cloud_account_id"]) == (
        "eu-west-1",
        "123456789012",
    )
    assert row["faas_name"] == "resize-image"
    assert row["is_cold_start"] is True
    assert row["resource_attributes"]["tenant.id"] == "acme"


def test_default_tenant_and_configurable_tenant_attribute() -> None:
    assert enrich_one(make_span(), {"service.name": "a"})["tenant"] == "default"
    settings = Settings(tenant_attribute="customer", default_tenant="shared")
    row = enrich_one(make_span(), {"service.name": "a", "customer": "c1"}, settings)
    assert row["tenant"] == "c1"
    assert (
        enrich_one(make_span(), {"service.name": "a"}, settings)["tenant"] == "shared"
    )


@pytest.mark.parametrize("decoder", ["python", "native"])
def test_tenant_is_kept_past_the_attribute_count_limit(decoder: str) -> None:
    # GIVEN a resource whose tenant attribute comes after the count limit
    settings = Settings(max_attributes_per_span=4)
    resource = {f"filler.{index}": "x" for index in range(10)}
    resource["tenant.id"] = "tenant-a"
    data = make_request([make_span()], resource).SerializeToString()
    batch = SpanBatch()
    # WHEN it is decoded
    RecordDecoder(settings, decoder).decode(make_record(data), batch, [])
    # THEN its spans stay the tenant's, not the default tenant's, though the
    # archived attribute map is still capped
    assert batch.tenant == ["tenant-a"]
    assert len(batch.resource_attributes[0]) == 4
    assert "tenant.id" not in batch.resource_attributes[0]


@pytest.mark.parametrize("decoder", ["python", "native"])
def test_last_tenant_attribute_wins(decoder: str) -> None:
    request = make_request([make_span()], {"service.name": "a"})
    attributes = request.resource_spans[0].resource.attributes
    for tenant in ("first", "second", "last"):
        attributes.add(key="tenant.id").value.string_value = tenant
    batch = SpanBatch()
    settings = Settings(max_attributes_per_span=2)
    RecordDecoder(settings, decoder).decode(
        make_record(request.SerializeToString()), batch, []
    )
    assert batch.tenant == ["last"]


def test_missing_service_name() -> None:
    assert enrich_one(make_span(), {"tenant.id": "t"})["service"] == "unknown_service"


def test_attribute_values_rendered_as_strings() -> None:
    attributes = {"i": 7, "f": 1.5, "b": False, "s": "x", "a": ["p", "q"]}
    row = enrich_one(make_span(attributes=attributes))
    assert row["span_attributes"] == {
        "i": "7",
        "f": "1.5",
        "b": "false",
        "s": "x",
        "a": '["p","q"]',
    }


def test_attribute_limits_truncate_and_drop() -> None:
    settings = Settings(max_attributes_per_span=2, max_attribute_value_chars=5)
    span = make_span(attributes={"a": "0123456789", "b": "ok", "c": "dropped"})
    decoder = RecordDecoder(settings)
    batch = SpanBatch()
    decoder.decode(make_record(make_request([span]).SerializeToString()), batch, [])
    assert batch.span_attributes[0] == {"a": "01234" + TRUNCATION_MARKER, "b": "ok"}
    assert decoder.stats.truncated_attributes == 1
    assert decoder.stats.dropped_attributes == 1


@pytest.mark.parametrize("decoder", ["python", "native"])
def test_derived_names_are_cut_like_attribute_values(decoder: str) -> None:
    # GIVEN names longer than the value limit of 8 characters, and short ones
    settings = Settings(max_attribute_value_chars=8)
    resource = {
        "tenant.id": "tenant-abcdef",
        "service.name": "svc",
        "faas.name": "function-x",
    }
    spans = [
        make_span(name="GET", attributes={"http.route": "/users/{id}/orders"}),
        make_span(
            name="SELECT orders",
            kind=CLIENT,
            span_id=b"\x02" * 8,
            attributes={"db.system": "postgresql"},
        ),
        make_span(
            name="send",
            kind=PRODUCER,
            span_id=b"\x03" * 8,
            attributes={"messaging.system": "rabbitmq-x"},
        ),
    ]
    data = make_request(spans, resource).SerializeToString()
    record_decoder = RecordDecoder(settings, decoder)
    batch = SpanBatch()
    # WHEN they are decoded
    record_decoder.decode(make_record(data), batch, [])
    # THEN each long name is cut after 8 characters and marked, once per
    # column it lands in; the operation is cut after it was derived
    marker = TRUNCATION_MARKER
    assert batch.tenant == ["tenant-a" + marker] * 3
    assert batch.service == ["svc"] * 3
    assert batch.faas_name == ["function" + marker] * 3
    assert batch.operation == ["GET /use" + marker, "SELECT o" + marker, "send"]
    assert batch.span_name == ["GET", "SELECT o" + marker, "send"]
    assert batch.db_system == [None, "postgres" + marker, None]
    assert batch.messaging_system == [None, None, "rabbitmq" + marker]
    assert batch.peer_service == [None, "postgres" + marker, "rabbitmq" + marker]
    assert batch.http_route == ["/users/{id}/orders", None, None]
    # tenant and function once for the resource; 1 + 4 + 2 for the spans
    assert record_decoder.stats.truncated_names == 9
    assert record_decoder.stats.truncated_attributes == 3


def test_status_class_inputs_and_source_columns() -> None:
    row = enrich_one(make_span(attributes={"http.response.status_code": 201}))
    assert row["http_status_code"] == 201
    assert row["status_code"] == "UNSET"
    assert row["source_shard_id"] == "shardId-000000000000"
    assert row["arrival_unix_millis"] == 1_700_000_000_000
    assert row["parent_span_id"] is None
