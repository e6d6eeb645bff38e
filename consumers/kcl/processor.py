"""The KCL record processor: one process per shard lease, run by the MultiLangDaemon.

The daemon starts ``python -m consumers.kcl.processor`` for every lease it
holds and talks to it over stdin/stdout (so nothing else may write to
stdout: logs go to stderr). Settings come from ``SPANSTREAM_*`` in the
environment the daemon passes on; ``SPANSTREAM_KCL_STAGE`` picks what the
process does with its shard:

``spans``   decode, enrich and aggregate the span stream (`ShardProcessor`),
            forwarding spans to the trace stream when
            ``SPANSTREAM_TRACE_STREAM_NAME`` is set;
``traces``  assemble traces from the trace stream (`TraceShardProcessor`).

Either way the shard is driven by `spanstream.flushlog.ExactlyOnceShard`:
flushes are recorded before they write and repeated exactly by the next
owner after a crash; checkpoints follow durable writes only. A write that
still fails after the sinks' retries ends the process with status 1: the
daemon then stops too (that is how the MultiLangDaemon treats a failed
child) and its leases move to other workers, which repeat the flush.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from amazon_kclpy import kcl
from amazon_kclpy.checkpoint_error import CheckpointError
from amazon_kclpy.v3 import processor

from consumers.logs import log_json_to_stderr
from spanstream import heap
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.errors import ConfigError, SpanstreamError
from spanstream.flushlog import (
    ClocklessFlushes,
    ExactlyOnceShard,
    Flushable,
    Position,
    ShardFlushLog,
)
from spanstream.model import KinesisRecord, RecordRef
from spanstream.pipeline import ShardProcessor, TraceShardProcessor
from spanstream.sinks.factory import make_sinks

logger = logging.getLogger("consumers.kcl.processor")

STAGE_VARIABLE = "SPANSTREAM_KCL_STAGE"
STAGES = ("spans", "traces")
#: KCL checkpoint errors worth another attempt; any other means the lease is gone.
_RETRYABLE_CHECKPOINT_ERRORS = {
    "ThrottlingException",
    "KinesisClientLibDependencyException",
}
_CHECKPOINT_ATTEMPTS = 5
_LEASE_GONE_ERRORS = {"ShutdownException", "InvalidStateException"}
#: How long a record processor fenced off by another claim of its shard waits
#: for the KCL's leaseLost before concluding it does hold the lease. The KCL
#: renews leases every third of ``failoverTimeMillis`` (10 s in production,
#: 3 s in tests), so a zombie is told well within this.
FENCE_GRACE_SECS = 30.0
#: What a record processor logs when it exits for that reason (the launcher,
#: like the tests' fleet, then starts the daemon again).
FENCED_EXIT_MESSAGE = "fenced off by another claim but still holding the lease"


def stage_from_env(environ: dict[str, str] | None = None) -> str:
    """Return ``SPANSTREAM_KCL_STAGE`` (default ``spans``); raise ConfigError."""
    value = (os.environ if environ is None else environ).get(STAGE_VARIABLE, "spans")
    if value not in STAGES:
        raise ConfigError(f"{STAGE_VARIABLE} must be one of {STAGES}, got {value!r}")
    return value


def to_kinesis_record(stream: str, shard_id: str, record: Any) -> KinesisRecord:
    """Return an `amazon_kclpy.messages.Record` as a `KinesisRecord`."""
    return KinesisRecord(
        record.binary_data,
        RecordRef(
            stream,
            shard_id,
            record.sequence_number,
            int(record.sub_sequence_number or 0),
            record.partition_key,
            int(record.timestamp_millis),
        ),
    )


class LeaseGone(Exception):
    """The KCL refused a checkpoint because this worker no longer holds the lease."""


def checkpoint_with(checkpointer: Any) -> Callable[[str | None, int | None], None]:
    """Return ``checkpoint(sequence_number, sub)`` over a kclpy checkpointer.

    Throttling is retried with backoff; a lost lease raises `LeaseGone`.
    """

    def checkpoint(sequence_number: str | None, sub: int | None) -> None:
        for attempt in range(1, _CHECKPOINT_ATTEMPTS + 1):
            try:
                checkpointer.checkpoint(sequence_number, sub)
                return
            except CheckpointError as exc:
                name = str(exc.value)
                if name in _LEASE_GONE_ERRORS:
                    raise LeaseGone(name) from exc
                if name not in _RETRYABLE_CHECKPOINT_ERRORS:
                    raise
                if attempt == _CHECKPOINT_ATTEMPTS:
                    raise
                logger.warning(
                    "checkpoint %s: %s; retry %d", sequence_number, name, attempt
                )
                time.sleep(0.2 * 2**attempt)

    return checkpoint


class SpanstreamRecordProcessor(processor.RecordProcessorBase):
    """One shard lease: feeds the core and checkpoints what is durable."""

    def __init__(
        self,
        settings: Settings,
        stage: str,
        client_factory: Callable[[str, Settings], Any] = make_client,
        wall_clock: Callable[[], float] = time.time,
        monotonic_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        self._stage = stage
        self._client_factory = client_factory
        self._wall_clock = wall_clock
        self._monotonic_clock = monotonic_clock
        self._shard: ExactlyOnceShard | None = None
        self._stream = ""
        self._shard_id = ""
        self._lease_lost = False
        self._fenced_since: float | None = None

    # -- the four callbacks of the v3 interface, plus initialize ----------
    def initialize(self, initialize_input: Any) -> None:
        self._shard_id = initialize_input.shard_id
        self._stream = (
            self._settings.stream_name
            if self._stage == "spans"
            else self._settings.trace_stream_name
        )
        dynamodb = self._client_factory("dynamodb", self._settings)
        self._shard = ExactlyOnceShard(
            self._make_processor(dynamodb),
            ShardFlushLog(dynamodb, self._settings, self._stream, self._shard_id),
            self._settings.flush_interval_secs,
        )
        checkpoint = Position(
            initialize_input.sequence_number or "TRIM_HORIZON",
            int(initialize_input.sub_sequence_number or 0),
        )
        # One process per lease: what it built so far stays for its lifetime.
        heap.settle(f"record processor of {self._shard_id}")
        logger.info(
            "lease taken: %s/%s (stage %s) from checkpoint %s",
            self._stream,
            self._shard_id,
            self._stage,
            checkpoint.sequence_number,
        )
        self._run(lambda shard: shard.start(checkpoint))

    def process_records(self, process_records_input: Any) -> None:
        records = [
            to_kinesis_record(self._stream, self._shard_id, record)
            for record in process_records_input.records
        ]
        clock_secs = None
        if self._stage == "spans" and process_records_input.millis_behind_latest == 0:
            # Caught up: an idle shard tells the trace stage it has read up to
            # now, or the trace stage would wait for it forever.
            clock_secs = self._wall_clock()
        checkpoint = checkpoint_with(process_records_input.checkpointer)
        self._run(lambda shard: shard.process(records, checkpoint, clock_secs))

    def lease_lost(self, lease_lost_input: Any) -> None:
        logger.info("lease lost: %s/%s", self._stream, self._shard_id)
        self._lease_lost = True
        if self._shard is not None:
            self._shard.lease_lost()

    def shard_ended(self, shard_ended_input: Any) -> None:
        checkpoint = checkpoint_with(shard_ended_input.checkpointer)
        self._run(lambda shard: shard.end_of_shard(checkpoint), last_call=True)
        logger.info("shard ended: %s/%s", self._stream, self._shard_id)

    def shutdown_requested(self, shutdown_requested_input: Any) -> None:
        checkpoint = checkpoint_with(shutdown_requested_input.checkpointer)
        self._run(lambda shard: shard.shutdown(checkpoint))
        logger.info("shut down on request: %s/%s", self._stream, self._shard_id)

    # -- helpers -----------------------------------------------------------
    def _make_processor(self, dynamodb: Any) -> Flushable:
        s3 = self._client_factory("s3", self._settings)
        kinesis = None
        if self._stage == "spans" and self._settings.trace_stream_name:
            kinesis = self._client_factory("kinesis", self._settings)
        sinks = make_sinks(
            self._settings, s3, dynamodb, kinesis, forward_spans=kinesis is not None
        )
        if self._stage == "traces":
            return TraceShardProcessor(
                self._settings, self._stream, self._shard_id, sinks
            )
        return ClocklessFlushes(
            ShardProcessor(self._settings, self._stream, self._shard_id, sinks)
        )

    def _run(
        self, action: Callable[[ExactlyOnceShard], None], last_call: bool = False
    ) -> None:
        """Run ``action`` on the shard; a lost lease drops state, a failure exits.

        ``last_call``: the KCL calls nothing after this one (shard end).
        """
        if self._shard is None:
            raise SystemExit(f"{self._shard_id}: not initialized")
        try:
            action(self._shard)
        except LeaseGone as exc:
            logger.info("%s/%s: lease gone (%s)", self._stream, self._shard_id, exc)
            self._lease_lost = True
            self._shard.lease_lost()
        except (SpanstreamError, CheckpointError):
            # Nothing was checkpointed past what is durable; the recorded
            # flush is repeated by the next owner.
            logger.exception(
                "%s/%s: giving up; the next lease owner repeats the flush",
                self._stream,
                self._shard_id,
            )
            raise SystemExit(1) from None
        self._exit_if_fenced_while_leased(last_call)

    def _exit_if_fenced_while_leased(self, last_call: bool) -> None:
        """Exit if another claim fenced this process off but the lease stayed.

        Another claim of the shard (`spanstream.flushlog`) fences this
        process off: it writes nothing more. Usually that claim is the new
        owner's and the KCL soon says leaseLost here. If the KCL keeps
        calling past `FENCE_GRACE_SECS`, or calls for the last time, the
        claim came from a zombie that lost the lease again, and this process
        owns a shard it may no longer write. It cannot read its records
        again, so it exits: the daemon ends with it, its leases move, and
        the next owner replays from the last checkpoint.
        """
        if self._shard is None or not self._shard.fenced or self._lease_lost:
            return
        now = self._monotonic_clock()
        if self._fenced_since is None:
            self._fenced_since = now
        if last_call or now - self._fenced_since >= FENCE_GRACE_SECS:
            logger.error(
                "%s/%s: %s; exiting so that the lease moves and the shard is replayed",
                self._stream,
                self._shard_id,
                FENCED_EXIT_MESSAGE,
            )
            raise SystemExit(1)


def main() -> int:
    """Serve one shard lease over stdin/stdout until the daemon closes stdin."""
    log_json_to_stderr(os.environ.get("SPANSTREAM_KCL_LOG_LEVEL", "INFO"))
    try:
        settings = Settings.from_env()
        stage = stage_from_env()
        if stage == "traces" and not settings.trace_stream_name:
            raise ConfigError(
                "SPANSTREAM_KCL_STAGE=traces needs SPANSTREAM_TRACE_STREAM_NAME"
            )
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return 2
    kcl.KCLProcess(SpanstreamRecordProcessor(settings, stage)).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
