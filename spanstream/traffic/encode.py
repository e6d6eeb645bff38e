"""Generated traces as Kinesis records, in every form spanstream reads.

Forms (`Form`):

* ``otlp-proto``: what the Collector's Kinesis exporter writes: spans are
  batched (about `DEFAULT_BATCH_SPANS` at a time) and each resource of a
  batch becomes one record, an ``ExportTraceServiceRequest`` holding one
  ``ResourceSpans``, under a random partition key.
* ``otlp-proto-by-trace``: one request per trace, keyed by the trace id.
* ``otlp-json``: ``otlp-proto`` batching, written as OTLP/JSON.
* ``gzip``, ``zlib``, ``deflate`` (raw), ``zstd``: one of the three forms
  above (drawn per group of 10 to 60 traces), compressed. One zstd frame in
  four is written the streaming way, without the content size in its header.
* ``kpl``: ``otlp-proto`` records packed 2 to 8 at a time into KPL
  aggregated records (`aws_kinesis_agg`), all bound for one shard as the
  KPL does it (explicit hash keys, see `_aggregate`).
* ``mixed``: each group of 1 to 40 traces in a form drawn from all the above.

Every span of the input is in exactly one record. An OTLP payload never
exceeds ``max_record_bytes`` (a batch that would is split in halves); KPL
records stay within the aggregator's 1 MiB.
"""

from __future__ import annotations

import enum
import gzip
import hashlib
import json
import random
import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple

import zstandard
from aws_kinesis_agg.aggregator import RecordAggregator

from spanstream.traffic import otlp
from spanstream.traffic.generator import gc_paused
from spanstream.traffic.model import GeneratedSpan, GeneratedTrace
from spanstream.traffic.poison import poison_records

__all__ = [
    "DEFAULT_BATCH_SPANS",
    "EncodedRecord",
    "Form",
    "LabelledRecord",
    "encode_labelled_records",
    "encode_records",
    "poison_records",
]

DEFAULT_BATCH_SPANS = 256
KINESIS_MAX_RECORD_BYTES = 1_048_576


class Form(enum.StrEnum):
    """A record form, by the name the CLI and tests use."""

    OTLP_PROTO = "otlp-proto"
    OTLP_PROTO_BY_TRACE = "otlp-proto-by-trace"
    OTLP_JSON = "otlp-json"
    GZIP = "gzip"
    ZLIB = "zlib"
    DEFLATE = "deflate"
    ZSTD = "zstd"
    KPL = "kpl"
    MIXED = "mixed"


BASE_FORMS = (Form.OTLP_PROTO, Form.OTLP_PROTO_BY_TRACE, Form.OTLP_JSON)
COMPRESSED_FORMS = (Form.GZIP, Form.ZLIB, Form.DEFLATE, Form.ZSTD)


class EncodedRecord(NamedTuple):
    """A record to put on the stream."""

    partition_key: str
    data: bytes


class LabelledRecord(NamedTuple):
    """A record with what it is: ``form`` such as ``"gzip+otlp-json"``."""

    form: str
    span_count: int
    record: EncodedRecord


def encode_records(
    traces: Sequence[GeneratedTrace],
    form: Form | str,
    seed: int,
    batch_spans: int = DEFAULT_BATCH_SPANS,
    max_record_bytes: int = KINESIS_MAX_RECORD_BYTES,
) -> list[EncodedRecord]:
    """Return ``(partition_key, data)`` records holding every span of ``traces``.

    The same traces, form and seed give the same bytes. Raises ValueError
    for an unknown form.
    """
    return [
        labelled.record
        for labelled in encode_labelled_records(
            traces, form, seed, batch_spans, max_record_bytes
        )
    ]


def encode_labelled_records(
    traces: Sequence[GeneratedTrace],
    form: Form | str,
    seed: int,
    batch_spans: int = DEFAULT_BATCH_SPANS,
    max_record_bytes: int = KINESIS_MAX_RECORD_BYTES,
) -> list[LabelledRecord]:
    """Like `encode_records`, with each record's form and span count."""
    encoder = _Encoder(random.Random(seed), batch_spans, max_record_bytes)
    form = Form(form)
    with gc_paused():
        return encoder.encode(list(traces), form)


