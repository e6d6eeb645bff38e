"""The compiled OTLP/JSON path gives exactly what the Python path gives.

The Python path (``json.loads``, hex ids, ``json_format.ParseDict``) is the
reference. For every payload, ``RecordDecoder(decoder="native")`` must append
the same rows (compared by ``repr``), count the same stats and dead-letter
with the same reason as ``RecordDecoder(decoder="python")``. Where the
extension handles a document itself, the request it wrote must also equal the
message ``ParseDict`` builds; where it declines, the Python path decides.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import spanstream_native  # built by `make install`; a missing build must fail
from google.protobuf import json_format
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from otlpfactory import make_record

from spanstream.config import Settings
from spanstream.decode import RecordDecoder, native
from spanstream.decode.otlp_json import parse_otlp_json
from spanstream.model import SpanBatch
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_traces
from spanstream.traffic.real import robot_shop_resource_spans, zipkin_records

SETTINGS = Settings()
NOW_UNIX_NANOS = 1_700_000_000_000_000_000
PROPERTY = settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TRACE_ID_HEX = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID_HEX = "b7ad6b7169203331"
TRACE_ID_BASE64 = "CvdlGRbNQ92ESOshHIAxnA=="
SPAN_ID_BASE64 = "t61rcWkgMzE="


def outcome(data: bytes, decoder: str) -> tuple[Any, ...]:
    record_decoder = RecordDecoder(SETTINGS, decoder=decoder)
    batch = SpanBatch()
    dead_letters: list[Any] = []
    escaped = None
    try:
        record_decoder.decode(make_record(data), batch, dead_letters)
    except Exception as exc:  # the reference itself may raise; compare types
        escaped = type(exc)
    letters = [(d.stage, d.reason, d.record_bytes) for d in dead_letters]
    return repr(batch.columns()), letters, record_decoder.stats, escaped


def reference_message(data: bytes) -> ExportTraceServiceRequest:
    return parse_otlp_json(json.loads(data))


def assert_same(data: bytes) -> bool:
    """Assert both decoders agree on ``data``; return whether the extension
    handled it (rather than declining it to the Python path)."""
    traces = native.parse_otlp_json(data)
    if traces is not None:
        # THEN the request it wrote is the one ParseDict builds
        written = ExportTraceServiceRequest.FromString(traces.request_bytes)
        assert written == reference_message(data)
    assert outcome(data, "native") == outcome(data, "python")
    return traces is not None


def json_bytes(document: Any) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def span(**fields: Any) -> dict[str, Any]:
    return {"traceId": TRACE_ID_HEX, "spanId": SPAN_ID_HEX, "name": "op", **fields}


def document(*spans: dict[str, Any], **resource_fields: Any) -> dict[str, Any]:
    resource = {"attributes": [{"key": "service.name", "value": {"stringValue": "s"}}]}
    return {
        "resourceSpans": [
            {
                "resource": resource,
                "scopeSpans": [{"scope": {"name": "lib"}, "spans": list(spans)}],
                **resource_fields,
            }
        ]
    }


# GIVEN the generator's OTLP/JSON records --------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_generated_records_are_handled_natively_and_match(seed: int) -> None:
    traces = generate_traces(60, seed=seed, now_unix_nanos=NOW_UNIX_NANOS)
    records = encode_records(traces, Form.OTLP_JSON, seed=seed, batch_spans=50)
    for record in records:
        # THEN every one takes the native path, with the Python path's rows
        assert assert_same(record.data)


# GIVEN the real OpenTelemetry capture, written as OTLP/JSON -------------------


def capture_documents(shared_data: Path, use_integers: bool) -> list[bytes]:
    """The robot-shop capture as OTLP/JSON records of 500 spans: protobuf's
    own JSON printer, with the ids rewritten to hex as OTLP/JSON wants."""
    records = []
    for pb_resource_spans in robot_shop_resource_spans(shared_data):
        spans = pb_resource_spans.scope_spans[0].spans
        for start in range(0, len(spans), 500):
            request = ExportTraceServiceRequest()
            chunk = request.resource_spans.add(resource=pb_resource_spans.resource)
            chunk.scope_spans.add(
                scope=pb_resource_spans.scope_spans[0].scope,
                spans=spans[start : start + 500],
            )
            document = json_format.MessageToDict(
                request, use_integers_for_enums=use_integers
            )
            for scope_spans in document["resourceSpans"][0]["scopeSpans"]:
                for json_span in scope_spans["spans"]:
                    for name in ("traceId", "spanId", "parentSpanId"):
                        if name in json_span:
                            json_span[name] = base64.b64decode(json_span[name]).hex()
            records.append(json_bytes(document))
    return records


@pytest.mark.parametrize("use_integers", [False, True], ids=["names", "numbers"])
def test_real_capture_is_handled_natively_and_matches(
    shared_data: Path, use_integers: bool
) -> None:
    records = capture_documents(shared_data, use_integers)
    assert len(records) >= 30
    for data in records:
        assert assert_same(data)


def test_real_zipkin_records_stay_on_the_python_path(shared_data: Path) -> None:
    for _, data in zipkin_records(shared_data):
        assert native.parse_otlp_json(data) is None
        assert outcome(data, "native") == outcome(data, "python")


# GIVEN documents the extension declines or the Python path refuses ----------

DECLINED = {
    "unknown span field": document(span(unknownField=1)),
    "snake_case trace id (base64 to ParseDict)": document(
        {"trace_id": TRACE_ID_BASE64, "spanId": SPAN_ID_HEX}
    ),
    # Under scope_spans the Python path leaves ids as they are: base64.
    "snake_case scopeSpans": {
        "resourceSpans": [
            {
                "scope_spans": [
                    {"spans": [span(traceId=TRACE_ID_BASE64, spanId=SPAN_ID_BASE64)]}
                ]
            }
        ]
    },
    "kind as a numeric string": document(span(kind="2")),
    "kind name of another enum": document(span(kind="STATUS_CODE_OK")),
    "time as a float": document(span(startTimeUnixNano=1.7e18)),
    "id with spaces": document(span(parentSpanId="b7ad 6b71 6920 3331")),
    "null name": document(span(name=None)),
    "double as a string": document(
        span(attributes=[{"key": "d", "value": {"doubleValue": "1.5"}}])
    ),
    "stringValueStrindex": document(
        span(attributes=[{"key": "d", "value": {"stringValueStrindex": 3}}])
    ),
    "deep arrays": document(
        span(
            attributes=[
                {
                    "key": "deep",
                    "value": json.loads(
                        '{"arrayValue":{"values":[' * 30
                        + '{"stringValue":"x"}'
                        + "]}}" * 30
                    ),
                }
            ]
        )
    ),
}


@pytest.mark.parametrize("name", sorted(DECLINED))
def test_declined_documents_still_decode_through_the_python_path(name: str) -> None:
    data = json_bytes(DECLINED[name])
    assert native.parse_otlp_json(data) is None
    assert not assert_same(data)
    _, _, stats, escaped = outcome(data, "native")
    assert escaped is None
    assert stats.forms == {"otlp-json": 1}
    assert stats.spans + stats.invalid_spans == 1


DUPLICATE_KEYS = json_bytes(document(span(name="first"))).replace(
    b'"name":"first"', b'"name":"first","name":"second"'
)


def test_duplicate_keys_are_declined_and_the_last_one_wins() -> None:
    assert native.parse_otlp_json(DUPLICATE_KEYS) is None
    rows, _, _, _ = assert_outcome_same(DUPLICATE_KEYS)
    assert "'second'" in rows


def assert_outcome_same(data: bytes) -> tuple[Any, ...]:
    expected = outcome(data, "python")
    assert outcome(data, "native") == expected
    return expected


REFUSED = {
    "kind as a list": json_bytes(document(span(kind=[2]))),
    "two values in one AnyValue": json_bytes(
        document(
            span(
                attributes=[
                    {"key": "k", "value": {"stringValue": "a", "intValue": "1"}}
                ]
            )
        )
    ),
    "lone surrogate": json_bytes(document(span(name="\ud800"))),
    "huge double (OverflowError in ParseDict)": json_bytes(document(span())).replace(
        b'"name":"op"',
        b'"name":"op","attributes":[{"key":"d","value":{"doubleValue":1'
        + b"0" * 400
        + b"}}]",
    ),
    "int64 out of range": json_bytes(
        document(span(attributes=[{"key": "i", "value": {"intValue": 2**63}}]))
    ),
    "not JSON": b'{"resourceSpans": [',
    "NaN double": json_bytes(
        document(span(attributes=[{"key": "d", "value": {"doubleValue": "x"}}]))
    ).replace(b'"x"', b"NaN"),
    "no spans": b'{"resourceSpans": []}',
    "scopeSpans not a list": json_bytes(
        {"resourceSpans": [{"scopeSpans": {"spans": []}}]}
    ),
    "deeper than ParseDict allows": json_bytes(
        document(
            span(
                attributes=[
                    {
                        "key": "deep",
                        "value": json.loads(
                            '{"arrayValue":{"values":[' * 60
                            + '{"stringValue":"x"}'
                            + "]}}" * 60
                        ),
                    }
                ]
            )
        )
    ),
}


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_refused_documents_are_refused_alike(name: str) -> None:
    data = REFUSED[name]
    # Only an empty request is the extension's to write (the extraction then
    # refuses it, as for protobuf); the others it declines.
    assert (native.parse_otlp_json(data) is None) == (name != "no spans")
    assert_same(data)
    _, letters, _, escaped = outcome(data, "native")
    # THEN the record is dead-lettered with its bytes and a reason, not raised
    assert escaped is None
    assert len(letters) == 1
    stage, reason, record_bytes = letters[0]
    assert (stage, record_bytes) == ("decode", data)
    assert reason


def test_a_refused_record_names_itself_in_the_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outcome(REFUSED["kind as a list"], "native")
    assert "shardId-000000000000" in caplog.text
    assert "49590338271490256608559692538361571095921575989136588898" in caplog.text


def test_the_native_path_needs_no_json_loads_for_what_it_handles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = json_bytes(document(span(kind="SPAN_KIND_SERVER")))
    expected = outcome(data, "python")
    monkeypatch.setattr(
        "spanstream.decode.json.loads", lambda _: pytest.fail("json.loads called")
    )
    assert outcome(data, "native") == expected


def test_the_default_decoder_takes_the_native_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = []
    real = native.parse_otlp_json

    def spy(payload: bytes) -> Any:
        calls.append(payload)
        return real(payload)

    monkeypatch.delenv("SPANSTREAM_DECODER", raising=False)
    monkeypatch.setattr(native, "parse_otlp_json", spy)
    data = json_bytes(document(span()))
    RecordDecoder(SETTINGS).decode(make_record(data), SpanBatch(), [])
    assert calls == [data]


def test_without_the_extension_json_decodes_as_before(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = json_bytes(document(span(kind=2), span(spanId="00" * 8)))
    expected = outcome(data, "python")
    monkeypatch.setattr(native, "spanstream_native", None)
    assert outcome(data, "auto") == expected


def test_rows_of_a_handled_document() -> None:
    # GIVEN every AnyValue kind, enum names and numbers, int64 as strings
    attributes = [
        {"key": "s", "value": {"stringValue": "text"}},
        {"key": "b", "value": {"boolValue": False}},
        {"key": "i", "value": {"intValue": "-42"}},
        {"key": "n", "value": {"int_value": 7}},
        {"key": "d", "value": {"doubleValue": 1}},
        {"key": "x", "value": {"bytesValue": "AQL/"}},
        {"key": "a", "value": {"arrayValue": {"values": [{"intValue": 1}, {}]}}},
        {"key": "k", "value": {"kvlistValue": {"values": [{"key": "z"}]}}},
        {"key": "e", "value": {}},
        {"key": "http.response.status_code", "value": {"intValue": "503"}},
    ]
    data = json_bytes(
        document(
            span(
                kind="SPAN_KIND_SERVER",
                startTimeUnixNano="1700000000000000000",
                end_time_unix_nano=1700000000000000500,
                status={"code": 1, "message": "fine"},
                events=[{"name": "exception", "timeUnixNano": "1"}],
                links=[{"traceId": TRACE_ID_HEX, "spanId": "zz", "flags": 1}],
                attributes=attributes,
            )
        )
    )
    assert assert_same(data)
    batch = SpanBatch()
    RecordDecoder(SETTINGS, decoder="native").decode(make_record(data), batch, [])
    assert batch.span_attributes[0] == {
        "s": "text",
        "b": "false",
        "i": "-42",
        "n": "7",
        "d": "1.0",
        "x": "0102ff",
        "a": "[1,null]",
        "k": '{"z":null}',
        "e": "null",
        "http.response.status_code": "503",
    }
    assert (batch.span_kind, batch.status_code) == (["SERVER"], ["OK"])
    assert (batch.is_error, batch.http_status_code) == ([True], [503])
    assert batch.duration_nanos == [500]


# GIVEN hypothesis-generated documents, hostile ones included ------------------

SPAN_KIND_NAMES = [
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
]
STATUS_NAMES = ["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"]
RULE_KEYS = [
    "http.request.method",
    "http.method",
    "http.route",
    "http.response.status_code",
    "http.status_code",
    "url.path",
    "peer.service",
    "db.system",
    "faas.coldstart",
    "tenant.id",
    "service.name",
]


def one_of(hostile: bool, good: Any, *bad: Any) -> st.SearchStrategy[Any]:
    """``good``, or with ``hostile`` also (now and then) one of ``bad``."""
    if not hostile:
        return good
    return st.one_of(good, good, good, *bad)


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.just([]),
    st.just({}),
    st.just([1]),
    st.floats(allow_nan=False, allow_infinity=False),
)
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["", "GET", "/users/42", "exception", "true", "\x00", "é\U0001f642"]
    ),
)
# Lone surrogates: \ud800 escapes, or (see `encodings`) raw surrogate bytes.
surrogates = st.text(st.characters(min_codepoint=0xD7FE, max_codepoint=0xE001))
good_integers = st.one_of(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1).map(str))
bad_integers = st.one_of(
    st.integers(-(2**65), 2**65),
    st.integers(-(2**65), 2**65).map(str),
    st.integers(0, 5).map(float),
    st.sampled_from(["1_000", " 12", "+5", "0012", "-0", "1e3", "", "x", "0" * 25]),
)


def hex_ids(size: int) -> st.SearchStrategy[str]:
    raw = st.binary(min_size=size, max_size=size)
    return st.one_of(raw.map(bytes.hex), raw.map(lambda id_: id_.hex().upper()))


bad_ids = st.one_of(
    st.binary(max_size=20).map(bytes.hex),
    st.text("0123456789abcdefXYZ \t", max_size=34),
    st.just("0" * 32),
    st.integers(),
    ODD_VALUES,
)
base64_texts = st.one_of(
    st.binary(max_size=10).map(lambda raw: base64.b64encode(raw).decode()),
    st.binary(max_size=10).map(lambda raw: base64.urlsafe_b64encode(raw).decode()),
    st.binary(max_size=10).map(lambda raw: base64.b64encode(raw).decode().rstrip("=")),
)
good_doubles = st.one_of(
    # 0.0 and -0.0 are fine, but -0 is not: json.loads reads it as an int.
    st.floats(allow_nan=False, allow_infinity=False).map(lambda x: x or 1.0),
    st.integers(-(2**70), 2**70),
)
bad_doubles = st.sampled_from(["1.5", "NaN", "Infinity", -0.0, 0.0])


def documents(hostile: bool) -> st.SearchStrategy[Any]:
    """OTLP/JSON documents; ``hostile`` ones break the schema in odd places."""
    text = one_of(hostile, texts, surrogates, ODD_VALUES)
    integer = one_of(hostile, good_integers, bad_integers)
    trace_id = one_of(hostile, hex_ids(16), bad_ids)
    span_id = one_of(hostile, hex_ids(8), bad_ids)
    leaves = st.one_of(
        st.builds(lambda v: {"stringValue": v}, text),
        st.builds(lambda v: {"string_value": v}, texts),
        st.builds(lambda v: {"boolValue": v}, one_of(hostile, st.booleans(), text)),
        st.builds(
            lambda v: {"intValue": v},
            one_of(hostile, st.integers(-(2**63), 2**63 - 1).map(str), integer),
        ),
        st.builds(
            lambda v: {"doubleValue": v}, one_of(hostile, good_doubles, bad_doubles)
        ),
        st.builds(
            lambda v: {"bytesValue": v},
            one_of(hostile, base64_texts, st.text("AQz09+/-_= ", max_size=9)),
        ),
        st.just({}),
        *(
            [
                st.just({"stringValue": "a", "boolValue": True}),
                st.just({"stringValueStrindex": 1}),
                st.just({"unknownValue": 1}),
            ]
            if hostile
            else []
        ),
    )

    def key_values(values: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        optional = {"value": values}
        if hostile:
            optional["keyStrindex"] = st.just(1)
        return st.fixed_dictionaries(
            {"key": st.one_of(st.sampled_from(RULE_KEYS), text)}, optional=optional
        )

    any_values = st.recursive(
        leaves,
        lambda children: st.one_of(
            st.builds(
                lambda items: {"arrayValue": {"values": items}},
                st.lists(children, max_size=3),
            ),
            st.builds(
                lambda items: {"kvlistValue": {"values": items}},
                st.lists(key_values(children), max_size=3),
            ),
            st.builds(lambda items: {"array_value": {"values": items}}, st.just([])),
        ),
        max_leaves=8,
    )
    attributes = one_of(
        hostile, st.lists(key_values(any_values), max_size=5), ODD_VALUES
    )

    def enum_values(names: list[str]) -> st.SearchStrategy[Any]:
        return one_of(
            hostile,
            st.one_of(st.integers(-3, 8), st.sampled_from(names)),
            st.integers(2**31 - 2, 2**31 + 1),
            st.sampled_from([*SPAN_KIND_NAMES, *STATUS_NAMES, "2", " 2", "bogus"]),
            ODD_VALUES,
        )

    count = one_of(
        hostile, st.integers(0, 2**32 - 1), st.just(2**32), st.just(-1), integer
    )
    events = st.fixed_dictionaries(
        {},
        optional={
            "name": st.one_of(st.just("exception"), text),
            "timeUnixNano": integer,
            "attributes": attributes,
            "droppedAttributesCount": count,
        },
    )
    links = st.fixed_dictionaries(
        {},
        optional={
            "traceId": trace_id,
            "spanId": span_id,
            "traceState": text,
            "attributes": attributes,
            "flags": count,
            **({"span_id": span_id} if hostile else {}),
        },
    )
    extras = st.fixed_dictionaries(
        {},
        optional={
            "traceState": text,
            "flags": count,
            "dropped_events_count": count,
            "droppedLinksCount": count,
        },
    )
    if hostile:
        names = ["trace_id", "span_id", "parent_span_id", "unknown", "[ext.x]"]
        extras = st.one_of(
            extras,
            st.dictionaries(
                st.sampled_from([*names, "start_time_unix_nano", "flags"]),
                st.one_of(good_integers, texts),
                max_size=2,
            ),
        )
    spans = st.builds(
        lambda required, extras: {**required, **extras},
        st.fixed_dictionaries(
            {"traceId": trace_id, "spanId": span_id},
            optional={
                "parentSpanId": span_id,
                "name": text,
                "kind": enum_values(SPAN_KIND_NAMES),
                "startTimeUnixNano": integer,
                "endTimeUnixNano": integer,
                "attributes": attributes,
                "events": one_of(hostile, st.lists(events, max_size=3), ODD_VALUES),
                "links": one_of(hostile, st.lists(links, max_size=2), ODD_VALUES),
                "status": one_of(
                    hostile,
                    st.fixed_dictionaries(
                        {},
                        optional={"code": enum_values(STATUS_NAMES), "message": text},
                    ),
                    ODD_VALUES,
                    st.just("code"),
                ),
            },
        ),
        extras,
    )
    resource_optional = {"attributes": attributes, "droppedAttributesCount": count}
    if hostile:
        resource_optional["entityRefs"] = st.just([])
    scope_spans = st.lists(
        st.fixed_dictionaries(
            {"spans": one_of(hostile, st.lists(spans, max_size=4), ODD_VALUES)},
            optional={
                "scope": st.fixed_dictionaries(
                    {}, optional={"name": text, "version": text}
                ),
                "schemaUrl": text,
            },
        ),
        max_size=2,
    )
    resource_spans = st.fixed_dictionaries(
        {"scopeSpans": one_of(hostile, scope_spans, ODD_VALUES)},
        optional={
            "resource": one_of(
                hostile, st.fixed_dictionaries({}, optional=resource_optional)
            ),
            "schema_url": text,
        },
    )
    top_optional = (
        {"resource_spans": st.just([]), "unknown": st.integers()} if hostile else {}
    )
    return st.fixed_dictionaries(
        {"resourceSpans": one_of(hostile, st.lists(resource_spans, max_size=2))},
        optional=top_optional,
    )


@st.composite
def encodings(draw: st.DrawFn, document: Any, hostile: bool) -> bytes:
    """``document`` as bytes, escaped or raw, and if ``hostile`` sometimes
    damaged."""
    ascii_only = draw(st.booleans())
    text = json.dumps(document, ensure_ascii=ascii_only)
    # Raw surrogates in UTF-8 form: json.loads takes them (surrogatepass).
    data = text.encode("utf-8", "surrogatepass")
    damages = ["none"] * 6 + (["cut", "duplicate", "wrap", "byte"] if hostile else [])
    damage = draw(st.sampled_from(damages))
    if damage == "cut" and data:
        data = data[: draw(st.integers(1, len(data)))]
    elif damage == "duplicate":
        data = data.replace(b'"spanId":', b'"spanId": "00", "spanId":', 1)
    elif damage == "wrap":
        depth = draw(st.integers(1, 200))
        data = data.replace(
            b'"stringValue": ', b'"stringValue": ' + b"[" * depth, 1
        ).replace(b"}", b"]" * depth + b"}", 1)
    elif damage == "byte" and data:
        index = draw(st.integers(0, len(data) - 1))
        data = data[:index] + bytes([draw(st.integers(0, 255))]) + data[index + 1 :]
    return data


@PROPERTY
@given(documents(hostile=False).flatmap(lambda doc: encodings(doc, False)))
def test_generated_documents_match_the_python_path(data: bytes) -> None:
    handled = assert_same(data)
    event("handled natively" if handled else "declined")


@PROPERTY
@given(documents(hostile=True).flatmap(lambda doc: encodings(doc, True)))
def test_hostile_documents_match_the_python_path(data: bytes) -> None:
    handled = assert_same(data)
    event("handled natively" if handled else "declined")


@PROPERTY
@given(st.binary(max_size=12).map(bytes.hex), st.text(max_size=40))
def test_ids_and_strings_match_the_python_path(parent_hex: str, name: str) -> None:
    data = json_bytes(document(span(parentSpanId=parent_hex, name=name)))
    assert assert_same(data)


@PROPERTY
@given(
    st.one_of(good_doubles, bad_doubles),
    st.one_of(good_integers, bad_integers),
    st.one_of(base64_texts, st.text("AQz09+/-_= ", max_size=9)),
)
# Halfway between two shortest candidates: repr takes the even digit.
@example(double=70368744177664.625, integer=0, text="")
def test_scalars_match_the_python_path(double: Any, integer: Any, text: str) -> None:
    attributes = [
        {"key": "d", "value": {"doubleValue": double}},
        {"key": "i", "value": {"intValue": integer}},
        {"key": "b", "value": {"bytesValue": text}},
    ]
    data = json_bytes(document(span(attributes=attributes, startTimeUnixNano=integer)))
    assert_same(data)


def test_the_extension_never_raises_for_bad_input() -> None:
    for data in (b"", b"{", b"[]", b"null", b"\xff\xfe", b'{"resourceSpans":1}'):
        assert spanstream_native.parse_otlp_json(data) is None
