"""A local Kinesis event-source mapping: invokes a handler as Lambda's service would.

It reads every shard of the emulated stream with GetRecords and invokes the
handler with event-source-mapping events: base64 data, ``eventID``,
``eventSourceARN``, at most ``batch_size`` records and 6 MB a batch, one
shard's records in order, a shard's children only after its parents ended.
It then does what the service does with the outcome:

* success: checkpoint after the batch;
* ``batchItemFailures``: checkpoint before the lowest reported sequence
  number and retry from it (only the batch's remaining records when
  ``bisect_on_error`` is on, else re-reading from it); an identifier not in
  the batch fails the whole batch;
* a function error (the handler raised): bisect the batch if it has more than
  one record and ``bisect_on_error`` is on (not counted as a retry), else
  retry it; after ``max_retries`` retries the records are discarded and
  their range goes to ``on_failure`` (the on-failure destination);
* tumbling windows: records are grouped by arrival time into windows of
  ``tumbling_window_secs``; each invocation gets the state the last
  successful one returned (a failed one's state is dropped), the last one of
  a window is flagged ``isFinalInvokeForWindow``, and a state over 1 MB ends
  the window early (``isWindowTerminatedEarly``).

Shards are served one invocation at a time, round robin; Lambda would run
them concurrently, which changes timing but not what each shard sees.
``chaos`` injects what the service does rarely: function errors before or
after the handler ran (a lost response) and duplicate deliveries.
"""

from __future__ import annotations

import json
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from consumers.aws_lambda.records import event_record
from consumers.aws_lambda.settings import LAMBDA_STATE_LIMIT_BYTES
from consumers.getrecords import to_kinesis_record

logger = logging.getLogger(__name__)

Invoke = Callable[[dict[str, Any], Any], dict[str, Any]]
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
GET_RECORDS_LIMIT = 10_000


class InjectedFaultError(RuntimeError):
    """A function error the chaos settings injected."""


@dataclass(frozen=True)
class MappingConfig:
    """The event-source-mapping settings this emulates (AWS names in comments)."""

    batch_size: int = 100  # BatchSize
    batching_window_secs: float = 0.0  # MaximumBatchingWindowInSeconds
    bisect_on_error: bool = True  # BisectBatchOnFunctionError
    max_retries: int = -1  # MaximumRetryAttempts (-1: until the record expires)
    tumbling_window_secs: int = 0  # TumblingWindowInSeconds (0: none)
    report_batch_item_failures: bool = True  # FunctionResponseTypes

    def __post_init__(self) -> None:
        if not 1 <= self.batch_size <= 10_000:
            raise ValueError(f"batch_size must be 1..10000, got {self.batch_size!r}")
        if not 0 <= self.tumbling_window_secs <= 900:
            raise ValueError(
                "tumbling_window_secs must be 0..900, "
                f"got {self.tumbling_window_secs!r}"
            )


@dataclass
class Chaos:
    """Probabilities of injected faults per invocation, with a seeded generator."""

    error_before: float = 0.0
    error_after: float = 0.0
    duplicate: float = 0.0
    seed: int = 0
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    def roll(self, probability: float) -> bool:
        return probability > 0 and self.rng.random() < probability


@dataclass
class MappingStats:
    """What the mapping did so far."""

    invocations: int = 0
    records_checkpointed: int = 0
    function_errors: int = 0
    partial_failures: int = 0
    bisections: int = 0
    duplicates: int = 0
    final_window_invokes: int = 0
    windows_terminated_early: int = 0
    invocation_secs: float = 0.0
    on_failure: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LocalContext:
    """The parts of Lambda's context object the handler and Powertools read."""

    function_name: str = "spanstream-local"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = (
        "arn:aws:lambda:us-east-1:000000000000:function:spanstream-local"
    )
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    timeout_secs: float = 300.0
    started: float = field(default_factory=time.monotonic)

    def get_remaining_time_in_millis(self) -> int:
        return int((self.timeout_secs - (time.monotonic() - self.started)) * 1000)


@dataclass
class _Window:
    start_secs: int
    state: dict[str, Any] = field(default_factory=dict)
    terminate_early: bool = False


