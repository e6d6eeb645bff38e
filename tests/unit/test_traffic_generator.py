"""The traffic generator: determinism, realism, and truth that obeys the rules."""

from __future__ import annotations

import collections

import pytest

from spanstream.model import SPAN_KINDS, STATUS_CODES
from spanstream.traffic.generator import (
    GeneratedTrace,
    generate_spans,
    generate_traces,
    iter_spans,
    span_count,
    truths,
)
from spanstream.traffic.reference import expected_edges, virtual_node
from spanstream.traffic.truth import (
    is_error_for,
    operation_for,
    peer_service_for,
    status_class_for,
    template_path,
    window_start_secs,
)

NOW_NANOS = 1_767_225_600_000_000_000  # 2026-01-01T00:00:00Z


@pytest.fixture(scope="module")
def traces() -> list[GeneratedTrace]:
    return generate_traces(3_000, seed=11, now_unix_nanos=NOW_NANOS)


def _fingerprint(traces: list[GeneratedTrace]) -> list[tuple]:
    return [
        (s.trace_id, s.span_id, s.name, s.start_unix_nanos, sorted(s.attributes))
        for s in iter_spans(traces)
    ]


def test_same_seed_gives_same_traces() -> None:
    first = generate_traces(200, seed=5, now_unix_nanos=NOW_NANOS)
    second = generate_traces(200, seed=5, now_unix_nanos=NOW_NANOS)
    assert _fingerprint(first) == _fingerprint(second)
    assert truths(first) == truths(second)


def test_other_seed_gives_other_traces() -> None:
    first = generate_traces(50, seed=5, now_unix_nanos=NOW_NANOS)
    second = generate_traces(50, seed=6, now_unix_nanos=NOW_NANOS)
    assert _fingerprint(first) != _fingerprint(second)


def test_generate_spans_reaches_the_span_count() -> None:
    traces = generate_spans(1_000, seed=1, now_unix_nanos=NOW_NANOS)
    assert 1_000 <= span_count(traces) < 1_000 + max(len(t.spans) for t in traces)


def test_spans_end_within_the_spread_before_now(traces) -> None:
    ends = [s.end_unix_nanos for s in iter_spans(traces)]
    assert max(ends) <= NOW_NANOS
    assert min(ends) >= NOW_NANOS - 60 * 1_000_000_000


def test_ids_are_unique_and_well_formed(traces) -> None:
    spans = list(iter_spans(traces))
    assert len({(s.trace_id, s.span_id) for s in spans}) == len(spans)
    assert len({t.trace_id for t in traces}) == len(traces)
    assert all(len(s.trace_id) == 16 and len(s.span_id) == 8 for s in spans)
    assert all(len(s.parent_span_id) in (0, 8) for s in spans)
    assert sum(1 for s in spans if not s.parent_span_id) == len(traces)


def test_every_tenant_occurs_and_one_has_no_tenant_attribute(traces) -> None:
    tenants = collections.Counter(t.tenant for t in traces)
    assert set(tenants) == {"acme", "globex", "initech", "default"}
    for span in iter_spans(traces):
        has_attribute = "tenant.id" in span.resource.attributes
        assert has_attribute == (span.truth.tenant != "default")
        if has_attribute:
            assert span.resource.attributes["tenant.id"] == span.truth.tenant


def test_truth_follows_the_rules_from_attributes(traces) -> None:
    """The generator's intent agrees with the documented rules on every span."""
    for span in iter_spans(traces):
        truth = span.truth
        kind = SPAN_KINDS[span.kind]
        status = STATUS_CODES[span.status_code]
        events = [event.name for event in span.events]
        assert truth.span_kind == kind
        assert truth.service == span.resource.attributes["service.name"]
        assert truth.operation == operation_for(span.name, kind, span.attributes)
        assert truth.is_error == is_error_for(kind, status, span.attributes, events)
        assert truth.status_class == status_class_for(status, span.attributes)
        assert truth.duration_nanos == span.end_unix_nanos - span.start_unix_nanos > 0
        assert truth.is_cold_start == (span.attributes.get("faas.coldstart") is True)
        assert truth.faas_name == span.resource.attributes.get("faas.name")
        if kind in ("CLIENT", "PRODUCER"):
            assert truth.peer_service == peer_service_for(span.attributes)


def test_every_server_half_is_the_child_of_its_client_span(traces) -> None:
    for trace in traces:
        by_id = {s.span_id.hex(): s for s in trace.spans}
        for span in trace.spans:
            if span.truth.caller_span_id is None:
                continue
            caller = by_id[span.truth.caller_span_id]
            assert span.parent_span_id == caller.span_id
            assert (caller.truth.span_kind, span.truth.span_kind) in (
                ("CLIENT", "SERVER"),
                ("PRODUCER", "CONSUMER"),
            )
            assert caller.truth.service != span.truth.service
            assert caller.truth.edge_server == span.truth.service


def test_intended_edges_equal_the_edges_derived_from_parents(traces) -> None:
    intended: collections.Counter = collections.Counter()
    for span in iter_spans(traces):
        t = span.truth
        if t.edge_type is not None:
            key = (t.tenant, t.service, t.edge_server, t.edge_type)
            intended[key, t.window_start_secs] += 1
            if t.edge_type not in ("rpc", "messaging"):
                assert virtual_node(t) == (t.edge_server, t.edge_type)
    derived = {
        ((tenant, client, server, kind), window): stats.count
        for (tenant, client, server, kind, window), stats in expected_edges(
            truths(traces)
        ).items()
    }
    assert derived == dict(intended)


