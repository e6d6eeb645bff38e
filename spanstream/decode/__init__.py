"""Decode Kinesis records into enriched span rows.

`RecordDecoder.decode` takes one record as read from the stream and appends
its spans to a `SpanBatch`. It reads every form real producers write,
detected from the bytes: OTLP protobuf (``ExportTraceServiceRequest`` or
``TracesData``, same wire form), OTLP/JSON, Zipkin v2 JSON, each optionally
compressed (gzip, zlib, zstd, raw deflate), and KPL-aggregated records.

A record, or a KPL user record, that is none of these becomes a `DeadLetter`
carrying its original bytes and the reason; its neighbours are decoded as
usual. Nothing here raises for bad input.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import DecodeError as ProtobufDecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from spanstream.config import Settings
from spanstream.decode import native
from spanstream.decode.envelope import (
    Compression,
    deaggregate,
    decompress,
    detect_compression,
)
from spanstream.decode.otlp_json import is_otlp_json, parse_otlp_json
from spanstream.decode.zipkin import is_zipkin_json, parse_zipkin_json
from spanstream.enrich.spans import SpanExtractor
from spanstream.errors import (
    DecodeError,
    DecompressionBombError,
    LimitExceededError,
    RecordError,
)
from spanstream.model import DeadLetter, KinesisRecord, RecordRef, SpanBatch

logger = logging.getLogger(__name__)

_JSON_STARTS = (ord("{"), ord("["))
_PROTOBUF_FIRST_BYTE = 0x0A  # field 1 (resource_spans), length-delimited


@dataclass
class DecodeStats:
    """Counts over every record a decoder has seen."""

    records: int = 0
    user_records: int = 0
    spans: int = 0
    invalid_spans: int = 0
    dropped_attributes: int = 0
    truncated_attributes: int = 0
    #: tenant, service, operation... names cut to the attribute value limit
    truncated_names: int = 0
    dead_letters: int = 0
    forms: dict[str, int] = field(default_factory=dict)


class RecordDecoder:
    """Decodes records into a `SpanBatch`, collecting dead letters.

    One decoder is used by one consumer at a time; it keeps only counters.
    OTLP protobuf and OTLP/JSON payloads go through the compiled extension
    when `spanstream.decode.native.use_native` says so (``decoder`` overrides
    ``SPANSTREAM_DECODER``); it raises `ConfigError` for a bad choice. Any
    payload the extension refuses or declines is parsed by the Python path,
    which has the last word.
    """

    def __init__(self, settings: Settings, decoder: str | None = None) -> None:
        self._settings = settings
        self._extractor = SpanExtractor(settings)
        self._native_extractor = native.NativeSpanExtractor(settings)
        self._use_native = native.use_native(decoder)
        self.stats = DecodeStats()

    def decode(
        self, record: KinesisRecord, batch: SpanBatch, dead_letters: list[DeadLetter]
    ) -> int:
        """Append the spans of ``record`` to ``batch``; return how many.

        Poison records and poison KPL user records are appended to
        ``dead_letters`` with their original bytes and the reason; their rows
        never reach ``batch``.
        """
        self.stats.records += 1
        settings = self._settings
        if len(record.data) > settings.max_record_bytes:
            self._dead_letter(
                LimitExceededError(
                    record.ref,
                    f"record of {len(record.data)} bytes exceeds the limit of "
                    f"{settings.max_record_bytes} bytes",
                ),
                record.data,
                "limit",
                dead_letters,
            )
            return 0
        try:
            user_records = deaggregate(record)
        except RecordError as exc:
            self._dead_letter(exc, record.data, "decode", dead_letters)
            return 0
        appended = 0
        max_payload_bytes = settings.max_record_bytes * 16
        for user_record in user_records:
            self.stats.user_records += 1
            ref = user_record.ref
            try:
                compression = detect_compression(user_record.data)
                payload = decompress(
                    user_record.data, compression, ref, max_payload_bytes
                )
                pb_traces, form = self._parse(payload, ref, compression)
                appended += self._extract(pb_traces, ref, batch)
            except LimitExceededError as exc:
                self._dead_letter(exc, user_record.data, "limit", dead_letters)
            except RecordError as exc:
                self._dead_letter(exc, user_record.data, "decode", dead_letters)
            else:
                self.stats.forms[form] = self.stats.forms.get(form, 0) + 1
        return appended

    def _parse(
        self, payload: bytes, ref: RecordRef, compression: Compression
    ) -> tuple[Any, str]:
        """Return (protobuf message, form name) for a decompressed payload."""
        prefix = compression.value + "+" if compression is not Compression.NONE else ""
        if not payload:
            raise DecodeError(ref, "empty payload: expected OTLP or Zipkin spans")
        first = payload.lstrip()[:1]
        if first and first[0] in _JSON_STARTS:
            message, form = self._parse_json(payload, ref)
            return message, prefix + form
        if payload[0] == _PROTOBUF_FIRST_BYTE:
            message = self._parse_protobuf(payload)
            if message is not None:
                return message, prefix + "otlp-proto"
        if compression is Compression.NONE:
            inflated = self._try_deflate(payload, ref)
            if inflated is not None:
                return self._parse(inflated, ref, Compression.DEFLATE)
        raise DecodeError(
            ref,
            "payload is not OTLP protobuf, OTLP/JSON or Zipkin JSON, nor gzip, "
            # The first bytes in hex tell the form; more could be customer data.
            f"zlib, zstd or deflate of them; {len(payload)} bytes starting "
            f"{payload[:4].hex(' ')}",
        )

    def _parse_protobuf(self, payload: bytes) -> Any:
        # The Python parser decides whatever the extension refuses, so both
        # paths accept and reject the same payloads.
        if self._use_native:
            traces = native.parse_protobuf(payload)
            if traces is not None:
                return traces
        return _parse_protobuf(payload)

    def _try_deflate(self, payload: bytes, ref: RecordRef) -> bytes | None:
        """Return the payload inflated as raw deflate, or None if it is not.

        A payload that does inflate, past the limit, is a bomb, and says so.
        """
        try:
            return decompress(
                payload, Compression.DEFLATE, ref, self._settings.max_record_bytes * 16
            )
        except DecompressionBombError:
            raise
        except DecodeError:
            return None

    def _parse_json(self, payload: bytes, ref: RecordRef) -> tuple[Any, str]:
        if self._use_native:
            # None: the extension is not sure of this document (Zipkin JSON
            # included); the Python path below accepts or refuses it.
            traces = native.parse_otlp_json(payload)
            if traces is not None:
                return traces, "otlp-json"
        try:
            document = json.loads(payload)
        except (UnicodeDecodeError, ValueError) as exc:
            raise DecodeError(ref, f"payload is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            raise DecodeError(ref, "JSON payload is nested too deeply") from exc
        try:
            if is_otlp_json(document):
                return parse_otlp_json(document), "otlp-json"
            if is_zipkin_json(document):
                return parse_zipkin_json(document), "zipkin-json"
        except (
            json_format.ParseError,
            TypeError,
            ValueError,
            RecursionError,
            # float() of a JSON integer past the double range (a doubleValue
            # of 400 digits) raises this, and ParseDict lets it through.
            OverflowError,
        ) as exc:
            raise DecodeError(
                ref, f"JSON spans do not fit their schema: {exc}"
            ) from exc
        keys = (
            list(document)[:5]
            if isinstance(document, dict)
            else type(document).__name__
        )
        raise DecodeError(
            ref,
            "JSON payload is neither OTLP/JSON (resourceSpans) nor Zipkin v2 "
            f"(spans with traceId); found {keys!r}",
        )

    def _extract(self, pb_traces: Any, ref: RecordRef, batch: SpanBatch) -> int:
        is_native = native.is_native_traces(pb_traces)
        span_count = (
            pb_traces.span_count
            if is_native
            else sum(
                len(scope_spans.spans)
                for resource_spans in pb_traces.resource_spans
                for scope_spans in resource_spans.scope_spans
            )
        )
        if span_count > self._settings.max_spans_per_record:
            raise LimitExceededError(
                ref,
                f"record holds {span_count} spans, over the limit of "
                f"{self._settings.max_spans_per_record}",
            )
        before = len(batch)
        extractor = self._native_extractor if is_native else self._extractor
        extract_stats = extractor.extract(pb_traces, ref, batch)
        if extract_stats.invalid_spans > 0 and extract_stats.spans == 0:
            raise DecodeError(
                ref,
                f"none of the record's {extract_stats.invalid_spans} spans is valid",
            )
        if extract_stats.spans == 0:
            # Lenient protobuf parsing reads many short byte strings (b"\x0a\x00")
            # as a request with empty resources; such a record must not vanish.
            raise DecodeError(ref, "request holds no spans")
        self.stats.spans += extract_stats.spans
        self.stats.invalid_spans += extract_stats.invalid_spans
        self.stats.dropped_attributes += extract_stats.dropped_attributes
        self.stats.truncated_attributes += extract_stats.truncated_attributes
        self.stats.truncated_names += extract_stats.truncated_names
        return len(batch) - before

    def _dead_letter(
        self,
        error: RecordError,
        record_bytes: bytes,
        stage: str,
        dead_letters: list[DeadLetter],
    ) -> None:
        self.stats.dead_letters += 1
        logger.warning("dead-lettering %s", error)
        dead_letters.append(DeadLetter(error.ref, record_bytes, error.reason, stage))


def _parse_protobuf(payload: bytes) -> ExportTraceServiceRequest | None:
    """Return the parsed request, or None if the bytes are not one.

    Protobuf parsing is lenient: arbitrary bytes can parse as unknown fields.
    A payload that yields no resource spans is therefore not taken as OTLP.
    """
    message = ExportTraceServiceRequest()
    try:
        message.ParseFromString(payload)
    except (ProtobufDecodeError, RecursionError):
        return None
    if not message.resource_spans:
        return None
    return message
