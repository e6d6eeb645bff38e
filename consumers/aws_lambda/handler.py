"""The Lambda entry point: ``consumers.aws_lambda.handler.handler``.

Everything slow happens once per execution environment: settings are read
and validated, boto3 clients and sinks are built when the module is first
imported inside Lambda (the init phase, which runs at full CPU), or on the
first call elsewhere. An invocation then only reads its batch, runs the span
stage (the only stage on Lambda; ``SPANSTREAM_LAMBDA_STAGE`` names it in
the metrics) and returns the partial batch response (and, with a tumbling
window, the window state).

Logs are Powertools JSON lines with the request id and a correlation id of
``<shard>:<first sequence number>``; metrics go out in CloudWatch embedded
metric format (namespace ``spanstream``, dimensions ``service`` and
``stage``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache
from typing import Any

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamEvent,
    KinesisStreamRecord,
)

from consumers.aws_lambda.batch import UnitBatchProcessor
from consumers.aws_lambda.checkpoints import CheckpointStore
from consumers.aws_lambda.records import shard_id, stream_name, to_kinesis_record
from consumers.aws_lambda.settings import LambdaSettings
from consumers.aws_lambda.spans import SpansStage, window_input
from consumers.aws_lambda.stage import BatchInput, Outcome, Stage
from consumers.aws_lambda.units import StreamReader
from spanstream import heap
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.sinks.factory import make_sinks

logger = Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", "spanstream"))
metrics = Metrics(
    namespace=os.environ.get("POWERTOOLS_METRICS_NAMESPACE", "spanstream")
)
copy_config_to_registered_loggers(
    source_logger=logger, include={"spanstream", "consumers"}
)


class LambdaRuntime:
    """One execution environment's settings, clients and stage."""

    def __init__(
        self,
        settings: Settings,
        lambda_settings: LambdaSettings,
        clients: dict[str, Any],
    ) -> None:
        self.settings = settings
        self.lambda_settings = lambda_settings
        sinks = make_sinks(
            settings, clients["s3"], clients["dynamodb"], clients["kinesis"]
        )
        checkpoints = CheckpointStore(
            clients["dynamodb"], lambda_settings.checkpoint_table
        )
        reader = StreamReader(clients["kinesis"])
        self.stage: Stage = SpansStage(
            settings, lambda_settings, sinks, checkpoints, reader
        )

    @classmethod
    def from_env(cls) -> LambdaRuntime:
        """Build the runtime from ``SPANSTREAM_*`` variables (raises `ConfigError`)."""
        settings = Settings.from_env()
        lambda_settings = LambdaSettings.from_env(settings)
        clients = {
            name: make_client(name, settings) for name in ("s3", "dynamodb", "kinesis")
        }
        return cls(settings, lambda_settings, clients)

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        """Process one event-source-mapping event; return Lambda's response.

        Raises when the failure concerns no record of the batch (a window's
        final write with no records), when the event or its window state is
        malformed, and on any unexpected error: Lambda then retries the whole
        batch (bisecting it, if the mapping says so).
        """
        kinesis_event = KinesisStreamEvent(event)
        window = window_input(kinesis_event)
        processor = UnitBatchProcessor()

        def run(records: list[KinesisStreamRecord]) -> Outcome:
            batch = self._batch_input(kinesis_event, records, window)
            first = batch.records[0].ref.sequence_number if batch.records else "-"
            logger.set_correlation_id(f"{batch.shard_id}:{first}")
            logger.append_keys(stream=batch.stream, shard_id=batch.shard_id)
            return self.stage.handle(batch)

        # The context-manager form of Powertools' `process_partial_response`,
        # which refuses an event without records: a window's final
        # invocation may have none.
        with processor(kinesis_event.get("Records") or [], run, context):
            processor.process()
        response: dict[str, Any] = dict(processor.response())
        outcome = processor.outcome
        self._publish(outcome)
        if outcome.error is not None and outcome.failed_from is None:
            raise outcome.error
        if window is not None:
            response["state"] = outcome.state or {}
        failures = response.get("batchItemFailures") or []
        logger.info(
            "batch done",
            extra={
                "counts": outcome.counts,
                "retry_from": failures[0]["itemIdentifier"] if failures else None,
            },
        )
        return response

    def _batch_input(
        self,
        event: KinesisStreamEvent,
        records: list[KinesisStreamRecord],
        window: Any,
    ) -> BatchInput:
        if records:
            stream = stream_name(records[0].event_source_arn)
            shard = shard_id(records[0])
        else:
            stream = stream_name(event.event_source_arn or "")
            shard = event.shard_id or ""
        return BatchInput(
            stream, shard, [to_kinesis_record(record) for record in records], window
        )

    def _publish(self, outcome: Outcome) -> None:
        metrics.add_dimension(name="stage", value=self.lambda_settings.stage)
        for name, value in sorted(outcome.counts.items()):
            metrics.add_metric(name=name, unit=MetricUnit.Count, value=value)
        metrics.add_metric(
            name="FailedBatches",
            unit=MetricUnit.Count,
            value=int(outcome.error is not None),
        )


@cache
def runtime() -> LambdaRuntime:
    """Return this execution environment's runtime, built on first use."""
    built = LambdaRuntime.from_env()
    heap.settle("Lambda runtime")
    return built


Handler = Callable[[dict[str, Any], Any], dict[str, Any]]


def instrument(handle: Handler) -> Handler:
    """Return ``handle`` with Powertools' context logging and EMF metrics.

    The local event-source mapping wraps a runtime built for the emulators
    with this, so it runs exactly what Lambda runs.
    """
    return metrics.log_metrics(capture_cold_start_metric=True)(
        logger.inject_lambda_context(clear_state=True)(handle)
    )


def _handle(event: dict[str, Any], context: Any) -> dict[str, Any]:
    return runtime().handle(event, context)


#: the function's handler: see `LambdaRuntime.handle`
handler = instrument(_handle)


if os.environ.get("AWS_LAMBDA_FUNCTION_NAME") and not os.environ.get("AWS_SAM_LOCAL"):
    # Inside Lambda: build the clients in the init phase, so that the first
    # batch does not wait for them.
    runtime()
