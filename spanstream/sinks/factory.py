"""Build the production sinks of a pipeline from settings and AWS clients."""

from __future__ import annotations

from typing import Any

from spanstream.config import Settings
from spanstream.pipeline import Sinks
from spanstream.sinks.archive import ArchiveWriter
from spanstream.sinks.deadletter import DeadLetterWriter
from spanstream.sinks.dynamodb import AggregateWriter


def make_sinks(settings: Settings, s3_client: Any, dynamodb_client: Any) -> Sinks:
    """Return the S3 archive, S3 dead-letter and DynamoDB aggregate sinks."""
    return Sinks(
        archive=ArchiveWriter(s3_client, settings),
        dead_letters=DeadLetterWriter(s3_client, settings),
        aggregates=AggregateWriter(dynamodb_client, settings),
    )
