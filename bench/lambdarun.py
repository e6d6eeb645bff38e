"""The Lambda path, measured: the real handler fed live by the local mapping.

`measure_lambda` puts generated traces at the steady rate for a while on a
stream of its own and, at the same time, runs the Lambda handler
(`consumers.aws_lambda.handler.LambdaRuntime`, wrapped in the same
Powertools instrumentation as on Lambda) through the local event-source
mapping (`consumers.aws_lambda.esm`) with the batch size and batching window
below, until every record put is checkpointed. What it returns is counted,
not modelled:

* the handler's AWS calls (S3, DynamoDB, its Kinesis re-reads), with their
  write and read units, from `bench.calls.CallCounter`; the checkpoint
  table's writes are among them;
* Lambda requests: the mapping's invocations;
* GB-seconds: each invocation's measured duration, rounded up to the
  millisecond as Lambda bills it, times the function's memory.

The mapping's own GetRecords polls are not billed to the function's owner
(standard, not enhanced fan-out, consumers) and are not counted. Durations
are against the emulators on this machine, with its CPU shared by the put
loop: a figure for comparing shapes in one run, not a prediction of AWS's.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any

from bench.calls import CallCounter
from bench.e2e import Producer
from consumers.aws_lambda.checkpoints import table_spec
from consumers.aws_lambda.esm import LocalEventSourceMapping, MappingConfig
from consumers.aws_lambda.handler import LambdaRuntime, instrument
from consumers.aws_lambda.handler import logger as handler_logger
from consumers.aws_lambda.settings import LambdaSettings
from devenv.resources import create_resources, create_table
from spanstream.aws import make_client
from spanstream.config import Settings

logger = logging.getLogger(__name__)

#: The event-source mapping and function settings priced here. The batching
#: window is at most the flush interval (10 s by default), so that a batch's
#: aggregates land within the lag the other shapes are held to.
LAMBDA_BATCH_RECORDS = 1_000
LAMBDA_BATCHING_WINDOW_SECS = 10.0
LAMBDA_MEMORY_MB = 1_024
POLL_SECS = 0.05


@dataclass
class LambdaRun:
    """What the measured Lambda run did."""

    spans: int
    records: int
    counted: CallCounter
    invocation_secs: list[float] = field(default_factory=list)
    wall_secs: float = 0.0
    memory_mb: int = LAMBDA_MEMORY_MB

    @property
    def invocations(self) -> int:
        return len(self.invocation_secs)

    @property
    def billed_gb_seconds(self) -> float:
        """Each invocation rounded up to 1 ms, times the memory in GB."""
        billed_secs = sum(math.ceil(s * 1000) / 1000 for s in self.invocation_secs)
        return billed_secs * self.memory_mb / 1024

    @property
    def spans_per_invocation_sec(self) -> float:
        return self.spans / max(sum(self.invocation_secs), 1e-9)

    def median_invocation_secs(self) -> float:
        ordered = sorted(self.invocation_secs)
        return ordered[len(ordered) // 2] if ordered else 0.0


def lambda_settings_for(settings: Settings) -> Settings:
    """Return ``settings`` renamed for the Lambda run's own stream and stores."""
    return replace(
        settings,
        stream_name="bench-lambda-spans",
        table_prefix="bench-lambda-",
        bucket="bench-lambda-archive",
        trace_stream_name="",
    )


def measure_lambda(
    settings: Settings,
    spans_per_sec: float,
    duration_secs: float,
    *,
    shard_count: int = 4,
    seed: int = 42,
    in_process_producer: bool = False,
    batching_window_secs: float = LAMBDA_BATCHING_WINDOW_SECS,
    drain_deadline_secs: float = 180.0,
) -> LambdaRun:
    """Put traffic for ``duration_secs`` and run the handler on it live.

    ``settings`` must point at a live backend (`bench.e2e.aws_backend`); the
    run uses its own names (`lambda_settings_for`). Raises TimeoutError when
    the mapping has not checkpointed every record ``drain_deadline_secs``
    after the put loop ended.
    """
    settings = lambda_settings_for(settings)
    kinesis, dynamodb, s3 = (
        make_client(name, settings) for name in ("kinesis", "dynamodb", "s3")
    )
    create_resources(settings, kinesis, dynamodb, s3, shard_count=shard_count)
    lambda_settings = LambdaSettings.from_env(settings, {})
    create_table(dynamodb, table_spec(lambda_settings.checkpoint_table), 60)
    counter = CallCounter()
    clients = {
        name: counter.attach(make_client(name, settings))
        for name in ("s3", "dynamodb", "kinesis")
    }
    runtime = LambdaRuntime(settings, lambda_settings, clients)
    run = LambdaRun(spans=0, records=0, counted=counter)
    mapping = LocalEventSourceMapping(
        kinesis,
        settings.stream_name,
        _timed(instrument(runtime.handle), run.invocation_secs),
        MappingConfig(
            batch_size=LAMBDA_BATCH_RECORDS,
            batching_window_secs=batching_window_secs,
        ),
        region=settings.region,
    )
    with _quiet_handler():
        _drive(
            mapping,
            run,
            settings,
            spans_per_sec,
            duration_secs,
            seed,
            in_process_producer,
            drain_deadline_secs,
        )
    logger.info(
        "lambda: %d records, %d spans, %d invocations in %.1f s",
        run.records,
        run.spans,
        run.invocations,
        run.wall_secs,
    )
    return run


def _drive(
    mapping: LocalEventSourceMapping,
    run: LambdaRun,
    settings: Settings,
    spans_per_sec: float,
    duration_secs: float,
    seed: int,
    in_process_producer: bool,
    drain_deadline_secs: float,
) -> None:
    producer = Producer(
        settings, spans_per_sec, duration_secs, seed, in_process_producer
    )
    started = time.monotonic()
    mapping.discover_shards()
    deadline: float | None = None
    while True:
        invoked = mapping.step()
        if deadline is None and producer.finished():
            puts, _ = producer.result()
            run.records = len(puts)
            run.spans = sum(p.span_count for p in puts)
            deadline = time.monotonic() + drain_deadline_secs
        if deadline is not None:
            checkpointed = mapping.stats.records_checkpointed
            if checkpointed >= run.records and mapping.is_idle():
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"the local mapping checkpointed {checkpointed} of "
                    f"{run.records} records in time: {mapping.stats}"
                )
        if invoked == 0:
            time.sleep(POLL_SECS)
    producer.join()
    run.wall_secs = time.monotonic() - started


def _timed(invoke: Any, durations: list[float]) -> Any:
    """Return ``invoke`` appending each call's duration to ``durations``."""

    def timed(event: dict[str, Any], context: Any) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            return dict(invoke(event, context))
        finally:
            durations.append(time.perf_counter() - started)

    return timed


@contextlib.contextmanager
def _quiet_handler() -> Any:
    """Keep the handler's JSON log lines and EMF metrics off the bench's stdout."""
    level = handler_logger.log_level
    handler_logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        handler_logger.setLevel(level)
