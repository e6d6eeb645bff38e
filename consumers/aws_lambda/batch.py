"""Powertools' Kinesis batch processor, with records that succeed or fail by unit.

Powertools' `BatchProcessor` calls a handler per record and reports each
failed record in ``batchItemFailures``. spanstream's effects are made durable
per unit of records, not per record, so this processor calls its handler
once with every record of the batch, as Powertools' Kinesis data classes,
and marks records failed from the outcome's ``failed_from`` on. Building
the response (lowest failed sequence number first, the checkpoint Lambda
retries from) stays Powertools'.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType
from aws_lambda_powertools.utilities.data_classes.kinesis_stream_event import (
    KinesisStreamRecord,
)

from consumers.aws_lambda.stage import Outcome

BatchHandler = Callable[[list[KinesisStreamRecord]], Outcome]


class UnitBatchProcessor(BatchProcessor):
    """Runs a whole-batch handler and reports its failed records to Lambda.

    A batch in which every record failed is reported, not raised: raising
    would make Lambda bisect the batch, which helps only against bad records,
    and those never fail here.
    """

    def __init__(self) -> None:
        super().__init__(
            EventType.KinesisDataStreams, raise_on_entire_batch_failure=False
        )
        self.outcome = Outcome()

    def process(self) -> list[tuple[Any, ...]]:
        """Call the handler on the whole batch; return per-record results."""
        records = [KinesisStreamRecord(record) for record in self.records]
        handler: BatchHandler = self.handler
        self.outcome = outcome = handler(records)
        error = outcome.error
        failed_from = (
            int(outcome.failed_from) if outcome.failed_from is not None else None
        )
        results: list[tuple[Any, ...]] = []
        for record in records:
            sequence = int(record.kinesis.sequence_number)
            if (
                failed_from is not None
                and error is not None
                and sequence >= failed_from
            ):
                results.append(
                    self.failure_handler(
                        record, (type(error), error, error.__traceback__)
                    )
                )
            else:
                results.append(self.success_handler(record, None))
        return results
