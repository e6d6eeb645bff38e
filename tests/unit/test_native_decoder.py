"""The compiled decoder gives exactly what the Python reference path gives.

Every test decodes the same bytes with ``RecordDecoder(decoder="python")`` and
``RecordDecoder(decoder="native")`` and compares all columns row by row (by
``repr``, so ``True`` differs from ``1`` and dict order counts), the dead
letters, the stats, and any exception that escapes.
"""

from __future__ import annotations

import gzip
import math
import zlib
from typing import Any

import pytest
import spanstream_native  # built by `make install`; a missing build must fail
from google.protobuf.message import DecodeError as ProtobufDecodeError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from otlpfactory import SPAN_ID, TRACE_ID, make_record, make_request, make_span

from spanstream.config import Settings
from spanstream.decode import RecordDecoder, native
from spanstream.enrich.attributes import TRUNCATION_MARKER
from spanstream.errors import ConfigError
from spanstream.model import SPAN_COLUMNS, SpanBatch

SETTINGS = Settings()
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def outcome(data: bytes, decoder: str, config: Settings) -> tuple[Any, ...]:
    record_decoder = RecordDecoder(config, decoder=decoder)
    batch = SpanBatch()
    dead_letters: list[Any] = []
    escaped = None
    try:
        record_decoder.decode(make_record(data), batch, dead_letters)
    except Exception as exc:  # the reference itself may raise; compare types
        escaped = type(exc)
    letters = [(d.stage, d.reason, d.record_bytes) for d in dead_letters]
    return repr(batch.columns()), letters, record_decoder.stats, escaped


def assert_same(data: bytes, config: Settings = SETTINGS) -> tuple[Any, ...]:
    expected = outcome(data, "python", config)
    assert outcome(data, "native", config) == expected
    return expected


def upb_accepts(data: bytes) -> bool:
    message = ExportTraceServiceRequest()
    try:
        message.ParseFromString(data)
    except (ProtobufDecodeError, RecursionError):
        return False
    return bool(message.resource_spans)


def native_accepts(data: bytes) -> bool:
    try:
        spanstream_native.parse(data)
    except spanstream_native.ProtobufPayloadError:
        return False
    return True


def field(number: int, payload: bytes) -> bytes:
    """Encode a length-delimited protobuf field."""
    length = len(payload)
    varint = b""
    while length >= 0x80:
        varint += bytes([length & 0x7F | 0x80])
        length >>= 7
    return bytes([number << 3 | 2]) + varint + bytes([length]) + payload


def nested_arrays(depth: int, innermost: bytes = field(1, b"x")) -> bytes:
    """A request whose one attribute nests ``depth`` arrays (AnyValue at 5+2d)."""
    any_value = innermost
    for _ in range(depth):
        any_value = field(5, field(1, any_value))
    key_value = field(1, b"deep") + field(2, any_value)
    span = make_span().SerializeToString() + field(9, key_value)
    return field(1, field(2, field(2, span)))


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


def otlp_bytes(span_count: int = 3) -> bytes:
    spans = [
        make_span(span_id=(i + 1).to_bytes(8, "big"), name=f"op{i}")
        for i in range(span_count)
    ]
    return make_request(spans).SerializeToString()


def with_tenant_attributes(*tenants: str) -> bytes:
    """A request whose resource has a ``tenant.id`` attribute per tenant."""
    request = make_request([make_span()])
    attributes = request.resource_spans[0].resource.attributes
    for tenant in tenants:
        attributes.add(key="tenant.id").value.string_value = tenant
    return request.SerializeToString()


def with_long_names() -> bytes:
    """A request whose names are past (or at) the default value limit of 4,096
    characters, in 1- to 4-byte characters, through every path that derives
    one: str() of a list tenant, Rust's and Python's operation naming."""
    limit = SETTINGS.max_attribute_value_chars
    spans = [
        make_span(name="\u00e9" * limit, span_id=b"\x01" * 8),
        make_span(
            name="GET",
            span_id=b"\x02" * 8,
            attributes={"http.route": "/r" * 3_000},
        ),
        make_span(
            name="GET",
            span_id=b"\x03" * 8,
            attributes={"url.path": "/\u0663" * 3_000},
        ),
        make_span(
            name="call",
            kind=3,
            span_id=b"\x04" * 8,
            attributes={"peer.service": "x" * (limit + 1), "db.system": "d" * 9_000},
        ),
        make_span(
            name="\U0001f642" * (limit + 1),
            kind=4,
            span_id=b"\x05" * 8,
            attributes={"messaging.system": "\u79df" * 5_000},
        ),
    ]
    resource = {
        "tenant.id": "\u79df" * 5_000,
        "service.name": "\U0001f642" * (limit + 1),
        "faas.name": "f" * limit,
    }
    request = make_request(spans, resource)
    second = request.resource_spans.add()
    tenant = second.resource.attributes.add(key="tenant.id")
    for _ in range(600):
        tenant.value.array_value.values.add().string_value = "long"
    service = second.resource.attributes.add(key="service.name")
    service.value.int_value = 10**18
    second.scope_spans.add().spans.append(make_span(span_id=b"\x06" * 8))
    return request.SerializeToString()


