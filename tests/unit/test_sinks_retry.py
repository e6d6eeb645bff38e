"""The retry policy: which errors it retries, how long it waits, when it stops."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, ReadTimeoutError

from spanstream.errors import SinkError
from spanstream.sinks.retry import RetryPolicy, is_retryable


def failing(errors: list[Exception]) -> Callable[[], str]:
    def operation() -> str:
        if errors:
            raise errors.pop(0)
        return "done"

    return operation


def client_error(code: str, status: int = 400) -> ClientError:
    return ClientError(
        {"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "PutItem",
    )


@pytest.mark.parametrize(
    ("exc", "retryable"),
    [
        (client_error("ThrottlingException"), True),
        (client_error("ProvisionedThroughputExceededException"), True),
        (client_error("InternalServerError"), True),
        (client_error("SlowDown"), True),
        # Kinesis names its 500 InternalFailure; the status says it all
        (client_error("InternalFailure", 500), True),
        (client_error("ServiceUnavailable", 503), True),
        (client_error("InternalFailure", 400), False),
        (EndpointConnectionError(endpoint_url="http://x"), True),
        (ReadTimeoutError(endpoint_url="http://x"), True),
        (client_error("ValidationException"), False),
        (client_error("ConditionalCheckFailedException"), False),
        (client_error("AccessDeniedException"), False),
    ],
)
def test_only_named_errors_are_retryable(exc: Exception, retryable: bool) -> None:
    assert is_retryable(exc) is retryable


def test_delays_grow_exponentially_with_full_jitter_and_cap() -> None:
    slept: list[float] = []
    policy = RetryPolicy(
        deadline_secs=1_000,
        base_delay_secs=0.1,
        max_delay_secs=1.0,
        sleep=slept.append,
        rng=lambda: 0.5,
        clock=lambda: 0.0,
    )
    errors: list[Exception] = [client_error("ThrottlingException") for _ in range(6)]
    assert policy.call(failing(errors), "t k") == "done"
    assert slept == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.5, 0.5])


def test_gives_up_at_the_deadline_with_one_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]

    def sleep(secs: float) -> None:
        now[0] += secs

    policy = RetryPolicy(
        deadline_secs=2.0, sleep=sleep, clock=lambda: now[0], rng=lambda: 1.0
    )
    errors: list[Exception] = [client_error("SlowDown") for _ in range(100)]
    with caplog.at_level(logging.WARNING), pytest.raises(SinkError, match="SlowDown"):
        policy.call(failing(errors), "s3://bucket/key")
    assert now[0] <= 2.0
    assert [r.levelno for r in caplog.records].count(logging.ERROR) == 1
    assert "s3://bucket/key" in caplog.records[-1].getMessage()


def test_passthrough_codes_reach_the_caller_unchanged() -> None:
    policy = RetryPolicy(sleep=lambda _: None)
    with pytest.raises(ClientError):
        policy.call(
            failing([client_error("ConditionalCheckFailedException")]),
            "t k",
            passthrough=("ConditionalCheckFailedException",),
        )
