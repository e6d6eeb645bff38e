"""spanstream as real KCL MultiLangDaemon workers, against kinesis-mock and moto.

Each test starts KCL 3.x workers (JVMs with one Python record processor per
shard lease) on its own stream, puts generated spans in every input form,
waits until every shard is checkpointed at its last record, and compares
DynamoDB (RED series, cold starts, late counters) and the S3 archive with an
independent computation from the generator's truth: zero lost, zero counted
twice. Every wait has a deadline; the workers' logs are under
``.run/pytest-kcl/<test>``. The two-worker test on the session's 200,000
spans is also the chaos test of the KCL path: a fifth of its workers' AWS
calls are faulted by fault proxies (`chaos`, `devenv.faultproxy`).
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos import SERVICES, FaultyEndpoints, assert_faults_happened
from compare import (
    edge_problems,
    report,
    span_stage_problems,
    trace_problems,
)
from kcl_harness import (
    KclFleet,
    environ_for,
    put_spans,
    random_pause,
    wait_until_checkpointed,
)
from traffic import SharedTraffic

from consumers.kcl.progress import (
    checkpoints_reached,
    last_sequence_numbers,
    lease_owners,
    read_leases,
)
from devenv import Emulators, LocalStack, settings_to_env
from devenv.ports import DeadlineExceeded, wait_until
from devenv.resources import create_stream, delete_stream
from spanstream.config import Settings
from spanstream.sinks import readers
from spanstream.traffic.reference import expected
from spanstream.traffic.truth import SpanTruth

#: Smaller runs for the crash, resharding and restart tests (each goes through
#: several lease moves, which cost seconds each, not spans).
CHURN_SPAN_COUNT = int(os.environ.get("SPANSTREAM_TEST_KCL_CHURN_SPANS", "30000"))
TRACE_SHARD_COUNT = 2
#: A new lease table makes the KCL wait 1-30 s before its first shard sync.
FIRST_LEASES_SECS = 90
#: A deadline, not an expectation: the 200,000-span chaos run takes about
#: 5 minutes on a fast 2-core machine and 8 on a slow one.
PROCESS_SECS = 600
PROJECT_ROOT = Path(__file__).resolve().parents[2]


MakeFleet = Callable[..., KclFleet]


@pytest.fixture
def make_fleet(
    request: pytest.FixtureRequest, emulators: Emulators | LocalStack
) -> Iterator[MakeFleet]:
    """Yield ``make_fleet(settings, stage, faulty=None)``; every worker is
    killed after the test.

    With ``faulty``, the record processors' S3, DynamoDB and Kinesis calls
    and the daemon's lease-table calls go through its fault proxies; the
    daemon reads Kinesis directly (HTTP/2, which the proxies do not serve).
    """
    run_dir = PROJECT_ROOT / ".run" / "pytest-kcl" / request.node.name
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    fleets: list[KclFleet] = []

    def make(
        settings: Settings,
        stage: str = "spans",
        faulty: FaultyEndpoints | None = None,
    ) -> KclFleet:
        daemon_settings, processor_settings = settings, settings
        if faulty is not None:
            processor_settings = faulty.settings(settings)
            daemon_settings = dataclasses.replace(
                settings,
                dynamodb_endpoint_url=processor_settings.dynamodb_endpoint_url,
            )
        environ = {
            **os.environ,
            **emulators.settings_env(),
            **settings_to_env(processor_settings),
        }
        fleet = KclFleet(daemon_settings, environ_for(environ), run_dir, stage)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        fleet.kill_all()


@pytest.fixture
def fleet(make_fleet: MakeFleet, settings: Settings, resources: Any) -> KclFleet:
    """Span-stage workers on this test's own 4-shard stream."""
    return make_fleet(settings, "spans")


def assert_exactly_once(
    dynamodb: Any, s3: Any, settings: Settings, truth: list[SpanTruth]
) -> None:
    """Compare the per-shard outputs with the reference: nothing lost or doubled."""
    problems = span_stage_problems(dynamodb, s3, settings, truth)
    assert not problems, report(problems)
    assert readers.scan_late(dynamodb, settings) == []


