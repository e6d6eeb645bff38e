"""Fuzzing the decoders: whatever the bytes, a record is spans or a dead letter.

GIVEN valid records of every form the traffic encoder writes (OTLP protobuf,
OTLP/JSON, gzip, zlib, raw deflate, zstd, KPL), mangled by hypothesis
(truncated, bit-flipped, spliced, recompressed the wrong way) or replaced by
random bytes, deep or huge messages, invalid UTF-8, decompression bombs and
KPL envelopes with a bad digest; WHEN each is decoded between two valid
records through `RecordDecoder` (the Python and the compiled path); THEN no
exception escapes, each example finishes within hypothesis' deadline, a
refused record becomes a dead letter with its own bytes and a reason naming
it, and every span of the valid neighbours is kept.

The examples per test are few enough for CI (the module runs in well under
a minute). fuzz/decoders.py checks the same with atheris, for long runs
(``make fuzz``).
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import logging
import math
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
import zstandard
from aws_kinesis_agg import MAGIC, messages_pb2
from aws_kinesis_agg.aggregator import RecordAggregator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.common.v1 import common_pb2

from spanstream.config import Settings
from spanstream.decode import RecordDecoder
from spanstream.model import DeadLetter, KinesisRecord, RecordRef, SpanBatch
from spanstream.sinks.archive import encode_parquet
from spanstream.traffic import otlp
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_traces

# A small record limit keeps bombs and huge messages cheap to build; the
# decoder allows payloads to inflate to 16 times this.
FUZZ_SETTINGS = Settings(max_record_bytes=64 * 1024)
MAX_PAYLOAD_BYTES = FUZZ_SETTINGS.max_record_bytes * 16
DECODERS = ("python", "native")
NOW_UNIX_NANOS = 1_700_000_000_000_000_000
FUZZ_SETTINGS_PROFILE = settings(
    max_examples=60,
    deadline=2_000,  # ms per example: a hang or a quadratic blow-up fails
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    derandomize=True,
)

_TRACES = generate_traces(6, seed=7, now_unix_nanos=NOW_UNIX_NANOS)
#: Valid records, every form, each decoding to at least one span.
VALID_RECORDS: list[bytes] = [
    record.data
    for form in Form
    if form is not Form.MIXED
    for record in encode_records(_TRACES, form, seed=3, batch_spans=16)[:3]
]
FIRST_SEQUENCE = 49_000_000_000_000_000_000_000_000_000_000_000_000_000_000
NEIGHBOUR_BEFORE = VALID_RECORDS[0]
NEIGHBOUR_AFTER = VALID_RECORDS[-1]


def ref(offset: int) -> RecordRef:
    return RecordRef(
        "fuzz-stream",
        "shardId-000000000007",
        str(FIRST_SEQUENCE + offset),
        partition_key=f"pk-{offset}",
        arrival_unix_millis=NOW_UNIX_NANOS // 1_000_000,
    )


def spans_of(data: bytes, decoder: str) -> int:
    batch = SpanBatch()
    dead_letters: list[DeadLetter] = []
    count = RecordDecoder(FUZZ_SETTINGS, decoder).decode(
        KinesisRecord(data, ref(0)), batch, dead_letters
    )
    assert not dead_letters, dead_letters
    return count


NEIGHBOUR_SPANS = {
    decoder: (spans_of(NEIGHBOUR_BEFORE, decoder), spans_of(NEIGHBOUR_AFTER, decoder))
    for decoder in DECODERS
}


def check_between_neighbours(data: bytes, decoder: str) -> list[DeadLetter]:
    """Decode ``data`` between two valid records and check the guarantees.

    Returns the fuzzed record's dead letters for further checks.
    """
    records = [
        KinesisRecord(NEIGHBOUR_BEFORE, ref(0)),
        KinesisRecord(data, ref(1)),
        KinesisRecord(NEIGHBOUR_AFTER, ref(2)),
    ]
    record_decoder = RecordDecoder(FUZZ_SETTINGS, decoder)
    batch = SpanBatch()
    dead_letters: list[DeadLetter] = []
    for record in records:
        record_decoder.decode(record, batch, dead_letters)
    by_record = {
        offset: sum(1 for seq in batch.source_sequence_number if seq == ref(offset)[2])
        for offset in (0, 1, 2)
    }
    assert (by_record[0], by_record[2]) == NEIGHBOUR_SPANS[decoder]
    assert len(batch) == sum(by_record.values())
    fuzzed_ref = ref(1)
    for dead_letter in dead_letters:
        assert dead_letter.ref.sequence_number == fuzzed_ref.sequence_number
        assert dead_letter.ref.shard_id == fuzzed_ref.shard_id
        assert dead_letter.reason
        assert dead_letter.stage in ("decode", "limit")
        # The whole record, or (KPL) the user record that failed.
        assert dead_letter.record_bytes == data or dead_letter.ref.sub_sequence_number
    assert by_record[1] > 0 or dead_letters, "record vanished without a dead letter"
    assert record_decoder.stats.dead_letters == len(dead_letters)
    return dead_letters


# -- strategies: mangled valid records ------------------------------------
def truncate(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def flip_bits(data: bytes, positions: list[int]) -> bytes:
    mangled = bytearray(data)
    for position in positions:
        bit = position % (len(mangled) * 8)
        mangled[bit // 8] ^= 1 << (bit % 8)
    return bytes(mangled)


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-15)
    return compressor.compress(data) + compressor.flush()


WRONG_WRAPPERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip-header-on-zlib": lambda d: b"\x1f\x8b" + zlib.compress(d)[2:],
    "zstd-magic-on-gzip": lambda d: b"\x28\xb5\x2f\xfd" + gzip.compress(d)[4:],
    "double-gzip": lambda d: gzip.compress(gzip.compress(d)),
    "zlib-of-zstd": lambda d: zlib.compress(zstandard.ZstdCompressor().compress(d)),
    "deflate-truncated": lambda d: raw_deflate(d)[:-3],
    "kpl-magic-only": lambda d: MAGIC + d,
    "base64": lambda d: __import__("base64").b64encode(d),
}

valid_records = st.sampled_from(VALID_RECORDS)


@st.composite
def mangled_records(draw: st.DrawFn) -> bytes:
    data = draw(valid_records)
    how = draw(st.sampled_from(("truncate", "flip", "splice", "wrap")))
    if how == "truncate":
        return truncate(data, draw(st.floats(0.0, 0.999)))
    if how == "flip":
        positions = draw(st.lists(st.integers(0, 2**31), min_size=1, max_size=8))
        return flip_bits(data, positions)
    if how == "splice":
        other = draw(valid_records)
        cut = draw(st.integers(0, len(data)))
        return data[:cut] + other[draw(st.integers(0, len(other))) :]
    return WRONG_WRAPPERS[draw(st.sampled_from(sorted(WRONG_WRAPPERS)))](data)


@pytest.mark.parametrize("decoder", DECODERS)
@FUZZ_SETTINGS_PROFILE
@given(data=st.binary(max_size=4096))
def test_random_bytes_are_spans_or_dead_letters(decoder: str, data: bytes) -> None:
    check_between_neighbours(data, decoder)


@pytest.mark.parametrize("decoder", DECODERS)
@FUZZ_SETTINGS_PROFILE
@given(data=mangled_records())
def test_mangled_valid_records_are_spans_or_dead_letters(
    decoder: str, data: bytes
) -> None:
    check_between_neighbours(data, decoder)


@pytest.mark.parametrize("decoder", DECODERS)
@FUZZ_SETTINGS_PROFILE
@given(
    prefix=st.sampled_from(
        (b"", b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"\x78\x9c", MAGIC, b"\x0a", b"{")
    ),
    data=st.binary(max_size=2048),
)
def test_magic_numbers_with_garbage_are_dead_letters(
    decoder: str, prefix: bytes, data: bytes
) -> None:
    check_between_neighbours(prefix + data, decoder)


def test_every_valid_form_decodes_whole() -> None:
    """The fuzz corpus itself is valid, or the tests above prove little."""
    for decoder in DECODERS:
        for data in VALID_RECORDS:
            assert spans_of(data, decoder) > 0


# -- deep and huge messages -------------------------------------------------
def nested_any_value(depth: int, kind: str) -> common_pb2.AnyValue:
    value = common_pb2.AnyValue(string_value="leaf")
    for _ in range(depth):
        outer = common_pb2.AnyValue()
        if kind == "kvlist":
            outer.kvlist_value.values.add(key="k").value.CopyFrom(value)
        else:
            outer.array_value.values.add().CopyFrom(value)
        value = outer
    return value


def request_with_attribute(value: common_pb2.AnyValue) -> ExportTraceServiceRequest:
    request = otlp.export_request(_TRACES[0].spans[:1])
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="deep").value.CopyFrom(value)
    return request


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("kind", ["kvlist", "array"])
@pytest.mark.parametrize("depth", [10, 60, 95, 200, 5_000])
def test_deeply_nested_attribute_values(decoder: str, kind: str, depth: int) -> None:
    """Nesting past protobuf's recursion limit is refused, below it is kept."""
    value = nested_any_value(depth, kind)
    data = request_with_attribute(value).SerializeToString()
    check_between_neighbours(data, decoder)
    check_between_neighbours(gzip.compress(data), decoder)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("depth", [50, 500, 100_000])