# GIVEN the payloads of test_decode.py / test_enrich.py ------------------------

EXAMPLES = {
    "three spans": otlp_bytes(3),
    "gzip": gzip.compress(otlp_bytes(2)),
    "zlib": zlib.compress(otlp_bytes(2)),
    "raw deflate": raw_deflate(otlp_bytes(2)),
    "truncated": otlp_bytes(5)[:40],
    "garbage": b"\x0a\x01\x02garbage",
    "empty request": b"",
    "resource without spans": field(1, b""),
    "nested 3": nested_arrays(3),
    "nested 47 (upb's deepest)": nested_arrays(47),
    "nested 48": nested_arrays(48),
    "malformed ids": make_request(
        [
            make_span(span_id=b"\x01" * 8),
            make_span(trace_id=b"\x01" * 5, span_id=b"\x02" * 8),
            make_span(span_id=b"\x03" * 8, parent_span_id=b"\x04" * 3),
            make_span(trace_id=b"\0" * 16),
        ]
    ).SerializeToString(),
    "all invalid": make_request([make_span(span_id=b"")]).SerializeToString(),
    "status error": make_request(
        [make_span(status_code=trace_pb2.Status.STATUS_CODE_ERROR)]
    ).SerializeToString(),
    "exception event": make_request(
        [make_span(kind=1, events=("log", "exception"))]
    ).SerializeToString(),
    "server routes": make_request(
        [
            make_span(name="GET", attributes={"http.request.method": "GET"}),
            make_span(name="get", attributes={"http.route": "/users/:id"}),
            make_span(name="HTTP", attributes={"http.url": "https://h/api/7?q#f"}),
            make_span(name="", attributes={"url.path": "/o/ab12/DEADBEEF00/x"}),
            make_span(name="POST", attributes={"http.target": "/a/1\n"}),
            make_span(name="po\u017ft", attributes={"url.path": "/a/\u00b2"}),
            make_span(name="GET", attributes={"url.path": "/a/\u0663/b"}),
        ]
    ).SerializeToString(),
    "peers": make_request(
        [
            make_span(kind=3, attributes={"db.system": "postgresql"}),
            make_span(kind=4, attributes={"messaging.system": "kafka"}),
            make_span(kind=3, attributes={"net.peer.name": "legacy"}),
        ]
    ).SerializeToString(),
    "resource context": make_request(
        [make_span(attributes={"faas.coldstart": True})],
        {
            "service.name": "resize",
            "tenant.id": "acme",
            "cloud.region": "",
            "cloud.account.id": 1234,
            "faas.name": "",
        },
    ).SerializeToString(),
    # The reference raised out of decode for the first two, and wrote a status
    # the archive's int32 column refuses for the third.
    "inf status": make_request(
        [make_span(), make_span(attributes={"http.status_code": math.inf})]
    ).SerializeToString(),
    "int path": make_request(
        [make_span(), make_span(name="GET", attributes={"url.path": 7})]
    ).SerializeToString(),
    "times past int64": make_request(
        [
            make_span(
                span_id=b"\x01" * 8, start_unix_nanos=2**63 - 1, duration_nanos=0
            ),
            make_span(span_id=b"\x02" * 8, start_unix_nanos=2**63 - 2),
            make_span(
                span_id=b"\x03" * 8, start_unix_nanos=2**64 - 5, duration_nanos=0
            ),
        ]
    ).SerializeToString(),
    "status past int32": make_request(
        [
            make_span(attributes={"http.status_code": 2**31}),
            make_span(attributes={"http.status_code": -(2**31)}),
            make_span(attributes={"http.status_code": "2147483647"}),
            make_span(attributes={"http.status_code": 1e300}),
        ]
    ).SerializeToString(),
    "tenant past the attribute limit": make_request(
        [make_span()],
        {**{f"filler.{i}": i for i in range(130)}, "tenant.id": "late"},
    ).SerializeToString(),
    "tenant three times": with_tenant_attributes("first", "", "last"),
    "names past the value limit": with_long_names(),
    "odd resource values": make_request(
        [make_span()], {"service.name": 0, "tenant.id": False, "cloud.region": 1.5}
    ).SerializeToString(),
}


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_examples_match_the_python_path(name: str) -> None:
    assert_same(EXAMPLES[name])