class _Encoder:
    def __init__(
        self, rng: random.Random, batch_spans: int, max_record_bytes: int
    ) -> None:
        self.rng = rng
        self.batch_spans = batch_spans
        self.max_record_bytes = max_record_bytes
        self.cache = otlp.AttributeCache()

    def encode(self, traces: list[GeneratedTrace], form: Form) -> list[LabelledRecord]:
        if form is Form.MIXED:
            return self._mixed(traces)
        if form in COMPRESSED_FORMS:
            return self._compressed(traces, form)
        if form is Form.KPL:
            return self._kpl(traces)
        if form is Form.OTLP_PROTO_BY_TRACE:
            return [
                record
                for trace in traces
                for record in self._proto_records(trace.spans, trace.trace_id_hex, form)
            ]
        return self._batched(traces, form)

    def _key(self) -> str:
        return f"{self.rng.getrandbits(128):032x}"

    # -- plain forms ------------------------------------------------------

    def _batched(
        self, traces: list[GeneratedTrace], form: Form
    ) -> list[LabelledRecord]:
        """Exporter style: a batch of spans becomes a record per resource."""
        records = []
        for batch in _batches(traces, self.batch_spans):
            for scope_groups in otlp.group_spans(batch):
                spans = [span for group in scope_groups for span in group]
                if form is Form.OTLP_JSON:
                    records.extend(self._json_records(spans))
                else:
                    records.extend(self._proto_records(spans, None, form))
        return records

    def _proto_records(
        self, spans: list[GeneratedSpan], key: str | None, form: Form
    ) -> list[LabelledRecord]:
        """Return one record of ``spans``, or more if one would be too big.

        ``key`` None draws a random partition key per record.
        """
        data = otlp.export_request(spans, self.cache).SerializeToString()
        if len(data) > self.max_record_bytes and len(spans) > 1:
            half = len(spans) // 2
            return self._proto_records(spans[:half], key, form) + self._proto_records(
                spans[half:], key, form
            )
        record = EncodedRecord(self._key() if key is None else key, data)
        return [LabelledRecord(form.value, len(spans), record)]

    def _json_records(self, spans: list[GeneratedSpan]) -> list[LabelledRecord]:
        enum_names = self.rng.random() < 0.5
        data = _json_bytes(otlp.json_request(spans, enum_names))
        if len(data) > self.max_record_bytes and len(spans) > 1:
            half = len(spans) // 2
            return self._json_records(spans[:half]) + self._json_records(spans[half:])
        record = EncodedRecord(self._key(), data)
        return [LabelledRecord(Form.OTLP_JSON.value, len(spans), record)]

    # -- wrapped forms ----------------------------------------------------

    def _groups(
        self, traces: list[GeneratedTrace], min_size: int, max_size: int
    ) -> list[list[GeneratedTrace]]:
        groups = []
        start = 0
        while start < len(traces):
            size = self.rng.randint(min_size, max_size)
            groups.append(traces[start : start + size])
            start += size
        return groups

    def _mixed(self, traces: list[GeneratedTrace]) -> list[LabelledRecord]:
        forms = [form for form in Form if form is not Form.MIXED]
        records = []
        for group in self._groups(traces, 1, 40):
            records.extend(self.encode(group, self.rng.choice(forms)))
        return records

    def _compressed(
        self, traces: list[GeneratedTrace], form: Form
    ) -> list[LabelledRecord]:
        records = []
        for group in self._groups(traces, 10, 60):
            for inner in self.encode(group, self.rng.choice(BASE_FORMS)):
                data = self._compress(form, inner.record.data)
                records.append(
                    LabelledRecord(
                        f"{form.value}+{inner.form}",
                        inner.span_count,
                        EncodedRecord(inner.record.partition_key, data),
                    )
                )
        return records

    def _compress(self, form: Form, data: bytes) -> bytes:
        if form is Form.GZIP:
            return gzip.compress(data, compresslevel=6, mtime=0)
        if form is Form.ZLIB:
            return zlib.compress(data)
        if form is Form.DEFLATE:
            compressor = zlib.compressobj(wbits=-15)
            return compressor.compress(data) + compressor.flush()
        streaming = self.rng.random() < 0.25
        return _ZSTD_COMPRESSORS[streaming](data)

    def _kpl(self, traces: list[GeneratedTrace]) -> list[LabelledRecord]:
        user_records = self._batched(traces, Form.OTLP_PROTO)
        records = []
        start = 0
        while start < len(user_records):
            size = self.rng.randint(2, 8)
            records.extend(_aggregate(user_records[start : start + size]))
            start += size
        return records


def _batches(
    traces: list[GeneratedTrace], batch_spans: int
) -> list[list[GeneratedSpan]]:
    batches: list[list[GeneratedSpan]] = []
    batch: list[GeneratedSpan] = []
    for trace in traces:
        batch.extend(trace.spans)
        if len(batch) >= batch_spans:
            batches.append(batch)
            batch = []
    if batch:
        batches.append(batch)
    return batches


def _json_bytes(document: object) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _zstd_whole(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def _zstd_streaming(data: bytes) -> bytes:
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    chunker = compressor.compressobj()
    return chunker.compress(data) + chunker.flush()


_ZSTD_COMPRESSORS: dict[bool, Callable[[bytes], bytes]] = {
    False: _zstd_whole,
    True: _zstd_streaming,
}


def _aggregate(user_records: list[LabelledRecord]) -> list[LabelledRecord]:
    """Pack ``user_records`` into as few KPL aggregated records as fit.

    The KPL packs only user records bound for one shard, and the KCL drops
    (silently) a user record whose hash key lies outside the shard it was
    read from. So every user record here keeps its partition key but gets
    the explicit hash key of the group's first one, and each aggregated
    record is put under that first key: whatever the stream's shard map,
    all of them belong to the shard the record lands on.
    """
    aggregator = RecordAggregator()
    group_key = user_records[0].record.partition_key
    hash_key = str(int(hashlib.md5(group_key.encode()).hexdigest(), 16))
    packed: list[LabelledRecord] = []
    spans_in_current = 0
    for user in user_records:
        full = aggregator.add_user_record(
            user.record.partition_key, user.record.data, explicit_hash_key=hash_key
        )
        if full is not None:
            packed.append(_kpl_record(full, group_key, spans_in_current))
            spans_in_current = 0
        spans_in_current += user.span_count
    last = aggregator.clear_and_get()
    if last is not None:
        packed.append(_kpl_record(last, group_key, spans_in_current))
    return packed


def _kpl_record(
    agg_record: object, partition_key: str, span_count: int
) -> LabelledRecord:
    _, _, data = agg_record.get_contents()  # type: ignore[attr-defined]
    return LabelledRecord(
        "kpl+otlp-proto", span_count, EncodedRecord(partition_key, data)
    )