def test_deeply_nested_json(decoder: str, depth: int) -> None:
    leaf: object = "leaf"
    for _ in range(depth):
        leaf = {"kvlistValue": {"values": [{"key": "k", "value": leaf}]}}
    document = {
        "resourceSpans": [
            {
                "scopeSpans": [
                    {
                        "spans": [
                            {
                                "traceId": "0af7651916cd43dd8448eb211c80319c",
                                "spanId": "b7ad6b7169203331",
                                "name": "deep",
                                "startTimeUnixNano": str(NOW_UNIX_NANOS),
                                "endTimeUnixNano": str(NOW_UNIX_NANOS + 1000),
                                "attributes": [{"key": "deep", "value": leaf}],
                            }
                        ]
                    }
                ]
            }
        ]
    }
    try:
        data = json.dumps(document).encode()
    except RecursionError:
        # Too deep for json.dumps: write the nesting by hand.
        data = (
            b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":'
            + b'[{"key":"k","value":' * depth
            + b"1"
            + b"}]" * depth
            + b"}]}]}]}"
        )
    check_between_neighbours(data, decoder)


@pytest.mark.parametrize("decoder", DECODERS)
def test_huge_attribute_counts_and_values_are_capped(decoder: str) -> None:
    request = otlp.export_request(_TRACES[0].spans[:1])
    span = request.resource_spans[0].scope_spans[0].spans[0]
    for index in range(3 * FUZZ_SETTINGS.max_attributes_per_span):
        span.attributes.add(key=f"a{index}").value.string_value = "v"
    span.attributes.add(key="big").value.string_value = "x" * 40_000
    data = gzip.compress(request.SerializeToString())
    assert len(data) < FUZZ_SETTINGS.max_record_bytes
    batch = SpanBatch()
    RecordDecoder(FUZZ_SETTINGS, decoder).decode(KinesisRecord(data, ref(0)), batch, [])
    assert len(batch) == 1
    attributes = batch.span_attributes[0]
    assert len(attributes) <= FUZZ_SETTINGS.max_attributes_per_span
    assert all(
        len(value) <= FUZZ_SETTINGS.max_attribute_value_chars
        for value in attributes.values()
    )


