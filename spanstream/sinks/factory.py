"""Build the production sinks of a pipeline from settings and AWS clients."""

from __future__ import annotations

from typing import Any

from spanstream.config import Settings
from spanstream.pipeline import Sinks
from spanstream.rekey import KinesisForwarder
from spanstream.sinks.archive import ArchiveWriter
from spanstream.sinks.deadletter import DeadLetterWriter
from spanstream.sinks.dynamodb import AggregateWriter


def make_sinks(
    settings: Settings,
    s3_client: Any,
    dynamodb_client: Any,
    kinesis_client: Any | None = None,
    *,
    forward_spans: bool | None = None,
) -> Sinks:
    """Return the S3 archive, S3 dead-letter and DynamoDB aggregate sinks.

    With ``forward_spans`` (default: whether ``settings.trace_stream_name`` is
    set), spans are also forwarded to the trace stream for the trace stage
    (``kinesis_client`` is then required; raises ValueError without one). The
    trace stage itself reads that stream and forwards nothing.
    """
    if forward_spans is None:
        forward_spans = bool(settings.trace_stream_name)
    forward = None
    if forward_spans:
        if kinesis_client is None:
            raise ValueError("forwarding to the trace stream needs a Kinesis client")
        forward = KinesisForwarder(kinesis_client, settings)
    return Sinks(
        archive=ArchiveWriter(s3_client, settings),
        dead_letters=DeadLetterWriter(s3_client, settings),
        aggregates=AggregateWriter(dynamodb_client, settings),
        forward=forward,
    )
