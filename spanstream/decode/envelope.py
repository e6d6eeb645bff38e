"""Unwrap a Kinesis record into the payloads it carries.

A record may be KPL-aggregated (several user records in a protobuf envelope
with an MD5 trailer) and each payload may be compressed (gzip, zlib, zstd or
raw deflate). The form is detected from the bytes themselves: magic numbers
for KPL, gzip, zstd and zlib; raw deflate has none, so it is tried last, only
when the bytes are neither JSON nor a protobuf message.

Decompression is bounded by ``max_payload_bytes`` so that a small record that
inflates into gigabytes (a "zip bomb") fails as a poison record instead of
exhausting memory.
"""

from __future__ import annotations

import hashlib
import io
import logging
import zlib
from enum import Enum
from typing import Any

# Imported for its side effect: it puts aws_kinesis_agg's folder on sys.path,
# without which messages_pb2's own "import config_pb2" fails.
import aws_kinesis_agg.deaggregator  # noqa: F401
import zstandard
from aws_kinesis_agg import DIGEST_SIZE, MAGIC, messages_pb2
from google.protobuf.message import DecodeError as DecodeProtobufError

from spanstream.errors import DecodeError, DecompressionBombError
from spanstream.model import KinesisRecord, RecordRef

logger = logging.getLogger(__name__)

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


class Compression(Enum):
    NONE = "none"
    GZIP = "gzip"
    ZLIB = "zlib"
    ZSTD = "zstd"
    DEFLATE = "deflate"


def is_kpl_aggregated(record_bytes: bytes) -> bool:
    """Return True if the bytes start with the KPL aggregation magic number."""
    return record_bytes[: len(MAGIC)] == MAGIC


def deaggregate(record: KinesisRecord) -> list[KinesisRecord]:
    """Split a KPL-aggregated record into its user records.

    Each user record keeps the Kinesis sequence number and gets its
    sub-sequence number and partition key. A record without the magic number
    is returned as the only element. Raises `DecodeError` when the envelope's
    MD5 digest does not match, its protobuf does not parse, a user record
    points outside the partition or explicit hash key table, or it holds no
    user record (the KPL never writes one; the bytes would vanish without a
    dead letter).

    The envelope is parsed with aws-kinesis-agg's message definition, not
    its ``iter_deaggregate_records``: on an inconsistent key table that
    iterator prints the record's bytes to stderr (customer data in the logs)
    and silently drops the user records after the bad one.
    """
    data = record.data
    if not is_kpl_aggregated(data):
        return [record]
    ref = record.ref
    body = data[len(MAGIC) :]
    if len(body) <= DIGEST_SIZE:
        raise DecodeError(ref, f"KPL record of {len(data)} bytes is too short")
    message_bytes, digest = body[:-DIGEST_SIZE], body[-DIGEST_SIZE:]
    if hashlib.md5(message_bytes).digest() != digest:
        raise DecodeError(ref, "KPL record's MD5 digest does not match its body")
    message = messages_pb2.AggregatedRecord()
    try:
        message.ParseFromString(message_bytes)
    except DecodeProtobufError as exc:
        raise DecodeError(ref, "KPL record's protobuf envelope does not parse") from exc
    if not message.records:
        raise DecodeError(ref, "KPL record holds no user records")
    partition_keys = message.partition_key_table
    _check_key_tables(message, ref)
    return [
        KinesisRecord(
            user_record.data,
            ref._replace(
                sub_sequence_number=index,
                partition_key=partition_keys[user_record.partition_key_index],
            ),
        )
        for index, user_record in enumerate(message.records)
    ]


def _check_key_tables(message: Any, ref: RecordRef) -> None:
    """Raise `DecodeError` if a user record's key index is outside its table."""
    partition_keys = len(message.partition_key_table)
    hash_keys = len(message.explicit_hash_key_table)
    for index, user_record in enumerate(message.records):
        if user_record.partition_key_index >= partition_keys:
            raise DecodeError(
                ref,
                f"KPL user record {index} refers to partition key index "
                f"{user_record.partition_key_index} of a table of {partition_keys}",
            )
        if (
            user_record.HasField("explicit_hash_key_index")
            and user_record.explicit_hash_key_index >= hash_keys
        ):
            raise DecodeError(
                ref,
                f"KPL user record {index} refers to explicit hash key index "
                f"{user_record.explicit_hash_key_index} of a table of {hash_keys}",
            )


def detect_compression(payload: bytes) -> Compression:
    """Return the compression the magic number announces (NONE if there is none).

    Raw deflate has no magic number; `decompress` tries it as a fallback.
    """
    if payload[:2] == GZIP_MAGIC:
        return Compression.GZIP
    if payload[:4] == ZSTD_MAGIC:
        return Compression.ZSTD
    # RFC 1950: CMF says deflate with a window <= 32 KiB, and CMF*256+FLG is
    # a multiple of 31.
    if (
        len(payload) >= 2
        and payload[0] & 0x0F == 8
        and payload[0] >> 4 <= 7
        and (payload[0] << 8 | payload[1]) % 31 == 0
    ):
        return Compression.ZLIB
    return Compression.NONE


def decompress(
    payload: bytes, compression: Compression, ref: RecordRef, max_payload_bytes: int
) -> bytes:
    """Return ``payload`` decompressed; raise `DecodeError` if it is corrupt or
    truncated, `DecompressionBombError` if it would inflate past
    ``max_payload_bytes``."""
    if compression is Compression.NONE:
        return payload
    try:
        if compression is Compression.ZSTD:
            return _unzstd(payload, max_payload_bytes, ref)
        wbits = {
            Compression.GZIP: 16 + zlib.MAX_WBITS,
            Compression.ZLIB: zlib.MAX_WBITS,
            Compression.DEFLATE: -zlib.MAX_WBITS,
        }[compression]
        inflater = zlib.decompressobj(wbits)
        inflated = inflater.decompress(payload, max_payload_bytes + 1)
    except (zlib.error, zstandard.ZstdError) as exc:
        raise DecodeError(
            ref, f"{compression.value} payload does not decompress: {exc}"
        ) from exc
    if len(inflated) > max_payload_bytes:
        raise DecompressionBombError(
            ref,
            f"{compression.value} payload inflates past {max_payload_bytes} bytes",
        )
    if not inflater.eof:
        raise DecodeError(ref, f"{compression.value} payload is truncated")
    return inflated


def _unzstd(payload: bytes, max_payload_bytes: int, ref: RecordRef) -> bytes:
    declared_bytes = zstandard.frame_content_size(payload)
    if declared_bytes > max_payload_bytes:
        raise DecompressionBombError(
            ref, f"zstd payload inflates past {max_payload_bytes} bytes"
        )
    if declared_bytes >= 0:
        # The frame declares its size, so decompressing in one go is bounded;
        # the decompressobj also tells a truncated frame from a whole one.
        reader = zstandard.ZstdDecompressor().decompressobj()
        inflated = reader.decompress(payload)
        if not reader.eof:
            raise DecodeError(ref, "zstd payload is truncated")
        return inflated
    # A streamed frame does not declare its size: read at most the limit.
    decompressor = zstandard.ZstdDecompressor()
    with decompressor.stream_reader(io.BytesIO(payload)) as stream:
        inflated = stream.read(max_payload_bytes + 1)
    if len(inflated) > max_payload_bytes:
        raise DecompressionBombError(
            ref, f"zstd payload inflates past {max_payload_bytes} bytes"
        )
    return inflated
