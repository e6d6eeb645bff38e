"""Chaos: the runtimes with a fifth of their AWS calls faulted, outputs still exact.

GIVEN the session's 200,000+ spans with poison records among them
(``shared_traffic``), and fault proxies (`devenv.faultproxy`) between the
worker and the emulators that fault 20 % of the worker's S3, DynamoDB and
Kinesis calls: throttling errors, 500s and 503s, connection resets, responses
lost after the write was applied, slow responses; WHEN the local runner, or
the Lambda handler through the local event-source mapping, reads the stream
(the KCL path's test is test_kcl.py's two-worker test, which runs behind the
same proxies);
THEN S3 and DynamoDB hold exactly what the independent computation says,
every poison record is dead-lettered, and the proxies' counters show that
each kind of fault happened many times.

The test's own calls (setting up, reading the results back) and the
event-source mapping's reads (Lambda's service, not the function) go to the
emulators directly.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import pytest
from chaos import SERVICES, FaultyEndpoints, RetryWarnings, assert_faults_happened
from compare import (
    pipeline_problems,
    report,
    span_stage_problems,
)
from traffic import SharedTraffic, put_with_poison

from consumers.aws_lambda.checkpoints import table_spec
from consumers.aws_lambda.esm import LocalEventSourceMapping, MappingConfig
from consumers.aws_lambda.handler import LambdaRuntime, instrument
from consumers.aws_lambda.settings import LambdaSettings
from consumers.local.runner import LocalRunner
from devenv import Emulators, LocalStack
from devenv.faultproxy import FaultKind, FaultPlan, FaultProxy
from devenv.resources import create_table, delete_table
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.sinks import readers
from spanstream.sinks.factory import make_sinks
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans
from spanstream.traffic.model import truths

RUN_DEADLINE_SECS = 600
#: Small pages: a few dozen GetRecords calls to fault instead of a dozen.
GET_RECORDS_LIMIT = 100
#: Flushes (and Lambda batches) small enough that the run makes thousands
#: of calls to fault: a flush writes one item per service and window.
FAULTED_FLUSH_INTERVAL_SECS = 0.25
FAULTED_BATCH_RECORDS = 300


def worker_clients(settings: Settings) -> dict[str, Any]:
    return {service: make_client(service, settings) for service in SERVICES}


def test_local_runner_exact_with_a_fifth_of_calls_faulted(
    shared_traffic: SharedTraffic,
    shared_settings: Settings,
    faulty: FaultyEndpoints,
    retry_warnings: RetryWarnings,
    dynamodb: Any,
    s3: Any,
) -> None:
    # GIVEN the shared traffic, and every call of the runner through proxies
    settings, truth = shared_settings, shared_traffic.truth
    worker_settings = dataclasses.replace(
        faulty.settings(settings), flush_interval_secs=FAULTED_FLUSH_INTERVAL_SECS
    )
    clients = worker_clients(worker_settings)
    runner = LocalRunner(
        worker_settings,
        clients["kinesis"],
        make_sinks(worker_settings, clients["s3"], clients["dynamodb"]),
        get_records_limit=GET_RECORDS_LIMIT,
    )
    # WHEN it reads every record of the 4 shards
    started = time.monotonic()
    stats = runner.run(
        lambda s: s.records >= shared_traffic.record_count,
        deadline_secs=RUN_DEADLINE_SECS,
    )
    counts = faulty.counts()
    print(
        f"local runner under faults: {stats.spans} spans from {stats.records} "
        f"records in {time.monotonic() - started:.1f} s; {counts.summary()}; "
        f"{retry_warnings.count} retries by spanstream after botocore gave up"
    )
    # THEN faults of every kind happened, and the outputs are exact
    assert_faults_happened(counts, SERVICES)
    assert stats.records == shared_traffic.record_count
    assert stats.spans == len(truth)
    problems = pipeline_problems(dynamodb, s3, settings, truth)
    assert not problems, report(problems)
    assert readers.count_dead_letters(s3, settings) == shared_traffic.poison_count
    assert readers.scan_late(dynamodb, settings) == []


@pytest.mark.parametrize("resources", [1], indirect=True)
def test_local_runner_reads_on_when_botocore_stops_retrying(
    settings: Settings,
    resources: Any,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    emulators: Emulators | LocalStack,
    retry_warnings: RetryWarnings,
) -> None:
    # GIVEN a small stream, and half of the runner's Kinesis calls failing
    # with a 500 or a reset: botocore soon spends its retry quota and hands
    # back the first error of a call
    traces = generate_spans(3_000, seed=8, spread_secs=5.0)
    records = [
        (r.partition_key, r.data) for r in encode_records(traces, Form.MIXED, seed=8)
    ]
    record_count = put_with_poison(kinesis, settings.stream_name, records, 2, seed=8)
    plan = FaultPlan(rate=0.5, seed=3, kinds=(FaultKind.ERROR_500, FaultKind.RESET))
    with FaultProxy(emulators.kinesis_endpoint_url, plan) as proxy:
        faulty_settings = dataclasses.replace(
            settings, kinesis_endpoint_url=proxy.endpoint_url
        )
        runner = LocalRunner(
            settings,
            make_client("kinesis", faulty_settings),
            make_sinks(settings, s3, dynamodb),
            get_records_limit=5,
        )
        # WHEN it reads the stream in pages of 5 records
        stats = runner.run(lambda s: s.records >= record_count, deadline_secs=120)
        counts = proxy.counts
    print(f"local runner in an error storm: {counts.summary()}")
    # THEN spanstream retried what botocore gave up on, and read everything once
    assert retry_warnings.count > 0, counts.summary()
    assert stats.records == record_count
    problems = span_stage_problems(dynamodb, s3, settings, truths(traces))
    assert not problems, report(problems)
    assert readers.count_dead_letters(s3, settings) == 2


def test_lambda_handler_exact_with_a_fifth_of_calls_faulted(
    shared_traffic: SharedTraffic,
    shared_settings: Settings,
    faulty: FaultyEndpoints,
    retry_warnings: RetryWarnings,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    quiet_metrics: None,
) -> None:
    # GIVEN the shared traffic, the handler's calls through proxies and the
    # mapping's own reads direct
    settings, truth = shared_settings, shared_traffic.truth
    worker_settings = faulty.settings(settings)
    lambda_settings = LambdaSettings.from_env(settings, {})
    create_table(dynamodb, table_spec(lambda_settings.checkpoint_table), 60)
    runtime = LambdaRuntime(
        worker_settings, lambda_settings, worker_clients(worker_settings)
    )
    mapping = LocalEventSourceMapping(
        kinesis,
        settings.stream_name,
        instrument(runtime.handle),
        MappingConfig(batch_size=FAULTED_BATCH_RECORDS, bisect_on_error=True),
        region=settings.region,
    )
    # WHEN the mapping delivers every record
    started = time.monotonic()
    try:
        stats = mapping.run(
            lambda s: s.records_checkpointed >= shared_traffic.record_count,
            deadline_secs=RUN_DEADLINE_SECS,
        )
    finally:
        delete_table(dynamodb, lambda_settings.checkpoint_table)
    counts = faulty.counts()
    print(
        f"lambda under faults: {shared_traffic.record_count} records in "
        f"{time.monotonic() - started:.1f} s, {stats.invocations} invocations, "
        f"{stats.partial_failures} partial failures, {stats.function_errors} "
        f"function errors; {counts.summary()}; {retry_warnings.count} retries "
        "by spanstream after botocore gave up"
    )
    # THEN faults of every kind happened, nothing was given up, outputs exact
    assert_faults_happened(counts, ("dynamodb", "s3"))
    assert stats.on_failure == []
    problems = span_stage_problems(dynamodb, s3, settings, truth)
    assert not problems, report(problems)
    assert readers.count_dead_letters(s3, settings) == shared_traffic.poison_count
    assert readers.scan_late(dynamodb, settings) == []
