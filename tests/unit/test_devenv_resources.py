"""`devenv.resources.delete_stream` against a scripted Kinesis client."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from devenv.ports import DeadlineExceeded
from devenv.resources import delete_stream


def _error(code: str, operation: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, operation)


class ReshardingKinesis:
    """Refuses DeleteStream ``refusals`` times (a stream still UPDATING after
    a split), then takes it; the stream is gone from then on."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.delete_calls = 0
        self.deleted = False

    def delete_stream(self, **kwargs: Any) -> None:
        self.delete_calls += 1
        if self.delete_calls <= self.refusals:
            raise _error("ResourceInUseException", "DeleteStream")
        self.deleted = True

    def describe_stream_summary(self, **kwargs: Any) -> dict[str, Any]:
        if self.deleted:
            raise _error("ResourceNotFoundException", "DescribeStreamSummary")
        return {"StreamDescriptionSummary": {"StreamStatus": "DELETING"}}


def test_a_stream_being_resharded_is_deleted_once_it_takes_the_request() -> None:
    kinesis = ReshardingKinesis(refusals=2)

    delete_stream(kinesis, "spans", timeout_secs=10)

    assert kinesis.deleted
    assert kinesis.delete_calls == 3


def test_a_stream_that_never_takes_the_request_fails_naming_it() -> None:
    kinesis = ReshardingKinesis(refusals=10**6)

    with pytest.raises(DeadlineExceeded, match="stream spans accepting its deletion"):
        delete_stream(kinesis, "spans", timeout_secs=0.6)


def test_a_missing_stream_is_already_deleted() -> None:
    class Missing(ReshardingKinesis):
        def delete_stream(self, **kwargs: Any) -> None:
            raise _error("ResourceNotFoundException", "DeleteStream")

    delete_stream(Missing(refusals=0), "spans", timeout_secs=1)
