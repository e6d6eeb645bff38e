"""The compiled trace assembler returns exactly what the Python one returns.

Both get the same batches and the same clock; after every poll and flush_all
their outputs must be equal (summaries in order, edges in insertion order)
and so must their trace counts. The inputs go out of their way to find the
corners: ids that are not 16 hex digits, duplicates, roots by None and by
empty string, unknown kinds, empty and non-ASCII names with lone surrogates,
starts past int64, clock steps on either side of the idle and retention
thresholds.
"""

from __future__ import annotations

import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spanstream import extension
from spanstream.aggregate.nativetraces import (
    AnyTraceAssembler,
    NativeTraceAssembler,
    make_trace_assembler,
)
from spanstream.aggregate.traces import TraceAssembler, TraceOutput
from spanstream.config import Settings
from spanstream.errors import ConfigError
from spanstream.model import SPAN_KINDS, SpanBatch

IDLE_SECS = 30.0
RETENTION_SECS = 600.0
SETTINGS = Settings(
    window_secs=60, trace_idle_secs=IDLE_SECS, trace_retention_secs=RETENTION_SECS
)
BASE_NANOS = 1_796_401_890_000_000_000
INT64_MAX = 2**63 - 1

TENANTS = ["t1", "t2", "é", "\ud800x"]
TRACE_IDS = ["a", "b", "0" * 32, "\udcff"]
SPAN_IDS = [
    *(f"{index:016x}" for index in range(1, 7)),
    "00000000000000AB",  # upper-case hex: its own value too
    "0000000000000000",  # the key every root's missing parent gets
    "+000000000000001",  # 16 characters a Rust parser would take
    "0011 2233 4455 66",  # fromhex skips the spaces: 7 bytes, so hashed
    "0011 2233 4455 6677",  # ... and here 8 bytes: its own value
    "٠١٢٣٤٥٦٧٨٩٠١٢٣٤٥",  # 16 Arabic-Indic digits
    "client/1",
    "\ud800",
]
NAMES = ["web", "cart", "", "ü", "\udc80svc", "名前"]
NODE_NAMES = [None, "", "redis", "ñ", "\ud83d"]
KINDS = [*SPAN_KINDS, "", "client", "WEIRD", "\ud800"]
CLOCK_STEPS = [
    0.0,
    1.0,
    IDLE_SECS - 0.5,
    IDLE_SECS,
    IDLE_SECS + 0.5,
    RETENTION_SECS - IDLE_SECS,
    RETENTION_SECS,
    RETENTION_SECS + 1.0,
]

starts = st.one_of(
    st.integers(BASE_NANOS - 10**10, BASE_NANOS + 10**10),
    st.integers(-(2**63), INT64_MAX),
    st.sampled_from([2**64, -(2**70), 0]),
)
ends = st.one_of(
    st.integers(BASE_NANOS - 10**11, BASE_NANOS + 10**11),
    st.integers(-(2**63), INT64_MAX),
)


@st.composite
def batches(draw: st.DrawFn) -> SpanBatch:
    batch = SpanBatch()
    for _ in range(draw(st.integers(0, 12))):
        batch.tenant.append(draw(st.sampled_from(TENANTS)))
        batch.trace_id.append(draw(st.sampled_from(TRACE_IDS)))
        batch.span_id.append(draw(st.sampled_from(SPAN_IDS)))
        batch.parent_span_id.append(
            draw(st.one_of(st.sampled_from([None, ""]), st.sampled_from(SPAN_IDS)))
        )
        batch.service.append(draw(st.sampled_from(NAMES)))
        batch.operation.append(draw(st.sampled_from(NAMES)))
        batch.span_kind.append(draw(st.sampled_from(KINDS)))
        batch.start_unix_nanos.append(draw(starts))
        batch.end_unix_nanos.append(draw(ends))
        batch.duration_nanos.append(draw(st.integers(-(2**63), INT64_MAX)))
        batch.is_error.append(draw(st.booleans()))
        batch.is_cold_start.append(draw(st.booleans()))
        batch.db_system.append(draw(st.sampled_from(NODE_NAMES)))
        batch.messaging_system.append(draw(st.sampled_from(NODE_NAMES)))
        batch.peer_service.append(draw(st.sampled_from(NODE_NAMES)))
    return batch