@pytest.mark.parametrize("decoder", DECODERS)
def test_too_many_spans_is_a_limit_dead_letter(decoder: str) -> None:
    limited = Settings(max_spans_per_record=5)
    data = otlp.export_request(_TRACES[0].spans * 3).SerializeToString()
    dead_letters: list[DeadLetter] = []
    RecordDecoder(limited, decoder).decode(
        KinesisRecord(data, ref(1)), SpanBatch(), dead_letters
    )
    assert [d.stage for d in dead_letters] == ["limit"]
    assert "over the limit of 5" in dead_letters[0].reason


# -- invalid UTF-8 ------------------------------------------------------------
def with_invalid_utf8(data: bytes, marker: bytes) -> bytes:
    """Replace ``marker`` (same length) by bytes that are not UTF-8."""
    assert marker in data
    return data.replace(marker, b"\xff\xfe" + marker[2:], 1)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("compress", [bytes, gzip.compress])
def test_invalid_utf8_in_protobuf_strings(decoder: str, compress: Callable) -> None:  # type: ignore[type-arg]
    request = otlp.export_request(_TRACES[0].spans[:2])
    request.resource_spans[0].scope_spans[0].spans[0].name = "utf8-marker-name"
    data = with_invalid_utf8(request.SerializeToString(), b"utf8-marker-name")
    check_between_neighbours(compress(data), decoder)


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("form", [Form.OTLP_JSON])
def test_invalid_utf8_in_json(decoder: str, form: Form) -> None:
    data = encode_records(_TRACES[:1], form, seed=1)[0].data
    marker = data[data.index(b'"name"') : data.index(b'"name"') + 6]
    dead_letters = check_between_neighbours(
        data.replace(marker, b'"\xc3\x28me"', 1), decoder
    )
    assert dead_letters and "JSON" in dead_letters[0].reason


