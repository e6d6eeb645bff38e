"""Chaos: the runtimes with a fifth of their AWS calls faulted, outputs still exact.

GIVEN the session's 200,000+ spans with poison records among them
(``shared_traffic``), and fault proxies (`devenv.faultproxy`) between the
worker and the emulators that fault 20 % of the worker's S3, DynamoDB and
Kinesis calls: throttling errors, 500s and 503s, connection resets, responses
lost after the write was applied, slow responses; WHEN the local runner, or
the Lambda handler through the local event-source mapping, reads the stream;
THEN S3 and DynamoDB hold exactly what the independent computation says,
every poison record is dead-lettered, and the proxies' counters show that
each kind of fault happened many times.

The test's own calls (setting up, reading the results back) and the
event-source mapping's reads (Lambda's service, not the function) go to the
emulators directly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from compare import (
    archive_problems,
    cold_start_problems,
    edge_problems,
    red_problems,
    report,
    span_stage_problems,
    trace_problems,
)
from kcl_harness import KclFleet, environ_for, wait_until_checkpointed
from traffic import SharedTraffic, put_with_poison

from consumers.aws_lambda.checkpoints import table_spec
from consumers.aws_lambda.esm import LocalEventSourceMapping, MappingConfig
from consumers.aws_lambda.handler import LambdaRuntime, instrument
from consumers.aws_lambda.settings import LambdaSettings
from consumers.getrecords import to_kinesis_record
from consumers.local.runner import LocalRunner
from devenv import (
    Emulators,
    LocalStack,
    create_resources,
    delete_resources,
    settings_to_env,
)
from devenv.faultproxy import FaultCounts, FaultKind, FaultPlan, FaultProxy
from devenv.ports import wait_until
from devenv.resources import create_table, delete_table
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.rekey import decode_rekeyed
from spanstream.sinks import readers
from spanstream.sinks.factory import make_sinks
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans
from spanstream.traffic.model import truths
from spanstream.traffic.reference import expected

FAULT_RATE = 0.2
#: Each kind is a sixth of the faults: thousands in a run; far fewer means
#: the proxy was not in the worker's path.
MIN_FAULTS_PER_KIND = 50
RUN_DEADLINE_SECS = 600
SERVICES = ("kinesis", "dynamodb", "s3")
#: Small pages: a few dozen GetRecords calls to fault instead of a dozen.
GET_RECORDS_LIMIT = 250


@dataclasses.dataclass
class FaultyEndpoints:
    """One fault proxy per distinct emulator endpoint."""

    proxies: dict[str, FaultProxy]

    def settings(self, settings: Settings) -> Settings:
        """Return ``settings`` with every service's endpoint behind its proxy."""
        return dataclasses.replace(
            settings,
            **{
                f"{service}_endpoint_url": self.proxies[service].endpoint_url
                for service in SERVICES
            },
        )

    def counts(self) -> FaultCounts:
        """Return what all proxies did, each counted once."""
        total = FaultCounts()
        for proxy in {id(p): p for p in self.proxies.values()}.values():
            total += proxy.counts
        return total


@pytest.fixture
def faulty(emulators: Emulators | LocalStack) -> Iterator[FaultyEndpoints]:
    """Yield proxies faulting 20 % of the calls to each emulator endpoint."""
    by_upstream: dict[str, FaultProxy] = {}
    proxies: dict[str, FaultProxy] = {}
    try:
        # Not seed 0: its first 25 draws all miss a rate of 0.2, which is
        # every Kinesis call of a short run.
        for seed, service in enumerate(SERVICES, start=1):
            upstream = getattr(emulators, f"{service}_endpoint_url")
            if upstream not in by_upstream:
                plan = FaultPlan(rate=FAULT_RATE, seed=seed)
                by_upstream[upstream] = FaultProxy(upstream, plan).start()
            proxies[service] = by_upstream[upstream]
        yield FaultyEndpoints(proxies)
    finally:
        for proxy in by_upstream.values():
            proxy.stop()


