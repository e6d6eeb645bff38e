"""The compiled fast path for OTLP payloads, when it is installed.

`spanstream_native` (built from ``native/``) decodes an
``ExportTraceServiceRequest`` and appends enriched rows straight to a
`SpanBatch`'s column lists. It must produce exactly what `SpanExtractor` does;
the Python path stays the reference, and the tests compare the two.

OTLP/JSON goes the same way: the extension writes the document as the
protobuf request ``json_format.ParseDict`` would build and extracts that. It
handles the common shape of a document only and declines anything else
(`parse_otlp_json` returns None), which the Python path then decides.

``SPANSTREAM_DECODER`` chooses: ``auto`` (the default) uses the extension if
it imports, ``python`` never does, ``native`` requires it. The same setting
chooses the trace assembler (`spanstream.extension`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from spanstream import extension
from spanstream.config import Settings
from spanstream.enrich.spans import ExtractStats
from spanstream.model import RecordRef, SpanBatch

try:
    import spanstream_native
except ImportError:  # the extension is optional
    spanstream_native = None

logger = logging.getLogger(__name__)

DECODER_VARIABLE = extension.IMPLEMENTATION_VARIABLE
DECODERS = extension.IMPLEMENTATIONS


def is_available() -> bool:
    """Return True if the compiled extension imported."""
    return spanstream_native is not None


def use_native(
    decoder: str | None = None, environ: Mapping[str, str] | None = None
) -> bool:
    """Return whether OTLP payloads (protobuf and JSON) go through the extension.

    ``decoder`` overrides ``SPANSTREAM_DECODER`` from ``environ`` (default
    ``os.environ``). Raises `ConfigError` for a value other than ``auto``,
    ``python`` or ``native``, and for ``native`` when the extension is missing
    (`spanstream.extension.use_native`, which the trace assembler asks too).
    """
    return extension.use_native(decoder, environ, available=is_available())


def parse_protobuf(payload: bytes) -> Any:
    """Return the decoded request, or None if the extension refuses the bytes.

    None means "not an OTLP request with resource spans", as for the Python
    parser; the caller then asks the Python parser, which has the last word.
    """
    try:
        return spanstream_native.parse(payload)
    except spanstream_native.ProtobufPayloadError:
        return None


def parse_otlp_json(payload: bytes) -> Any:
    """Return the OTLP/JSON ``payload`` decoded, or None if the extension declines.

    None means "not handled here", never "invalid": the caller then parses
    the payload with the Python path, which accepts it (with the same rows)
    or refuses it. Nothing is appended anywhere either way.
    """
    return spanstream_native.parse_otlp_json(payload)


def is_native_traces(pb_traces: Any) -> bool:
    """Return True for a request decoded by `parse_protobuf`."""
    return spanstream_native is not None and isinstance(
        pb_traces, spanstream_native.Traces
    )


class NativeSpanExtractor:
    """`SpanExtractor.extract` for requests decoded by the extension."""

    def __init__(self, settings: Settings) -> None:
        self._tenant_attribute = settings.tenant_attribute
        self._default_tenant = settings.default_tenant
        self._max_attributes = settings.max_attributes_per_span
        self._max_value_chars = settings.max_attribute_value_chars

    def extract(self, traces: Any, ref: RecordRef, batch: SpanBatch) -> ExtractStats:
        """Append every valid span of ``traces`` to ``batch``; return counts.

        Same contract as `SpanExtractor.extract`, rows and counts included.
        """
        # The counts come in the order of the `ExtractStats` fields.
        counts = traces.extract_into(
            tuple(batch.columns().values()),
            self._tenant_attribute,
            self._default_tenant,
            self._max_attributes,
            self._max_value_chars,
            ref.shard_id,
            ref.sequence_number,
            ref.sub_sequence_number,
            ref.arrival_unix_millis,
        )
        stats = ExtractStats(*counts)
        if stats.invalid_spans:
            logger.warning(
                "%s: skipped %d spans with malformed ids or times",
                ref.describe(),
                stats.invalid_spans,
            )
        return stats