def nothing_pending(
    dynamodb: Any, settings: Settings, stream_name: str | None = None
) -> bool:
    """True when no shard (of ``stream_name``, default the span stream) has a
    flush recorded but not checkpointed."""
    stream_name = stream_name or settings.stream_name
    items = dynamodb.scan(
        TableName=settings.table_name("shard-state"), ConsistentRead=True
    )["Items"]
    return all(
        not item.get("flushes", {}).get("L")
        for item in items
        if item["stream"]["S"] == stream_name
    )


@pytest.fixture
def two_stage_settings(shared_settings: Settings, kinesis: Any) -> Iterator[Settings]:
    """The shared stream's settings with a trace stream of this test's own."""
    settings = dataclasses.replace(
        shared_settings,
        trace_stream_name=f"{shared_settings.table_prefix}traces",
        trace_idle_secs=5,
    )
    create_stream(kinesis, settings.trace_stream_name, TRACE_SHARD_COUNT, 60)
    yield settings
    delete_stream(kinesis, settings.trace_stream_name, 60)


def test_two_workers_share_four_shards_and_count_every_span_once(
    make_fleet: MakeFleet,
    shared_traffic: SharedTraffic,
    two_stage_settings: Settings,
    faulty: FaultyEndpoints,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
) -> None:
    # GIVEN the session's 200,000 spans in every form with poison records,
    # on 4 shards, a trace stream for the trace stage, and a fifth of the
    # workers' AWS calls faulted (the chaos test of the KCL path): their
    # record processors' S3, DynamoDB and Kinesis calls and their daemons'
    # lease-table calls
    settings, truth = two_stage_settings, shared_traffic.truth
    spans = make_fleet(settings, "spans", faulty)
    traces = make_fleet(settings, "traces", faulty)
    # WHEN two span-stage workers read the stream and a trace-stage worker
    # reads what they forward
    started = time.monotonic()
    spans.start()
    spans.start()
    traces.start()
    owners_seen: dict[str, set[str]] = {}

    def spread_and_done() -> bool:
        for shard, owner in lease_owners(dynamodb, spans.app_name).items():
            if owner:
                owners_seen.setdefault(owner, set()).add(shard)
        return len(owners_seen) >= 2 and checkpoints_reached(
            dynamodb, spans.app_name, targets
        )

    def died() -> str | None:
        return spans.died() or traces.died()

    targets = last_sequence_numbers(kinesis, settings.stream_name)
    wait_until(
        spread_and_done,
        timeout_secs=FIRST_LEASES_SECS + PROCESS_SECS,
        what="both workers to hold leases and every shard to be checkpointed",
        poll_interval_secs=1.0,
        abort=died,
    )
    elapsed = time.monotonic() - started
    print(f"2 KCL workers: {len(truth)} spans in {elapsed:.1f} s, leases {owners_seen}")
    # THEN the leases were spread and every span was counted exactly once
    assert len(set(owners_seen) - set(spans.restarts)) >= 2, owners_seen
    assert_exactly_once(dynamodb, s3, settings, truth)
    assert readers.count_dead_letters(s3, settings) == shared_traffic.poison_count
    assert nothing_pending(dynamodb, settings, settings.stream_name)
    # AND the trace stage summarises every trace and pairs every edge
    want = expected(truth, settings.window_secs)
    problems: list[str] = []

    def traces_complete() -> bool:
        nonlocal problems
        problems = trace_problems(dynamodb, s3, settings, want)
        problems += edge_problems(dynamodb, settings, want)
        return not problems

    try:
        wait_until(
            traces_complete,
            timeout_secs=PROCESS_SECS,
            what="every trace summary and edge to be written",
            poll_interval_secs=2.0,
            abort=traces.died,
        )
    except DeadlineExceeded:
        pytest.fail(report(problems))
    print(
        f"trace stage done {time.monotonic() - started:.1f} s after the start; "
        f"faults: {faulty.counts().summary()}"
    )
    # AND faults of every kind happened on the way
    assert_faults_happened(faulty.counts(), SERVICES)


