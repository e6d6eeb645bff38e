"""The recorded real traces load completely and as documented."""

from __future__ import annotations

import collections
import json
from pathlib import Path

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from spanstream.traffic.real import (
    iter_zipkin_traces,
    robot_shop_records,
    robot_shop_resource_spans,
    robot_shop_truth,
    shared_data_dir,
    zipkin_files,
    zipkin_records,
    zipkin_spans,
)
from spanstream.traffic.reference import expected

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT.parent / "shared" / "data"

pytestmark = pytest.mark.usefixtures("shared_data")


def test_data_dir_is_found_beside_the_repo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPANSTREAM_SHARED_DATA", raising=False)
    assert shared_data_dir() == DATA_DIR
    assert shared_data_dir(REPO_ROOT) == DATA_DIR
    monkeypatch.setenv("SPANSTREAM_SHARED_DATA", "/elsewhere")
    assert shared_data_dir() == Path("/elsewhere")


@pytest.fixture(scope="module")
def robot_shop():
    return robot_shop_resource_spans(DATA_DIR)


def test_robot_shop_loads_every_span_grouped_by_service(robot_shop) -> None:
    spans_by_service = {
        rs.resource.attributes[0].value.string_value: len(rs.scope_spans[0].spans)
        for rs in robot_shop
    }
    assert sum(spans_by_service.values()) == 14_772
    assert spans_by_service == {
        "catalogue": 8_043,
        "cart": 3_863,
        "user": 1_614,
        "web": 1_252,
    }
    trace_ids = {span.trace_id for rs in robot_shop for span in rs.scope_spans[0].spans}
    assert len(trace_ids) == 2_416


def test_robot_shop_attributes_use_otel_names(robot_shop) -> None:
    names = collections.Counter(
        kv.key
        for rs in robot_shop
        for s in rs.scope_spans[0].spans
        for kv in s.attributes
    )
    assert set(names) == {
        "http.method",
        "http.status_code",
        "http.target",
        "http.url",
        "net.peer.name",
        "net.peer.port",
    }
    statuses = collections.Counter(
        s.status.code for rs in robot_shop for s in rs.scope_spans[0].spans
    )
    assert statuses[2] == 126  # ERROR, as the README says


def test_robot_shop_records_hold_every_span() -> None:
    records = robot_shop_records(DATA_DIR, spans_per_record=1_000)
    total = 0
    for _, data in records:
        request = ExportTraceServiceRequest()
        request.ParseFromString(data)
        assert len(request.resource_spans) == 1
        count = len(request.resource_spans[0].scope_spans[0].spans)
        assert count <= 1_000
        total += count
    assert total == 14_772


def test_robot_shop_truth() -> None:
    spans = robot_shop_truth(DATA_DIR)
    assert len(spans) == 14_772
    assert {s.tenant for s in spans} == {"default"}
    errors = [s for s in spans if s.is_error]
    # 126 with status ERROR; the HTTP rules add none: the 3 CLIENT 404s and
    # the 3 SERVER 500s already have status ERROR.
    assert len(errors) == 126
    classes = collections.Counter((s.span_kind, s.status_class) for s in spans)
    assert classes["SERVER", "4xx"] == 502
    assert classes["SERVER", "5xx"] == 3
    peers = collections.Counter(
        s.peer_service for s in spans if s.span_kind == "CLIENT"
    )
    assert peers["mongodb"] == 1_180
    assert peers["redis"] == 443
    summary = expected(spans)
    assert len(summary.traces) == 2_416
    rooted = [t for t in summary.traces.values() if t.root_service is not None]
    assert len(rooted) == 2_414  # two traces lost their root to the capture window


def test_zipkin_files_hold_the_documented_spans() -> None:
    files = zipkin_files(DATA_DIR)
    # The README says 11 files; the folder holds 10 (10 traces, 1,293 spans).
    assert len(files) == 10
    spans = zipkin_spans(DATA_DIR)
    assert len(spans) == 1_293
    assert len({span["traceId"] for span in spans}) == 10
    services = {
        span["localEndpoint"]["serviceName"]
        for span in spans
        if span.get("localEndpoint", {}).get("serviceName")
    }
    assert len(services) == 34  # as local endpoints; the README counts 35
    assert sum(1 for span in spans if "error" in span.get("tags", {})) == 7
    # Zipkin allows spans without a timestamp; the decoder cannot place them.
    assert sum(1 for span in spans if "timestamp" not in span) == 84
    shared_ids = {span["id"] for span in spans if span.get("shared")}
    assert len(shared_ids) == 340  # 290 of them in the SmartThings install trace


def test_zipkin_records_are_one_json_array_per_trace() -> None:
    records = zipkin_records(DATA_DIR)
    assert len(records) == 10
    by_trace = dict(iter_zipkin_traces(DATA_DIR))
    total = 0
    for key, data in records:
        spans = json.loads(data)
        assert isinstance(spans, list)
        assert {span["traceId"] for span in spans} == {key}
        assert len(spans) == len(by_trace[key])
        total += len(spans)
    assert total == 1_293
    raw_files = {path.read_bytes() for path in zipkin_files(DATA_DIR)}
    assert {data for _, data in records} == raw_files  # one trace per file
