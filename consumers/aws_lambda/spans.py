"""Stage 1 on Lambda: decode, archive and aggregate one batch of one shard.

Each invocation runs the core's `ShardProcessor` over whole *units* (see
`consumers.aws_lambda.units`): the last started unit again if the batch holds
any of its records, then the batch's new records as a new unit, started in
the checkpoint table before any of its effects is written. A unit's archive
keys and aggregate ranges therefore never depend on how Lambda cut the
batch. If any effect fails, the batch is reported failed from its first
record that is not a duplicate, so Lambda retries all of it; poison records
become dead letters and never fail anything.

With a tumbling window, aggregates go to the window state instead and are
written once per window (or earlier, when the state would outgrow its
budget); archive objects and dead letters are still written per unit.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from consumers.aws_lambda.checkpoints import CheckpointStore, SequenceRange, ShardMark
from consumers.aws_lambda.settings import LambdaSettings
from consumers.aws_lambda.stage import EFFECT_ERRORS, BatchInput, Outcome, WindowInput
from consumers.aws_lambda.units import StreamReader, covers, plan_batch, unit_of
from consumers.aws_lambda.window import WindowState, state_size_bytes
from spanstream.aggregate.types import AggregateDelta, TraceSummary
from spanstream.config import Settings
from spanstream.model import KinesisRecord
from spanstream.pipeline import ShardProcessor, Sinks

logger = logging.getLogger(__name__)


class _HeldAggregates:
    """An aggregate sink that keeps the deltas a unit produced, for the window."""

    def __init__(self) -> None:
        self.deltas: list[AggregateDelta] = []

    def write(self, deltas: list[AggregateDelta]) -> None:
        self.deltas.extend(deltas)

    def write_summaries(self, summaries: list[TraceSummary]) -> None:
        raise TypeError("stage 1 writes no trace summaries")


class SpansStage:
    """Handles batches of the span stream (stage 1)."""

    def __init__(
        self,
        settings: Settings,
        lambda_settings: LambdaSettings,
        sinks: Sinks,
        checkpoints: CheckpointStore,
        reader: StreamReader,
    ) -> None:
        self.settings = settings
        self.lambda_settings = lambda_settings
        self.sinks = sinks
        self.checkpoints = checkpoints
        self.reader = reader

    def handle(self, batch: BatchInput) -> Outcome:
        """Make every effect of ``batch`` durable, or say where to retry from.

        Never raises for a failed write: the outcome names the first record to
        retry and keeps the incoming window state. Raises
        `consumers.aws_lambda.window.WindowStateError` for a state it cannot
        read.
        """
        window = WindowState.from_event(batch.window.state) if batch.window else None
        outcome = Outcome(state=dict(batch.window.state) if batch.window else None)
        outcome.count("Records", len(batch.records))
        plan = plan_batch(batch.records, None)
        try:
            mark = self.checkpoints.read(batch.stream, batch.shard_id)
            # With a window, a unit is complete only once Lambda keeps the
            # state it was merged into, which the handler cannot know.
            done = mark.done_through if window is None else None
            plan = plan_batch(batch.records, mark.unit, done)
            outcome.count("DuplicateRecords", len(plan.duplicates))
            if plan.redo:
                assert mark.unit is not None
                mark = self._redo(batch, mark, mark.unit, plan.redo, window, outcome)
            if plan.fresh:
                unit = unit_of(plan.fresh)
                mark = self.checkpoints.write(mark, unit=unit)
                self._run_unit(batch, mark, unit, plan.fresh, window, outcome)
            if window is not None:
                assert batch.window is not None
                outcome.state = self._close(batch, batch.window, mark, window, outcome)
            elif mark.unit is not None and (plan.redo or plan.fresh):
                # Later deliveries of these records can now be dropped
                # instead of redone.
                self.checkpoints.write(mark, done_through=mark.unit.last)
        except EFFECT_ERRORS as exc:
            outcome.failed_from = plan.first_effective_sequence_number
            outcome.error = exc
            logger.warning(
                "%s/%s: effects not durable, retrying from %s: %s",
                batch.stream,
                batch.shard_id,
                outcome.failed_from,
                exc,
            )
        return outcome

    def _redo(
        self,
        batch: BatchInput,
        mark: ShardMark,
        unit: SequenceRange,
        records: list[KinesisRecord],
        window: WindowState | None,
        outcome: Outcome,
    ) -> ShardMark:
        if not covers(records, unit):
            records = self.reader.read_unit(batch.stream, batch.shard_id, unit)
            outcome.count("UnitRecordsReread", len(records))
        logger.info("%s/%s: redoing unit %s..%s", batch.stream, batch.shard_id, *unit)
        outcome.count("UnitsRedone")
        self._run_unit(batch, mark, unit, records, window, outcome)
        return mark

    def _run_unit(
        self,
        batch: BatchInput,
        mark: ShardMark,
        unit: SequenceRange,
        records: list[KinesisRecord],
        window: WindowState | None,
        outcome: Outcome,
    ) -> None:
        held = _HeldAggregates()
        sinks = self.sinks if window is None else replace(self.sinks, aggregates=held)
        processor = ShardProcessor(self.settings, batch.stream, batch.shard_id, sinks)
        outcome.count("Spans", processor.process(records))
        result = processor.flush()
        outcome.count("DeadLetters", result.dead_letters)
        if (
            window is None
            or window.has_merged(unit)
            or _is_through(unit, mark.aggregates_through)
        ):
            return
        for delta in held.deltas:
            window.add(unit, delta)
        window.mark_merged(unit)

    def _close(
        self,
        batch: BatchInput,
        window_input: WindowInput,
        mark: ShardMark,
        window: WindowState,
        outcome: Outcome,
    ) -> dict[str, str]:
        """Write the window's aggregates if it ends or outgrew its budget."""
        state = window.to_event()
        size = state_size_bytes(state)
        too_big = size > self.lambda_settings.max_state_bytes
        if window_input.is_terminated_early:
            logger.warning(
                "%s/%s: Lambda ended the window early (state over 1 MB)",
                batch.stream,
                batch.shard_id,
            )
            outcome.count("WindowsTerminatedEarly")
        if not (window_input.is_final or too_big):
            return state
        if too_big:
            logger.info(
                "%s/%s: window state of %d bytes over its budget of %d: "
                "writing its aggregates early",
                batch.stream,
                batch.shard_id,
                size,
                self.lambda_settings.max_state_bytes,
            )
            outcome.count("WindowsWrittenEarly")
        delta = window.take(batch.stream, batch.shard_id)
        if delta is not None:
            if not delta.is_empty():
                self.sinks.aggregates.write([delta])
            self.checkpoints.write(
                mark, aggregates_through=delta.flush_range.last_sequence_number
            )
            outcome.count("WindowWrites")
        return window.to_event()


def _is_through(unit: SequenceRange, through: str | None) -> bool:
    return through is not None and int(unit.last) <= int(through)


def window_input(event: Any) -> WindowInput | None:
    """Return the window part of a Powertools `KinesisStreamEvent` (None: no window)."""
    if event.window is None:
        return None
    return WindowInput(
        event.state,
        bool(event.is_final_invoke_for_window),
        bool(event.is_window_terminated_early),
    )