class RetryWarnings(logging.Handler):
    """Counts spanstream's own retries: calls botocore had given up on."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


@pytest.fixture
def retry_warnings() -> Iterator[RetryWarnings]:
    handler = RetryWarnings()
    retry_logger = logging.getLogger("spanstream.sinks.retry")
    retry_logger.addHandler(handler)
    yield handler
    retry_logger.removeHandler(handler)


def worker_clients(settings: Settings) -> dict[str, Any]:
    return {service: make_client(service, settings) for service in SERVICES}


def assert_faults_happened(
    counts: FaultCounts, services: tuple[str, ...], minimum: int = MIN_FAULTS_PER_KIND
) -> None:
    by_kind = counts.by_kind()
    too_few = {k: by_kind[k] for k in FaultKind if by_kind[k] < minimum}
    assert not too_few, counts.summary()
    assert all(counts.by_service()[s] > 0 for s in services), counts.summary()
    assert counts.upstream_errors == 0, counts.summary()


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
    worker_settings = faulty.settings(settings)
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
    want = expected(truth, settings.window_secs)
    problems = red_problems(dynamodb, settings, want)
    problems += edge_problems(dynamodb, settings, want)
    problems += cold_start_problems(dynamodb, settings, want)
    problems += trace_problems(dynamodb, settings, want)
    problems += archive_problems(s3, settings, shared_traffic.span_ids())
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


@pytest.fixture
def quiet_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep thousands of EMF lines out of the captured output."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")


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
        MappingConfig(batch_size=2000, bisect_on_error=True),
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


# -- the KCL path -----------------------------------------------------------
#: The KCL run is smaller: one worker reads ~1,000 spans/s off the emulators.
KCL_SPAN_COUNT = int(os.environ.get("SPANSTREAM_TEST_KCL_CHAOS_SPANS", "30000"))
KCL_POISON_COUNT = 8
KCL_SHARD_COUNT = 2
#: A KCL run makes hundreds, not thousands, of calls of the record processors.
KCL_MIN_FAULTS_PER_KIND = 5
#: 0.8 ** 30: one run in a thousand would see no PutRecords call faulted.
KCL_MIN_PUT_RECORDS_CALLS = 30
#: A new lease table makes the KCL wait 1-30 s before its first shard sync.
KCL_DEADLINE_SECS = 90 + 300
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def kcl_settings(
    settings: Settings, kinesis: Any, dynamodb: Any, s3: Any
) -> Iterator[Settings]:
    """This test's stream, stores and a trace stream for the forwarded spans."""
    two_stage = dataclasses.replace(
        settings,
        trace_stream_name=f"{settings.table_prefix}traces",
        allowed_lateness_secs=3600,
    )
    create_resources(two_stage, kinesis, dynamodb, s3, KCL_SHARD_COUNT)
    yield two_stage
    delete_resources(two_stage, kinesis, dynamodb, s3)


def forwarded_span_ids(kinesis: Any, stream_name: str) -> Counter[tuple[str, str]]:
    """Return how often each (trace id, span id) was put on the trace stream."""
    seen: Counter[tuple[str, str]] = Counter()
    for shard in kinesis.list_shards(StreamName=stream_name)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream_name,
            ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        while iterator:
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            for record in page["Records"]:
                batch = decode_rekeyed(
                    to_kinesis_record(stream_name, shard["ShardId"], record)
                ).batch
                seen.update(zip(batch.trace_id, batch.span_id, strict=True))
            if not page["Records"] and not page.get("MillisBehindLatest"):
                break
            iterator = page.get("NextShardIterator")
    return seen