def test_long_names_are_cut_alike() -> None:
    # GIVEN names past the value limit WHEN both decoders read them THEN they
    # agree, and what they agree on is the names cut after 4,096 characters
    data = EXAMPLES["names past the value limit"]
    _, _, stats, escaped = assert_same(data)
    assert escaped is None
    # resource 1: tenant, service; the operations of spans 2 and 3; peer and
    # db system of 4; span name, operation, messaging system and peer of 5;
    # resource 2: tenant (str() of a list)
    assert stats.truncated_names == 11
    batch = SpanBatch()
    RecordDecoder(SETTINGS, decoder="native").decode(make_record(data), batch, [])
    limit = SETTINGS.max_attribute_value_chars
    list_tenant = str(["long"] * 600)
    assert batch.tenant == [
        *["\u79df" * limit + TRUNCATION_MARKER] * 5,
        list_tenant[:limit] + TRUNCATION_MARKER,
    ]
    assert batch.service[0] == "\U0001f642" * limit + TRUNCATION_MARKER
    assert batch.service[5] == str(10**18)
    assert batch.span_name[0] == batch.operation[0] == "\u00e9" * limit
    assert batch.operation[1] == f"GET {'/r' * 2_046}{TRUNCATION_MARKER}"
    assert batch.faas_name[0] == "f" * limit


@pytest.mark.parametrize(
    "config",
    [
        Settings(max_attributes_per_span=2, max_attribute_value_chars=5),
        Settings(tenant_attribute="customer", default_tenant="shared"),
        Settings(max_spans_per_record=2),
        Settings(tenant_attribute="service.name"),
    ],
)
def test_settings_match_the_python_path(config: Settings) -> None:
    spans = [
        make_span(
            span_id=bytes([i + 1]) * 8,
            attributes={"a": "0123456789", "b": "ok", "c": "dropped", "é": "ééééééé"},
        )
        for i in range(3)
    ]
    resource = {"service.name": "svc", "customer": "c1", "x": "y" * 20}
    assert_same(make_request(spans, resource).SerializeToString(), config)


def test_valid_payloads_take_the_native_path() -> None:
    # GIVEN a valid request WHEN the extension parses it THEN it is accepted
    # (so the comparisons above really exercise the native rows)
    traces = spanstream_native.parse(otlp_bytes(4))
    assert traces.span_count == 4
    assert native.is_native_traces(traces)


# GIVEN hypothesis-made spans ---------------------------------------------------

WELL_KNOWN_KEYS = [
    "http.request.method",
    "http.method",
    "http.route",
    "http.response.status_code",
    "http.status_code",
    "url.path",
    "http.target",
    "url.full",
    "http.url",
    "db.system",
    "db.system.name",
    "messaging.system",
    "peer.service",
    "server.address",
    "net.peer.name",
    "faas.coldstart",
    "service.name",
    "tenant.id",
    "cloud.region",
    "cloud.account.id",
    "faas.name",
]
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "",
            "GET",
            "get",
            "HTTP",
            "POST",
            "true",
            "500",
            " 404 ",
            "\u0663",
            "1_0",
            "\u017f",
        ]
    ),
    st.from_regex(
        r"(https?://[a-z.]+)?(/([0-9a-fA-F-]{1,40}|[a-z0-9]{1,6}))*/?"
        r"(\?[a-z=]*)?",
        fullmatch=True,
    ),
    st.text(min_size=30, max_size=80),
)
SCALARS = st.one_of(
    st.tuples(st.just("string"), TEXT),
    st.tuples(st.just("int"), st.one_of(INT64, st.integers(-5, 700))),
    st.tuples(st.just("double"), st.floats(allow_nan=True, allow_infinity=True)),
    st.tuples(st.just("bool"), st.booleans()),
    st.tuples(st.just("bytes"), st.binary(max_size=6)),
    st.tuples(st.just("strindex"), st.integers(-(2**31), 2**31 - 1)),
    st.just(("unset", None)),
)
VALUES = st.recursive(
    SCALARS,
    lambda children: st.one_of(
        st.tuples(st.just("array"), st.lists(children, max_size=4)),
        st.tuples(
            st.just("kvlist"),
            st.lists(
                st.tuples(st.sampled_from(["a", "b", 'q"\n']), children), max_size=4
            ),
        ),
    ),
    max_leaves=8,
)
KEYS = st.one_of(st.sampled_from(WELL_KNOWN_KEYS), st.text(max_size=6))
ATTRIBUTES = st.lists(st.tuples(KEYS, VALUES), max_size=8)


