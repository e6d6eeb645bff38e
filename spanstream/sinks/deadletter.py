"""Dead letters on S3: one JSON object per record spanstream could not use.

Each object holds where the record came from, why it failed and its original
bytes (base64), at a key that depends only on the record's position::

    {dead_letter_prefix}stream={stream}/shard={shard}/{sequence}-{sub}.json

so a replay overwrites instead of duplicating, and a re-drive can list a
stream or shard and read each `DeadLetter` back. The format is
``schemas/events/dead-letter.schema.json``.

A dead letter that ``spanstream dlq redrive`` (`spanstream.deadletters`) has
put back on a stream is moved, unchanged, to the same key below
``{dead_letter_prefix}redriven/``; `list_dead_letters` lists only the keys
below ``{dead_letter_prefix}stream=``, so it never shows those.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Iterator
from functools import partial
from typing import Any, NamedTuple

from spanstream.config import Settings
from spanstream.errors import SinkError
from spanstream.model import DeadLetter, RecordRef
from spanstream.sinks.keys import encode_component
from spanstream.sinks.s3put import (
    PendingObject,
    S3ObjectWriter,
)

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
JSON_CONTENT_TYPE = "application/json"
REDRIVEN_FOLDER = "redriven/"


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


def redriven_prefix(
    settings: Settings, stream: str | None = None, shard_id: str | None = None
) -> str:
    """Return the key prefix of re-driven dead letters: all, of a stream or a shard."""
    below = dead_letter_prefix(settings, stream, shard_id)
    below = below[len(settings.dead_letter_prefix) :]
    return f"{settings.dead_letter_prefix}{REDRIVEN_FOLDER}{below}"


def redriven_key(settings: Settings, key: str) -> str:
    """Return the key the dead letter at ``key`` is moved to once re-driven.

    Raises ValueError for a key that is not a dead letter's.
    """
    prefix = settings.dead_letter_prefix
    if not key.startswith(f"{prefix}stream="):
        raise ValueError(f"not a dead letter key below {prefix!r}: {key!r}")
    return f"{prefix}{REDRIVEN_FOLDER}{key[len(prefix) :]}"


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


class DeadLetterWriter(S3ObjectWriter):
    """Writes `DeadLetter` values as JSON objects under ``dead_letter_prefix``."""

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
        keys = self.upload(pending)
        if keys:
            logger.info("wrote %d dead letters", len(keys))
        return keys


class StoredDeadLetter(NamedTuple):
    """A dead letter's key and the size of its JSON object (not of the record)."""

    key: str
    object_size_bytes: int


def list_dead_letter_objects(
    s3_client: Any,
    settings: Settings,
    stream: str | None = None,
    shard_id: str | None = None,
    redriven: bool = False,
) -> Iterator[StoredDeadLetter]:
    """Yield the dead letters of every stream, of ``stream``, or of one shard.

    ``redriven`` lists those moved below ``redriven/`` instead. Keys come in
    S3 order (lexicographic, so not sequence order across sequence numbers
    of different lengths). Raises ValueError for a shard without a stream.
    """
    if shard_id is not None and stream is None:
        raise ValueError("shard_id needs a stream")
    prefix_of = redriven_prefix if redriven else dead_letter_prefix
    prefix = prefix_of(settings, stream, shard_id)
    if stream is None:
        prefix += "stream="
    paginator = s3_client.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=settings.bucket, Prefix=prefix):
        for entry in page.get("Contents", ()):
            if entry["Key"].endswith(".json"):
                yield StoredDeadLetter(entry["Key"], int(entry["Size"]))


def list_dead_letters(
    s3_client: Any,
    settings: Settings,
    stream: str | None = None,
    shard_id: str | None = None,
) -> Iterator[str]:
    """Yield the keys of all dead letters, of ``stream``, or of one of its shards.

    Re-driven ones are not among them. Keys come in S3 order (lexicographic,
    so not sequence order across sequence numbers of different lengths).
    """
    for stored in list_dead_letter_objects(s3_client, settings, stream, shard_id):
        yield stored.key


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
