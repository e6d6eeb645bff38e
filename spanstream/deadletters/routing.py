"""Where a re-driven record goes: its partition key (and explicit hash key).

Three cases, decided by where the dead letter came from and what it holds:

* a record of the trace stream (``Settings.trace_stream_name``) keeps its
  original partition key, ``trace-bucket-<n>``: the trace stage needs every
  fragment of a trace on that bucket's shard (`spanstream.rekey`);
* a whole KPL aggregated record (dead-lettered before it was split, e.g.
  over ``max_record_bytes``) goes where the KPL sent it: under its first
  user record's partition key and explicit hash key, because the KCL
  silently drops a user record whose hash key lies outside the shard the
  aggregate was read from;
* anything else (an OTLP or Zipkin payload, or one user record of a KPL
  record, which the decoders read as a plain record) is keyed by its
  original position, ``<sequence number>-<sub-sequence number>``. Positions
  are unique, so their MD5 hashes spread a re-drive of many dead letters
  evenly over the shards instead of piling them onto the producer's keys,
  and the same dead letter always lands on the same shard.
"""

from __future__ import annotations

import hashlib
import logging
from typing import NamedTuple

from aws_kinesis_agg import DIGEST_SIZE, MAGIC
from aws_kinesis_agg.deaggregator import messages_pb2
from google.protobuf.message import DecodeError as ProtobufDecodeError

from spanstream.config import Settings
from spanstream.decode.envelope import is_kpl_aggregated
from spanstream.model import DeadLetter

logger = logging.getLogger(__name__)


class Routing(NamedTuple):
    """The PutRecords routing fields of one record."""

    partition_key: str
    explicit_hash_key: str | None = None


def routing_for(dead_letter: DeadLetter, settings: Settings) -> Routing:
    """Return the partition key (and explicit hash key) to re-drive under."""
    ref = dead_letter.ref
    position = f"{ref.sequence_number}-{ref.sub_sequence_number}"
    if settings.trace_stream_name and ref.stream == settings.trace_stream_name:
        return Routing(ref.partition_key or position)
    if is_kpl_aggregated(dead_letter.record_bytes):
        first = first_user_record_routing(dead_letter.record_bytes)
        return first or Routing(ref.partition_key or position)
    return Routing(position)


def first_user_record_routing(record_bytes: bytes) -> Routing | None:
    """Return the routing of a KPL record's first user record, as the KPL put it.

    Returns None when the bytes are not an intact KPL record (bad digest,
    protobuf that does not parse, no user record). Parsed here rather than
    with ``aws_kinesis_agg``'s deaggregator, which prints a record's raw
    bytes to stderr when its tables are inconsistent.
    """
    body = record_bytes[len(MAGIC) :]
    message, digest = body[:-DIGEST_SIZE], body[-DIGEST_SIZE:]
    if len(body) <= DIGEST_SIZE or hashlib.md5(message).digest() != digest:
        return None
    aggregated = messages_pb2.AggregatedRecord()
    try:
        aggregated.ParseFromString(message)
    except ProtobufDecodeError:
        return None
    if not aggregated.records:
        return None
    first = aggregated.records[0]
    partition_keys = aggregated.partition_key_table
    if first.partition_key_index >= len(partition_keys):
        return None
    hash_keys = aggregated.explicit_hash_key_table
    hash_key = None
    if first.HasField("explicit_hash_key_index"):
        if first.explicit_hash_key_index >= len(hash_keys):
            return None
        hash_key = hash_keys[first.explicit_hash_key_index]
    return Routing(partition_keys[first.partition_key_index], hash_key)