def test_children_run_inside_their_parent_except_consumers(traces) -> None:
    for trace in traces:
        by_id = {s.span_id: s for s in trace.spans}
        for span in trace.spans:
            parent = by_id.get(span.parent_span_id)
            if parent is None:
                continue
            if span.truth.span_kind == "CONSUMER":
                assert span.start_unix_nanos >= parent.end_unix_nanos
            else:
                assert parent.start_unix_nanos <= span.start_unix_nanos
                assert span.end_unix_nanos <= parent.end_unix_nanos


def test_the_mix_covers_what_the_pipeline_must_handle(traces) -> None:
    spans = list(iter_spans(traces))
    attribute_names = {name for s in spans for name in s.attributes}
    assert {"http.method", "http.status_code", "http.target", "net.peer.name"} <= (
        attribute_names
    )
    assert {
        "http.request.method",
        "http.response.status_code",
        "url.path",
        "server.address",
    } <= attribute_names
    kinds = collections.Counter(s.truth.span_kind for s in spans)
    assert set(kinds) == {"SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER"}
    method_only = [
        s for s in spans if s.truth.span_kind == "SERVER" and s.name == "GET"
    ]
    assert any("http.route" in s.attributes for s in method_only)
    assert any("http.route" not in s.attributes for s in method_only)
    operations = {s.truth.operation for s in spans}
    for placeholder in ("{num}", "{uuid}", "{hex}", "{id}"):
        assert any(placeholder in op for op in operations), placeholder
    assert any(s.name == "" and s.truth.span_kind == "SERVER" for s in spans)
    db_systems = {s.attributes.get("db.system") for s in spans}
    assert {"postgresql", "redis"} <= db_systems
    assert any(s.attributes.get("messaging.system") == "kafka" for s in spans)
    assert any(any(e.name == "exception" for e in s.events) for s in spans)
    classes = {s.truth.status_class for s in spans}
    assert {"2xx", "4xx", "5xx", "UNSET", "OK", "ERROR"} <= classes


def test_errors_come_from_every_rule(traces) -> None:
    spans = list(iter_spans(traces))
    errors = [s for s in spans if s.truth.is_error]
    assert 0.01 < len(errors) / len(spans) < 0.1
    unset = [s for s in errors if s.truth.status_code != "ERROR"]
    assert any(
        s.truth.span_kind == "SERVER" and s.truth.status_class == "5xx" for s in unset
    )
    assert any(
        s.truth.span_kind == "CLIENT" and s.truth.status_class == "4xx" for s in unset
    )
    assert any(any(e.name == "exception" for e in s.events) for s in unset)
    server_4xx = [
        s
        for s in spans
        if s.truth.span_kind == "SERVER" and s.truth.status_class == "4xx"
    ]
    assert server_4xx and not any(s.truth.is_error for s in server_4xx)


def test_about_five_percent_of_function_invocations_are_cold(traces) -> None:
    invocations = [
        s
        for s in iter_spans(traces)
        if s.truth.faas_name is not None and s.truth.span_kind == "SERVER"
    ]
    cold = [s for s in invocations if s.truth.is_cold_start]
    assert len(invocations) > 300
    assert 0.02 < len(cold) / len(invocations) < 0.09
    warm = [s for s in invocations if not s.truth.is_cold_start]
    assert _mean_duration(cold) > 3 * _mean_duration(warm)
    lambda_resource = cold[0].resource.attributes
    assert lambda_resource["cloud.provider"] == "aws"
    assert {"cloud.region", "cloud.account.id", "faas.name"} <= set(lambda_resource)


def _mean_duration(spans: list) -> float:
    return sum(s.truth.duration_nanos for s in spans) / len(spans)


def test_window_start_is_the_minute_of_the_end() -> None:
    assert window_start_secs(1_767_225_659_999_999_999) == 1_767_225_600
    assert window_start_secs(1_767_225_660_000_000_000) == 1_767_225_660


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/products/12345", "/products/{num}"),
        ("/orders/550e8400-e29b-41d4-a716-446655440000", "/orders/{uuid}"),
        ("/images/9f86d081884c7d65", "/images/{hex}"),
        ("/users/u12345/cart", "/users/{id}/cart"),
        ("/search/7/results?q=shoes&page=2", "/search/{num}/results"),
        ("/api/checkout", "/api/checkout"),
        ("/", "/"),
    ],
)
def test_template_path(path: str, template: str) -> None:
    assert template_path(path) == template


def test_operation_rules() -> None:
    route = {"http.request.method": "GET", "http.route": "/p/:id", "url.path": "/p/7"}
    assert operation_for("GET", "SERVER", route) == "GET /p/:id"
    assert operation_for("GET", "SERVER", {"http.target": "/p/7?x=1"}) == "GET /p/{num}"
    assert operation_for("", "SERVER", {"http.method": "POST", "url.path": "/a/1"}) == (
        "POST /a/{num}"
    )
    assert operation_for("GET", "CLIENT", route) == "GET"
    assert operation_for("GET /p/:id", "SERVER", route) == "GET /p/:id"


def test_tenants_can_be_chosen() -> None:
    only_default = generate_traces(20, seed=1, now_unix_nanos=NOW_NANOS, tenants=[None])
    assert {s.truth.tenant for s in iter_spans(only_default)} == {"default"}
    assert not any(
        "tenant.id" in s.resource.attributes for s in iter_spans(only_default)
    )
    named = generate_traces(40, seed=1, now_unix_nanos=NOW_NANOS, tenants=["x", "y"])
    assert {t.tenant for t in named} == {"x", "y"}
    with pytest.raises(ValueError, match="tenant"):
        generate_traces(1, seed=1, tenants=[])
