"""The Lambda runtime end to end, through the local event-source mapping.

GIVEN the session's 200,000+ generated spans in every input form, randomly
keyed over 4 shards, with poison records among them (``shared_traffic``);
WHEN the local event-source mapping invokes the Lambda handler with them
while injecting function errors (before the handler ran, and after it ran
with its response lost), failed S3 and DynamoDB writes and duplicate
deliveries; THEN S3 and DynamoDB hold exactly what an independent
computation from the generator's truth says, every poison record is in the
dead-letter prefix, and nothing went to the on-failure destination. With a
tumbling window, the aggregates are the same.
"""

from __future__ import annotations

import os
import random
import threading
import time
from typing import Any

from botocore.exceptions import ClientError
from compare import (
    report,
    span_stage_problems,
)
from traffic import SharedTraffic, put_with_poison

from consumers.aws_lambda.checkpoints import table_spec
from consumers.aws_lambda.esm import Chaos, LocalEventSourceMapping, MappingConfig
from consumers.aws_lambda.handler import LambdaRuntime, instrument
from consumers.aws_lambda.settings import LambdaSettings
from devenv.resources import create_table
from spanstream.config import Settings
from spanstream.sinks import readers
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans
from spanstream.traffic.model import truths

WINDOW_SPAN_COUNT = int(os.environ.get("SPANSTREAM_TEST_WINDOW_SPANS", "50000"))
POISON_COUNT = 16
RUN_DEADLINE_SECS = 600


class FlakyClient:
    """A boto3 client whose named operations fail now and then (seeded).

    The failure is a non-retryable error, so the sinks give up at once and the
    handler must report its batch for a retry.
    """

    def __init__(self, client: Any, probability: float, seed: int, *ops: str) -> None:
        self._client = client
        self._probability = probability
        self._operations = set(ops)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self.failures = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self._operations:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                fail = self._rng.random() < self._probability
                self.failures += fail
            if fail:
                raise ClientError(
                    {"Error": {"Code": "InjectedFault", "Message": "injected"}}, name
                )
            return attribute(*args, **kwargs)

        return call


def put_traffic(
    settings: Settings, kinesis: Any, span_count: int
) -> tuple[list[Any], int]:
    """Put generated spans with poison among them; return the truth and records."""
    traces = generate_spans(span_count, seed=20261203, spread_secs=30.0)
    records = [
        (r.partition_key, r.data) for r in encode_records(traces, Form.MIXED, seed=11)
    ]
    count = put_with_poison(
        kinesis, settings.stream_name, records, POISON_COUNT, seed=5
    )
    return truths(traces), count


def run_mapping(
    settings: Settings,
    clients: dict[str, Any],
    config: MappingConfig,
    chaos: Chaos,
    record_count: int,
) -> LocalEventSourceMapping:
    lambda_settings = LambdaSettings.from_env(settings, {})
    create_table(clients["dynamodb"], table_spec(lambda_settings.checkpoint_table), 60)
    runtime = LambdaRuntime(settings, lambda_settings, clients)
    mapping = LocalEventSourceMapping(
        clients["kinesis"],
        settings.stream_name,
        instrument(runtime.handle),
        config,
        region=settings.region,
        chaos=chaos,
    )
    started = time.monotonic()
    stats = mapping.run(
        lambda s: s.records_checkpointed >= record_count,
        deadline_secs=RUN_DEADLINE_SECS,
    )
    print(
        f"local mapping: {record_count} records in {time.monotonic() - started:.1f} s,"
        f" {stats.invocations} invocations ({stats.invocation_secs:.1f} s in the"
        f" handler), {stats.function_errors} function errors,"
        f" {stats.partial_failures} partial failures, {stats.bisections}"
        f" bisections, {stats.duplicates} duplicates,"
        f" {stats.final_window_invokes} final window invokes"
    )
    return mapping


def assert_outputs_exact(
    settings: Settings, dynamodb: Any, s3: Any, truth: list[Any], poison_count: int
) -> None:
    problems = span_stage_problems(dynamodb, s3, settings, truth)
    assert not problems, report(problems)
    assert readers.count_dead_letters(s3, settings) == poison_count
    assert readers.scan_late(dynamodb, settings) == []


def test_every_span_counted_once_through_failures_and_duplicates(
    shared_traffic: SharedTraffic,
    shared_settings: Settings,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    quiet_metrics: None,
) -> None:
    # GIVEN the session's traffic on 4 shards
    settings, truth = shared_settings, shared_traffic.truth
    record_count = shared_traffic.record_count
    # WHEN the mapping invokes the handler, with faults injected everywhere
    flaky_s3 = FlakyClient(s3, 0.01, 1, "put_object")
    flaky_dynamodb = FlakyClient(dynamodb, 0.002, 2, "put_item", "batch_get_item")
    mapping = run_mapping(
        settings,
        {"s3": flaky_s3, "dynamodb": flaky_dynamodb, "kinesis": kinesis},
        MappingConfig(batch_size=2000, bisect_on_error=True),
        Chaos(error_before=0.05, error_after=0.1, duplicate=0.15, seed=3),
        record_count,
    )
    # THEN faults happened, nothing was given up, and the outputs are exact
    stats = mapping.stats
    assert flaky_s3.failures + flaky_dynamodb.failures > 0
    assert stats.partial_failures > 0
    assert stats.function_errors > 0
    assert stats.bisections > 0
    assert stats.duplicates > 0
    assert stats.on_failure == []
    assert len(mapping.shards) == 4
    assert_outputs_exact(settings, dynamodb, s3, truth, shared_traffic.poison_count)


def test_tumbling_windows_give_the_same_aggregates(
    settings: Settings,
    resources: Any,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    quiet_metrics: None,
) -> None:
    # GIVEN the traffic on 4 shards
    truth, record_count = put_traffic(settings, kinesis, WINDOW_SPAN_COUNT)
    # WHEN the mapping runs with a 5 s tumbling window, faults and duplicates
    mapping = run_mapping(
        settings,
        {
            "s3": s3,
            "dynamodb": FlakyClient(dynamodb, 0.002, 4, "put_item"),
            "kinesis": kinesis,
        },
        MappingConfig(batch_size=200, tumbling_window_secs=5),
        Chaos(error_before=0.02, error_after=0.03, duplicate=0.05, seed=5),
        record_count,
    )
    # THEN the windows closed and the outputs equal the independent reference
    # (which the non-windowed run is held to above)
    assert mapping.stats.final_window_invokes >= 4
    assert mapping.stats.on_failure == []
    assert_outputs_exact(settings, dynamodb, s3, truth, POISON_COUNT)
