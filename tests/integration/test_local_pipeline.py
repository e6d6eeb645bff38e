"""The local runtime end to end: generator -> kinesis-mock -> runner -> moto.

GIVEN 200,000+ generated spans in every input form, randomly keyed over 4
shards, with poison records among them; WHEN the local runner reads the
stream; THEN DynamoDB and S3 hold exactly what an independent computation
from the generator's truth says: every span archived once, every RED series,
edge, trace summary and cold-start count exact, percentiles within the
sketch's 1 %, and every poison record in the dead-letter prefix.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections import Counter
from typing import Any

from compare import (
    archive_problems,
    cold_start_problems,
    edge_problems,
    red_problems,
    report,
    trace_problems,
)

from consumers.local.runner import LocalRunner
from spanstream.config import Settings
from spanstream.sinks import readers
from spanstream.sinks.factory import make_sinks
from spanstream.sinks.kinesis import put_records
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans
from spanstream.traffic.model import truths
from spanstream.traffic.poison import poison_records
from spanstream.traffic.reference import expected

SPAN_COUNT = int(os.environ.get("SPANSTREAM_TEST_SPANS", "200000"))
POISON_COUNT = 16
RUN_DEADLINE_SECS = 600
TRACES_PER_CHUNK = 150


def encode_every_form(traces: list, seed: int) -> list[tuple[str, bytes]]:  # type: ignore[type-arg]
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


def test_every_span_counted_once_across_four_shards(
    settings: Settings, resources: Any, kinesis: Any, dynamodb: Any, s3: Any
) -> None:
    # Lateness is tested in the unit tests; here a slow machine taking
    # minutes to put the records must not turn spans late.
    settings = dataclasses.replace(settings, allowed_lateness_secs=3600)
    # GIVEN: traces ending within the last minute, so no span is late
    traces = generate_spans(SPAN_COUNT, seed=20261203, spread_secs=30.0)
    truth = truths(traces)
    assert len(truth) >= SPAN_COUNT
    records = encode_every_form(traces, seed=11)
    poison = [(p.partition_key, p.data) for p in poison_records(POISON_COUNT, seed=5)]
    # Poison records go in between good ones, so they share batches with them.
    mixed = list(records)
    for index, bad in enumerate(poison):
        mixed.insert((index + 1) * len(mixed) // (POISON_COUNT + 1), bad)
    assert put_records(kinesis, settings.stream_name, mixed) == len(mixed)

    # WHEN: the local runner reads every record of the 4 shards
    runner = LocalRunner(settings, kinesis, make_sinks(settings, s3, dynamodb))
    started = time.monotonic()
    stats = runner.run(
        lambda s: s.records >= len(mixed), deadline_secs=RUN_DEADLINE_SECS
    )
    elapsed = time.monotonic() - started
    print(
        f"local runner: {stats.spans} spans from {stats.records} records "
        f"in {elapsed:.1f} s"
    )

    # THEN: nothing lost, nothing counted twice
    assert stats.records == len(mixed)
    assert stats.spans == len(truth)
    assert len(runner.readers) == 4
    want = expected(truth, settings.window_secs)
    problems = red_problems(dynamodb, settings, want)
    problems += edge_problems(dynamodb, settings, want)
    problems += cold_start_problems(dynamodb, settings, want)
    problems += trace_problems(dynamodb, settings, want)
    problems += archive_problems(
        s3, settings, Counter((t.trace_id, t.span_id) for t in truth)
    )
    assert not problems, report(problems)
    assert readers.count_dead_letters(s3, settings) == POISON_COUNT
    assert readers.scan_late(dynamodb, settings) == []
