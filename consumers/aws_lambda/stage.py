"""What every stage's invocation gets and gives back, independent of Lambda's types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore.exceptions import BotoCoreError, ClientError

from spanstream.errors import SpanstreamError
from spanstream.model import KinesisRecord

#: Failures of an effect (a write, a read of the stream or of the checkpoint):
#: the records are reported for a retry. Anything else is a function error.
EFFECT_ERRORS = (SpanstreamError, ClientError, BotoCoreError)


@dataclass(frozen=True)
class WindowInput:
    """The tumbling-window part of an event."""

    state: dict[str, Any]
    is_final: bool = False
    is_terminated_early: bool = False


@dataclass
class BatchInput:
    """One invocation's records: one shard, in sequence order."""

    stream: str
    shard_id: str
    records: list[KinesisRecord]
    window: WindowInput | None = None


@dataclass
class Outcome:
    """What an invocation did, and from which record it must be retried.

    ``failed_from`` is the first record whose effects are not durable (every
    later record of the batch is reported with it); None means the batch
    succeeded, or that ``error`` concerns no record of it (then the handler
    raises). ``state`` is the window state to return.
    """

    failed_from: str | None = None
    error: BaseException | None = None
    state: dict[str, str] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    def count(self, name: str, value: int = 1) -> None:
        self.counts[name] = self.counts.get(name, 0) + value


class Stage(Protocol):
    def handle(self, batch: BatchInput) -> Outcome: ...