# -- decompression bombs -----------------------------------------------------
# 32 MiB of zeros: 32 times the payload limit, yet (deflate tops out near
# 1000:1) a record within the record limit.
BOMB_BYTES = 32 * 1024 * 1024


def _bomb(kind: str) -> bytes:
    chunk = b"\0" * (1024 * 1024)
    if kind == "zstd-declared":
        # A frame that declares its content size.
        return zstandard.ZstdCompressor().compress(b"\0" * (MAX_PAYLOAD_BYTES + 1))
    if kind == "zstd-streamed":
        out = io.BytesIO()
        compressor = zstandard.ZstdCompressor()
        with compressor.stream_writer(out, closefd=False) as writer:
            for _ in range(BOMB_BYTES // len(chunk)):
                writer.write(chunk)
        return out.getvalue()
    wbits = {"gzip": 31, "zlib": 15, "deflate": -15}[kind]
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    parts = [compressor.compress(chunk) for _ in range(BOMB_BYTES // len(chunk))]
    return b"".join(parts) + compressor.flush()


BOMB_KINDS = ("gzip", "zlib", "deflate", "zstd-declared", "zstd-streamed")


@pytest.mark.parametrize("kind", BOMB_KINDS)
def test_decompression_bombs_are_refused_in_bounded_memory(kind: str) -> None:
    bomb = _bomb(kind)
    assert len(bomb) <= FUZZ_SETTINGS.max_record_bytes, len(bomb)
    tracemalloc.start()
    try:
        dead_letters = check_between_neighbours(bomb, "python")
        _, peak_bytes = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert [d.stage for d in dead_letters] == ["decode"]
    assert "inflates past" in dead_letters[0].reason
    # The inflated bytes are held at most about once, never the whole bomb.
    assert peak_bytes < 4 * MAX_PAYLOAD_BYTES, peak_bytes


def test_bombs_inside_a_kpl_record_are_refused_one_by_one() -> None:
    aggregator = RecordAggregator()
    bomb = _bomb("zlib")
    good = VALID_RECORDS[0]
    for index, user_data in enumerate((good, bomb, good)):
        assert aggregator.add_user_record(f"pk-{index}", user_data) is None
    kpl = aggregator.clear_and_get().get_contents()[2]
    dead_letters = check_between_neighbours(kpl, "python")
    assert [d.ref.sub_sequence_number for d in dead_letters] == [1]
    assert dead_letters[0].record_bytes == bomb


def test_oversized_record_is_a_limit_dead_letter() -> None:
    data = b"\x0a" + b"\0" * FUZZ_SETTINGS.max_record_bytes
    dead_letters = check_between_neighbours(data, "python")
    assert [d.stage for d in dead_letters] == ["limit"]


# -- KPL envelopes ---------------------------------------------------------
KPL_RECORDS = [data for data in VALID_RECORDS if data.startswith(MAGIC)]


@pytest.mark.parametrize("decoder", DECODERS)
@FUZZ_SETTINGS_PROFILE
@given(
    data=st.sampled_from(KPL_RECORDS),
    position=st.integers(len(MAGIC), 2**20),
)
def test_kpl_with_bad_checksum_is_one_dead_letter(
    decoder: str, data: bytes, position: int
) -> None:
    corrupt = flip_bits(data, [position * 8 % ((len(data) - len(MAGIC)) * 8)])
    corrupt = data[: len(MAGIC)] + corrupt[len(MAGIC) :]
    dead_letters = check_between_neighbours(corrupt, decoder)
    assert [d.record_bytes for d in dead_letters] == [corrupt]
    assert "KPL" in dead_letters[0].reason


@pytest.mark.parametrize("decoder", DECODERS)
@FUZZ_SETTINGS_PROFILE
@given(body=st.binary(max_size=1024))
def test_kpl_with_valid_digest_over_garbage(decoder: str, body: bytes) -> None:
    """A correct MD5 over a body that is not an aggregated record."""
    data = MAGIC + body + hashlib.md5(body).digest()
    check_between_neighbours(data, decoder)


@pytest.mark.parametrize("decoder", DECODERS)
def test_kpl_with_a_partition_key_index_out_of_range_is_one_quiet_dead_letter(
    decoder: str, capfd: pytest.CaptureFixture[str]
) -> None:
    """aws-kinesis-agg's own iterator prints such a record's bytes to stderr
    and drops the user records after the bad one without a word."""
    secret = b"s3cr3t-user-record-bytes"
    message = messages_pb2.AggregatedRecord()
    message.partition_key_table.append("pk-0")
    for index in (0, 7, 0):  # the second one points past the table
        user_record = message.records.add()
        user_record.partition_key_index = index
        user_record.data = VALID_RECORDS[0] if index == 0 else secret
    body = message.SerializeToString()
    data = MAGIC + body + hashlib.md5(body).digest()

    dead_letters = check_between_neighbours(data, decoder)

    assert [d.record_bytes for d in dead_letters] == [data]
    assert "partition key index 7" in dead_letters[0].reason
    printed = capfd.readouterr()
    assert secret.decode() not in printed.out + printed.err
    assert base64.b64encode(secret).decode()[:16] not in printed.out + printed.err


def test_an_unknown_payload_reason_does_not_quote_the_payload() -> None:
    secret = b"\x7fs3cr3t-not-a-known-form"
    dead_letters = check_between_neighbours(secret, "python")

    assert len(dead_letters) == 1
    assert "s3cr3t" not in dead_letters[0].reason
    assert "7f" in dead_letters[0].reason  # the first bytes, in hex, say what it is


def test_kpl_fixture_has_records() -> None:
    assert len(KPL_RECORDS) >= 2


# -- found by the atheris harness (fuzz/decoders.py) or its invariants -------
AnyValue = common_pb2.AnyValue


def _without_spans_json() -> bytes:
    return raw_deflate(b'{"resourceSpans":[{"scopeSpans":[{}]}]}')


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize(
    "data",
    [b"\x0a\x00", b'{"resourceSpans":[]}', _without_spans_json()],
    ids=["empty-resource-proto", "otlp-json-no-resources", "deflate-json-no-spans"],
)
def test_a_record_without_spans_is_a_dead_letter(decoder: str, data: bytes) -> None:
    """Lenient parsing took these for requests and they vanished silently."""
    dead_letters = check_between_neighbours(data, decoder)
    assert [d.reason for d in dead_letters] == ["request holds no spans"]


def _span_with(attributes: dict[str, AnyValue], name: str) -> bytes:
    request = otlp.export_request(_TRACES[0].spans[:1])
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.name, span.kind = name, 2  # a SERVER span named by its method only
    for key, value in attributes.items():
        span.attributes.add(key=key).value.CopyFrom(value)
    return request.SerializeToString()


ODD_VALUES = {
    "infinite status": {"http.status_code": AnyValue(double_value=math.inf)},
    "huge float status": {"http.status_code": AnyValue(double_value=1e300)},
    "status past int32": {
        "http.response.status_code": AnyValue(string_value="99999999999")
    },
    "int path": {"url.path": AnyValue(int_value=7)},
    "list path": {
        "http.target": AnyValue(
            array_value=common_pb2.ArrayValue(values=[AnyValue(string_value="/a/1")])
        )
    },
}


@pytest.mark.parametrize("decoder", DECODERS)
@pytest.mark.parametrize("case", sorted(ODD_VALUES))
def test_odd_attribute_types_neither_escape_decode_nor_fail_the_archive(
    decoder: str, case: str
) -> None:
    """These raised out of decode (OverflowError, TypeError) or out of the
    Parquet encoder, failing the whole batch instead of one attribute."""
    data = _span_with(ODD_VALUES[case], "GET")
    assert check_between_neighbours(data, decoder) == []
    batch = SpanBatch()
    RecordDecoder(FUZZ_SETTINGS, decoder).decode(KinesisRecord(data, ref(1)), batch, [])
    assert len(batch) == 1
    assert batch.http_status_code == [None]
    assert encode_parquet(batch)
    if "path" in case:
        assert batch.operation[0].startswith("GET ")
        assert batch.operation[0] != "GET"


@pytest.mark.parametrize("decoder", DECODERS)
def test_a_span_time_past_int64_is_an_invalid_span(decoder: str) -> None:
    """Found by atheris: an end time of 2^64 - 1 ns made the archive's Parquet
    encoding of the whole batch fail (OverflowError in the int64 column)."""
    request = otlp.export_request(_TRACES[0].spans[:1])
    spans = request.resource_spans[0].scope_spans[0].spans
    for index in (1, 2):
        spans.add().CopyFrom(spans[0])
        spans[index].span_id = bytes([index]) * 8
    spans[0].end_time_unix_nano = 2**64 - 1
    spans[1].start_time_unix_nano = 2**63
    data = request.SerializeToString()
    assert check_between_neighbours(data, decoder) == []
    batch = SpanBatch()
    decoder_ = RecordDecoder(FUZZ_SETTINGS, decoder)
    decoder_.decode(KinesisRecord(data, ref(1)), batch, [])
    assert len(batch) == len(spans) - 2
    assert decoder_.stats.invalid_spans == 2
    assert encode_parquet(batch)
    # The latest time that fits is kept.
    spans[0].end_time_unix_nano = spans[1].start_time_unix_nano = 2**63 - 1
    batch = SpanBatch()
    RecordDecoder(FUZZ_SETTINGS, decoder).decode(
        KinesisRecord(request.SerializeToString(), ref(1)), batch, []
    )
    assert len(batch) == len(spans)
    assert encode_parquet(batch)


# -- what the logs say -------------------------------------------------------
def test_dead_letter_log_names_record_not_payload(
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cr3t-attribute-value-0123456789"
    request = otlp.export_request(_TRACES[0].spans[:1])
    span = request.resource_spans[0].scope_spans[0].spans[0]
    span.attributes.add(key="password").value.string_value = secret
    data = request.SerializeToString()[:-3]  # truncated: a poison record
    with caplog.at_level(logging.DEBUG):
        dead_letters = check_between_neighbours(data, "python")
    assert dead_letters
    assert ref(1).describe() in caplog.text
    assert secret not in caplog.text
