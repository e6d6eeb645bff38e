"""Compare what landed in DynamoDB and S3 with the independent reference.

Each ``*_problems`` function returns a list of human-readable differences
(empty when everything matches), so a failing test shows every mismatch at
once rather than the first.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from spanstream.aggregate.sketch import RELATIVE_ACCURACY, relative_error
from spanstream.aggregate.types import LatencyStats
from spanstream.config import Settings
from spanstream.sinks import readers
from spanstream.traffic.reference import Expected, ExpectedStats, expected
from spanstream.traffic.truth import SpanTruth

QUANTILES = (0.5, 0.9, 0.99)
MAX_REPORTED = 20


def stats_problems(
    label: str, expected: ExpectedStats, actual: LatencyStats
) -> list[str]:
    problems = []
    for field in (
        "count",
        "errors",
        "duration_sum_nanos",
        "duration_min_nanos",
        "duration_max_nanos",
    ):
        want, got = getattr(expected, field), getattr(actual, field)
        if want != got:
            problems.append(f"{label}: {field} expected {want!r}, got {got!r}")
    for q in QUANTILES:
        exact = expected.quantile(q)
        estimate = actual.sketch.quantile(q)
        if (
            estimate is None
            or relative_error(estimate, exact) > RELATIVE_ACCURACY + 1e-9
        ):
            problems.append(
                f"{label}: p{int(q * 100)} expected ~{exact}, got {estimate}"
            )
    return problems


def red_problems(dynamodb: Any, settings: Settings, expected: Expected) -> list[str]:
    rows = readers.scan_metrics(dynamodb, settings)
    actual = {tuple(row.key): row.stats for row in rows}
    problems = _key_problems("RED series", set(expected.red), set(actual))
    for key in sorted(set(expected.red) & set(actual)):
        problems += stats_problems(f"RED {key}", expected.red[key], actual[key])
    return problems


def edge_problems(dynamodb: Any, settings: Settings, expected: Expected) -> list[str]:
    rows = readers.scan_edges(dynamodb, settings)
    actual = {tuple(row.key): row.stats for row in rows}
    problems = _key_problems("edges", set(expected.edges), set(actual))
    for key in sorted(set(expected.edges) & set(actual)):
        problems += stats_problems(f"edge {key}", expected.edges[key], actual[key])
    return problems


def cold_start_problems(
    dynamodb: Any, settings: Settings, expected: Expected
) -> list[str]:
    rows = readers.scan_cold_starts(dynamodb, settings)
    actual = {tuple(row.key): row.stats for row in rows}
    problems = _key_problems(
        "cold-start series", set(expected.cold_starts), set(actual)
    )
    for key in sorted(set(expected.cold_starts) & set(actual)):
        want, got = expected.cold_starts[key], actual[key]
        for field in (
            "cold_count",
            "cold_duration_sum_nanos",
            "warm_count",
            "warm_duration_sum_nanos",
        ):
            if getattr(want, field) != getattr(got, field):
                problems.append(
                    f"cold starts {key}: {field} expected {getattr(want, field)}, "
                    f"got {getattr(got, field)}"
                )
    return problems


def trace_problems(
    dynamodb: Any, s3: Any, settings: Settings, expected: Expected
) -> list[str]:
    """Compare the summaries in the store ``settings`` names with ``expected``."""
    summaries = {
        (s.tenant, s.trace_id): s
        for s in readers.scan_summaries(settings, s3, dynamodb)
    }
    problems = _key_problems("trace summaries", set(expected.traces), set(summaries))
    for key in sorted(set(expected.traces) & set(summaries)):
        want, got = expected.traces[key], summaries[key]
        for field in (
            "root_service",
            "root_operation",
            "start_unix_nanos",
            "end_unix_nanos",
            "span_count",
            "error_count",
            "services",
            "cold_start_count",
        ):
            if getattr(want, field) != getattr(got, field):
                problems.append(
                    f"trace {key}: {field} expected {getattr(want, field)!r}, "
                    f"got {getattr(got, field)!r}"
                )
    return problems


def archive_problems(
    s3: Any, settings: Settings, expected_span_ids: Counter[tuple[str, str]]
) -> list[str]:
    table = readers.read_archive(s3, settings)
    archived = Counter(
        zip(
            table.column("trace_id").to_pylist(),
            table.column("span_id").to_pylist(),
            strict=True,
        )
    )
    problems = []
    lost = expected_span_ids - archived
    doubled = {
        key: count for key, count in archived.items() if count > expected_span_ids[key]
    }
    if lost:
        problems.append(
            f"archive: {sum(lost.values())} spans lost, e.g. {list(lost)[:3]}"
        )
    if doubled:
        problems.append(
            f"archive: {len(doubled)} spans archived more than once, "
            f"e.g. {list(doubled)[:3]}"
        )
    return problems


def _key_problems(what: str, expected: set[Any], actual: set[Any]) -> list[str]:
    problems = []
    missing = sorted(expected - actual)
    extra = sorted(actual - expected)
    if missing:
        problems.append(f"{what}: {len(missing)} missing, e.g. {missing[:3]}")
    if extra:
        problems.append(f"{what}: {len(extra)} unexpected, e.g. {extra[:3]}")
    return problems


def report(problems: list[str]) -> str:
    shown = problems[:MAX_REPORTED]
    more = len(problems) - len(shown)
    return "\n".join(shown) + (f"\n... and {more} more" if more > 0 else "")


def span_stage_problems(
    dynamodb: Any, s3: Any, settings: Settings, truth: list[SpanTruth]
) -> list[str]:
    """Return the differences of what the span stage writes (RED series, cold
    starts, the archive) from the reference computed from ``truth``."""
    want = expected(truth, settings.window_secs)
    problems = red_problems(dynamodb, settings, want)
    problems += cold_start_problems(dynamodb, settings, want)
    problems += archive_problems(
        s3, settings, Counter((t.trace_id, t.span_id) for t in truth)
    )
    return problems


def pipeline_problems(
    dynamodb: Any, s3: Any, settings: Settings, truth: list[SpanTruth]
) -> list[str]:
    """Return the differences of everything a run with both stages writes
    (the span stage's outputs, trace summaries and edges) from the reference."""
    want = expected(truth, settings.window_secs)
    problems = span_stage_problems(dynamodb, s3, settings, truth)
    problems += edge_problems(dynamodb, settings, want)
    problems += trace_problems(dynamodb, s3, settings, want)
    return problems
