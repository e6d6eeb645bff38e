"""The local runtime end to end: generator -> kinesis-mock -> runner -> moto.

GIVEN 200,000+ generated spans in every input form, randomly keyed over 4
shards, with poison records among them; WHEN the local runner reads the
stream; THEN DynamoDB and S3 hold exactly what an independent computation
from the generator's truth says: every span archived once, every RED series,
edge, trace summary and cold-start count exact, percentiles within the
sketch's 1 %, and every poison record in the dead-letter prefix.
"""

from __future__ import annotations

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


def test_every_span_counted_once_across_four_shards(
    settings: Settings, resources: Any, kinesis: Any, dynamodb: Any, s3: Any
) -> None:
    # GIVEN: traces ending within the last minute, so no span is late
    traces = generate_spans(SPAN_COUNT, seed=20261203, spread_secs=30.0)
    truth = truths(traces)
    assert len(truth) >= SPAN_COUNT
    records = [tuple(r) for r in encode_records(traces, Form.MIXED, seed=11)]
    poison = [tuple(p) for p in poison_records(POISON_COUNT, seed=5)]
    # Poison records go in between good ones, so they share batches with them.
    mixed: list[tuple[str, bytes]] = list(records)  # type: ignore[arg-type]
    for index, bad in enumerate(poison):
        mixed.insert((index + 1) * len(mixed) // (POISON_COUNT + 1), bad)  # type: ignore[arg-type]
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
