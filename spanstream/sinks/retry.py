"""Retries of retryable AWS errors, on top of botocore's own.

botocore's ``standard`` mode (see `spanstream.aws`) already retries each call
a few times. A sink write must survive longer throttling than that, and also
partial results (``UnprocessedKeys``, ``UnprocessedItems``) that are not
errors at all, so the sinks wrap their calls in a `RetryPolicy`: jittered
exponential backoff ("full jitter") under a deadline, a warning per retry and
one error, as a `SinkError`, when the deadline would be passed.

Only the error codes in `RETRYABLE_ERROR_CODES`, answers with a transient
5xx status (whatever their code: Kinesis says ``InternalFailure``) and
connection or timeout errors are retried; anything else is a bug or a
permission problem that waiting does not fix.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import TypeVar

from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from spanstream.errors import SinkError

logger = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_ERROR_CODES = frozenset(
    {
        # DynamoDB
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "RequestLimitExceeded",
        "InternalServerError",
        "ServiceUnavailable",
        # S3
        "SlowDown",
        "InternalError",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
        "Throttling",
        "503",
        "500",
    }
)
#: Statuses botocore's standard mode retries whatever the error code says.
RETRYABLE_HTTP_STATUSES = frozenset({500, 502, 503, 504})


def error_code(exc: BaseException) -> str | None:
    """Return the AWS error code of a `ClientError`, else None."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return None


def is_retryable(exc: BaseException) -> bool:
    """Return True for throttling, 5xx, connection and timeout errors."""
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        return True
    if isinstance(exc, ClientError):
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if status in RETRYABLE_HTTP_STATUSES:
            return True
    return error_code(exc) in RETRYABLE_ERROR_CODES


@dataclass
class RetryPolicy:
    """Jittered exponential backoff under a deadline.

    ``clock`` (monotonic seconds), ``sleep`` and ``rng`` (uniform in [0, 1))
    are injectable so that tests run without waiting.
    """

    deadline_secs: float = 60.0
    base_delay_secs: float = 0.05
    max_delay_secs: float = 5.0
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    rng: Callable[[], float] = random.random

    def start(self, what: str) -> Backoff:
        """Return a `Backoff` for one operation described by ``what``."""
        return Backoff(self, what, self.clock() + self.deadline_secs)

    def call(
        self,
        operation: Callable[[], T],
        what: str,
        passthrough: Collection[str] = (),
    ) -> T:
        """Return ``operation()``, retrying retryable AWS errors.

        ``what`` names the table or bucket and the key, never a value. Error
        codes in ``passthrough`` are re-raised unchanged for the caller to
        handle (``ConditionalCheckFailedException``); every other failure
        becomes a `SinkError`.
        """
        backoff = self.start(what)
        while True:
            try:
                return operation()
            except (ClientError, BotoConnectionError, HTTPClientError) as exc:
                if error_code(exc) in passthrough:
                    raise
                if not is_retryable(exc):
                    raise SinkError(f"{what}: {_describe(exc)}") from exc
                backoff.wait(_describe(exc), exc)


class Backoff:
    """The retry state of one operation: attempts so far and its deadline."""

    def __init__(self, policy: RetryPolicy, what: str, deadline: float) -> None:
        self.policy = policy
        self.what = what
        self.deadline = deadline
        self.attempts = 0

    def wait(self, reason: str, exc: BaseException | None = None) -> None:
        """Sleep before the next attempt, or raise `SinkError` past the deadline."""
        policy = self.policy
        cap = min(policy.max_delay_secs, policy.base_delay_secs * 2**self.attempts)
        delay = cap * policy.rng()
        self.attempts += 1
        if policy.clock() + delay > self.deadline:
            logger.error(
                "%s: giving up after %d attempts: %s", self.what, self.attempts, reason
            )
            message = (
                f"{self.what}: gave up after {self.attempts} attempts "
                f"within {policy.deadline_secs}s: {reason}"
            )
            raise SinkError(message) from exc
        logger.warning(
            "%s: retry %d in %.3fs: %s", self.what, self.attempts, delay, reason
        )
        policy.sleep(delay)


def _describe(exc: BaseException) -> str:
    code = error_code(exc)
    if code is not None:
        return code
    return type(exc).__name__