def test_kill_9_mid_stream_moves_leases_and_loses_or_doubles_nothing(
    fleet: KclFleet, settings: Settings, kinesis: Any, dynamodb: Any, s3: Any
) -> None:
    # GIVEN two workers sharing the shards while spans flow
    rng = random.Random(int(os.environ.get("SPANSTREAM_TEST_SEED", "9")))
    fleet.start()
    fleet.start()
    truth: list[SpanTruth] = []
    kills = 3
    for round_number in range(kills):
        truth += put_spans(
            kinesis, settings, CHURN_SPAN_COUNT // kills, seed=70 + round_number
        )
        wait_until(
            lambda: holders(dynamodb, fleet) == set(fleet.workers),
            timeout_secs=FIRST_LEASES_SECS,
            what=f"every live worker of {sorted(fleet.workers)} to hold a lease",
            poll_interval_secs=0.5,
            abort=fleet.died,
        )
        # WHEN one of them, chosen at random, is killed at a random moment of
        # its read-flush-checkpoint cycle, and a fresh worker joins
        random_pause(rng, 0.5, 4.0)
        victim = rng.choice(sorted(fleet.workers))
        fleet.kill(victim)
        fleet.start()

        # THEN the live workers take over every lease the victim held
        def victim_holds_nothing(victim: str = victim) -> bool:
            return victim not in lease_owners(dynamodb, fleet.app_name).values()

        wait_until(
            victim_holds_nothing,
            timeout_secs=60,
            what=f"the leases of {victim} to move to live workers",
            poll_interval_secs=0.5,
            abort=fleet.died,
        )
    wait_until_checkpointed(fleet, dynamodb, kinesis, PROCESS_SECS)
    # AND nothing was lost or counted twice
    assert_exactly_once(dynamodb, s3, settings, truth)
    repeated = [
        line for line in fleet.log_lines() if "repeating" in line.get("message", "")
    ]
    print(f"{kills} kills; flushes repeated by new owners: {len(repeated)}")


def holders(dynamodb: Any, fleet: KclFleet) -> set[str]:
    """Return the workers that hold at least one lease."""
    return {o for o in lease_owners(dynamodb, fleet.app_name).values() if o}


