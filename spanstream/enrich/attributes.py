"""OTLP attribute values as strings, within limits.

The archive stores attributes as ``map<string,string>``; every OTLP
``AnyValue`` is rendered once here. A value longer than the limit is cut and
marked so a reader can tell it was cut; attributes past the count limit are
dropped and counted. A value that cannot be rendered drops only that
attribute.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

logger = logging.getLogger(__name__)

TRUNCATION_MARKER = "...[truncated]"


class AttributeLimits:
    """How many attributes a span keeps and how long a value may be."""

    __slots__ = ("max_count", "max_value_chars")

    def __init__(self, max_count: int, max_value_chars: int) -> None:
        self.max_count = max_count
        self.max_value_chars = max_value_chars


def any_value_to_python(value: Any) -> Any:
    """Return an OTLP ``AnyValue`` as a plain Python value (None if unset)."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [any_value_to_python(item) for item in value.array_value.values]
    if kind == "kvlist_value":
        return {
            kv.key: any_value_to_python(kv.value) for kv in value.kvlist_value.values
        }
    if kind == "bytes_value":
        return value.bytes_value.hex()
    return getattr(value, kind)


def render(value: Any) -> str:
    """Return a plain value as the string the archive stores."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class AttributeCounters:
    """Attributes dropped or cut while rendering, and derived names cut, for
    the batch's stats."""

    __slots__ = ("dropped", "truncated", "truncated_names")

    def __init__(self) -> None:
        self.dropped = 0
        self.truncated = 0
        self.truncated_names = 0


def cut_name(name: str, max_chars: int, counters: AttributeCounters) -> str:
    """Return ``name``, or its first ``max_chars`` characters and the marker.

    The same cut as an attribute value's, for the names the enrichment
    derives (tenant, service, operation...): they reach DynamoDB items, whose
    size is limited. A cut name is counted in ``counters.truncated_names``.
    """
    if len(name) <= max_chars:
        return name
    counters.truncated_names += 1
    return name[:max_chars] + TRUNCATION_MARKER


def to_string_map(
    key_values: Iterable[Any], limits: AttributeLimits, counters: AttributeCounters
) -> tuple[dict[str, str], dict[str, Any]]:
    """Return (rendered, typed) maps of OTLP ``KeyValue`` entries.

    ``rendered`` holds strings within the limits (for the archive); ``typed``
    holds the original typed values of the kept attributes (for enrichment
    rules, which compare numbers and booleans).
    """
    rendered: dict[str, str] = {}
    typed: dict[str, Any] = {}
    max_count = limits.max_count
    max_chars = limits.max_value_chars
    for key_value in key_values:
        if len(rendered) >= max_count:
            counters.dropped += 1
            continue
        value = key_value.value
        kind = value.WhichOneof("value")
        if kind == "string_value":
            plain: Any = value.string_value
            text = plain
        else:
            try:
                plain = any_value_to_python(value)
                text = render(plain)
            except (ValueError, TypeError, RecursionError):
                counters.dropped += 1
                logger.debug(
                    "dropped attribute %r: value cannot be rendered", key_value.key
                )
                continue
        if len(text) > max_chars:
            text = text[:max_chars] + TRUNCATION_MARKER
            counters.truncated += 1
        rendered[key_value.key] = text
        typed[key_value.key] = plain
    return rendered, typed
