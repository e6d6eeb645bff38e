"""Event factories and an in-process AWS (moto) for the Lambda handler's tests."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError
from moto import mock_aws

from consumers.aws_lambda.checkpoints import table_spec
from consumers.aws_lambda.esm import LocalContext
from consumers.aws_lambda.handler import Handler, LambdaRuntime, instrument
from consumers.aws_lambda.records import event_record
from consumers.aws_lambda.settings import LambdaSettings
from consumers.getrecords import to_kinesis_record
from spanstream.config import Settings
from spanstream.model import KinesisRecord
from spanstream.sinks import readers

DATA = Path(__file__).resolve().parents[1] / "data" / "lambda"
SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "dynamodb"
REGION = "us-east-2"
STREAM = "lambda-stream"


def load_event(name: str) -> dict[str, Any]:
    """Return the sample event ``tests/data/lambda/<name>.json``."""
    document: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return document


def spans_event(records: list[KinesisRecord], stream_arn: str) -> dict[str, Any]:
    """Return an event-source-mapping event holding ``records``."""
    return {"Records": [event_record(r, stream_arn, REGION) for r in records]}


def window_event(
    records: list[KinesisRecord],
    stream_arn: str,
    shard_id: str,
    state: dict[str, Any],
    final: bool = False,
) -> dict[str, Any]:
    """Return a tumbling-window event holding ``records`` and ``state``."""
    return {
        **spans_event(records, stream_arn),
        "window": {"start": "2025-11-24T16:00:00Z", "end": "2025-11-24T16:02:00Z"},
        "state": state,
        "shardId": shard_id,
        "eventSourceARN": stream_arn,
        "isFinalInvokeForWindow": final,
        "isWindowTerminatedEarly": False,
    }


class FailingCalls:
    """A boto3 client whose named operations fail while ``failing`` is set."""

    def __init__(
        self, client: Any, *operations: str, sparing_table: str | None = None
    ) -> None:
        self._client = client
        self._operations = set(operations)
        self._sparing_table = sparing_table
        self.failing = True
        self.failed = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name not in self._operations:
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            spared = self._sparing_table is not None and (
                kwargs.get("TableName") == self._sparing_table
            )
            if self.failing and not spared:
                self.failed += 1
                raise ClientError(
                    {"Error": {"Code": "InjectedFault", "Message": "injected"}}, name
                )
            return attribute(*args, **kwargs)

        return call


@dataclass
class FakeAws:
    """Moto's S3, DynamoDB and Kinesis with spanstream's resources made."""

    settings: Settings
    s3: Any
    dynamodb: Any
    kinesis: Any
    stream_arn: str

    def runtime(self, **clients: Any) -> LambdaRuntime:
        lambda_settings = LambdaSettings.from_env(self.settings)
        chosen = {"s3": self.s3, "dynamodb": self.dynamodb, "kinesis": self.kinesis}
        chosen.update(clients)
        return LambdaRuntime(self.settings, lambda_settings, chosen)

    @property
    def checkpoint_table(self) -> str:
        return LambdaSettings.from_env(self.settings, {}).checkpoint_table

    def handler(self, **clients: Any) -> Handler:
        return instrument(self.runtime(**clients).handle)

    def invoke(self, handler: Handler, event: dict[str, Any]) -> dict[str, Any]:
        return handler(event, LocalContext())

    def put(self, records: list[tuple[str, bytes]]) -> list[KinesisRecord]:
        """Put ``records`` on one shard; return them as the stream holds them."""
        for key, data in records:
            self.kinesis.put_record(
                StreamName=STREAM,
                Data=data,
                PartitionKey=key,
                ExplicitHashKey="0",
            )
        shard = self.kinesis.list_shards(StreamName=STREAM)["Shards"][0]["ShardId"]
        iterator = self.kinesis.get_shard_iterator(
            StreamName=STREAM, ShardId=shard, ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        response = self.kinesis.get_records(ShardIterator=iterator, Limit=10_000)
        return [to_kinesis_record(STREAM, shard, r) for r in response["Records"]]

    def snapshot(self) -> dict[str, Any]:
        """Return what landed: archive keys and rows, dead letters, aggregates.

        Archive keys name the units the records were written in; a tumbling
        window cuts units differently from a plain run, so callers comparing
        such runs leave them out with `outputs`.
        """
        listing = self.s3.list_objects_v2(Bucket=self.settings.bucket)
        archive = readers.read_archive(self.s3, self.settings)
        keys = sorted(o["Key"] for o in listing.get("Contents", []))
        prefix = self.settings.archive_prefix
        return {
            "archive_keys": [key for key in keys if key.startswith(prefix)],
            "dead_letter_keys": [key for key in keys if not key.startswith(prefix)],
            "span_ids": sorted(archive.column("span_id").to_pylist()),
            "metrics": {
                row.key: (
                    row.stats.count,
                    row.stats.errors,
                    row.stats.duration_sum_nanos,
                    row.stats.duration_min_nanos,
                    row.stats.duration_max_nanos,
                    row.stats.sketch.to_bytes(),
                )
                for row in readers.scan_metrics(self.dynamodb, self.settings)
            },
            "cold_starts": {
                row.key: row.stats
                for row in readers.scan_cold_starts(self.dynamodb, self.settings)
            },
            "late": sorted(readers.scan_late(self.dynamodb, self.settings)),
        }


@contextmanager
def fake_aws() -> Iterator[FakeAws]:
    """Yield moto-backed clients with the stream, tables and bucket created."""
    with mock_aws():
        settings = Settings(
            stream_name=STREAM,
            bucket="spanstream-lambda-test",
            table_prefix="lt-",
            region=REGION,
        )
        session = boto3.session.Session(
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name=REGION,
        )
        s3, dynamodb, kinesis = (
            session.client(name) for name in ("s3", "dynamodb", "kinesis")
        )
        s3.create_bucket(
            Bucket=settings.bucket,
            CreateBucketConfiguration={"LocationConstraint": REGION},
        )
        for path in sorted(SCHEMAS.glob("*.json")):
            spec = json.loads(path.read_text())
            dynamodb.create_table(
                **{**spec, "TableName": settings.table_name(spec["TableName"])}
            )
        dynamodb.create_table(
            **table_spec(LambdaSettings.from_env(settings, {}).checkpoint_table)
        )
        kinesis.create_stream(StreamName=STREAM, ShardCount=1)
        arn = kinesis.describe_stream_summary(StreamName=STREAM)[
            "StreamDescriptionSummary"
        ]["StreamARN"]
        yield FakeAws(settings, s3, dynamodb, kinesis, arn)


def outputs(snapshot: dict[str, Any]) -> dict[str, Any]:
    """Return ``snapshot`` without the archive's object names."""
    return {key: value for key, value in snapshot.items() if key != "archive_keys"}
