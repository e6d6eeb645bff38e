"""PutRecords with an outcome per record, for re-driving dead letters.

`spanstream.sinks.kinesis.put_records` puts all or raises; a re-drive must
know which records were put (and where) and which were not, so that it moves
only the dead letters whose record is on the stream again. Records go in
PutRecords batches of at most 500 records and 5 MiB; the entries of a partial
failure that failed with a retryable code are sent again, alone, with
jittered exponential backoff until the `RetryPolicy` deadline. Whole-call
errors are retried by the policy too (throttling, 5xx, connection errors).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any, NamedTuple

from spanstream.deadletters.routing import Routing
from spanstream.errors import SinkError
from spanstream.sinks.kinesis import MAX_RECORD_BYTES, RETRYABLE_ENTRY_ERRORS, batches
from spanstream.sinks.retry import RetryPolicy

logger = logging.getLogger(__name__)


class PutEntry(NamedTuple):
    """One record to put."""

    data: bytes
    routing: Routing


class PutResult(NamedTuple):
    """Where a record was put, or why not (``error`` is empty when it was)."""

    shard_id: str = ""
    sequence_number: str = ""
    error: str = ""

    @property
    def is_put(self) -> bool:
        return not self.error


def put_entries(
    kinesis_client: Any,
    stream_name: str,
    entries: Sequence[PutEntry],
    retry: RetryPolicy,
) -> list[PutResult]:
    """Put ``entries`` on ``stream_name``; return one result each, in order.

    Never raises for a record that was not put: its result names the error
    code (and message) of its last attempt, or says it is over the 1 MiB
    Kinesis record limit.
    """
    results = [PutResult(error="not attempted")] * len(entries)
    sendable = []
    for index, entry in enumerate(entries):
        size = len(entry.data) + len(entry.routing.partition_key.encode())
        if size > MAX_RECORD_BYTES:
            results[index] = PutResult(
                error=f"record of {size} bytes is over the Kinesis limit of "
                f"{MAX_RECORD_BYTES} bytes"
            )
        else:
            sendable.append(index)
    for batch in _index_batches(entries, sendable):
        _put_batch(kinesis_client, stream_name, entries, batch, retry, results)
    return results


def _index_batches(
    entries: Sequence[PutEntry], indices: list[int]
) -> Iterator[list[int]]:
    """Split ``indices`` as `batches` splits their entries (same order)."""
    sized = batches(
        (entries[i].routing.partition_key, entries[i].data) for i in indices
    )
    start = 0
    for batch in sized:
        yield indices[start : start + len(batch)]
        start += len(batch)


def _put_batch(
    kinesis_client: Any,
    stream_name: str,
    entries: Sequence[PutEntry],
    pending: list[int],
    retry: RetryPolicy,
    results: list[PutResult],
) -> None:
    """Put one batch, resending its retryable failures; fill in ``results``."""
    what = f"PutRecords to stream {stream_name!r}"
    backoff = retry.start(what)
    while pending:
        call = partial(
            kinesis_client.put_records,
            StreamName=stream_name,
            Records=[_request_entry(entries[i]) for i in pending],
        )
        try:
            response = retry.call(call, what)
        except SinkError as exc:
            for index in pending:
                results[index] = PutResult(error=str(exc))
            return
        sent = len(pending)
        pending, codes = _record_outcomes(pending, response, results)
        if not pending:
            return
        try:
            backoff.wait(f"{len(pending)} of {sent} records rejected {sorted(codes)}")
        except SinkError:
            return  # each result holds its last error


def _record_outcomes(
    pending: list[int], response: dict[str, Any], results: list[PutResult]
) -> tuple[list[int], set[str]]:
    """Fill in ``results``; return the entries to retry and their error codes."""
    retryable = []
    codes = set()
    for index, outcome in zip(pending, response["Records"], strict=True):
        code = outcome.get("ErrorCode")
        if not code:
            results[index] = PutResult(outcome["ShardId"], outcome["SequenceNumber"])
            continue
        results[index] = PutResult(error=f"{code}: {outcome.get('ErrorMessage', '')}")
        if code in RETRYABLE_ENTRY_ERRORS:
            retryable.append(index)
            codes.add(code)
    return retryable, codes


def _request_entry(entry: PutEntry) -> dict[str, Any]:
    request: dict[str, Any] = {
        "Data": entry.data,
        "PartitionKey": entry.routing.partition_key,
    }
    if entry.routing.explicit_hash_key is not None:
        request["ExplicitHashKey"] = entry.routing.explicit_hash_key
    return request
