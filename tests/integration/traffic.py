"""The traffic the end-to-end tests put on the emulated stream.

Putting is what kinesis-mock is slowest at, so the 200,000-span run is put
once per session (`SharedTraffic`, the ``shared_traffic`` fixture) and read
by every runtime (local runner, Lambda mapping, KCL workers), each into its
own tables and bucket. Tests that change the stream (resharding) or need
traffic at a given moment (crashes, restarts) put their own.
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from typing import Any

from spanstream.sinks.kinesis import put_records
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans
from spanstream.traffic.model import GeneratedTrace, truths
from spanstream.traffic.poison import poison_records
from spanstream.traffic.truth import SpanTruth

SPAN_COUNT = int(os.environ.get("SPANSTREAM_TEST_SPANS", "200000"))
POISON_COUNT = 16
TRACES_PER_CHUNK = 150
SHARD_COUNT = 4


@dataclass(frozen=True)
class SharedTraffic:
    """Spans in every form with poison records among them, on one stream."""

    stream_name: str
    truth: list[SpanTruth]
    record_count: int
    poison_count: int

    def span_ids(self) -> Counter[tuple[str, str]]:
        return Counter((t.trace_id, t.span_id) for t in self.truth)


def encode_every_form(
    traces: list[GeneratedTrace], seed: int
) -> list[tuple[str, bytes]]:
    """Encode chunks of traces in each form in turn, in records of many spans.

    Large batches, and KPL between every other form, keep the record count
    (what the emulator is slow at) low; the MIXED chunks keep the small
    one-resource-per-record shape of the Collector's exporter in the run.
    """
    forms = [f for form in Form if form is not Form.KPL for f in (form, Form.KPL)]
    records: list[tuple[str, bytes]] = []
    for index in range(0, len(traces), TRACES_PER_CHUNK):
        form = forms[index // TRACES_PER_CHUNK % len(forms)]
        chunk = traces[index : index + TRACES_PER_CHUNK]
        records += [
            (r.partition_key, r.data)
            for r in encode_records(chunk, form, seed + index, batch_spans=4096)
        ]
    return records


def put_with_poison(
    kinesis: Any,
    stream_name: str,
    records: list[tuple[str, bytes]],
    poison_count: int,
    seed: int,
) -> int:
    """Put ``records`` with poison records spread among them; return how many."""
    poison = [(p.partition_key, p.data) for p in poison_records(poison_count, seed)]
    mixed = list(records)
    for index, bad in enumerate(poison):
        mixed.insert((index + 1) * len(mixed) // (poison_count + 1), bad)
    assert put_records(kinesis, stream_name, mixed) == len(mixed)
    return len(mixed)


def put_shared_traffic(kinesis: Any, stream_name: str) -> SharedTraffic:
    """Generate and put the session's traffic; its traces end about now."""
    traces = generate_spans(SPAN_COUNT, seed=20261203, spread_secs=30.0)
    truth = truths(traces)
    assert len(truth) >= SPAN_COUNT
    records = encode_every_form(traces, seed=11)
    count = put_with_poison(kinesis, stream_name, records, POISON_COUNT, seed=5)
    return SharedTraffic(stream_name, truth, count, POISON_COUNT)
