"""Create and delete the AWS resources spanstream needs, on any backend.

The streams (spans, and the trace stream when one is configured), one
DynamoDB table per ``schemas/dynamodb/*.json`` (each file a
CreateTable input whose TableName is the logical name) and the archive
bucket. Creation is idempotent; deletion tolerates what is already gone.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from devenv.ports import wait_until
from spanstream.config import Settings

logger = logging.getLogger(__name__)

SCHEMAS_DIR = Path(__file__).resolve().parents[1] / "schemas" / "dynamodb"
TTL_ATTRIBUTE = "expires_at"

_ALREADY_EXISTS = {
    "ResourceInUseException",
    "BucketAlreadyOwnedByYou",
    "BucketAlreadyExists",
}
_NOT_FOUND = {"ResourceNotFoundException", "NoSuchBucket", "404"}


@dataclass(frozen=True)
class Resources:
    """What `create_resources` made: physical names keyed as spanstream uses them."""

    stream_name: str
    stream_arn: str
    shard_count: int
    #: logical table name ("metrics") -> physical name ("<prefix>metrics")
    table_names: dict[str, str]
    bucket: str


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def load_table_specs(schemas_dir: Path = SCHEMAS_DIR) -> list[dict[str, Any]]:
    """Return the CreateTable inputs in ``schemas_dir/*.json``, sorted by file name.

    Raises ValueError naming the file if one is not JSON or has no TableName,
    and FileNotFoundError if the directory holds no schema at all.
    """
    paths = sorted(schemas_dir.glob("*.json"))
    if not paths:
        raise FileNotFoundError(f"no table schemas in {schemas_dir}")
    specs = []
    for path in paths:
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(spec, dict) or not spec.get("TableName"):
            raise ValueError(f"{path} is not a CreateTable input with a TableName")
        specs.append(spec)
    return specs


def create_resources(
    settings: Settings,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    shard_count: int = 4,
    *,
    schemas_dir: Path = SCHEMAS_DIR,
    timeout_secs: float = 60.0,
) -> Resources:
    """Create the streams, the tables and the bucket named by ``settings``.

    The span stream, and the trace stream too when
    ``settings.trace_stream_name`` is set, each with ``shard_count`` shards.
    Existing resources are kept as they are (an existing stream keeps its
    shard count). Waits until the streams and tables are ACTIVE; enables TTL
    on ``expires_at`` where the backend supports it. Returns what exists.
    Raises botocore ClientError for any other AWS error and
    `devenv.ports.DeadlineExceeded` if something is not ACTIVE in time.
    """
    stream_arn = create_stream(kinesis, settings.stream_name, shard_count, timeout_secs)
    if settings.trace_stream_name:
        create_stream(kinesis, settings.trace_stream_name, shard_count, timeout_secs)
    table_names = create_stores(
        settings, dynamodb, s3, schemas_dir=schemas_dir, timeout_secs=timeout_secs
    )
    return Resources(
        stream_name=settings.stream_name,
        stream_arn=stream_arn,
        shard_count=shard_count,
        table_names=table_names,
        bucket=settings.bucket,
    )


def create_stores(
    settings: Settings,
    dynamodb: Any,
    s3: Any,
    *,
    schemas_dir: Path = SCHEMAS_DIR,
    timeout_secs: float = 60.0,
) -> dict[str, str]:
    """Create the tables and the bucket (not the streams); see `create_resources`.

    Returns the physical table names by logical name.
    """
    table_names = {}
    for spec in load_table_specs(schemas_dir):
        logical = spec["TableName"]
        table_names[logical] = create_table(
            dynamodb, {**spec, "TableName": settings.table_name(logical)}, timeout_secs
        )
    create_bucket(s3, settings.bucket, settings.region)
    return table_names


def create_stream(
    kinesis: Any, stream_name: str, shard_count: int, timeout_secs: float
) -> str:
    """Create a provisioned stream unless it exists; return its ARN once ACTIVE."""
    try:
        kinesis.create_stream(StreamName=stream_name, ShardCount=shard_count)
        logger.info("creating stream %s with %d shards", stream_name, shard_count)
    except ClientError as exc:
        if _error_code(exc) not in _ALREADY_EXISTS:
            raise
        logger.debug("stream %s exists", stream_name)
    summary: dict[str, Any] = {}

    def is_active() -> bool:
        nonlocal summary
        response = kinesis.describe_stream_summary(StreamName=stream_name)
        summary = response["StreamDescriptionSummary"]
        return bool(summary["StreamStatus"] == "ACTIVE")

    wait_until(
        is_active, timeout_secs=timeout_secs, what=f"stream {stream_name} ACTIVE"
    )
    return str(summary["StreamARN"])


def create_table(dynamodb: Any, spec: dict[str, Any], timeout_secs: float) -> str:
    """Create the table ``spec`` describes unless it exists; return its name.

    Waits until it is ACTIVE, then enables TTL on ``expires_at`` (skipped,
    with a debug line, where the backend does not support TTL).
    """
    table_name = str(spec["TableName"])
    try:
        dynamodb.create_table(**spec)
        logger.info("creating table %s", table_name)
    except ClientError as exc:
        if _error_code(exc) not in _ALREADY_EXISTS:
            raise
        logger.debug("table %s exists", table_name)

    def is_active() -> bool:
        table = dynamodb.describe_table(TableName=table_name)["Table"]
        return bool(table["TableStatus"] == "ACTIVE")

    wait_until(is_active, timeout_secs=timeout_secs, what=f"table {table_name} ACTIVE")
    enable_ttl(dynamodb, table_name)
    return table_name


def enable_ttl(dynamodb: Any, table_name: str) -> bool:
    """Turn on TTL on ``expires_at``; return False if the backend cannot.

    An already-enabled TTL counts as success. Raises ClientError for errors
    other than "already enabled" or "not supported".
    """
    try:
        dynamodb.update_time_to_live(
            TableName=table_name,
            TimeToLiveSpecification={"Enabled": True, "AttributeName": TTL_ATTRIBUTE},
        )
    except ClientError as exc:
        message = str(exc)
        if "already enabled" in message.lower():
            return True
        if _error_code(exc) in {"UnknownOperationException", "NotImplemented"}:
            logger.debug("backend has no TTL for %s: %s", table_name, message)
            return False
        raise
    return True


def create_bucket(s3: Any, bucket: str, region: str) -> None:
    """Create ``bucket`` in ``region`` unless this account already owns it."""
    kwargs: dict[str, Any] = {"Bucket": bucket}
    if region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**kwargs)
        logger.info("created bucket %s", bucket)
    except ClientError as exc:
        if _error_code(exc) not in _ALREADY_EXISTS:
            raise
        logger.debug("bucket %s exists", bucket)


def delete_resources(
    settings: Settings,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    *,
    schemas_dir: Path = SCHEMAS_DIR,
    timeout_secs: float = 60.0,
) -> None:
    """Delete the streams, tables and bucket (with its objects) ``settings`` names.

    Missing resources are skipped. Waits until the streams are gone so that
    the same names can be created again at once. Raises ClientError for other
    AWS errors and `devenv.ports.DeadlineExceeded` if a stream lingers.
    """
    delete_stream(kinesis, settings.stream_name, timeout_secs)
    if settings.trace_stream_name:
        delete_stream(kinesis, settings.trace_stream_name, timeout_secs)
    delete_stores(settings, dynamodb, s3, schemas_dir=schemas_dir)


def delete_stores(
    settings: Settings,
    dynamodb: Any,
    s3: Any,
    *,
    schemas_dir: Path = SCHEMAS_DIR,
) -> None:
    """Delete the tables and the bucket ``settings`` names, not the streams."""
    for spec in load_table_specs(schemas_dir):
        delete_table(dynamodb, settings.table_name(spec["TableName"]))
    delete_bucket(s3, settings.bucket)


def delete_stream(kinesis: Any, stream_name: str, timeout_secs: float) -> None:
    """Delete ``stream_name`` (and its consumers); return once it is gone.

    A stream still being resharded (``UPDATING``) refuses deletion with
    ``ResourceInUseException``; the call is repeated until the stream is
    active again and takes it, or ``timeout_secs`` pass.
    """

    def request_deletion() -> bool:
        try:
            kinesis.delete_stream(StreamName=stream_name, EnforceConsumerDeletion=True)
        except ClientError as exc:
            if _error_code(exc) == "ResourceInUseException":
                return False
            raise
        logger.info("deleting stream %s", stream_name)
        return True

    try:
        wait_until(
            request_deletion,
            timeout_secs=timeout_secs,
            what=f"stream {stream_name} accepting its deletion",
            poll_interval_secs=0.25,
        )
    except ClientError as exc:
        if _error_code(exc) not in _NOT_FOUND:
            raise
        return

    def is_gone() -> bool:
        try:
            kinesis.describe_stream_summary(StreamName=stream_name)
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                return True
            raise
        return False

    wait_until(is_gone, timeout_secs=timeout_secs, what=f"stream {stream_name} gone")


def delete_table(dynamodb: Any, table_name: str) -> None:
    """Delete ``table_name`` if it exists; does not wait for it to go."""
    try:
        dynamodb.delete_table(TableName=table_name)
        logger.info("deleted table %s", table_name)
    except ClientError as exc:
        if _error_code(exc) not in _NOT_FOUND:
            raise


def delete_bucket(s3: Any, bucket: str) -> None:
    """Delete every object in ``bucket``, then the bucket, if it exists."""
    try:
        paginator = s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=bucket):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
        s3.delete_bucket(Bucket=bucket)
        logger.info("deleted bucket %s", bucket)
    except ClientError as exc:
        if _error_code(exc) not in _NOT_FOUND:
            raise