def set_any(target: common_pb2.AnyValue, value: tuple[str, Any]) -> None:
    kind, plain = value
    if kind == "string":
        target.string_value = plain
    elif kind == "int":
        target.int_value = plain
    elif kind == "double":
        target.double_value = plain
    elif kind == "bool":
        target.bool_value = plain
    elif kind == "bytes":
        target.bytes_value = plain
    elif kind == "strindex":
        target.string_value_strindex = plain
    elif kind == "array":
        target.array_value.SetInParent()
        for item in plain:
            set_any(target.array_value.values.add(), item)
    elif kind == "kvlist":
        target.kvlist_value.SetInParent()
        for key, item in plain:
            key_value = target.kvlist_value.values.add()
            key_value.key = key
            set_any(key_value.value, item)


def add_attributes(target: Any, attributes: list[tuple[str, Any]]) -> None:
    for key, value in attributes:
        key_value = target.add()
        key_value.key = key
        set_any(key_value.value, value)


@st.composite
def spans(draw: st.DrawFn) -> trace_pb2.Span:
    span = trace_pb2.Span(
        trace_id=draw(st.sampled_from([TRACE_ID, b"\0" * 16, b"\x01" * 15, b""])),
        span_id=draw(st.sampled_from([SPAN_ID, b"\x02" * 8, b"\x03" * 7])),
        parent_span_id=draw(st.sampled_from([b"", SPAN_ID, b"\x04" * 9])),
        name=draw(TEXT),
        kind=draw(st.one_of(st.integers(0, 6), st.integers(-(2**31), 2**31 - 1))),
        start_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
        end_time_unix_nano=draw(st.integers(0, 2**64 - 1)),
    )
    add_attributes(span.attributes, draw(ATTRIBUTES))
    span.status.code = draw(st.integers(-1, 3))
    span.status.message = draw(st.sampled_from(["", "boom"]))
    for name in draw(st.lists(st.sampled_from(["exception", "log", ""]), max_size=2)):
        span.events.add().name = name
    return span


@st.composite
def requests(draw: st.DrawFn) -> bytes:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(1, 2))):
        resource_spans = request.resource_spans.add()
        add_attributes(resource_spans.resource.attributes, draw(ATTRIBUTES))
        for _ in range(draw(st.integers(0, 2))):
            scope_spans = resource_spans.scope_spans.add()
            scope_spans.scope.name = draw(st.sampled_from(["", "lib", "é"]))
            scope_spans.spans.extend(draw(st.lists(spans(), max_size=3)))
    return request.SerializeToString()


CONFIGS = st.builds(
    Settings,
    max_attributes_per_span=st.integers(1, 10),
    max_attribute_value_chars=st.integers(1, 40),
    tenant_attribute=st.sampled_from(["tenant.id", "service.name", "x"]),
)


@PROPERTY
@given(data=requests(), config=CONFIGS)
def test_generated_requests_match_the_python_path(
    data: bytes, config: Settings
) -> None:
    assert_same(data, config)


@PROPERTY
@given(number=st.floats(allow_nan=True, allow_infinity=True))
def test_float_attributes_render_like_python_repr(number: float) -> None:
    span = make_span()
    add_attributes(
        span.attributes,
        [("f", ("double", number)), ("a", ("array", [("double", number)]))],
    )
    expected = assert_same(make_request([span]).SerializeToString())
    assert repr(number) in expected[0] or math.isnan(number)


# GIVEN bytes that may not be protobuf at all ----------------------------------

