"""Every record form parses back, with the protobuf/JSON/KPL libraries, to the
spans that went in; poison records parse as nothing."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import zlib

import pytest
import zstandard
from aws_kinesis_agg import MAGIC

# Through the aggregator, which puts its protobuf modules on sys.path first.
from aws_kinesis_agg.aggregator import messages_pb2
from aws_kinesis_agg.deaggregator import iter_deaggregate_records
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from spanstream.traffic import otlp
from spanstream.traffic.encode import (
    Form,
    encode_labelled_records,
    encode_records,
    poison_records,
)
from spanstream.traffic.generator import GeneratedTrace, generate_traces, iter_spans
from spanstream.traffic.poison import POISON_KINDS

NOW_NANOS = 1_767_225_600_000_000_000
GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


@pytest.fixture(scope="module")
def traces() -> list[GeneratedTrace]:
    return generate_traces(400, seed=3, now_unix_nanos=NOW_NANOS)


# -- a strict reference decoder built only from the libraries -----------------


def user_records(partition_key: str, data: bytes) -> list[bytes]:
    """Split a KPL record with aws_kinesis_agg; pass anything else through."""
    if not data.startswith(MAGIC):
        return [data]
    record = {
        "SequenceNumber": "1",
        "PartitionKey": partition_key,
        "ApproximateArrivalTimestamp": 0,
        "Data": data,
    }
    users = list(iter_deaggregate_records(record, data_format="Boto3"))
    if users == [record] or users[0]["kinesis"]["data"] == data:
        raise ValueError("KPL record did not deaggregate (bad MD5?)")
    return [base64.b64decode(user["kinesis"]["data"]) for user in users]


def inflate(data: bytes) -> tuple[str, bytes]:
    """Return (compression, payload) by trying each known compression."""
    if data.startswith(GZIP_MAGIC):
        return "gzip", gzip.decompress(data)
    if data.startswith(ZSTD_MAGIC):
        reader = zstandard.ZstdDecompressor().decompressobj()
        return "zstd", reader.decompress(data)
    try:
        return "zlib", zlib.decompress(data)
    except zlib.error:
        pass
    if data[:1] in (b"{", b"\n", b" ") or data[:1] == b"\x0a":
        return "none", data
    return "deflate", zlib.decompress(data, wbits=-15)


def hex_to_base64_ids(document: dict) -> dict:
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name in ("traceId", "spanId", "parentSpanId"):
                    if name in span:
                        raw = bytes.fromhex(span[name])
                        span[name] = base64.b64encode(raw).decode()
    return document


def parse_payload(payload: bytes) -> ExportTraceServiceRequest:
    if payload[:1] == b"{":
        document = hex_to_base64_ids(json.loads(payload))
        return json_format.ParseDict(document, ExportTraceServiceRequest())
    request = ExportTraceServiceRequest()
    request.ParseFromString(payload)
    return request


def decode_all(records) -> list[tuple[str, str]]:
    """Return (trace id, span id) hex of every span in ``records``."""
    ids = []
    for partition_key, data in records:
        for user_bytes in user_records(partition_key, data):
            _, payload = inflate(user_bytes)
            for resource_spans in parse_payload(payload).resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    ids.extend(
                        (span.trace_id.hex(), span.span_id.hex())
                        for span in scope_spans.spans
                    )
    return ids


def expected_ids(traces: list[GeneratedTrace]) -> list[tuple[str, str]]:
    return sorted((s.trace_id.hex(), s.span_id.hex()) for s in iter_spans(traces))


# -- the forms ----------------------------------------------------------------


@pytest.mark.parametrize("form", list(Form))
def test_every_span_comes_back_exactly_once(traces, form: Form) -> None:
    records = encode_records(traces, form, seed=1)
    assert sorted(decode_all(records)) == expected_ids(traces)
    assert all(len(data) <= 1_048_576 for _, data in records)
    assert all(isinstance(key, str) and key for key, _ in records)


@pytest.mark.parametrize("form", list(Form))
def test_encoding_is_deterministic(traces, form: Form) -> None:
    assert encode_records(traces, form, seed=9) == encode_records(traces, form, seed=9)


def test_collector_style_records_hold_one_resource_each(traces) -> None:
    records = encode_records(traces, Form.OTLP_PROTO, seed=1)
    requests = [parse_payload(data) for _, data in records]
    assert all(len(request.resource_spans) == 1 for request in requests)
    assert len({key for key, _ in records}) == len(records)  # random keys


def test_by_trace_records_are_keyed_by_their_trace(traces) -> None:
    records = encode_records(traces, Form.OTLP_PROTO_BY_TRACE, seed=1)
    assert [key for key, _ in records] == [t.trace_id_hex for t in traces]
    for (key, data), trace in zip(records, traces, strict=True):
        request = parse_payload(data)
        services = {
            kv.value.string_value
            for rs in request.resource_spans
            for kv in rs.resource.attributes
            if kv.key == "service.name"
        }
        assert services == {s.truth.service for s in trace.spans}
        spans = [
            s
            for rs in request.resource_spans
            for ss in rs.scope_spans
            for s in ss.spans
        ]
        assert {s.trace_id.hex() for s in spans} == {key}


def test_json_uses_hex_ids_string_int64_and_both_enum_styles(traces) -> None:
    records = encode_labelled_records(traces, Form.OTLP_JSON, seed=2)
    kinds = set()
    for labelled in records:
        document = json.loads(labelled.record.data)
        for rs in document["resourceSpans"]:
            for ss in rs["scopeSpans"]:
                for span in ss["spans"]:
                    assert len(span["traceId"]) == 32
                    int(span["traceId"], 16)
                    assert len(span["spanId"]) == 16
                    assert isinstance(span["startTimeUnixNano"], str)
                    kinds.add(type(span["kind"]))
    assert kinds == {int, str}


def test_json_is_the_proto3_mapping_of_the_protobuf_form(traces) -> None:
    spans = list(iter_spans(traces))
    for enum_names in (False, True):
        document = json.loads(json.dumps(otlp.json_request(spans, enum_names)))
        parsed = json_format.ParseDict(
            hex_to_base64_ids(document), ExportTraceServiceRequest()
        )
        assert parsed == otlp.export_request(spans)


@pytest.mark.parametrize(
    ("form", "compression"),
    [
        (Form.GZIP, "gzip"),
        (Form.ZLIB, "zlib"),
        (Form.DEFLATE, "deflate"),
        (Form.ZSTD, "zstd"),
    ],
)
def test_compressed_forms_wrap_each_base_form(traces, form, compression) -> None:
    records = encode_labelled_records(traces, form, seed=4)
    inner_forms = set()
    for labelled in records:
        found, _ = inflate(labelled.record.data)
        assert found == compression
        outer, inner = labelled.form.split("+")
        assert outer == form.value
        inner_forms.add(inner)
    assert inner_forms == {"otlp-proto", "otlp-proto-by-trace", "otlp-json"}


def test_some_zstd_frames_omit_the_content_size(traces) -> None:
    records = encode_records(traces, Form.ZSTD, seed=4)
    sizes = [zstandard.frame_content_size(data) for _, data in records]
    assert -1 in sizes
    assert any(size > 0 for size in sizes)


def test_kpl_records_pack_several_user_records(traces) -> None:
    records = encode_labelled_records(traces, Form.KPL, seed=5)
    counts = [len(user_records(r.record.partition_key, r.record.data)) for r in records]
    assert all(r.record.data.startswith(MAGIC) for r in records)
    assert min(counts) >= 1
    assert sum(counts) / len(counts) > 2
    assert sum(r.span_count for r in records) == len(expected_ids(traces))


def test_kpl_user_records_hash_to_the_shard_their_record_is_put_on(traces) -> None:
    # The KCL drops a user record whose hash key is outside the shard it was
    # read from, so an aggregate may only hold records bound for its shard.
    for partition_key, data in encode_records(traces, Form.KPL, seed=6):
        aggregated = messages_pb2.AggregatedRecord()
        aggregated.ParseFromString(data[len(MAGIC) : -16])
        placement = int(hashlib.md5(partition_key.encode()).hexdigest(), 16)
        hash_keys = {
            int(aggregated.explicit_hash_key_table[record.explicit_hash_key_index])
            for record in aggregated.records
            if record.HasField("explicit_hash_key_index")
        }
        assert len(hash_keys) == 1 and hash_keys == {placement}
        assert all(r.HasField("explicit_hash_key_index") for r in aggregated.records)


def test_mixed_uses_every_form(traces) -> None:
    many = generate_traces(1_500, seed=8, now_unix_nanos=NOW_NANOS)
    labels = {r.form.split("+")[0] for r in encode_labelled_records(many, "mixed", 3)}
    assert labels == {form.value for form in Form if form is not Form.MIXED}


def test_span_counts_of_labelled_records_add_up(traces) -> None:
    for form in Form:
        records = encode_labelled_records(traces, form, seed=6)
        assert sum(r.span_count for r in records) == len(expected_ids(traces))


def test_a_batch_over_the_size_limit_is_split(traces) -> None:
    limit = 20_000
    for form in (Form.OTLP_PROTO, Form.OTLP_JSON, Form.OTLP_PROTO_BY_TRACE):
        records = encode_records(traces, form, seed=1, max_record_bytes=limit)
        assert max(len(data) for _, data in records) <= limit
        assert sorted(decode_all(records)) == expected_ids(traces)


def test_unknown_form_is_refused(traces) -> None:
    with pytest.raises(ValueError, match="protobuf-json"):
        encode_records(traces, "protobuf-json", seed=1)


# -- poison --------------------------------------------------------------------


def test_poison_records_cover_every_kind_and_are_deterministic() -> None:
    records = poison_records(16, seed=1)
    assert [key.rsplit("-", 1)[0] for key, _ in records[: len(POISON_KINDS)]] == [
        f"poison-{kind}" for kind in POISON_KINDS
    ]
    assert records == poison_records(16, seed=1)


@pytest.mark.parametrize("index", range(2 * len(POISON_KINDS)))
def test_no_poison_record_decodes(index: int) -> None:
    key, data = poison_records(2 * len(POISON_KINDS), seed=index)[index]
    with pytest.raises(
        (
            ValueError,
            DecodeError,
            EOFError,
            zlib.error,
            zstandard.ZstdError,
            json_format.ParseError,
            KeyError,
            TypeError,
            AttributeError,
        )
    ):
        decode_all([(key, data)])


@pytest.mark.parametrize("kind", ["random-bytes", "truncated-proto"])
def test_undecodable_bytes_are_neither_protobuf_nor_raw_deflate(kind: str) -> None:
    for seed in range(20):
        records = poison_records(len(POISON_KINDS), seed=seed)
        (data,) = [d for k, d in records if k.startswith(f"poison-{kind}-")]
        with pytest.raises(DecodeError):
            ExportTraceServiceRequest().ParseFromString(data)
        if kind == "random-bytes":
            with pytest.raises(zlib.error):
                zlib.decompress(data, wbits=-15)
