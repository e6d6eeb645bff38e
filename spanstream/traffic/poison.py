"""Records no decoder should accept, for dead-letter tests.

Each kind is broken in one clear way, so a test can check that the record
reached the dead-letter sink with its original bytes and that its
neighbours were still processed. The partition key names the kind:
``poison-<kind>-<index>``.
"""

from __future__ import annotations

import gzip
import random
from typing import NamedTuple

from aws_kinesis_agg.aggregator import RecordAggregator

from spanstream.traffic import otlp
from spanstream.traffic.generator import generate_traces

#: A varint that never ends: no protobuf message can start like this, and as
#: raw deflate its first block has the reserved type 3.
_NOT_PROTOBUF = b"\xff" * 11

POISON_KINDS = (
    "random-bytes",
    "truncated-proto",
    "bad-json",
    "json-not-otlp",
    "gzip-garbage",
    "gzip-truncated",
    "zstd-corrupt",
    "kpl-bad-md5",
)


class PoisonRecord(NamedTuple):
    """Same shape as `spanstream.traffic.encode.EncodedRecord`."""

    partition_key: str
    data: bytes


def poison_records(n: int, seed: int) -> list[PoisonRecord]:
    """Return ``n`` invalid records, cycling through `POISON_KINDS`.

    The same ``n`` and ``seed`` give the same bytes.
    """
    rng = random.Random(seed)
    trace = generate_traces(1, seed, now_unix_nanos=1_700_000_000_000_000_000)[0]
    request_bytes = otlp.export_request(trace.spans[:3]).SerializeToString()
    records = []
    for index in range(n):
        kind = POISON_KINDS[index % len(POISON_KINDS)]
        data = _MAKERS[kind](rng, request_bytes)
        records.append(PoisonRecord(f"poison-{kind}-{index}", data))
    return records


def _garbage(rng: random.Random) -> bytes:
    return _NOT_PROTOBUF + rng.randbytes(rng.randint(16, 256))


def _random_bytes(rng: random.Random, request_bytes: bytes) -> bytes:
    return _garbage(rng)


def _truncated_proto(rng: random.Random, request_bytes: bytes) -> bytes:
    # One top-level field whose length prefix promises more than is left.
    return request_bytes[: rng.randint(1, len(request_bytes) - 1)]


def _bad_json(rng: random.Random, request_bytes: bytes) -> bytes:
    text = b'{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name"'
    return text[: rng.randint(10, len(text))]


def _json_not_otlp(rng: random.Random, request_bytes: bytes) -> bytes:
    return b'{"resourceSpans": 42, "note": "valid JSON, not OTLP"}'


def _gzip_garbage(rng: random.Random, request_bytes: bytes) -> bytes:
    return gzip.compress(_garbage(rng), mtime=0)


def _gzip_truncated(rng: random.Random, request_bytes: bytes) -> bytes:
    whole = gzip.compress(request_bytes, mtime=0)
    return whole[: len(whole) // 2]


def _zstd_corrupt(rng: random.Random, request_bytes: bytes) -> bytes:
    return b"\x28\xb5\x2f\xfd" + _garbage(rng)


def _kpl_bad_md5(rng: random.Random, request_bytes: bytes) -> bytes:
    aggregator = RecordAggregator()
    aggregator.add_user_record("a", request_bytes)
    aggregator.add_user_record("b", request_bytes)
    _, _, data = aggregator.clear_and_get().get_contents()
    return data[:-1] + bytes([data[-1] ^ 0xFF])


_MAKERS = {
    "random-bytes": _random_bytes,
    "truncated-proto": _truncated_proto,
    "bad-json": _bad_json,
    "json-not-otlp": _json_not_otlp,
    "gzip-garbage": _gzip_garbage,
    "gzip-truncated": _gzip_truncated,
    "zstd-corrupt": _zstd_corrupt,
    "kpl-bad-md5": _kpl_bad_md5,
}
