"""Settings, read from ``SPANSTREAM_*`` environment variables and validated there.

Every runtime builds one `Settings` at start-up with `Settings.from_env()`; the
core receives it as a plain value. A bad value fails at once with
`ConfigError` naming the variable and the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from spanstream.errors import ConfigError

ENV_PREFIX = "SPANSTREAM_"
#: Highest ``max_attribute_value_chars``: names cut to that many characters
#: are stored in DynamoDB items (up to three in one, beside a summary's
#: service list), which must stay below DynamoDB's 400 KB item size.
MAX_ATTRIBUTE_VALUE_CHARS_LIMIT = 16_384
TRACE_SUMMARY_STORES = ("archive", "table")


@dataclass(frozen=True)
class Settings:
    """Everything the core and the runtimes may be configured with.

    The field name upper-cased with the ``SPANSTREAM_`` prefix is the
    environment variable (``window_secs`` -> ``SPANSTREAM_WINDOW_SECS``).
    """

    stream_name: str = "spanstream-spans"
    #: Stream of spans re-keyed by trace id, for the trace stage of runtimes
    #: whose processes each see only some shards (KCL workers). Empty: the
    #: trace stage runs in-process (the local runner), or not at all (Lambda,
    #: see docs/lambda.md).
    trace_stream_name: str = ""
    #: Buckets of trace ids on the trace stream, one partition key each
    #: (`spanstream.rekey`); a few times its shard count spreads them evenly.
    trace_stream_buckets: int = 64
    bucket: str = "spanstream-archive"
    table_prefix: str = "spanstream-"
    archive_prefix: str = "archive/"
    #: Where trace summaries go: ``archive`` (Parquet on S3 under
    #: ``trace_archive_prefix``, a few objects a flush) or ``table`` (one
    #: DynamoDB item a trace: look-ups by id in one GetItem, for about one
    #: write unit a trace). See docs/data-model.md.
    trace_summary_store: str = "archive"
    trace_archive_prefix: str = "traces/"
    dead_letter_prefix: str = "dead-letters/"
    region: str = "us-east-1"
    #: One endpoint for every AWS service (LocalStack style); empty means AWS.
    endpoint_url: str = ""
    #: Per-service endpoints; each overrides endpoint_url for its service.
    kinesis_endpoint_url: str = ""
    dynamodb_endpoint_url: str = ""
    s3_endpoint_url: str = ""
    #: Resource attribute that names the tenant of a span's resource.
    tenant_attribute: str = "tenant.id"
    default_tenant: str = "default"
    window_secs: int = 60
    #: A span whose window ended longer ago than this, measured against the
    #: record's arrival time, is counted as late instead of in its window.
    allowed_lateness_secs: int = 300
    flush_interval_secs: float = 10.0
    #: A trace is summarised once no span of it arrived for this long.
    trace_idle_secs: float = 30.0
    #: How long a summarised trace is remembered so late spans update it.
    trace_retention_secs: float = 600.0
    max_series_per_tenant: int = 10_000
    max_record_bytes: int = 1_048_576
    max_spans_per_record: int = 100_000
    max_attributes_per_span: int = 128
    #: Longest attribute value, and longest derived name (tenant, service,
    #: operation...), in characters; longer ones are cut and marked.
    max_attribute_value_chars: int = 4096
    dynamodb_write_concurrency: int = 16

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``).

        Raises `ConfigError` naming the variable when a value does not parse
        or is out of range.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            variable = ENV_PREFIX + spec.name.upper()
            if variable not in environ:
                continue
            raw = environ[variable]
            values[spec.name] = _parse(variable, raw, type(getattr(cls(), spec.name)))
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise `ConfigError` if a value is out of its range."""
        positive = (
            "window_secs",
            "flush_interval_secs",
            "trace_idle_secs",
            "trace_stream_buckets",
            "max_series_per_tenant",
            "max_record_bytes",
            "max_spans_per_record",
            "max_attributes_per_span",
            "max_attribute_value_chars",
            "dynamodb_write_concurrency",
        )
        for name in positive:
            value = getattr(self, name)
            if value <= 0:
                raise ConfigError(
                    f"{ENV_PREFIX}{name.upper()} must be > 0, got {value!r}"
                )
        if self.max_attribute_value_chars > MAX_ATTRIBUTE_VALUE_CHARS_LIMIT:
            raise ConfigError(
                f"{ENV_PREFIX}MAX_ATTRIBUTE_VALUE_CHARS must be <= "
                f"{MAX_ATTRIBUTE_VALUE_CHARS_LIMIT} (names of that length are "
                "stored in DynamoDB items, limited to 400 KB), "
                f"got {self.max_attribute_value_chars!r}"
            )
        if self.allowed_lateness_secs < 0:
            raise ConfigError(
                f"{ENV_PREFIX}ALLOWED_LATENESS_SECS must be >= 0, "
                f"got {self.allowed_lateness_secs!r}"
            )
        if self.trace_retention_secs < self.trace_idle_secs:
            raise ConfigError(
                f"{ENV_PREFIX}TRACE_RETENTION_SECS must be >= TRACE_IDLE_SECS, "
                f"got {self.trace_retention_secs!r}"
            )
        if self.trace_summary_store not in TRACE_SUMMARY_STORES:
            raise ConfigError(
                f"{ENV_PREFIX}TRACE_SUMMARY_STORE must be one of "
                f"{', '.join(TRACE_SUMMARY_STORES)}, got {self.trace_summary_store!r}"
            )
        prefixes = {self.archive_prefix, self.trace_archive_prefix}
        if len(prefixes) < 2 or any(
            a != b and a.startswith(b) for a in prefixes for b in prefixes
        ):
            raise ConfigError(
                f"{ENV_PREFIX}TRACE_ARCHIVE_PREFIX and {ENV_PREFIX}ARCHIVE_PREFIX "
                "must not contain each other, got "
                f"{self.trace_archive_prefix!r} and {self.archive_prefix!r}"
            )
        for name in ("stream_name", "bucket", "tenant_attribute", "default_tenant"):
            if not getattr(self, name):
                raise ConfigError(f"{ENV_PREFIX}{name.upper()} must not be empty")

    def table_name(self, table: str) -> str:
        """Return the physical DynamoDB table name for a logical one ("metrics")."""
        return f"{self.table_prefix}{table}"

    def endpoint_for(self, service: str) -> str | None:
        """Return the endpoint URL for an AWS service name, or None for AWS itself."""
        specific = getattr(self, f"{service}_endpoint_url", "")
        return specific or self.endpoint_url or None


def _parse(variable: str, raw: str, kind: type) -> object:
    try:
        if kind is bool:
            lowered = raw.strip().lower()
            if lowered not in ("true", "false", "1", "0"):
                raise ValueError(raw)
            return lowered in ("true", "1")
        if kind is int:
            return int(raw)
        if kind is float:
            return float(raw)
        return raw
    except ValueError as exc:
        raise ConfigError(f"{variable} must be a {kind.__name__}, got {raw!r}") from exc