def test_kcl_worker_exact_with_a_fifth_of_calls_faulted(
    request: pytest.FixtureRequest,
    emulators: Emulators | LocalStack,
    kcl_settings: Settings,
    faulty: FaultyEndpoints,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
) -> None:
    # GIVEN spans with poison records on 2 shards; a KCL worker whose record
    # processors reach S3, DynamoDB and Kinesis (PutRecords of the forwarded
    # spans) through the proxies, and whose daemon reaches its lease table
    # through one of its own. The daemon reads Kinesis directly: it speaks
    # HTTP/2, which the proxy does not.
    settings = kcl_settings
    traces = generate_spans(KCL_SPAN_COUNT, seed=21, spread_secs=20.0)
    records = [
        (r.partition_key, r.data) for r in encode_records(traces, Form.MIXED, seed=21)
    ]
    put_with_poison(kinesis, settings.stream_name, records, KCL_POISON_COUNT, seed=21)
    truth = truths(traces)
    run_dir = PROJECT_ROOT / ".run" / "pytest-kcl" / request.node.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    lease_plan = FaultPlan(rate=FAULT_RATE, seed=11)
    with FaultProxy(emulators.dynamodb_endpoint_url, lease_plan) as lease_proxy:
        daemon_settings = dataclasses.replace(
            settings, dynamodb_endpoint_url=lease_proxy.endpoint_url
        )
        processor_environ = {
            **os.environ,
            **emulators.settings_env(),
            **settings_to_env(faulty.settings(settings)),
        }
        fleet = KclFleet(
            daemon_settings, environ_for(processor_environ), run_dir, "spans"
        )
        # WHEN the worker reads every record
        started = time.monotonic()
        try:
            fleet.start()
            wait_until_checkpointed(fleet, dynamodb, kinesis, KCL_DEADLINE_SECS)
            caught_up_secs = time.monotonic() - started
            wait_until(
                lambda: nothing_pending(dynamodb, settings),
                timeout_secs=60,
                what="the last flush's record to be cleared",
                abort=fleet.died,
            )
            # Caught up, each shard still puts its progress on the trace
            # stream every flush interval: a run this short has too few
            # PutRecords calls of its own for a fifth of them to be many.
            wait_until(
                lambda: puts(faulty) >= KCL_MIN_PUT_RECORDS_CALLS,
                timeout_secs=KCL_MIN_PUT_RECORDS_CALLS * 2,
                what=f"{KCL_MIN_PUT_RECORDS_CALLS} PutRecords calls",
                abort=fleet.died,
            )
        finally:
            fleet.kill_all()
        elapsed = time.monotonic() - started
        lease_counts = lease_proxy.counts
    counts = faulty.counts()
    messages = [line.get("message", "") for line in fleet.log_lines()]
    repeated = [m for m in messages if "repeating" in m]
    lost = [m for m in messages if m.startswith(("lease lost", "lease gone"))]
    forwarded = forwarded_span_ids(kinesis, settings.trace_stream_name)
    print(
        f"KCL worker under faults: {len(truth)} spans checkpointed "
        f"{caught_up_secs:.1f} s after its start (ran {elapsed:.1f} s), "
        f"{len(lost)} leases lost, {len(repeated)} flushes repeated, "
        f"{len(fleet.restarts)} restarts, {sum(forwarded.values())} spans "
        f"forwarded for {len(forwarded)}; record processors: {counts.summary()}; "
        f"daemon: {lease_counts.summary()}"
    )
    # THEN the outputs are exact, every span was forwarded to the trace stage
    # (some maybe twice, after a PutRecords whose answer was lost: the trace
    # stage counts each span once)
    problems = span_stage_problems(dynamodb, s3, settings, truth)
    assert not problems, report(problems)
    assert readers.count_dead_letters(s3, settings) == KCL_POISON_COUNT
    assert readers.scan_late(dynamodb, settings) == []
    assert set(forwarded) == {(t.trace_id, t.span_id) for t in truth}
    # AND faults of every kind happened, the daemon's lease calls faulted too
    assert_faults_happened(counts, SERVICES, KCL_MIN_FAULTS_PER_KIND)
    assert lease_counts.by_service()["dynamodb"] > 0, lease_counts.summary()


def puts(faulty: FaultyEndpoints) -> int:
    """Return how many PutRecords calls reached the Kinesis proxy."""
    return faulty.counts().operations["kinesis", "PutRecords"]


def nothing_pending(dynamodb: Any, settings: Settings) -> bool:
    """True when no shard of the span stream has a flush recorded, uncheckpointed."""
    items = dynamodb.scan(
        TableName=settings.table_name("shard-state"), ConsistentRead=True
    )["Items"]
    return all(
        not item.get("flushes", {}).get("L")
        for item in items
        if item["stream"]["S"] == settings.stream_name
    )
