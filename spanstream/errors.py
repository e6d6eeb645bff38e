"""The exception hierarchy: one root, one subclass per pipeline stage."""

from __future__ import annotations

from spanstream.model import RecordRef


class SpanstreamError(Exception):
    """Root of every error spanstream raises on purpose."""


class ConfigError(SpanstreamError):
    """A setting is missing or has a value spanstream cannot use."""


class RecordError(SpanstreamError):
    """A record could not be processed; names the record it is about.

    ``ref`` locates the record (stream, shard, sequence number) and ``reason``
    says what was expected and what was found. ``str()`` combines both so a log
    line or a dead letter carries everything needed to find the bytes again.
    """

    def __init__(self, ref: RecordRef, reason: str) -> None:
        self.ref = ref
        self.reason = reason
        super().__init__(f"{ref.describe()}: {reason}")


class DecodeError(RecordError):
    """The record's bytes are not any span form spanstream reads."""


class DecompressionBombError(DecodeError):
    """The record's compressed payload would inflate past the payload limit."""


class LimitExceededError(RecordError):
    """The record is well formed but over a configured limit."""


class SinkError(SpanstreamError):
    """A write to S3 or DynamoDB did not become durable."""
