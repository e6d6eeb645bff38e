"""The archive's fast arrow conversion gives what plain `pa.array` gives.

The compiled extension writes columns straight into arrow buffers, the
Python path flattens attribute maps itself and converts repeated dicts once,
and the archive cuts each object's rows from one table of the whole batch;
these tests pin that the arrays, the errors and the Parquet bytes are what
the plain conversion of each object's rows gave.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from spanstream.aggregate.types import FlushRange
from spanstream.config import Settings
from spanstream.decode import RecordDecoder
from spanstream.errors import SinkError
from spanstream.extension import IMPLEMENTATION_VARIABLE
from spanstream.model import (
    SPAN_COLUMNS,
    DeadLetter,
    KinesisRecord,
    RecordRef,
    SpanBatch,
)
from spanstream.sinks import arrays
from spanstream.sinks.archive import (
    ARCHIVE_SCHEMA,
    ArchiveWriter,
    arrow_table,
    encode_parquet,
    encode_table,
    group_rows,
)
from spanstream.sinks.arrays import (
    HAS_NATIVE_BUILDERS,
    column_array,
    native_map_array,
    native_scalar_array,
    python_map_array,
)
from spanstream.sinks.retry import RetryPolicy
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans

MAP_TYPE = ARCHIVE_SCHEMA.field("resource_attributes").type
HOUR_NANOS = 3_600 * 1_000_000_000
T0_NANOS = 1_714_557_600 * 1_000_000_000
RANGE = FlushRange("spans", "shardId-000000000001", "100", "200")
SHARED = {"service.name": "checkout", "tenant.id": "acme"}


def _plain(values: list[Any]) -> pa.Array:
    return pa.array(values, type=MAP_TYPE)


@pytest.mark.parametrize(
    "maps",
    [
        [SHARED] * 6,  # one dict shared by every span (converted once)
        [SHARED, {"a": "1"}, SHARED, SHARED, {}, SHARED, SHARED],
        [{"k": str(i), "x": "y"} for i in range(5)],  # all distinct
        [{}, {}, {"a": None}, {"é": "ü", "": ""}],
        [{"bytes": b"raw"}, {"z": "1", "a": "2"}],  # bytes and key order kept
    ],
)
def test_map_columns_equal_the_plain_conversion(maps: list[Any]) -> None:
    fast = column_array(maps, MAP_TYPE)

    assert fast is not None
    assert fast.type == MAP_TYPE
    assert fast.equals(_plain(maps))
    assert fast.to_pylist() == _plain(maps).to_pylist()


@pytest.mark.parametrize(
    "maps",
    [
        [None, {"a": "b"}],
        [[("a", "b")]],
        [{None: "a"}],
        [{"a": 1}],
        [{1: "a"}],
        [SHARED, SHARED, {"a": 1}],
    ],
)
def test_anything_unusual_is_left_to_pyarrow(maps: list[Any]) -> None:
    assert python_map_array(maps, MAP_TYPE) is None
    assert native_map_array(maps, MAP_TYPE) is None


_EMPTY: dict[str, str] = {}
PLAIN_COLUMNS = [
    [SHARED] * 6,
    [_EMPTY, _EMPTY, SHARED, SHARED, _EMPTY, {"a": "b"}, {"a": "b"}, SHARED],
    [SHARED, {"a": "1"}, SHARED, {}, SHARED],
    [{"k": str(i), "x": "y"} for i in range(5)],
    [{}, {}, {"é": "ü", "": "", "🚀": "日本"}],
    [{"z": "1", "a": "2"}],
]


@pytest.mark.parametrize("maps", PLAIN_COLUMNS)
@pytest.mark.parametrize("build", [native_map_array, python_map_array])
def test_both_builders_give_the_plain_conversion(build: Any, maps: list[Any]) -> None:
    # The extension is built by `make install`: a missing one fails here.
    array = build(maps, MAP_TYPE)

    assert array is not None
    assert array.type == MAP_TYPE
    array.validate(full=True)
    assert array.equals(_plain(maps))


class _Text(str):
    pass


class _Dict(dict[str, str]):
    pass


@pytest.mark.parametrize(
    "maps",
    [
        [{"a": None}],
        [{"bytes": b"raw"}],
        [{None: "a"}],
        [{1: "a"}],
        [SHARED, {"a": 1}],
        [None, SHARED],
        [_Dict(a="b")],
        [OrderedDict(a="b")],
        [{_Text("a"): "b"}],
        [{"a": _Text("b")}],
        [{"lone \udc80 surrogate": "x"}],
    ],
)
def test_the_compiled_builder_declines_anything_but_plain_strings(
    maps: list[Any],
) -> None:
    assert native_map_array(maps, MAP_TYPE) is None


def test_the_compiled_builder_takes_only_lists() -> None:
    assert native_map_array((SHARED, SHARED), MAP_TYPE) is None  # type: ignore[arg-type]


_TEXT = st.text(st.characters(codec="utf-8"), max_size=12)


@given(st.lists(st.dictionaries(_TEXT, _TEXT, max_size=6), max_size=30), st.data())
def test_compiled_maps_equal_pyarrow_for_any_strings(
    distinct: list[dict[str, str]], data: st.DataObject
) -> None:
    # Spans of one record share its resource dict: repeat some by identity.
    maps = [
        data.draw(st.sampled_from(distinct)) if distinct and reuse else fresh
        for fresh, reuse in data.draw(
            st.lists(
                st.tuples(st.dictionaries(_TEXT, _TEXT, max_size=4), st.booleans())
            )
        )
    ]
    array = native_map_array(maps, MAP_TYPE)

    assert array is not None
    array.validate(full=True)
    assert array.equals(_plain(maps))


@pytest.mark.parametrize("field", list(ARCHIVE_SCHEMA), ids=ARCHIVE_SCHEMA.names)
def test_empty_columns_are_empty_arrays(field: pa.Field) -> None:
    assert column_array([], field.type).equals(pa.array([], type=field.type))


def test_the_python_switch_turns_the_compiled_builders_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*_: Any) -> None:
        raise AssertionError("the compiled builder ran")

    monkeypatch.setattr(arrays, "native_scalar_array", refuse)
    monkeypatch.setattr(arrays, "native_map_array", refuse)
    monkeypatch.setenv(IMPLEMENTATION_VARIABLE, "python")

    assert column_array(["a", None], STRING).equals(pa.array(["a", None]))
    assert column_array([SHARED], MAP_TYPE).equals(_plain([SHARED]))
    monkeypatch.setenv(IMPLEMENTATION_VARIABLE, "auto")
    with pytest.raises(AssertionError, match="compiled builder ran"):
        column_array(["a"], STRING)


def test_the_extension_has_the_column_builders() -> None:
    # `make install` builds it: a missing or stale one must fail, not skip.
    assert HAS_NATIVE_BUILDERS


STRING = pa.string()
INT32 = pa.int32()
INT64 = pa.int64()
BOOL = pa.bool_()


@pytest.mark.parametrize(
    ("values", "arrow_type"),
    [
        (["a", "", "é🚀", None, "GET /cart", None], STRING),
        ([None, None], STRING),
        (["x"] * 9, STRING),
        ([0, -1, 2**31 - 1, -(2**31), None, 200], INT32),
        ([0, 2**63 - 1, -(2**63), None, 1_714_557_600_000_000_000], INT64),
        ([True, False, None, True, True, False, True, False, True, None], BOOL),
        ([False] * 17, BOOL),
    ],
)
def test_scalar_columns_equal_the_plain_conversion(
    values: list[Any], arrow_type: pa.DataType
) -> None:
    array = native_scalar_array(values, arrow_type)

    assert array is not None
    array.validate(full=True)
    assert array.equals(pa.array(values, type=arrow_type))
    assert array.null_count == values.count(None)


@pytest.mark.parametrize(
    ("values", "arrow_type"),
    [
        (["a", 1], STRING),
        (["a", b"raw"], STRING),
        ([_Text("a")], STRING),
        (["lone \udc80 surrogate"], STRING),
        ([1, True], INT64),
        ([1, 2.0], INT64),
        ([1, "2"], INT64),
        ([2**63], INT64),
        ([2**31], INT32),
        ([-(2**31) - 1], INT32),
        ([True, 1], BOOL),
        ([True, "true"], BOOL),
        ((1, 2), INT64),
    ],
)
def test_the_compiled_builders_decline_anything_else(
    values: list[Any], arrow_type: pa.DataType
) -> None:
    assert native_scalar_array(values, arrow_type) is None


@pytest.mark.parametrize(
    ("values", "arrow_type"),
    [(["a", 1], STRING), ([2**31], INT32), ([1, "2"], INT64), ([2**64], INT64)],
)
def test_a_declined_column_raises_what_pa_array_raises(
    values: list[Any], arrow_type: pa.DataType
) -> None:
    with pytest.raises(Exception) as plain:
        pa.array(values, type=arrow_type)
    with pytest.raises(type(plain.value)):
        column_array(values, arrow_type)


_OPTIONAL_TEXT = st.none() | st.text(st.characters(codec="utf-8"), max_size=8)


@given(
    st.lists(_OPTIONAL_TEXT, max_size=40),
    st.lists(st.none() | st.integers(-(2**63), 2**63 - 1), max_size=40),
    st.lists(st.none() | st.integers(-(2**31), 2**31 - 1), max_size=40),
    st.lists(st.none() | st.booleans(), max_size=40),
)
def test_compiled_columns_equal_pyarrow_for_any_values(
    texts: list[str | None],
    longs: list[int | None],
    ints: list[int | None],
    flags: list[bool | None],
) -> None:
    for values, arrow_type in (
        (texts, STRING),
        (longs, INT64),
        (ints, INT32),
        (flags, BOOL),
    ):
        array = column_array(values, arrow_type)
        array.validate(full=True)
        assert array.equals(pa.array(values, type=arrow_type))


def test_a_decoded_batch_converts_as_pa_array_converts_it() -> None:
    batch = _decoded_batch()
    columns = batch.columns()
    plain = pa.table(
        [pa.array(columns[f.name], type=f.type) for f in ARCHIVE_SCHEMA],
        schema=ARCHIVE_SCHEMA,
    )

    table = arrow_table(batch)
    table.validate(full=True)
    assert table.equals(plain)
    assert encode_parquet(batch) == encode_table(plain)


def _decoded_batch() -> SpanBatch:
    settings = Settings()
    decoder = RecordDecoder(settings)
    traces = generate_spans(600, seed=7, spread_secs=30.0)
    batch = SpanBatch()
    dead_letters: list[DeadLetter] = []
    for index, record in enumerate(encode_records(traces, Form.MIXED, 7, 50)):
        ref = RecordRef("spans", "shardId-000000000000", str(1000 + index))
        decoder.decode(KinesisRecord(record.data, ref), batch, dead_letters)
    assert len(batch) > 500 and not dead_letters
    return batch


def test_bad_values_raise_what_pyarrow_raises() -> None:
    batch = _batch([("acme", T0_NANOS), ("acme", T0_NANOS + 1)])
    batch.span_attributes[1] = {"count": 3}  # type: ignore[dict-item]
    with pytest.raises(pa.ArrowTypeError, match="Expected bytes"):
        arrow_table(batch)
    batch.span_attributes[1] = {None: "x"}  # type: ignore[dict-item]
    with pytest.raises(pa.ArrowInvalid, match="null"):
        arrow_table(batch)


class _KeepingS3:
    def __init__(self) -> None:
        self.bodies: dict[str, bytes] = {}

    def put_object(self, **params: Any) -> dict[str, Any]:
        self.bodies[params["Key"]] = params["Body"]
        return {}


def test_each_object_holds_the_bytes_of_its_rows_encoded_alone() -> None:
    rows = [
        ("acme", T0_NANOS + 3),
        ("globex", T0_NANOS + 1),
        ("acme", T0_NANOS + HOUR_NANOS),
        ("acme", T0_NANOS + 2),
        ("globex", T0_NANOS + 5),
    ]
    batch = _batch(rows)
    s3 = _KeepingS3()
    writer = ArchiveWriter(s3, Settings(bucket="b"))
    keys = writer.write(batch, RANGE)
    writer.close()

    groups = sorted(group_rows(batch).items())
    assert len(keys) == len(groups) == 3
    for key, (_, indices) in zip(keys, groups, strict=True):
        assert s3.bodies[key] == encode_parquet(batch.take(indices))


def test_one_bad_row_fails_only_its_object() -> None:
    batch = _batch([("acme", T0_NANOS), ("globex", T0_NANOS)])
    batch.span_attributes[1] = {"count": 3}  # type: ignore[dict-item]
    s3 = _KeepingS3()
    writer = ArchiveWriter(s3, Settings(bucket="b"), RetryPolicy(sleep=lambda _: 0))

    with pytest.raises(SinkError, match="1 of 2 uploads"):
        writer.write(batch, RANGE)
    assert len(s3.bodies) == 1
    assert all("/tenant=acme/" in f"/{key}" for key in s3.bodies)
    writer.close()


def _batch(rows: list[tuple[str, int]]) -> SpanBatch:
    batch = SpanBatch()
    for index, (tenant, start) in enumerate(rows):
        values: dict[str, Any] = {
            name: None for name, kind in SPAN_COLUMNS.items() if kind == "string"
        }
        values.update(
            tenant=tenant,
            trace_id=f"{index:032x}",
            span_id=f"{index:016x}",
            service="checkout",
            operation="GET /cart",
            span_name="GET /cart",
            span_kind="SERVER",
            start_unix_nanos=start,
            end_unix_nanos=start + 10,
            duration_nanos=10,
            status_code="OK",
            is_error=False,
            http_status_code=200,
            is_cold_start=False,
            event_count=0,
            resource_attributes=SHARED,
            span_attributes={"i": str(index)},
            source_shard_id=RANGE.shard_id,
            source_sequence_number=str(100 + index),
            source_sub_sequence_number=0,
            arrival_unix_millis=start // 1_000_000,
        )
        for name, value in values.items():
            getattr(batch, name).append(value)
    return batch