@dataclass
class _Shard:
    shard_id: str
    parents: tuple[str, ...]
    iterator: str | None = None
    ended: bool = False
    #: fetched, not yet checkpointed records (event form), in order
    buffer: deque[dict[str, Any]] = field(default_factory=deque)
    #: batches to deliver before reading on (bisected halves, retries)
    queued: deque[list[dict[str, Any]]] = field(default_factory=deque)
    oldest_wait_started: float | None = None
    retries: int = 0
    #: the highest sequence number checkpointed so far
    checkpoint: int = -1
    window: _Window | None = None
    finished: bool = False


class LocalEventSourceMapping:
    """Feeds one stream's shards to ``invoke`` as Lambda's Kinesis mapping does."""

    def __init__(
        self,
        kinesis: Any,
        stream_name: str,
        invoke: Invoke,
        config: MappingConfig | None = None,
        *,
        region: str = "us-east-1",
        chaos: Chaos | None = None,
        context_factory: Callable[[], Any] = LocalContext,
    ) -> None:
        self._kinesis = kinesis
        self.stream_name = stream_name
        self._invoke = invoke
        self.config = config or MappingConfig()
        self._region = region
        self._chaos = chaos or Chaos()
        self._context_factory = context_factory
        summary = kinesis.describe_stream_summary(StreamName=stream_name)
        self.stream_arn = summary["StreamDescriptionSummary"]["StreamARN"]
        self.shards: dict[str, _Shard] = {}
        self.stats = MappingStats()

    # -- shards ------------------------------------------------------------
    def discover_shards(self) -> None:
        """Add every shard of the stream not yet known."""
        kwargs: dict[str, Any] = {"StreamName": self.stream_name}
        while True:
            response = self._kinesis.list_shards(**kwargs)
            for shard in response["Shards"]:
                if shard["ShardId"] not in self.shards:
                    parents = tuple(
                        p
                        for p in (
                            shard.get("ParentShardId"),
                            shard.get("AdjacentParentShardId"),
                        )
                        if p
                    )
                    self.shards[shard["ShardId"]] = _Shard(shard["ShardId"], parents)
            token = response.get("NextToken")
            if not token:
                return
            kwargs = {"NextToken": token}

    def _is_ready(self, shard: _Shard) -> bool:
        return all(
            parent not in self.shards or self.shards[parent].finished
            for parent in shard.parents
        )

    def _fetch(self, shard: _Shard) -> None:
        if shard.ended:
            return
        if shard.iterator is None:
            shard.iterator = self._kinesis.get_shard_iterator(
                StreamName=self.stream_name,
                ShardId=shard.shard_id,
                ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"]
        response = self._kinesis.get_records(
            ShardIterator=shard.iterator, Limit=GET_RECORDS_LIMIT
        )
        for record in response["Records"]:
            shard.buffer.append(self._event_record(shard.shard_id, record))
        shard.iterator = response.get("NextShardIterator")
        if shard.iterator is None:
            shard.ended = True

    def _event_record(self, shard_id: str, record: dict[str, Any]) -> dict[str, Any]:
        kinesis_record = to_kinesis_record(self.stream_name, shard_id, record)
        return event_record(kinesis_record, self.stream_arn, self._region)

    # -- batches -----------------------------------------------------------
    def _window_of(self, record: dict[str, Any]) -> int:
        size = self.config.tumbling_window_secs
        arrival = int(record["kinesis"]["approximateArrivalTimestamp"])
        return arrival // size * size

    def _next_batch(self, shard: _Shard) -> tuple[list[dict[str, Any]], bool] | None:
        """Return the next batch and whether it is a window's final one (None: wait)."""
        if shard.queued:
            return shard.queued.popleft(), False
        if len(shard.buffer) < self.config.batch_size:
            self._fetch(shard)
        if self.config.tumbling_window_secs and shard.window is not None:
            return self._window_batch(shard)
        if not shard.buffer:
            return None
        if len(shard.buffer) < self.config.batch_size and not shard.ended:
            now = time.monotonic()
            if shard.oldest_wait_started is None:
                shard.oldest_wait_started = now
            if now - shard.oldest_wait_started < self.config.batching_window_secs:
                return None
        shard.oldest_wait_started = None
        return self._take(shard, lambda record: True), False

    def _window_batch(self, shard: _Shard) -> tuple[list[dict[str, Any]], bool] | None:
        window = shard.window
        assert window is not None
        if window.terminate_early:
            return [], True
        start = window.start_secs
        batch = self._take(shard, lambda record: self._window_of(record) == start)
        # A window is over once a later record is buffered, or once its end
        # has passed with nothing more buffered (later records would arrive
        # after its end).
        later_buffered = (
            bool(shard.buffer) and self._window_of(shard.buffer[0]) != start
        )
        end_passed = not shard.buffer and (
            time.time() >= start + self.config.tumbling_window_secs
        )
        if later_buffered or end_passed:
            return batch, True
        return (batch, False) if batch else None

    def _take(
        self, shard: _Shard, belongs: Callable[[dict[str, Any]], bool]
    ) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = []
        payload = 0
        while shard.buffer and len(batch) < self.config.batch_size:
            record = shard.buffer[0]
            if not belongs(record):
                break
            size = len(record["kinesis"]["data"]) + 400
            if batch and payload + size > MAX_PAYLOAD_BYTES:
                break
            batch.append(shard.buffer.popleft())
            payload += size
        return batch

    # -- invoking ------------------------------------------------------------
    def step(self) -> int:
        """Deliver at most one batch to every ready shard; return invocations made."""
        invoked = 0
        for shard in list(self.shards.values()):
            if shard.finished or not self._is_ready(shard):
                continue
            if self.config.tumbling_window_secs and shard.window is None:
                if not shard.buffer and not shard.queued:
                    self._fetch(shard)
                head = shard.queued[0][0] if shard.queued else None
                if head is None and shard.buffer:
                    head = shard.buffer[0]
                if head is not None:
                    shard.window = _Window(self._window_of(head))
            picked = self._next_batch(shard)
            if picked is None:
                self._maybe_finish(shard)
                continue
            batch, is_final = picked
            if not batch and not is_final:
                continue
            self._deliver(shard, batch, is_final)
            invoked += 1
        return invoked

    def _maybe_finish(self, shard: _Shard) -> None:
        if (
            shard.ended
            and not shard.buffer
            and not shard.queued
            and shard.window is None
        ):
            shard.finished = True
            logger.info("shard %s read to its end", shard.shard_id)

    def _event(
        self, shard: _Shard, batch: list[dict[str, Any]], is_final: bool
    ) -> dict[str, Any]:
        event: dict[str, Any] = {"Records": batch}
        window = shard.window
        if window is not None:
            size = self.config.tumbling_window_secs
            event.update(
                window={
                    "start": _iso(window.start_secs),
                    "end": _iso(window.start_secs + size),
                },
                state=json.loads(json.dumps(window.state)),
                shardId=shard.shard_id,
                eventSourceARN=self.stream_arn,
                isFinalInvokeForWindow=is_final,
                isWindowTerminatedEarly=is_final and window.terminate_early,
            )
        return event

    def _deliver(
        self, shard: _Shard, batch: list[dict[str, Any]], is_final: bool
    ) -> None:
        event = self._event(shard, batch, is_final)
        self.stats.invocations += 1
        started = time.monotonic()
        try:
            if self._chaos.roll(self._chaos.error_before):
                raise InjectedFaultError("injected function error before the handler")
            response = self._invoke(event, self._context_factory()) or {}
            if self._chaos.roll(self._chaos.error_after):
                raise InjectedFaultError("injected function error after the handler")
        except Exception as exc:  # a function error, whatever the handler raised
            self.stats.invocation_secs += time.monotonic() - started
            self.stats.function_errors += 1
            logger.info("shard %s: function error: %s", shard.shard_id, exc)
            self._function_error(shard, batch, is_final)
            return
        self.stats.invocation_secs += time.monotonic() - started
        if shard.window is not None and "state" not in response:
            self.stats.function_errors += 1
            self._function_error(shard, batch, is_final)
            return
        failures = (
            response.get("batchItemFailures") or []
            if self.config.report_batch_item_failures
            else []
        )
        if failures:
            self._partial_failure(shard, batch, is_final, failures)
            return
        self._succeeded(shard, batch, is_final, response)

    def _succeeded(
        self,
        shard: _Shard,
        batch: list[dict[str, Any]],
        is_final: bool,
        response: dict[str, Any],
    ) -> None:
        shard.retries = 0
        self._checkpoint(shard, batch)
        window = shard.window
        if window is not None:
            if is_final:
                self.stats.final_window_invokes += 1
                if window.terminate_early:
                    self.stats.windows_terminated_early += 1
                    shard.window = _Window(window.start_secs)
                else:
                    shard.window = None
            else:
                window.state = response["state"]
                size = len(json.dumps(window.state, separators=(",", ":")))
                window.terminate_early = size > LAMBDA_STATE_LIMIT_BYTES
        if batch and self._chaos.roll(self._chaos.duplicate):
            self.stats.duplicates += 1
            shard.queued.appendleft(list(batch))

    def _function_error(
        self, shard: _Shard, batch: list[dict[str, Any]], is_final: bool
    ) -> None:
        if self.config.bisect_on_error and len(batch) > 1 and not is_final:
            self.stats.bisections += 1
            middle = len(batch) // 2
            shard.queued.appendleft(batch[middle:])
            shard.queued.appendleft(batch[:middle])
            return
        self._retry(shard, batch, is_final)

    def _partial_failure(
        self,
        shard: _Shard,
        batch: list[dict[str, Any]],
        is_final: bool,
        failures: list[dict[str, Any]],
    ) -> None:
        self.stats.partial_failures += 1
        positions = {
            record["kinesis"]["sequenceNumber"]: index
            for index, record in enumerate(batch)
        }
        reported = [failure.get("itemIdentifier") for failure in failures]
        if not all(isinstance(r, str) and r in positions for r in reported):
            self._function_error(shard, batch, is_final)
            return
        first = min(positions[r] for r in reported)
        self._checkpoint(shard, batch[:first])
        self._retry(shard, batch[first:], is_final)

    def _retry(
        self, shard: _Shard, batch: list[dict[str, Any]], is_final: bool
    ) -> None:
        shard.retries += 1
        limit = self.config.max_retries
        if 0 <= limit < shard.retries:
            shard.retries = 0
            self._discard(shard, batch)
            return
        if is_final or self.config.bisect_on_error:
            if is_final:
                # The final invoke of a window is retried as it was.
                for record in reversed(batch):
                    shard.buffer.appendleft(record)
                return
            shard.queued.appendleft(batch)
            return
        # Without bisection, Lambda retries by reading again from the record.
        for record in reversed(batch):
            shard.buffer.appendleft(record)

    def _discard(self, shard: _Shard, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        entry = {
            "shardId": shard.shard_id,
            "startSequenceNumber": batch[0]["kinesis"]["sequenceNumber"],
            "endSequenceNumber": batch[-1]["kinesis"]["sequenceNumber"],
            "batchSize": len(batch),
            "streamArn": self.stream_arn,
        }
        logger.error("retries exhausted, discarding %s", entry)
        self.stats.on_failure.append(entry)
        self._checkpoint(shard, batch)

    def _checkpoint(self, shard: _Shard, records: list[dict[str, Any]]) -> None:
        """Advance the shard's checkpoint over ``records``, counting new ones."""
        for record in records:
            sequence = int(record["kinesis"]["sequenceNumber"])
            if sequence > shard.checkpoint:
                shard.checkpoint = sequence
                self.stats.records_checkpointed += 1

    # -- running -------------------------------------------------------------
    def is_idle(self) -> bool:
        """True when no shard has an open window, a queued batch or buffered records."""
        return all(
            shard.window is None and not shard.queued and not shard.buffer
            for shard in self.shards.values()
        )

    def run(
        self,
        should_stop: Callable[[MappingStats], bool],
        deadline_secs: float,
        poll_interval_secs: float = 0.2,
    ) -> MappingStats:
        """Deliver batches until ``should_stop(stats)`` holds and nothing is pending.

        Raises TimeoutError after ``deadline_secs``.
        """
        started = time.monotonic()
        self.discover_shards()
        while not (should_stop(self.stats) and self.is_idle()):
            if time.monotonic() - started > deadline_secs:
                raise TimeoutError(
                    "local event-source mapping still running after "
                    f"{deadline_secs} s: {self.stats}"
                )
            if self.step() == 0:
                time.sleep(poll_interval_secs)
        return self.stats


def _iso(unix_secs: int) -> str:
    return datetime.fromtimestamp(unix_secs, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
