"""Dead letters on S3: one JSON object per record spanstream could not use.

Each object holds where the record came from, why it failed and its original
bytes (base64), at a key that depends only on the record's position::

    {dead_letter_prefix}stream={stream}/shard={shard}/{sequence}-{sub}.json

so a replay overwrites instead of duplicating, and a re-drive can list a
stream or shard and read each `DeadLetter` back. The format is
``schemas/events/dead-letter.schema.json``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

from spanstream.config import Settings
from spanstream.errors import SinkError
from spanstream.model import DeadLetter, RecordRef
from spanstream.sinks.keys import encode_component
from spanstream.sinks.retry import RetryPolicy
from spanstream.sinks.s3put import (
    DEFAULT_UPLOAD_CONCURRENCY,
    PendingObject,
    put_objects,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
JSON_CONTENT_TYPE = "application/json"


def dead_letter_prefix(
    settings: Settings, stream: str | None = None, shard_id: str | None = None
) -> str:
    """Return the key prefix of all dead letters, of a stream, or of one shard."""
    prefix = settings.dead_letter_prefix
    if stream is None:
        return prefix
    prefix = f"{prefix}stream={encode_component(stream)}/"
    if shard_id is None:
        return prefix
    return f"{prefix}shard={encode_component(shard_id)}/"


def dead_letter_key(settings: Settings, ref: RecordRef) -> str:
    """Return the object key of the dead letter of the record at ``ref``."""
    position = encode_component(f"{ref.sequence_number}-{ref.sub_sequence_number}")
    return f"{dead_letter_prefix(settings, ref.stream, ref.shard_id)}{position}.json"


def to_document(dead_letter: DeadLetter) -> dict[str, Any]:
    """Return the JSON document of ``dead_letter`` (see the JSON Schema)."""
    ref = dead_letter.ref
    return {
        "format_version": FORMAT_VERSION,
        "stream": ref.stream,
        "shard_id": ref.shard_id,
        "sequence_number": ref.sequence_number,
        "sub_sequence_number": ref.sub_sequence_number,
        "partition_key": ref.partition_key,
        "arrival_unix_millis": ref.arrival_unix_millis,
        "stage": dead_letter.stage,
        "reason": dead_letter.reason,
        "record_base64": base64.b64encode(dead_letter.record_bytes).decode("ascii"),
    }


def from_document(document: dict[str, Any]) -> DeadLetter:
    """Inverse of `to_document`; raises ValueError on a document it did not write."""
    try:
        if document["format_version"] != FORMAT_VERSION:
            raise ValueError(
                f"dead letter format_version {document['format_version']!r}, "
                f"expected {FORMAT_VERSION}"
            )
        ref = RecordRef(
            stream=str(document["stream"]),
            shard_id=str(document["shard_id"]),
            sequence_number=str(document["sequence_number"]),
            sub_sequence_number=int(document["sub_sequence_number"]),
            partition_key=str(document["partition_key"]),
            arrival_unix_millis=int(document["arrival_unix_millis"]),
        )
        record_bytes = base64.b64decode(document["record_base64"], validate=True)
        return DeadLetter(
            ref=ref,
            record_bytes=record_bytes,
            reason=str(document["reason"]),
            stage=str(document["stage"]),
        )
    except (KeyError, TypeError, binascii.Error) as exc:
        raise ValueError(f"not a dead letter document: {exc!r}") from exc


def _render(dead_letter: DeadLetter) -> bytes:
    return json.dumps(to_document(dead_letter), separators=(",", ":")).encode()


class DeadLetterWriter:
    """Writes `DeadLetter` values as JSON objects under ``dead_letter_prefix``."""

    def __init__(
        self,
        s3_client: Any,
        settings: Settings,
        retry: RetryPolicy | None = None,
        max_workers: int = DEFAULT_UPLOAD_CONCURRENCY,
    ) -> None:
        self.s3_client = s3_client
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.max_workers = max_workers

    def write(self, dead_letters: list[DeadLetter]) -> list[str]:
        """Write one object per dead letter and return their keys, in input order.

        Writing a record's dead letter again overwrites the object. Raises
        `SinkError` unless every object was written.
        """
        pending = [
            PendingObject(
                dead_letter_key(self.settings, dead_letter.ref),
                partial(_render, dead_letter),
                JSON_CONTENT_TYPE,
            )
            for dead_letter in dead_letters
        ]
        keys = put_objects(
            self.s3_client, self.settings.bucket, pending, self.retry, self.max_workers
        )
        if keys:
            logger.info("wrote %d dead letters", len(keys))
        return keys


def list_dead_letters(
    s3_client: Any,
    settings: Settings,
    stream: str | None = None,
    shard_id: str | None = None,
) -> Iterator[str]:
    """Yield the keys of all dead letters, of ``stream``, or of one of its shards.

    Keys come in S3 order (lexicographic, so not sequence order across
    sequence numbers of different lengths).
    """
    if shard_id is not None and stream is None:
        raise ValueError("shard_id needs a stream")
    paginator = s3_client.get_paginator("list_objects_v2")
    prefix = dead_letter_prefix(settings, stream, shard_id)
    for page in paginator.paginate(Bucket=settings.bucket, Prefix=prefix):
        for entry in page.get("Contents", ()):
            if entry["Key"].endswith(".json"):
                yield entry["Key"]


def read_dead_letter(s3_client: Any, settings: Settings, key: str) -> DeadLetter:
    """Return the `DeadLetter` stored at ``key``.

    Raises `SinkError` if the object is missing or is not a dead letter.
    """
    try:
        response = s3_client.get_object(Bucket=settings.bucket, Key=key)
        return from_document(json.loads(response["Body"].read()))
    except s3_client.exceptions.NoSuchKey as exc:
        raise SinkError(f"s3://{settings.bucket}/{key}: no such dead letter") from exc
    except ValueError as exc:
        raise SinkError(f"s3://{settings.bucket}/{key}: {exc}") from exc
