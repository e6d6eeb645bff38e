"""``spanstream dlq redrive`` end to end: dead-lettered, fixed, re-driven, counted.

GIVEN a record over the span limit next to a good one on kinesis-mock; WHEN
the local runner reads them, the limit is raised, ``spanstream dlq redrive``
runs (as a subprocess, from the environment like any command) and a runner
that has moved past the original records (as a consumer restarted from its
checkpoint would have) reads on; THEN the record's spans are archived and
aggregated once, and its dead letter has moved below ``redriven/``.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)
from opentelemetry.proto.trace.v1 import trace_pb2

from consumers.local.runner import LocalRunner
from spanstream.config import Settings
from spanstream.sinks import readers
from spanstream.sinks.deadletter import (
    list_dead_letter_objects,
    list_dead_letters,
    read_dead_letter,
    redriven_key,
)
from spanstream.sinks.factory import make_sinks
from spanstream.sinks.kinesis import put_records

REPO = Path(__file__).resolve().parents[2]
RUN_DEADLINE_SECS = 120
COMMAND_TIMEOUT_SECS = 120
SERVICE = "checkout"
SPAN_LIMIT = 2
SECRET = "customer-secret-4b1d"


def request_bytes(trace_byte: int, span_count: int) -> bytes:
    """Return one OTLP request: a trace of ``span_count`` spans ending now."""
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    attribute = resource_spans.resource.attributes.add()
    attribute.key, attribute.value.string_value = "service.name", SERVICE
    scope_spans = resource_spans.scope_spans.add()
    end_nanos = time.time_ns()
    span_ids = [
        (trace_byte * 100 + i + 1).to_bytes(8, "big") for i in range(span_count)
    ]
    for span_id in span_ids:
        span = scope_spans.spans.add(
            trace_id=bytes([trace_byte]) * 16,
            span_id=span_id,
            parent_span_id=b"" if span_id == span_ids[0] else span_ids[0],
            name="POST /pay",
            kind=trace_pb2.Span.SPAN_KIND_SERVER,
            start_time_unix_nano=end_nanos - 2_000_000,
            end_time_unix_nano=end_nanos,
        )
        secret = span.attributes.add()
        secret.key, secret.value.string_value = "card", SECRET
    return request.SerializeToString()


def run_until(runner: LocalRunner, records: int) -> None:
    runner.run(lambda stats: stats.records >= records, RUN_DEADLINE_SECS)


def dlq(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "consumers.cli", "dlq", *args],
        env=environ,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECS,
        check=False,
    )


def span_counts(dynamodb: Any, settings: Settings) -> int:
    rows = readers.read_metrics(dynamodb, settings, settings.default_tenant, SERVICE)
    return sum(row.stats.count for row in rows)


def test_a_record_dead_lettered_by_a_limit_is_counted_once_after_redrive(
    settings: Settings,
    settings_environ: dict[str, str],
    make_resources: Any,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
) -> None:
    # GIVEN a record of 5 spans and one of 1 span, read with a limit of 2
    make_resources(shard_count=2)
    strict = dataclasses.replace(settings, max_spans_per_record=SPAN_LIMIT)
    big, small = request_bytes(0xB1, 5), request_bytes(0x51, 1)
    put_records(kinesis, settings.stream_name, [("big", big), ("small", small)])
    run_until(LocalRunner(strict, kinesis, make_sinks(strict, s3, dynamodb)), 2)
    [key] = list_dead_letters(s3, settings)
    letter = read_dead_letter(s3, settings, key)
    assert (letter.stage, letter.record_bytes) == ("limit", big)
    assert span_counts(dynamodb, settings) == 1

    # WHEN the limit is raised; a runner is reading from the stream's end
    fixed = dataclasses.replace(settings, max_spans_per_record=100)
    runner = LocalRunner(
        fixed, kinesis, make_sinks(fixed, s3, dynamodb), start_at_latest=True
    )
    runner.discover_shards()
    assert runner.poll_once() == 0
    # AND the operator lists, dry-runs, then re-drives
    listing = dlq(settings_environ, "list")
    assert listing.returncode == 0, listing.stderr
    [line] = listing.stdout.splitlines()[1:]
    assert line.split("\t")[3:] == [
        "limit",
        f"record holds 5 spans, over the limit of {SPAN_LIMIT}",
        str(len(big)),
        key,
    ]
    dry = dlq(settings_environ, "redrive", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert list(list_dead_letters(s3, settings)) == [key]
    redrive = dlq(settings_environ, "redrive")
    assert redrive.returncode == 0, redrive.stderr
    assert redrive.stdout.splitlines()[0].startswith(f"redriven\t{key}\t")
    run_until(runner, 1)

    # THEN the 5 spans are archived and counted, once
    assert runner.stats.spans == 5
    assert span_counts(dynamodb, fixed) == 6
    archived = readers.read_archive(s3, fixed).column("span_id").to_pylist()
    assert len(archived) == len(set(archived)) == 6
    trace = readers.find_trace(fixed, s3, dynamodb, fixed.default_tenant, "b1" * 16)
    assert trace is not None and trace.span_count == 5
    assert trace.root_service == SERVICE
    # AND the dead letter moved below redriven/, and nothing printed a payload
    assert list(list_dead_letters(s3, settings)) == []
    moved = [e.key for e in list_dead_letter_objects(s3, settings, redriven=True)]
    assert moved == [redriven_key(settings, key)]
    again = dlq(settings_environ, "redrive")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == [
        "redriven: 0, already-redriven: 0, would-redrive: 0, failed: 0"
    ]
    for output in (listing, dry, redrive, again):
        assert SECRET not in output.stdout + output.stderr
