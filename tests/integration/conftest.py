"""Fixtures for tests against real emulators on loopback.

The session starts the backend `devenv.emulators_from_env` picks (our
kinesis-mock + moto unless ``SPANSTREAM_TARGET`` says otherwise) once; each
test gets its own stream, table prefix and bucket. If the emulators cannot
start, every integration test errors: none is skipped.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from chaos import FAULT_RATE, SERVICES, FaultyEndpoints, RetryWarnings
from traffic import SHARD_COUNT, SharedTraffic, put_shared_traffic

from devenv import (
    Emulators,
    LocalStack,
    Resources,
    create_resources,
    create_stores,
    delete_resources,
    delete_stores,
    emulators_from_env,
    settings_to_env,
)
from devenv.faultproxy import FaultPlan, FaultProxy
from devenv.resources import create_stream, delete_stream
from spanstream.aws import make_client
from spanstream.config import Settings

INTEGRATION_DIR = Path(__file__).resolve().parent
DEFAULT_SHARD_COUNT = 4


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/integration with ``integration``."""
    for item in items:
        if item.path.is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def emulators(
    request: pytest.FixtureRequest,
) -> Iterator[Emulators | LocalStack]:
    """Yield the started backend; its logs are in ``.run/pytest-emulators``.

    ``SPANSTREAM_TEST_RUN_DIR`` names another folder, so that two pytest
    sessions in one tree do not delete each other's emulator files.

    Also puts its dummy AWS credentials and region into ``os.environ`` for
    the session, so that boto3 clients (and subprocesses) can sign requests.
    """
    run_dir = Path(
        os.environ.get("SPANSTREAM_TEST_RUN_DIR")
        or request.config.rootpath / ".run" / "pytest-emulators"
    )
    shutil.rmtree(run_dir, ignore_errors=True)  # logs of the previous session
    backend = emulators_from_env(run_dir=run_dir)
    with pytest.MonkeyPatch.context() as patch, backend:
        for key, value in backend.settings_env().items():
            if key.startswith("AWS_"):
                patch.setenv(key, value)
        patch.delenv("AWS_PROFILE", raising=False)
        yield backend


@pytest.fixture
def settings(emulators: Emulators | LocalStack) -> Settings:
    """Return settings on the emulators with names no other test uses."""
    suffix = uuid.uuid4().hex[:12]
    return emulators.settings(
        stream_name=f"spanstream-test-{suffix}",
        table_prefix=f"spanstream-test-{suffix}-",
        bucket=f"spanstream-test-{suffix}",
    )


@pytest.fixture
def settings_environ(
    emulators: Emulators | LocalStack, settings: Settings
) -> dict[str, str]:
    """Return a full environment for a subprocess that should use ``settings``."""
    return {**os.environ, **emulators.settings_env(), **settings_to_env(settings)}


@pytest.fixture
def kinesis(settings: Settings) -> Any:
    """Return a Kinesis client for ``settings``."""
    return make_client("kinesis", settings)


@pytest.fixture
def dynamodb(settings: Settings) -> Any:
    """Return a DynamoDB client for ``settings``."""
    return make_client("dynamodb", settings)


@pytest.fixture
def s3(settings: Settings) -> Any:
    """Return an S3 client for ``settings``."""
    return make_client("s3", settings)


@pytest.fixture
def make_resources(
    settings: Settings, kinesis: Any, dynamodb: Any, s3: Any
) -> Iterator[Callable[..., Resources]]:
    """Yield ``make_resources(shard_count=4)``, which creates this test's resources.

    Whatever it created is deleted after the test.
    """
    created = False

    def make(shard_count: int = DEFAULT_SHARD_COUNT) -> Resources:
        nonlocal created
        created = True
        return create_resources(settings, kinesis, dynamodb, s3, shard_count)

    yield make
    if created:
        delete_resources(settings, kinesis, dynamodb, s3)


@pytest.fixture
def resources(
    request: pytest.FixtureRequest, make_resources: Callable[..., Resources]
) -> Resources:
    """Return this test's stream (4 shards), tables and bucket.

    Another shard count: ``@pytest.mark.parametrize("resources", [2],
    indirect=True)``.
    """
    return make_resources(getattr(request, "param", DEFAULT_SHARD_COUNT))


@pytest.fixture(scope="session")
def shared_traffic(emulators: Emulators | LocalStack) -> Iterator[SharedTraffic]:
    """Put the session's 200,000-span traffic on a 4-shard stream, once.

    Tests read it through ``shared_settings``; nothing may write to it.
    """
    settings = emulators.settings(
        stream_name=f"spanstream-shared-{uuid.uuid4().hex[:8]}"
    )
    kinesis = make_client("kinesis", settings)
    create_stream(kinesis, settings.stream_name, SHARD_COUNT, 60)
    started = time.monotonic()
    traffic = put_shared_traffic(kinesis, settings.stream_name)
    print(
        f"shared traffic: {len(traffic.truth)} spans in {traffic.record_count} "
        f"records put in {time.monotonic() - started:.1f} s"
    )
    yield traffic
    delete_stream(kinesis, settings.stream_name, 60)


@pytest.fixture
def shared_settings(
    settings: Settings, shared_traffic: SharedTraffic, dynamodb: Any, s3: Any
) -> Iterator[Settings]:
    """Return this test's settings on the shared stream, with its own stores.

    The tables and the bucket are made for the test and deleted after it.
    The allowed lateness is an hour: the spans' lateness is judged by their
    arrival time, and a slow machine may take minutes to put them all.
    """
    reading = dataclasses.replace(
        settings,
        stream_name=shared_traffic.stream_name,
        allowed_lateness_secs=3600,
    )
    create_stores(reading, dynamodb, s3)
    yield reading
    delete_stores(reading, dynamodb, s3)


@pytest.fixture
def faulty(emulators: Emulators | LocalStack) -> Iterator[FaultyEndpoints]:
    """Yield proxies faulting 20 % of the calls to each emulator endpoint
    (`chaos.FaultyEndpoints`); a test routes its worker through them."""
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


@pytest.fixture
def retry_warnings() -> Iterator[RetryWarnings]:
    """Count spanstream's own retries: of calls botocore had given up on."""
    handler = RetryWarnings()
    retry_logger = logging.getLogger("spanstream.sinks.retry")
    retry_logger.addHandler(handler)
    yield handler
    retry_logger.removeHandler(handler)


@pytest.fixture
def quiet_metrics(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the Lambda handler's thousands of EMF lines out of the output."""
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "true")
