"""The pipeline's decode, enrich and aggregate stages against the reference.

Generated traffic in the mixed form goes through the real `RecordDecoder`,
`ShardAggregator` and `TraceAssembler`; what comes out must equal what
`spanstream.traffic.reference` computes from the generator's intent.
"""

from __future__ import annotations

import pytest

from spanstream.aggregate.aggregator import ShardAggregator
from spanstream.aggregate.nativetraces import make_trace_assembler
from spanstream.aggregate.types import FlushRange
from spanstream.config import Settings
from spanstream.decode import RecordDecoder
from spanstream.model import DeadLetter, KinesisRecord, RecordRef, SpanBatch
from spanstream.traffic.encode import encode_records, poison_records
from spanstream.traffic.generator import generate_traces, truths
from spanstream.traffic.reference import Expected, diff_stats, expected

NOW_NANOS = 1_767_225_600_000_000_000
SETTINGS = Settings()


def decode(records) -> tuple[SpanBatch, list[DeadLetter]]:
    decoder = RecordDecoder(SETTINGS)
    batch = SpanBatch()
    dead_letters: list[DeadLetter] = []
    for number, (key, data) in enumerate(records, start=1):
        ref = RecordRef("spans", "shardId-0", str(number), 0, key, 0)
        decoder.decode(KinesisRecord(data, ref), batch, dead_letters)
    return batch, dead_letters


@pytest.fixture(scope="module")
def run() -> tuple[SpanBatch, list[DeadLetter], Expected, list]:
    traces = generate_traces(400, seed=21, now_unix_nanos=NOW_NANOS)
    records = encode_records(traces, "mixed", seed=21)
    records[5:5] = poison_records(8, seed=21)
    batch, dead_letters = decode(records)
    return batch, dead_letters, expected(truths(traces)), truths(traces)


def test_every_span_decodes_and_only_poison_is_dead_lettered(run) -> None:
    batch, dead_letters, _, spans = run
    assert len(batch) == len(spans)
    assert sorted(d.ref.partition_key for d in dead_letters) == sorted(
        key for key, _ in poison_records(8, seed=21)
    )


def test_enriched_columns_equal_the_truth(run) -> None:
    batch, _, _, spans = run
    by_id = {span.span_id: span for span in spans}
    columns = (
        "tenant",
        "service",
        "operation",
        "span_kind",
        "duration_nanos",
        "is_error",
        "status_code",
        "http_status_code",
        "is_cold_start",
        "faas_name",
        "peer_service",
        "db_system",
        "messaging_system",
    )
    for index in range(len(batch)):
        row = batch.row(index)
        truth = by_id[row["span_id"]]
        assert {c: row[c] for c in columns} == {c: getattr(truth, c) for c in columns}


def test_red_and_cold_starts_equal_the_reference(run) -> None:
    batch, _, want, _ = run
    aggregator = ShardAggregator(SETTINGS)
    aggregator.add(batch)
    delta = aggregator.drain(FlushRange("spans", "shardId-0", "1", "99"))
    assert diff_stats(want.red, delta.metrics) == []
    got = {k: vars(v) for k, v in delta.cold_starts.items()}
    assert got == {k: vars(v) for k, v in want.cold_starts.items()}


def test_edges_and_trace_summaries_equal_the_reference(
    run, trace_implementation: str
) -> None:
    batch, _, want, _ = run
    assembler = make_trace_assembler(SETTINGS, lambda: 0.0, trace_implementation)
    assembler.add(batch)
    output = assembler.flush_all()
    assert diff_stats(want.edges, output.edges) == []
    got = {(s.tenant, s.trace_id): vars(s) for s in output.summaries}
    # Generated traces name a few services each, so no summary leaves one out
    # (the reference knows no such bound).
    assert got == {
        key: {**vars(trace), "services_omitted": 0}
        for key, trace in want.traces.items()
    }