WIRE_CASES = {
    "field 0": b"\x00\x01",
    "end group at top": b"\x0c",
    "tag padded to 5 bytes": b"\x88\x80\x80\x80\x00\x01",
    "tag padded to 6 bytes": b"\x88\x80\x80\x80\x80\x00\x01",
    "varint 10th byte 0x7f": b"\x10" + b"\xff" * 9 + b"\x7f",
    "varint of 11 bytes": b"\x10" + b"\xff" * 10 + b"\x01",
    "resource_spans as varint": b"\x08\x05" + field(1, b""),
    "resource_spans as group": b"\x0b\x0c" + field(1, b""),
    "unknown group": b"\x13\x08\x01\x14" + field(1, b""),
    "field 0 inside an unknown group": b"\x13\x00\x01\x03\x04\x14" + field(1, b""),
    "end group of field 0 inside a group": b"\x13\x04\x14" + field(1, b""),
    "mismatched end group": b"\x13\x1c" + field(1, b""),
    "length padded to 5 bytes": b"\x0a\x80\x80\x80\x80\x00",
    "length padded to 6 bytes": b"\x0a\x80\x80\x80\x80\x80\x00",
    "bad utf-8 schema_url": field(1, field(3, b"\xff")),
    "surrogate in a string": field(1, field(3, b"\xed\xa0\x80")),
    "bad utf-8 in a link": field(1, field(2, field(2, field(13, field(3, b"\xc0"))))),
    "groups 100 deep": field(1, b"") + b"\x13" * 100 + b"\x14" * 100,
    "groups 101 deep": field(1, b"") + b"\x13" * 101 + b"\x14" * 101,
    "empty kvlist at level 100": nested_arrays(47, field(6, b"")),
    "kvlist entry at level 101": nested_arrays(47, field(6, field(1, b""))),
}


@pytest.mark.parametrize("name", sorted(WIRE_CASES))
def test_wire_rules_match_upb(name: str) -> None:
    data = WIRE_CASES[name]
    assert native_accepts(data) == upb_accepts(data)
    assert_same(data)


@PROPERTY
@given(data=st.binary(max_size=64), first=st.sampled_from([b"", b"\x0a"]))
def test_random_bytes_are_accepted_or_refused_like_upb(
    data: bytes, first: bytes
) -> None:
    payload = first + data
    assert native_accepts(payload) == upb_accepts(payload)
    assert_same(payload)


@PROPERTY
@given(data=requests(), cut=st.integers(0, 10_000), flip=st.integers(0, 10_000))
def test_damaged_requests_are_accepted_or_refused_like_upb(
    data: bytes, cut: int, flip: int
) -> None:
    assume(data)
    truncated = data[: cut % len(data)]
    flipped = bytearray(data)
    flipped[flip % len(data)] ^= 1 << (flip % 8)
    for payload in (truncated, bytes(flipped)):
        assert native_accepts(payload) == upb_accepts(payload)
        assert_same(payload)


# The one-call API and the configuration ---------------------------------------


def test_extract_into_appends_what_the_python_path_appends() -> None:
    data = EXAMPLES["server routes"]
    expected = SpanBatch()
    RecordDecoder(SETTINGS, decoder="python").decode(make_record(data), expected, [])
    batch = SpanBatch()
    ref = make_record(data).ref
    counts = spanstream_native.extract_into(
        data,
        tuple(batch.columns().values()),
        SETTINGS.tenant_attribute,
        SETTINGS.default_tenant,
        SETTINGS.max_attributes_per_span,
        SETTINGS.max_attribute_value_chars,
        SETTINGS.max_spans_per_record,
        ref.shard_id,
        ref.sequence_number,
        ref.sub_sequence_number,
        ref.arrival_unix_millis,
    )
    assert counts == (7, 0, 0, 0, 0)
    assert repr(batch.columns()) == repr(expected.columns())


@pytest.mark.parametrize(
    ("data", "max_spans", "error"),
    [
        (otlp_bytes(3), 2, "SpanLimitError"),
        (b"\x0a\x05junk", 10, "ProtobufPayloadError"),
        (b"", 10, "ProtobufPayloadError"),
    ],
)
def test_extract_into_refuses_before_appending(
    data: bytes, max_spans: int, error: str
) -> None:
    batch = SpanBatch()
    with pytest.raises(getattr(spanstream_native, error)):
        spanstream_native.extract_into(
            data, tuple(batch.columns().values()), "tenant.id", "default",
            128, 4096, max_spans, "shard", "1", 0, 0,
        )  # fmt: skip
    assert all(column == [] for column in batch.columns().values())
    assert len(batch.columns()) == len(SPAN_COLUMNS)


def test_decoder_setting_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="SPANSTREAM_DECODER"):
        native.use_native(environ={"SPANSTREAM_DECODER": "fast"})
    assert native.use_native(environ={"SPANSTREAM_DECODER": "python"}) is False
    assert native.use_native(environ={}) is True
    monkeypatch.setattr(native, "spanstream_native", None)
    assert native.use_native("auto") is False
    with pytest.raises(ConfigError, match="not installed"):
        native.use_native("native")