def test_split_and_merge_while_traffic_flows_keeps_parents_before_children(
    fleet: KclFleet, settings: Settings, kinesis: Any, dynamodb: Any, s3: Any
) -> None:
    # GIVEN two workers reading 4 shards with traffic on them
    fleet.start()
    fleet.start()
    truth = put_spans(kinesis, settings, CHURN_SPAN_COUNT // 2, seed=81)
    wait_until(
        lambda: len(lease_owners(dynamodb, fleet.app_name)) == 4,
        timeout_secs=FIRST_LEASES_SECS,
        what="4 leases",
        poll_interval_secs=1.0,
        abort=fleet.died,
    )
    # WHEN shard 0 is split and shards 2 and 3 merged, and traffic goes on
    shards = kinesis.list_shards(StreamName=settings.stream_name)["Shards"]
    by_id = {shard["ShardId"]: shard for shard in shards}
    first = shards[0]
    low = int(first["HashKeyRange"]["StartingHashKey"])
    high = int(first["HashKeyRange"]["EndingHashKey"])
    kinesis.split_shard(
        StreamName=settings.stream_name,
        ShardToSplit=first["ShardId"],
        NewStartingHashKey=str((low + high) // 2),
    )
    wait_for_active(kinesis, settings.stream_name)
    merged = sorted(by_id)[2:4]
    kinesis.merge_shards(
        StreamName=settings.stream_name,
        ShardToMerge=merged[0],
        AdjacentShardToMerge=merged[1],
    )
    wait_for_active(kinesis, settings.stream_name)
    truth += put_spans(kinesis, settings, CHURN_SPAN_COUNT // 2, seed=82)
    # THEN every shard, parents and children, is read to its end
    wait_until_checkpointed(fleet, dynamodb, kinesis, PROCESS_SECS)
    assert_exactly_once(dynamodb, s3, settings, truth)
    # AND each child was taken only after its parents' shard ended
    leases = read_leases(dynamodb, fleet.app_name)
    parents = {
        key: item.get("parentShardId", {}).get("SS", []) for key, item in leases.items()
    }
    events = fleet.log_lines()
    ended = {
        line["message"].rsplit("/", 1)[1]: line["time"]
        for line in events
        if line["message"].startswith("shard ended: ")
    }
    taken = [
        (line["message"].split("/", 1)[1].split(" ", 1)[0], line["time"])
        for line in events
        if line["message"].startswith("lease taken: ")
    ]
    children = {key for key, value in parents.items() if value}
    assert len(children) == 3, parents
    for child, time_taken in taken:
        for parent in parents.get(child, []):
            assert parent in ended, f"{child} taken but {parent} never ended"
            assert ended[parent] <= time_taken, (child, parent)


def wait_for_active(kinesis: Any, stream_name: str) -> None:
    wait_until(
        lambda: (
            kinesis.describe_stream_summary(StreamName=stream_name)[
                "StreamDescriptionSummary"
            ]["StreamStatus"]
            == "ACTIVE"
        ),
        timeout_secs=30,
        what=f"{stream_name} ACTIVE",
    )


def launcher(environ: dict[str, str], run_dir: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m consumers.kcl`` with one spans worker."""
    log = (run_dir / "launcher.log").open("ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "consumers.kcl",
            "--workers",
            "1",
            "--stage",
            "spans",
            "--fast",
            "--run-dir",
            str(run_dir),
        ],
        env={**environ, "SPANSTREAM_FLUSH_INTERVAL_SECS": "2"},
        cwd=PROJECT_ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def test_sigterm_flushes_checkpoints_exits_0_and_a_restart_replays_nothing(
    fleet: KclFleet, settings: Settings, kinesis: Any, dynamodb: Any, s3: Any
) -> None:
    # GIVEN the launcher running one worker that has read everything so far
    truth = put_spans(kinesis, settings, CHURN_SPAN_COUNT // 2, seed=91)
    process = launcher(fleet.environ, fleet.run_dir)
    try:
        wait_until_checkpointed(
            fleet, dynamodb, kinesis, FIRST_LEASES_SECS + PROCESS_SECS
        )
        truth += put_spans(kinesis, settings, 2_000, seed=92)
        # WHEN it gets SIGTERM while spans are still arriving
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    # THEN it flushed, checkpointed what it had read and exited 0
    assert code == 0, (fleet.run_dir / "launcher.log").read_text()[-3000:]
    assert nothing_pending(dynamodb, settings)
    first_run_leases = len(leases_taken(fleet))
    # WHEN it starts again and reads the rest
    truth += put_spans(kinesis, settings, CHURN_SPAN_COUNT // 2, seed=93)
    process = launcher(fleet.environ, fleet.run_dir)
    try:
        wait_until_checkpointed(fleet, dynamodb, kinesis, PROCESS_SECS)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 0
    finally:
        if process.poll() is None:
            process.kill()
    # THEN it resumed from the checkpoints, and nothing was applied twice
    resumed_from = [
        checkpoint for _, checkpoint in leases_taken(fleet)[first_run_leases:]
    ]
    assert resumed_from and all(c.isdigit() for c in resumed_from), resumed_from
    assert_exactly_once(dynamodb, s3, settings, truth)


def leases_taken(fleet: KclFleet) -> list[tuple[str, str]]:
    """Return (shard, checkpoint) of every lease a record processor took, in order."""
    return [
        (
            line["message"].split("/", 1)[1].split(" ", 1)[0],
            line["message"].rsplit(" ", 1)[1],
        )
        for line in fleet.log_lines()
        if line["message"].startswith("lease taken: ")
    ]
