"""Putting encoded records on a Kinesis stream with PutRecords.

Records go in batches of at most 500 records and 5 MiB, the PutRecords
limits. Entries the stream rejects with a retryable code (throughput
exceeded, internal failure, KMS throttling) are sent again, alone, with
jittered exponential backoff; any other rejection, or retryable ones still
failing after ``max_attempts``, raise `PutRecordsError`. A whole call that
fails with a retryable error (`spanstream.sinks.retry.is_retryable`) is sent
again the same way: botocore's own retries stop once its retry quota is
spent. A call whose answer was lost may have been applied, so a retry can
put records twice; the trace stage counts each span once.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from spanstream.errors import SinkError
from spanstream.sinks.retry import error_code, is_retryable

logger = logging.getLogger(__name__)

MAX_BATCH_RECORDS = 500
MAX_BATCH_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
RETRYABLE_ENTRY_ERRORS = frozenset(
    (
        "ProvisionedThroughputExceededException",
        "InternalFailure",
        "KMSThrottlingException",
    )
)


class PutRecordsError(SinkError):
    """Records could not be put on the stream; says how many and why."""


def batches(
    records: Iterable[tuple[str, bytes]],
    max_records: int = MAX_BATCH_RECORDS,
    max_bytes: int = MAX_BATCH_BYTES,
) -> list[list[tuple[str, bytes]]]:
    """Split ``records`` into PutRecords-sized batches, in order.

    A record counts its data plus its UTF-8 partition key, as Kinesis does.
    Raises ValueError for a record over the 1 MiB record limit.
    """
    result: list[list[tuple[str, bytes]]] = []
    batch: list[tuple[str, bytes]] = []
    batch_bytes = 0
    for partition_key, data in records:
        size = len(data) + len(partition_key.encode())
        if size > MAX_RECORD_BYTES:
            raise ValueError(
                f"record with partition key {partition_key!r} is {size} bytes, "
                f"over the Kinesis limit of {MAX_RECORD_BYTES}"
            )
        if batch and (len(batch) >= max_records or batch_bytes + size > max_bytes):
            result.append(batch)
            batch, batch_bytes = [], 0
        batch.append((partition_key, data))
        batch_bytes += size
    if batch:
        result.append(batch)
    return result


def put_records(
    kinesis_client: Any,
    stream_name: str,
    records: Sequence[tuple[str, bytes]],
    max_attempts: int = 8,
    base_delay_secs: float = 0.05,
    max_delay_secs: float = 5.0,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Put every record on ``stream_name``; return how many were put.

    Each batch is resent, entry by failed entry, until all are accepted.
    Raises `PutRecordsError` (naming the stream, the error codes and how
    many records were left) on a non-retryable entry error, after
    ``max_attempts`` tries, or when the PutRecords call itself fails.
    """
    jitter = random.Random()
    put = 0
    for batch in batches(records):
        pending = batch
        for attempt in range(1, max_attempts + 1):
            failed, codes, retryable = _put_batch(kinesis_client, stream_name, pending)
            put += len(pending) - len(failed)
            if not failed:
                break
            if not retryable or attempt == max_attempts:
                logger.error(
                    "giving up on %d records for stream %s after %d attempts: %s",
                    len(failed),
                    stream_name,
                    attempt,
                    sorted(codes),
                )
                raise PutRecordsError(
                    f"stream {stream_name!r}: {len(failed)} records not put after "
                    f"{attempt} attempts (error codes {sorted(codes)!r})"
                )
            delay = min(max_delay_secs, base_delay_secs * 2 ** (attempt - 1))
            delay *= jitter.uniform(0.5, 1.0)
            logger.warning(
                "%d of %d records not put on stream %s (%s); retry %d in %.2f s",
                len(failed),
                len(pending),
                stream_name,
                sorted(codes),
                attempt,
                delay,
            )
            sleep(delay)
            pending = failed
    logger.debug("put %d records on stream %s", put, stream_name)
    return put


def _put_batch(
    kinesis_client: Any, stream_name: str, batch: list[tuple[str, bytes]]
) -> tuple[list[tuple[str, bytes]], set[str], bool]:
    """Put ``batch`` once; return the entries not put, why, and if a retry may help.

    A call that failed as a whole returns every entry, under the call's
    error code when that error is retryable; else it raises `PutRecordsError`.
    """
    entries = [{"Data": data, "PartitionKey": key} for key, data in batch]
    try:
        response = kinesis_client.put_records(StreamName=stream_name, Records=entries)
    except (ClientError, BotoCoreError) as exc:
        if not is_retryable(exc):
            raise PutRecordsError(
                f"stream {stream_name!r}: PutRecords of {len(batch)} records "
                f"failed: {exc}"
            ) from exc
        return batch, {error_code(exc) or type(exc).__name__}, True
    if not response.get("FailedRecordCount"):
        return [], set(), True
    failed = []
    codes = set()
    for record, result in zip(batch, response["Records"], strict=True):
        code = result.get("ErrorCode")
        if code:
            failed.append(record)
            codes.add(code)
    return failed, codes, not codes - RETRYABLE_ENTRY_ERRORS