steps = st.lists(
    st.one_of(
        st.tuples(st.just("add"), batches()),
        st.tuples(st.just("poll"), st.sampled_from(CLOCK_STEPS)),
        st.tuples(st.just("flush_all"), st.none()),
    ),
    max_size=12,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def pair() -> tuple[FakeClock, TraceAssembler, NativeTraceAssembler]:
    clock = FakeClock()
    return clock, TraceAssembler(SETTINGS, clock), NativeTraceAssembler(SETTINGS, clock)


def assert_same_output(expected: TraceOutput, actual: TraceOutput) -> None:
    assert actual.summaries == expected.summaries
    assert list(actual.edges.items()) == list(expected.edges.items())


def assert_same_counts(expected: AnyTraceAssembler, actual: AnyTraceAssembler) -> None:
    assert (actual.pending_trace_count, actual.retained_trace_count) == (
        expected.pending_trace_count,
        expected.retained_trace_count,
    )


@settings(max_examples=150, deadline=None)
@given(steps=steps)
def test_any_sequence_of_batches_and_clock_steps_gives_the_same_outputs(
    steps: list[tuple[str, Any]],
) -> None:
    clock, expected, actual = pair()
    for action, argument in steps:
        if action == "add":
            expected.add(argument)
            actual.add(argument)
        elif action == "poll":
            clock.now += argument
            assert_same_output(expected.poll(), actual.poll())
        else:
            assert_same_output(expected.flush_all(), actual.flush_all())
        assert_same_counts(expected, actual)
    assert_same_output(expected.flush_all(), actual.flush_all())


def one_span_batch(**values: Any) -> SpanBatch:
    row: dict[str, Any] = {
        "tenant": "t1",
        "trace_id": "a",
        "span_id": "0000000000000001",
        "parent_span_id": None,
        "service": "web",
        "operation": "GET /",
        "span_kind": "SERVER",
        "start_unix_nanos": BASE_NANOS,
        "end_unix_nanos": BASE_NANOS + 5,
        "duration_nanos": 5,
        "is_error": False,
        "is_cold_start": False,
        "db_system": None,
        "messaging_system": None,
        "peer_service": None,
        **values,
    }
    batch = SpanBatch()
    for name, value in row.items():
        getattr(batch, name).append(value)
    return batch


@pytest.mark.parametrize(
    ("column", "value"),
    [("end_unix_nanos", 2**63), ("duration_nanos", -(2**63) - 1)],
)
def test_an_end_or_duration_past_int64_raises_the_same_and_touches_nothing(
    column: str, value: int
) -> None:
    _, expected, actual = pair()
    good = one_span_batch()
    bad = one_span_batch(span_id="0000000000000002")
    bad.extend(one_span_batch(span_id="0000000000000003", **{column: value}))
    for assembler in (expected, actual):
        assembler.add(good)
        with pytest.raises(struct.error) as raised:
            assembler.add(bad)
        assert assembler.pending_trace_count == 1
        (message,) = raised.value.args
        assert message == "argument out of range"
    assert_same_output(expected.flush_all(), actual.flush_all())


def test_columns_of_different_lengths_raise_the_same_and_touch_nothing() -> None:
    _, expected, actual = pair()
    batch = one_span_batch()
    batch.peer_service.append(None)
    messages = []
    for assembler in (expected, actual):
        with pytest.raises(ValueError) as raised:
            assembler.add(batch)
        messages.append(str(raised.value))
        assert (assembler.pending_trace_count, assembler.retained_trace_count) == (0, 0)
    assert messages[0] == messages[1]
    assert "differ in length" in messages[0]


def test_summaries_hand_back_the_name_objects_of_the_batch() -> None:
    service = "".join(["svc-", "\ud800"])  # a lone surrogate, not UTF-8
    _, _, actual = pair()
    actual.add(one_span_batch(service=service))
    (summary,) = actual.flush_all().summaries
    assert summary.root_service is service
    assert summary.services == [service]


def test_factory_follows_the_decoder_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = FakeClock()
    monkeypatch.setenv(extension.IMPLEMENTATION_VARIABLE, "python")
    assert type(make_trace_assembler(SETTINGS, clock)) is TraceAssembler
    monkeypatch.setenv(extension.IMPLEMENTATION_VARIABLE, "auto")
    assert type(make_trace_assembler(SETTINGS, clock)) is NativeTraceAssembler
    assert type(make_trace_assembler(SETTINGS, clock, "native")) is (
        NativeTraceAssembler
    )
    with pytest.raises(ConfigError, match="must be one of"):
        make_trace_assembler(SETTINGS, clock, "fast")
    monkeypatch.setattr(extension, "spanstream_native", None)
    assert type(make_trace_assembler(SETTINGS, clock)) is TraceAssembler
    with pytest.raises(ConfigError, match="not installed"):
        make_trace_assembler(SETTINGS, clock, "native")
    with pytest.raises(ConfigError, match="not installed"):
        NativeTraceAssembler(SETTINGS, clock)
