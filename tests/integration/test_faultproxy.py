"""The fault proxy in front of the emulators: each fault kind as a client sees it.

GIVEN a `devenv.faultproxy.FaultProxy` in front of kinesis-mock and one in
front of moto, and clients that do not retry; WHEN every request is faulted
with one kind; THEN the client gets that service's error in its protocol (a
retryable one), or a closed connection, and the upstream applied the request
exactly when the kind says so. Then: what the proxy counts, and a Lambda
checkpoint put whose answer was lost.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionClosedError

from consumers.aws_lambda.checkpoints import (
    CheckpointConflictError,
    CheckpointStore,
    SequenceRange,
    table_spec,
)
from consumers.aws_lambda.settings import LambdaSettings
from devenv import Emulators, LocalStack
from devenv.faultproxy import ANSWERED_KINDS, FaultKind, FaultPlan, FaultProxy
from devenv.resources import create_table, delete_table
from spanstream.aws import client_config, make_client
from spanstream.config import Settings
from spanstream.sinks.retry import error_code, is_retryable

THROTTLING = {"ProvisionedThroughputExceededException", "ThrottlingException"}
#: (service, kind) -> (HTTP status, the error codes it may carry)
EXPECTED_ERRORS = {
    ("s3", FaultKind.THROTTLE): (503, {"SlowDown"}),
    ("s3", FaultKind.ERROR_500): (500, {"InternalError"}),
    ("s3", FaultKind.ERROR_503): (503, {"ServiceUnavailable"}),
    ("dynamodb", FaultKind.THROTTLE): (400, THROTTLING),
    ("dynamodb", FaultKind.ERROR_500): (500, {"InternalServerError"}),
    ("dynamodb", FaultKind.ERROR_503): (503, {"ServiceUnavailable"}),
    ("kinesis", FaultKind.THROTTLE): (400, THROTTLING),
    ("kinesis", FaultKind.ERROR_500): (500, {"InternalFailure"}),
    ("kinesis", FaultKind.ERROR_503): (503, {"ServiceUnavailable"}),
}
SERVICES = ("s3", "dynamodb", "kinesis")


@pytest.fixture
def proxies(emulators: Emulators | LocalStack) -> Iterator[dict[str, FaultProxy]]:
    """Yield a proxy per service (services on one endpoint share it), not faulting."""
    by_upstream: dict[str, FaultProxy] = {}
    try:
        for service in SERVICES:
            upstream = getattr(emulators, f"{service}_endpoint_url")
            if upstream not in by_upstream:
                by_upstream[upstream] = FaultProxy(upstream).start()
        yield {
            service: by_upstream[getattr(emulators, f"{service}_endpoint_url")]
            for service in SERVICES
        }
    finally:
        for proxy in by_upstream.values():
            proxy.stop()


def behind(settings: Settings, proxy: FaultProxy) -> Settings:
    return dataclasses.replace(settings, dynamodb_endpoint_url=proxy.endpoint_url)


def without_retries(service: str, endpoint_url: str, region: str) -> Any:
    config = client_config().merge(
        Config(retries={"mode": "standard", "total_max_attempts": 1})
    )
    if service == "s3":
        config = config.merge(Config(s3={"addressing_style": "path"}))
    return boto3.session.Session().client(
        service, region_name=region, endpoint_url=endpoint_url, config=config
    )


class Probe:
    """Writes one marked thing to a service through a client, and looks for it."""

    def __init__(
        self, settings: Settings, direct: dict[str, Any], shard_count: int
    ) -> None:
        self.settings = settings
        self.direct = direct
        self.shard_count = shard_count

    def write(self, service: str, client: Any, mark: str) -> None:
        settings = self.settings
        if service == "s3":
            client.put_object(Bucket=settings.bucket, Key=mark, Body=b"probe")
        elif service == "dynamodb":
            client.put_item(
                TableName=settings.table_name("metrics"),
                Item={"pk": {"S": mark}, "sk": {"S": "probe"}},
            )
        else:
            client.put_record(
                StreamName=settings.stream_name, PartitionKey=mark, Data=b"probe"
            )

    def applied(self, service: str, mark: str) -> bool:
        settings = self.settings
        if service == "s3":
            listing = self.direct["s3"].list_objects_v2(
                Bucket=settings.bucket, Prefix=mark
            )
            return bool(listing.get("KeyCount"))
        if service == "dynamodb":
            response = self.direct["dynamodb"].get_item(
                TableName=settings.table_name("metrics"),
                Key={"pk": {"S": mark}, "sk": {"S": "probe"}},
                ConsistentRead=True,
            )
            return "Item" in response
        return mark in self._partition_keys()

    def _partition_keys(self) -> set[str]:
        kinesis = self.direct["kinesis"]
        keys = set()
        for index in range(self.shard_count):
            iterator = kinesis.get_shard_iterator(
                StreamName=self.settings.stream_name,
                ShardId=f"shardId-{index:012d}",
                ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"]
            page = kinesis.get_records(ShardIterator=iterator, Limit=10_000)
            keys |= {record["PartitionKey"] for record in page["Records"]}
        return keys


@pytest.fixture
def probe(
    settings: Settings, resources: Any, kinesis: Any, dynamodb: Any, s3: Any
) -> Probe:
    direct = {"kinesis": kinesis, "dynamodb": dynamodb, "s3": s3}
    return Probe(settings, direct, resources.shard_count)


def faulting_client(
    proxies: dict[str, FaultProxy], settings: Settings, service: str, kind: FaultKind
) -> tuple[Any, FaultProxy]:
    proxy = proxies[service]
    proxy.plan = FaultPlan(rate=1.0, kinds=(kind,), slow_secs=(0.3, 0.3))
    return without_retries(service, proxy.endpoint_url, settings.region), proxy


@pytest.mark.parametrize("resources", [1], indirect=True)
@pytest.mark.parametrize(("service", "kind"), sorted(EXPECTED_ERRORS))
def test_answered_faults_are_the_services_errors_and_never_applied(
    proxies: dict[str, FaultProxy],
    settings: Settings,
    probe: Probe,
    service: str,
    kind: FaultKind,
) -> None:
    # GIVEN every request of the service answered with an error of ``kind``
    client, proxy = faulting_client(proxies, settings, service, kind)
    mark = f"probe-{uuid.uuid4().hex}"
    # WHEN a write goes through the proxy
    with pytest.raises(ClientError) as raised:
        probe.write(service, client, mark)
    # THEN the client sees the service's retryable error; nothing was applied
    status, codes = EXPECTED_ERRORS[service, kind]
    assert raised.value.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert error_code(raised.value) in codes
    assert is_retryable(raised.value)
    assert not probe.applied(service, mark)
    counts = proxy.counts
    assert counts.faults[service, kind] == 1
    assert counts.forwarded[service] == 0


@pytest.mark.parametrize("resources", [1], indirect=True)
@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("kind", [FaultKind.RESET, FaultKind.LOST_RESPONSE])
def test_resets_are_closed_connections_applied_only_after_forwarding(
    proxies: dict[str, FaultProxy],
    settings: Settings,
    probe: Probe,
    service: str,
    kind: FaultKind,
) -> None:
    # GIVEN every request reset, before or after it was forwarded
    client, proxy = faulting_client(proxies, settings, service, kind)
    mark = f"probe-{uuid.uuid4().hex}"
    # WHEN a write goes through the proxy
    with pytest.raises(ConnectionClosedError) as raised:
        probe.write(service, client, mark)
    # THEN the client cannot tell the two apart; only a lost answer was applied
    assert is_retryable(raised.value)
    assert probe.applied(service, mark) is (kind is FaultKind.LOST_RESPONSE)
    assert proxy.counts.forwarded[service] == int(kind is FaultKind.LOST_RESPONSE)


@pytest.mark.parametrize("resources", [1], indirect=True)
@pytest.mark.parametrize("service", SERVICES)
def test_slow_responses_are_answered_late(
    proxies: dict[str, FaultProxy], settings: Settings, probe: Probe, service: str
) -> None:
    client, _ = faulting_client(proxies, settings, service, FaultKind.SLOW)
    mark = f"probe-{uuid.uuid4().hex}"
    started = time.monotonic()
    probe.write(service, client, mark)
    assert time.monotonic() - started >= 0.3
    assert probe.applied(service, mark)


def test_counts_add_up_and_retrying_clients_get_through(
    proxies: dict[str, FaultProxy], settings: Settings, resources: Any
) -> None:
    # GIVEN a fifth of the DynamoDB requests faulted, slow ones short
    proxy = proxies["dynamodb"]
    proxy.plan = FaultPlan(rate=0.2, seed=7, slow_secs=(0.0, 0.01))
    client = make_client("dynamodb", behind(settings, proxy))
    table = settings.table_name("metrics")
    # WHEN a client with spanstream's retry settings writes 60 items
    for index in range(60):
        client.put_item(
            TableName=table, Item={"pk": {"S": f"p{index}"}, "sk": {"S": "s"}}
        )
    # THEN every write got through, and every request was answered once:
    # forwarded, answered with an error, or reset before forwarding
    counts = proxy.counts
    requests = counts.requests["dynamodb"]
    by_kind = counts.by_kind()
    not_forwarded = sum(by_kind[k] for k in ANSWERED_KINDS) + by_kind[FaultKind.RESET]
    assert requests == 60 + counts.total_faults - by_kind[FaultKind.SLOW]
    assert counts.forwarded["dynamodb"] + not_forwarded == requests
    assert counts.operations["dynamodb", "PutItem"] == requests
    assert counts.total_faults > 0
    scanned = client.scan(TableName=table, Select="COUNT", ConsistentRead=True)
    assert scanned["Count"] == 60


@pytest.fixture
def checkpoint_table(settings: Settings, dynamodb: Any) -> Iterator[str]:
    name = LambdaSettings.from_env(settings, {}).checkpoint_table
    create_table(dynamodb, table_spec(name), 60)
    yield name
    delete_table(dynamodb, name)


def test_a_checkpoint_put_whose_answer_was_lost_is_no_conflict(
    proxies: dict[str, FaultProxy], settings: Settings, checkpoint_table: str
) -> None:
    # GIVEN the answer of the first checkpoint put lost after it was applied
    proxy = proxies["dynamodb"]
    proxy.plan = FaultPlan(
        rate=1.0,
        kinds=(FaultKind.LOST_RESPONSE,),
        operations=frozenset({"PutItem"}),
        max_faults=1,
    )
    client = make_client("dynamodb", behind(settings, proxy))
    store = CheckpointStore(client, checkpoint_table)
    stale = store.read("stream", "shard-1")
    # WHEN it is written (botocore's retry of the put then fails its condition)
    written = store.write(stale, unit=SequenceRange("1", "9"))
    # THEN it counts as written, and it is what the table holds
    assert proxy.counts.by_kind()[FaultKind.LOST_RESPONSE] == 1
    assert store.read("stream", "shard-1") == written
    assert written.version == 1
    # ...while a put from a mark that really was overtaken still conflicts
    with pytest.raises(CheckpointConflictError):
        store.write(stale, unit=SequenceRange("1", "5"))
