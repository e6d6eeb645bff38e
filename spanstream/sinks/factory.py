"""Build the production sinks of a pipeline from settings and AWS clients."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from spanstream.aggregate.types import AggregateDelta, TraceSummary
from spanstream.config import Settings
from spanstream.pipeline import Sinks
from spanstream.rekey import KinesisForwarder
from spanstream.sinks.archive import ArchiveWriter
from spanstream.sinks.deadletter import DeadLetterWriter
from spanstream.sinks.dynamodb import AggregateWriter, WriteStats
from spanstream.sinks.summaries import SummaryArchiveWriter


class SummaryStore(Protocol):
    def write_summaries(self, summaries: Sequence[TraceSummary]) -> object: ...


class AggregateStores:
    """A pipeline's aggregate sink: windowed aggregates go to the DynamoDB
    tables, trace summaries to the store ``settings.trace_summary_store``
    names (the trace archive on S3, or the ``traces`` table)."""

    def __init__(self, table: AggregateWriter, summaries: SummaryStore) -> None:
        self.table = table
        self.summaries = summaries

    def write(self, deltas: list[AggregateDelta]) -> WriteStats:
        """Write aggregate deltas to DynamoDB (see `AggregateWriter.write`)."""
        return self.table.write(deltas)

    def write_summaries(self, summaries: Sequence[TraceSummary]) -> object:
        """Write trace summaries to the configured store; raises `SinkError`."""
        return self.summaries.write_summaries(summaries)


def make_aggregates(
    settings: Settings, s3_client: Any, dynamodb_client: Any
) -> AggregateStores:
    """Return the aggregate sink: DynamoDB, and summaries where configured."""
    table = AggregateWriter(dynamodb_client, settings)
    summaries: SummaryStore = (
        table
        if settings.trace_summary_store == "table"
        else SummaryArchiveWriter(s3_client, settings)
    )
    return AggregateStores(table, summaries)


def make_sinks(
    settings: Settings,
    s3_client: Any,
    dynamodb_client: Any,
    kinesis_client: Any | None = None,
    *,
    forward_spans: bool | None = None,
) -> Sinks:
    """Return the S3 archive, S3 dead-letter and aggregate sinks.

    Aggregates go to DynamoDB; trace summaries to the trace archive on S3 or
    to the ``traces`` table, as ``settings.trace_summary_store`` says.

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
        aggregates=make_aggregates(settings, s3_client, dynamodb_client),
        forward=forward,
    )
