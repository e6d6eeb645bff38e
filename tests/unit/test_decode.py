"""Decoding every input form, and what happens to bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib

import pytest
import zstandard
from aws_kinesis_agg.aggregator import RecordAggregator
from google.protobuf import json_format
from opentelemetry.proto.trace.v1 import trace_pb2
from otlpfactory import SPAN_ID, TRACE_ID, make_record, make_request, make_span

from spanstream.config import Settings
from spanstream.decode import RecordDecoder
from spanstream.model import DeadLetter, SpanBatch

SETTINGS = Settings()


def decode(
    data: bytes, settings: Settings = SETTINGS
) -> tuple[SpanBatch, list[DeadLetter]]:
    batch: SpanBatch = SpanBatch()
    dead_letters: list[DeadLetter] = []
    RecordDecoder(settings).decode(make_record(data), batch, dead_letters)
    return batch, dead_letters


def otlp_bytes(span_count: int = 3) -> bytes:
    spans = [
        make_span(span_id=(i + 1).to_bytes(8, "big"), name=f"op{i}")
        for i in range(span_count)
    ]
    return make_request(spans).SerializeToString()


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


def otlp_json_bytes() -> bytes:
    document = json_format.MessageToDict(make_request([make_span()]))
    span = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    span["traceId"] = TRACE_ID.hex()
    span["spanId"] = SPAN_ID.hex()
    return json.dumps(document).encode()


COMPRESSIONS = {
    "none": lambda data: data,
    "gzip": gzip.compress,
    "zlib": zlib.compress,
    "deflate": raw_deflate,
    "zstd": lambda data: zstandard.ZstdCompressor().compress(data),
}


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_otlp_protobuf_in_every_compression(compression: str) -> None:
    batch, dead_letters = decode(COMPRESSIONS[compression](otlp_bytes(3)))
    assert dead_letters == []
    assert len(batch) == 3
    assert batch.operation == ["op0", "op1", "op2"]
    assert batch.trace_id[0] == TRACE_ID.hex()


@pytest.mark.parametrize("compression", sorted(COMPRESSIONS))
def test_otlp_json_in_every_compression(compression: str) -> None:
    batch, dead_letters = decode(COMPRESSIONS[compression](otlp_json_bytes()))
    assert dead_letters == []
    assert batch.trace_id == [TRACE_ID.hex()]
    assert batch.span_id == [SPAN_ID.hex()]
    assert batch.span_kind == ["SERVER"]
    assert batch.service == ["frontend"]


def test_otlp_json_accepts_enum_numbers_and_int64_strings() -> None:
    document = {
        "resourceSpans": [
            {
                "resource": {
                    "attributes": [
                        {"key": "service.name", "value": {"stringValue": "cart"}}
                    ]
                },
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": TRACE_ID.hex(),
                                "spanId": SPAN_ID.hex(),
                                "name": "AddItem",
                                "kind": 3,
                                "startTimeUnixNano": "1700000000000000000",
                                "endTimeUnixNano": "1700000000250000000",
                                "status": {"code": "STATUS_CODE_ERROR"},
                            }
                        ]
                    }
                ],
            }
        ]
    }
    batch, dead_letters = decode(json.dumps(document).encode())
    assert dead_letters == []
    assert batch.span_kind == ["CLIENT"]
    assert batch.duration_nanos == [250_000_000]
    assert batch.is_error == [True]


def test_kpl_aggregated_record_keeps_sub_sequence_numbers() -> None:
    aggregator = RecordAggregator()
    for index in range(4):
        aggregator.add_user_record(f"pk{index}", COMPRESSIONS["gzip"](otlp_bytes(2)))
    _, _, data = aggregator.clear_and_get().get_contents()
    batch, dead_letters = decode(data)
    assert dead_letters == []
    assert len(batch) == 8
    assert batch.source_sub_sequence_number == [0, 0, 1, 1, 2, 2, 3, 3]


def test_kpl_with_bad_checksum_is_dead_lettered_whole() -> None:
    aggregator = RecordAggregator()
    aggregator.add_user_record("pk", otlp_bytes(2))
    _, _, data = aggregator.clear_and_get().get_contents()
    corrupt = data[:-1] + bytes([data[-1] ^ 0xFF])
    batch, dead_letters = decode(corrupt)
    assert len(batch) == 0
    assert len(dead_letters) == 1
    assert "MD5" in dead_letters[0].reason
    assert dead_letters[0].record_bytes == corrupt


def test_kpl_poison_user_record_does_not_sink_its_neighbours() -> None:
    aggregator = RecordAggregator()
    aggregator.add_user_record("a", otlp_bytes(2))
    aggregator.add_user_record("b", b"\x00not spans at all")
    aggregator.add_user_record("c", otlp_bytes(1))
    _, _, data = aggregator.clear_and_get().get_contents()
    batch, dead_letters = decode(data)
    assert len(batch) == 3
    assert [d.ref.sub_sequence_number for d in dead_letters] == [1]
    assert dead_letters[0].record_bytes == b"\x00not spans at all"
    assert dead_letters[0].ref.partition_key == "b"


@pytest.mark.parametrize(
    ("payload", "reason_part"),
    [
        (b"", "empty payload"),
        (b"\x00\x01\x02garbage", "not OTLP protobuf"),
        (b"{not json", "not valid JSON"),
        (b'{"hello": 1}', "neither OTLP/JSON"),
        (gzip.compress(b"\x00garbage"), "not OTLP protobuf"),
        (gzip.compress(otlp_bytes(2))[:-12], "truncated"),
        (zstandard.ZstdCompressor().compress(otlp_bytes(2))[:-6], "truncated"),
        (b"\xff\xfe{}", "not OTLP protobuf"),
        (b'["a", 1]', "neither OTLP/JSON"),
    ],
)
def test_poison_records_are_dead_lettered_with_reason(
    payload: bytes, reason_part: str
) -> None:
    batch, dead_letters = decode(payload)
    assert len(batch) == 0
    assert len(dead_letters) == 1
    dead_letter = dead_letters[0]
    assert reason_part in dead_letter.reason
    assert dead_letter.record_bytes == payload
    assert dead_letter.ref.shard_id == "shardId-000000000000"


def test_truncated_protobuf_is_dead_lettered() -> None:
    data = otlp_bytes(5)
    batch, dead_letters = decode(data[: len(data) // 2])
    assert len(batch) == 0
    assert len(dead_letters) == 1


def test_oversized_record_is_dead_lettered_as_a_limit() -> None:
    settings = Settings(max_record_bytes=100)
    data = otlp_bytes(10)
    assert len(data) > 100
    batch, dead_letters = decode(data, settings)
    assert len(batch) == 0
    assert dead_letters[0].stage == "limit"
    assert "exceeds the limit" in dead_letters[0].reason


def test_decompression_bomb_is_refused() -> None:
    settings = Settings(max_record_bytes=100_000)
    bomb = gzip.compress(b"\0" * 50_000_000)
    assert len(bomb) < 100_000
    batch, dead_letters = decode(bomb, settings)
    assert len(batch) == 0
    assert "inflates past" in dead_letters[0].reason


def test_too_many_spans_per_record_is_a_limit() -> None:
    batch, dead_letters = decode(otlp_bytes(5), Settings(max_spans_per_record=4))
    assert len(batch) == 0
    assert dead_letters[0].stage == "limit"


def test_malformed_span_is_skipped_and_the_rest_kept() -> None:
    good = make_span(span_id=b"\x01" * 8)
    bad_trace = make_span(trace_id=b"\x01" * 5, span_id=b"\x02" * 8)
    bad_parent = make_span(span_id=b"\x03" * 8, parent_span_id=b"\x04" * 3)
    data = make_request([good, bad_trace, bad_parent]).SerializeToString()
    decoder = RecordDecoder(SETTINGS)
    batch: SpanBatch = SpanBatch()
    dead_letters: list[DeadLetter] = []
    decoder.decode(make_record(data), batch, dead_letters)
    assert batch.span_id == [(b"\x01" * 8).hex()]
    assert dead_letters == []
    assert decoder.stats.invalid_spans == 2


def _field(number: int, payload: bytes) -> bytes:
    """Encode a length-delimited protobuf field (lengths here are < 2**14)."""
    length = len(payload)
    varint = (
        bytes([length]) if length < 128 else bytes([length & 0x7F | 0x80, length >> 7])
    )
    return bytes([number << 3 | 2]) + varint + payload


def _nested_attribute(depth: int) -> bytes:
    """Return a KeyValue whose value is ``depth`` arrays nested in each other."""
    any_value = _field(1, b"x")  # AnyValue.string_value
    for _ in range(depth):
        any_value = _field(5, _field(1, any_value))  # array_value.values
    return _field(1, b"deep") + _field(2, any_value)


def _request_with_attribute(key_value: bytes) -> bytes:
    span = make_span().SerializeToString() + _field(9, key_value)  # Span.attributes
    scope_spans = _field(2, span)
    resource_spans = _field(2, scope_spans)
    return make_request([]).SerializeToString() + _field(1, resource_spans)


def test_nested_attribute_value_is_rendered_as_json() -> None:
    batch, dead_letters = decode(_request_with_attribute(_nested_attribute(3)))
    assert dead_letters == []
    assert batch.span_attributes[-1]["deep"] == '[[["x"]]]'


def test_too_deeply_nested_message_is_dead_lettered() -> None:
    batch, dead_letters = decode(_request_with_attribute(_nested_attribute(200)))
    assert len(batch) == 0
    assert len(dead_letters) == 1


def test_zipkin_shared_span_gets_its_own_server_id() -> None:
    zipkin = [
        {
            "traceId": "463ac35c9f6413ad",
            "id": "a2fb4a1d1a96d312",
            "kind": "CLIENT",
            "name": "get /api",
            "timestamp": 1_700_000_000_000_000,
            "duration": 2000,
            "localEndpoint": {"serviceName": "frontend"},
            "remoteEndpoint": {"serviceName": "backend"},
            "tags": {"http.status_code": "503"},
        },
        {
            "traceId": "463ac35c9f6413ad",
            "id": "a2fb4a1d1a96d312",
            "kind": "SERVER",
            "shared": True,
            "name": "get",
            "timestamp": 1_700_000_000_000_100,
            "duration": 1500,
            "localEndpoint": {"serviceName": "backend"},
            "tags": {"http.path": "/api/users/42", "http.method": "GET", "error": ""},
        },
    ]
    batch, dead_letters = decode(json.dumps(zipkin).encode())
    assert dead_letters == []
    rows = [batch.row(i) for i in range(len(batch))]
    client = next(r for r in rows if r["span_kind"] == "CLIENT")
    server = next(r for r in rows if r["span_kind"] == "SERVER")
    assert client["trace_id"] == "0000000000000000463ac35c9f6413ad"
    assert server["parent_span_id"] == client["span_id"]
    assert server["span_id"] != client["span_id"]
    assert client["peer_service"] == "backend"
    assert client["is_error"] is True  # client span with HTTP 503
    assert server["is_error"] is True  # zipkin error tag
    assert server["operation"] == "GET /api/users/{num}"
    assert server["duration_nanos"] == 1_500_000


def test_kpl_envelope_is_detected_by_magic_not_by_configuration() -> None:
    aggregator = RecordAggregator()
    aggregator.add_user_record("pk", otlp_json_bytes())
    _, _, data = aggregator.clear_and_get().get_contents()
    assert hashlib.md5(data[4:-16]).digest() == data[-16:]
    batch, dead_letters = decode(data)
    assert (len(batch), dead_letters) == (1, [])


def test_status_error_from_protobuf_enum() -> None:
    span = make_span(status_code=trace_pb2.Status.STATUS_CODE_ERROR)
    batch, _ = decode(make_request([span]).SerializeToString())
    assert batch.status_code == ["ERROR"]
    assert batch.is_error == [True]
