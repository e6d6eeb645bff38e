"""The local runtime end to end: generator -> kinesis-mock -> runner -> moto.

GIVEN the session's 200,000+ generated spans in every input form, randomly
keyed over 4 shards, with poison records among them (``shared_traffic``);
WHEN the local runner reads the stream; THEN DynamoDB and S3 hold exactly
what an independent computation from the generator's truth says: every span
archived once, every RED series, edge, trace summary and cold-start count
exact, percentiles within the sketch's 1 %, and every poison record in the
dead-letter prefix.
"""

from __future__ import annotations

import time
from typing import Any

from compare import (
    pipeline_problems,
    report,
)
from traffic import SharedTraffic

from consumers.local.runner import LocalRunner
from spanstream.config import Settings
from spanstream.sinks import readers
from spanstream.sinks.factory import make_sinks

RUN_DEADLINE_SECS = 600


def test_every_span_counted_once_across_four_shards(
    shared_traffic: SharedTraffic,
    shared_settings: Settings,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
) -> None:
    # GIVEN the session's traffic: traces ending within a minute of the put,
    # in every form, poison records among them
    settings, truth = shared_settings, shared_traffic.truth
    # WHEN: the local runner reads every record of the 4 shards
    runner = LocalRunner(settings, kinesis, make_sinks(settings, s3, dynamodb))
    started = time.monotonic()
    stats = runner.run(
        lambda s: s.records >= shared_traffic.record_count,
        deadline_secs=RUN_DEADLINE_SECS,
    )
    elapsed = time.monotonic() - started
    print(
        f"local runner: {stats.spans} spans from {stats.records} records "
        f"in {elapsed:.1f} s"
    )

    # THEN: nothing lost, nothing counted twice
    assert stats.records == shared_traffic.record_count
    assert stats.spans == len(truth)
    assert len(runner.readers) == 4
    problems = pipeline_problems(dynamodb, s3, settings, truth)
    assert not problems, report(problems)
    assert readers.count_dead_letters(s3, settings) == shared_traffic.poison_count
    assert readers.scan_late(dynamodb, settings) == []
