"""What an operator may see of a dead letter: everything but its bytes.

A `DeadLetterSummary` holds a dead letter's origin, stage and reason, and of
its original bytes only their size, SHA-256 and envelope (KPL, compression).
The bytes are customer data (attribute values): nothing here prints or logs
them, and `write_record_bytes` writes them only to a file.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import islice
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from spanstream.config import Settings
from spanstream.decode.envelope import detect_compression, is_kpl_aggregated
from spanstream.errors import SinkError
from spanstream.model import DeadLetter
from spanstream.sinks.deadletter import list_dead_letter_objects, read_dead_letter

logger = logging.getLogger(__name__)

DEFAULT_READ_CONCURRENCY = 16
_READ_CHUNK = 64


class DeadLetterSummary(NamedTuple):
    """A dead letter without its bytes."""

    key: str
    stream: str
    shard_id: str
    sequence_number: str
    sub_sequence_number: int
    partition_key: str
    arrival_unix_millis: int
    stage: str
    reason: str
    record_size_bytes: int
    record_sha256: str
    #: "kpl-aggregated", "gzip", "zlib", "zstd" or "none" (raw deflate has no
    #: magic number, so it shows as "none").
    record_envelope: str

    @property
    def position(self) -> str:
        """Return ``<sequence number>-<sub-sequence number>``."""
        return f"{self.sequence_number}-{self.sub_sequence_number}"


class UnreadableDeadLetter(NamedTuple):
    """An object below the dead-letter prefix that could not be read as one."""

    key: str
    error: str


def summarise(key: str, dead_letter: DeadLetter) -> DeadLetterSummary:
    """Return the summary of ``dead_letter``, stored at ``key``."""
    ref = dead_letter.ref
    record_bytes = dead_letter.record_bytes
    return DeadLetterSummary(
        key=key,
        stream=ref.stream,
        shard_id=ref.shard_id,
        sequence_number=ref.sequence_number,
        sub_sequence_number=ref.sub_sequence_number,
        partition_key=ref.partition_key,
        arrival_unix_millis=ref.arrival_unix_millis,
        stage=dead_letter.stage,
        reason=dead_letter.reason,
        record_size_bytes=len(record_bytes),
        record_sha256=hashlib.sha256(record_bytes).hexdigest(),
        record_envelope=envelope_of(record_bytes),
    )


def envelope_of(record_bytes: bytes) -> str:
    """Return what wraps the payload: "kpl-aggregated" or the compression."""
    if is_kpl_aggregated(record_bytes):
        return "kpl-aggregated"
    return detect_compression(record_bytes).value


def read_summary(s3_client: Any, settings: Settings, key: str) -> DeadLetterSummary:
    """Return the summary of the dead letter at ``key``.

    Raises `SinkError` if the object is missing or is not a dead letter.
    """
    return summarise(key, read_dead_letter(s3_client, settings, key))


def list_summaries(
    s3_client: Any,
    settings: Settings,
    stream: str | None = None,
    shard_id: str | None = None,
    redriven: bool = False,
    max_workers: int = DEFAULT_READ_CONCURRENCY,
) -> Iterator[DeadLetterSummary | UnreadableDeadLetter]:
    """Yield a summary of each dead letter (of a stream or shard), in S3 order.

    ``redriven`` lists the re-driven ones instead. Reads ``max_workers``
    objects at a time. An object that cannot be read is yielded as an
    `UnreadableDeadLetter`; S3 listing errors raise. Raises ValueError for
    a shard without a stream.
    """
    stored = list_dead_letter_objects(s3_client, settings, stream, shard_id, redriven)
    keys = (entry.key for entry in stored)
    read = partial(_summary_or_error, s3_client, settings)
    with ThreadPoolExecutor(max_workers) as pool:
        for chunk in chunked(keys, _READ_CHUNK):
            yield from pool.map(read, chunk)


def _summary_or_error(
    s3_client: Any, settings: Settings, key: str
) -> DeadLetterSummary | UnreadableDeadLetter:
    try:
        return read_summary(s3_client, settings, key)
    except (SinkError, ClientError, BotoCoreError) as exc:
        logger.warning("cannot read dead letter %s: %s", key, exc)
        return UnreadableDeadLetter(key, str(exc))


def write_record_bytes(dead_letter: DeadLetter, path: str) -> int:
    """Write the dead letter's original bytes to ``path``; return how many.

    The file is created readable by its owner only (the bytes are customer
    data); an existing file is replaced. Raises OSError if it cannot be
    written, and refuses (ValueError) to write to a terminal.
    """
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        if file.isatty():
            raise ValueError(f"{path!r} is a terminal; name a file instead")
        return file.write(dead_letter.record_bytes)


def chunked(items: Iterable[str], size: int) -> Iterator[list[str]]:
    """Yield lists of up to ``size`` consecutive items."""
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk
