"""Re-driving dead letters: their original bytes back onto a stream, once.

For each dead letter, in this order:

1. read it (GET), and look for a re-driven copy of it (HEAD
   ``{dead_letter_prefix}redriven/<same key>``);
2. if that copy exists, the record was put back before, by a re-drive that
   stopped before deleting the original, or the dead letter was written again
   by a replay of the original record: delete the original, put nothing;
3. put its bytes on the target stream (PutRecords, `put_entries`; the
   partition key is `routing_for`'s);
4. copy it to the re-driven key, with where it was put (stream, shard,
   sequence number, time) as object metadata (`redrive_marks`);
5. delete the original.

A crash can therefore only repeat a put, never lose a record: between 3 and
4 the dead letter is still in place and the next re-drive puts it again;
between 4 and 5, step 2 finishes the job. Steps 4 and 5 follow each
PutRecords batch at once, so at most one batch (500 records) can be put
twice. A duplicate matters because a re-driven record gets a new sequence
number and spanstream's idempotency is by position (shard and sequence
number): to the consumers it is a new record, so its spans are archived
twice and counted twice in the RED metrics, edges and cold starts (trace
summaries count a span id once). Two re-drives of the same dead letters at
the same time can also both put a record: run one at a time.

A record that cannot be put (or whose dead letter cannot be moved after its
put) keeps its dead letter in place and is reported as `Outcome.FAILED`
with the reason; the others go on.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from typing import Any, NamedTuple

from botocore.exceptions import BotoCoreError, ClientError

from spanstream.config import Settings
from spanstream.deadletters.put import PutEntry, PutResult, put_entries
from spanstream.deadletters.routing import routing_for
from spanstream.errors import SinkError
from spanstream.model import DeadLetter
from spanstream.sinks.deadletter import (
    JSON_CONTENT_TYPE,
    StoredDeadLetter,
    list_dead_letter_objects,
    read_dead_letter,
    redriven_key,
)
from spanstream.sinks.kinesis import MAX_BATCH_RECORDS
from spanstream.sinks.retry import RetryPolicy

logger = logging.getLogger(__name__)

DEFAULT_S3_CONCURRENCY = 16
#: A chunk of dead letters is read, put and moved before the next is read;
#: its JSON objects stay below this many bytes (one object may exceed it).
CHUNK_MAX_OBJECT_BYTES = 8 * 1024 * 1024
METADATA_STREAM = "redriven-to-stream"
METADATA_SHARD = "redriven-shard-id"
METADATA_SEQUENCE = "redriven-sequence-number"
METADATA_UNIX_MILLIS = "redriven-unix-millis"
_NOT_FOUND = ("404", "NoSuchKey", "NotFound")


class Outcome(enum.StrEnum):
    """What became of one dead letter."""

    REDRIVEN = "redriven"
    #: A re-driven copy existed: nothing put, the original removed (not in a
    #: dry run).
    ALREADY_REDRIVEN = "already-redriven"
    WOULD_REDRIVE = "would-redrive"
    FAILED = "failed"


class RedriveResult(NamedTuple):
    """One dead letter's outcome; ``error`` says why when it failed."""

    key: str
    outcome: Outcome
    target_stream: str = ""
    partition_key: str = ""
    record_size_bytes: int = 0
    shard_id: str = ""
    sequence_number: str = ""
    error: str = ""


@dataclass(frozen=True)
class RedriveRequest:
    """Which dead letters to re-drive, and where to.

    ``to_stream`` None puts each back on the stream it came from; ``limit``
    None re-drives them all.
    """

    stream: str | None = None
    shard_id: str | None = None
    to_stream: str | None = None
    dry_run: bool = False
    limit: int | None = None


class _Loaded(NamedTuple):
    key: str
    dead_letter: DeadLetter | None = None
    is_redriven: bool = False
    error: str = ""


class Redriver:
    """Puts dead letters' bytes back on a stream and moves them aside.

    Clients, the retry policy (its deadline bounds each S3 call and each
    PutRecords batch) and the wall clock (for the metadata) are passed in.
    """

    def __init__(
        self,
        s3_client: Any,
        kinesis_client: Any,
        settings: Settings,
        retry: RetryPolicy | None = None,
        max_workers: int = DEFAULT_S3_CONCURRENCY,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.s3_client = s3_client
        self.kinesis_client = kinesis_client
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.max_workers = max_workers
        self.wall_clock = wall_clock

    def redrive(self, request: RedriveRequest) -> Iterator[RedriveResult]:
        """Re-drive the dead letters ``request`` selects; yield each outcome.

        Outcomes come chunk by chunk, in S3 order within a chunk. Writes to
        the target streams and moves each re-driven dead letter (see the
        module docstring); a dry run reads only. Never raises for one dead
        letter; S3 listing errors raise, and ValueError for a shard without
        a stream.
        """
        stored = list_dead_letter_objects(
            self.s3_client, self.settings, request.stream, request.shard_id
        )
        with ThreadPoolExecutor(self.max_workers) as pool:
            for chunk in _chunks(islice(stored, request.limit)):
                yield from self._redrive_chunk(pool, chunk, request)

    def _redrive_chunk(
        self, pool: ThreadPoolExecutor, keys: list[str], request: RedriveRequest
    ) -> list[RedriveResult]:
        loaded = list(pool.map(self._load, keys))
        results: dict[str, RedriveResult] = {}
        done = [item for item in loaded if item.error or item.is_redriven]
        finish = partial(self._finish_early, dry_run=request.dry_run)
        for result in pool.map(finish, done):
            results[result.key] = result
        by_stream: dict[str, list[_Loaded]] = {}
        for item in loaded:
            if item.key not in results and item.dead_letter is not None:
                target = request.to_stream or item.dead_letter.ref.stream
                by_stream.setdefault(target, []).append(item)
        for target, items in by_stream.items():
            for result in self._put_and_move(pool, target, items, request.dry_run):
                results[result.key] = result
        logger.debug("re-drive chunk of %d dead letters done", len(keys))
        return [results[key] for key in keys]

    def _load(self, key: str) -> _Loaded:
        try:
            if self._is_redriven(key):
                return _Loaded(key, is_redriven=True)
            return _Loaded(key, read_dead_letter(self.s3_client, self.settings, key))
        except (SinkError, ValueError, ClientError, BotoCoreError) as exc:
            return _Loaded(key, error=str(exc))

    def _is_redriven(self, key: str) -> bool:
        copy_key = redriven_key(self.settings, key)
        head = partial(
            self.s3_client.head_object, Bucket=self.settings.bucket, Key=copy_key
        )
        try:
            self.retry.call(head, self._where(copy_key), passthrough=_NOT_FOUND)
        except ClientError:
            return False
        return True

    def _finish_early(self, item: _Loaded, dry_run: bool) -> RedriveResult:
        """Report a dead letter that is not put: unreadable, or re-driven before.

        One re-driven before is deleted (not in a dry run): its copy stays.
        """
        if item.error:
            logger.warning("not re-driving %s: %s", item.key, item.error)
            return RedriveResult(item.key, Outcome.FAILED, error=item.error)
        if not dry_run:
            try:
                self._delete(item.key)
            except SinkError as exc:
                error = f"re-driven before, but the original was not deleted: {exc}"
                logger.warning("%s: %s", item.key, error)
                return RedriveResult(item.key, Outcome.FAILED, error=error)
        return RedriveResult(item.key, Outcome.ALREADY_REDRIVEN)

    def _put_and_move(
        self,
        pool: ThreadPoolExecutor,
        target_stream: str,
        items: list[_Loaded],
        dry_run: bool,
    ) -> list[RedriveResult]:
        letters = [item.dead_letter for item in items if item.dead_letter is not None]
        entries = [
            PutEntry(letter.record_bytes, routing_for(letter, self.settings))
            for letter in letters
        ]
        planned = [
            RedriveResult(
                item.key,
                Outcome.WOULD_REDRIVE,
                target_stream,
                entry.routing.partition_key,
                len(entry.data),
            )
            for item, entry in zip(items, entries, strict=True)
        ]
        if dry_run:
            return planned
        put_results = put_entries(
            self.kinesis_client, target_stream, entries, self.retry
        )
        return list(pool.map(self._after_put, planned, put_results))

    def _after_put(self, planned: RedriveResult, put: PutResult) -> RedriveResult:
        if not put.is_put:
            logger.warning(
                "could not put %s on stream %s: %s",
                planned.key,
                planned.target_stream,
                put.error,
            )
            return planned._replace(outcome=Outcome.FAILED, error=put.error)
        where = f"{planned.target_stream}/{put.shard_id}@{put.sequence_number}"
        put_planned = planned._replace(
            shard_id=put.shard_id, sequence_number=put.sequence_number
        )
        try:
            self._move(planned.key, planned.target_stream, put)
        except SinkError as exc:
            error = (
                f"put as {where}, but the dead letter was not moved ({exc}): "
                "the next redrive puts it again unless it is moved by hand"
            )
            logger.error("%s: %s", planned.key, error)
            return put_planned._replace(outcome=Outcome.FAILED, error=error)
        return put_planned._replace(outcome=Outcome.REDRIVEN)

    def _move(self, key: str, target_stream: str, put: PutResult) -> None:
        """Copy the dead letter to its re-driven key, then delete it."""
        bucket = self.settings.bucket
        copy_key = redriven_key(self.settings, key)
        metadata = {
            METADATA_STREAM: target_stream,
            METADATA_SHARD: put.shard_id,
            METADATA_SEQUENCE: put.sequence_number,
            METADATA_UNIX_MILLIS: str(int(self.wall_clock() * 1000)),
        }
        copy = partial(
            self.s3_client.copy_object,
            Bucket=bucket,
            Key=copy_key,
            CopySource={"Bucket": bucket, "Key": key},
            MetadataDirective="REPLACE",
            Metadata=metadata,
            ContentType=JSON_CONTENT_TYPE,
            ServerSideEncryption="AES256",
        )
        self.retry.call(copy, self._where(copy_key))
        self._delete(key)

    def _delete(self, key: str) -> None:
        delete = partial(
            self.s3_client.delete_object, Bucket=self.settings.bucket, Key=key
        )
        self.retry.call(delete, self._where(key))

    def _where(self, key: str) -> str:
        return f"s3://{self.settings.bucket}/{key}"


def redrive_marks(s3_client: Any, settings: Settings, key: str) -> dict[str, str]:
    """Return where a re-driven dead letter was put (its ``redriven-*`` metadata).

    Returns an empty dict for an object without them (one never re-driven).
    Raises `SinkError` if there is no object at ``key``.
    """
    head = partial(s3_client.head_object, Bucket=settings.bucket, Key=key)
    where = f"s3://{settings.bucket}/{key}"
    try:
        response = RetryPolicy().call(head, where, passthrough=_NOT_FOUND)
    except ClientError as exc:
        raise SinkError(f"{where}: no such object") from exc
    metadata: dict[str, str] = response.get("Metadata", {})
    return {
        name: value for name, value in metadata.items() if name.startswith("redriven-")
    }


def _chunks(stored: Iterable[StoredDeadLetter]) -> Iterator[list[str]]:
    """Yield keys in chunks of at most 500 and about `CHUNK_MAX_OBJECT_BYTES`."""
    chunk: list[str] = []
    chunk_bytes = 0
    for entry in stored:
        if chunk and (
            len(chunk) >= MAX_BATCH_RECORDS
            or chunk_bytes + entry.object_size_bytes > CHUNK_MAX_OBJECT_BYTES
        ):
            yield chunk
            chunk, chunk_bytes = [], 0
        chunk.append(entry.key)
        chunk_bytes += entry.object_size_bytes
    if chunk:
        yield chunk
