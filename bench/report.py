"""The printed table and the headline keys of ``bench/results.json``."""

from __future__ import annotations

from typing import Any

from bench.workload import FORMS, REFERENCE_FORM

#: Targets of issue 3: (results key, comparison, bound, what).
TARGETS = (
    ("full_path_spans_per_sec", ">=", 200_000, "full path, protobuf, per core"),
    ("speedup_vs_naive", ">=", 15, "full path / naive, same run"),
    ("peak_rss_mb", "<", 300, "10k series + 50k pending traces"),
    ("usd_dynamodb_s3_per_million_spans_kcl", "<=", 0.02, "DynamoDB+S3, KCL"),
    ("usd_dynamodb_s3_per_million_spans_lambda", "<=", 0.02, "DynamoDB+S3, Lambda"),
    ("lag_p99_secs", "<=", None, "flush interval + 2 s"),
    ("kcl_lag_p99_secs", "<=", None, "KCL: flush interval + 2 s"),
    ("scaling_2_workers", ">=", 1.8, "2 workers on 2 cores / 1"),
)

HEADLINE_KEYS = (
    "full_path_spans_per_sec",
    "decode_aggregate_spans_per_sec",
    "naive_spans_per_sec",
    "speedup_vs_naive",
    "peak_rss_mb",
    "usd_per_million_spans_kcl",
    "usd_per_million_spans_lambda",
    "usd_per_million_spans_naive",
    "lag_p99_secs",
    "scaling_2_workers",
)


def headline(measurements: dict[str, Any]) -> dict[str, float | None]:
    """Return the headline keys from the measurements (None: not measured).

    The KCL keys (``kcl_*``) are there only when the KCL path was measured
    (never in the quick run, which has no emulators for the daemon).
    """
    keys: dict[str, float | None] = dict.fromkeys(HEADLINE_KEYS)
    throughput = measurements.get("throughput")
    if throughput:
        reference = throughput["by_decoder"][throughput["default_decoder"]][
            REFERENCE_FORM
        ]
        keys["full_path_spans_per_sec"] = reference["full"]
        keys["decode_aggregate_spans_per_sec"] = reference["decode_aggregate"]
        keys["naive_spans_per_sec"] = reference["naive"]
        keys["speedup_vs_naive"] = reference["full_over_naive"]
    if memory := measurements.get("memory"):
        keys["peak_rss_mb"] = memory["peak_rss_mb"]
    if cost := measurements.get("cost"):
        for shape in ("kcl", "lambda", "naive"):
            usd = cost["shapes"][shape]["usd_per_million_spans"]
            keys[f"usd_per_million_spans_{shape}"] = usd["total"]
            keys[f"usd_dynamodb_s3_per_million_spans_{shape}"] = usd["dynamodb_and_s3"]
    if lag := measurements.get("lag"):
        keys["lag_p99_secs"] = lag["p99_secs"]
        keys["lag_p50_secs"] = lag["p50_secs"]
    if scaling := measurements.get("scaling"):
        keys["scaling_2_workers"] = scaling["scaling_2_workers"]
    if kcl := measurements.get("kcl"):
        keys["kcl_spans_per_sec_per_worker"] = kcl["backlog"][
            "kcl_spans_per_sec_per_worker"
        ]
        keys["kcl_lag_p99_secs"] = kcl["steady"]["p99_secs"]
        keys["kcl_lag_p50_secs"] = kcl["steady"]["p50_secs"]
    return keys


def targets(keys: dict[str, Any], measurements: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each target with the measured value and whether it was met."""
    rows = []
    for key, comparison, fixed_bound, what in TARGETS:
        bound = fixed_bound
        if key == "lag_p99_secs" and (lag := measurements.get("lag")):
            bound = lag["flush_interval_secs"] + 2
        if key == "kcl_lag_p99_secs" and (kcl := measurements.get("kcl")):
            bound = kcl["steady"]["flush_interval_secs"] + 2
        value = keys.get(key)
        met = None
        if value is not None and bound is not None:
            met = {
                ">=": value >= bound,
                "<=": value <= bound,
                "<": value < bound,
            }[comparison]
        rows.append(
            {
                "key": key,
                "target": f"{comparison} {bound}",
                "what": what,
                "value": value,
                "met": met,
            }
        )
    return rows


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    cells = [header] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = [
        "  ".join(
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in cells
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        if value == 0:
            return "0"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 1:
            return f"{value:.2f}"
        return f"{value:.3g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render(results: dict[str, Any]) -> str:
    """Return the human-readable table of a results document."""
    m = results["measurements"]
    lines = [
        f"spanstream benchmark ({results['mode']}), {results['date']}, "
        f"{results['machine']['platform']}, {results['machine']['cpus_allowed']} CPUs",
    ]
    w = results["workload"]
    lines.append(
        f"workload: seed {w['seed']}, {w['spans']:,} spans in {w['traces']:,} traces "
        f"({w['spans_per_trace_mean']} spans/trace, max {w['spans_per_trace_max']}), "
        f"{len(w['tenants'])} tenants, {w['services']} services, "
        f"{w['operations']} operations, {w['span_attributes_per_span_mean']} span + "
        f"{w['resource_attributes_per_span_mean']} resource attributes/span, "
        f"errors {w['error_rate']:.1%}, "
        f"cold starts {w['cold_start_rate_of_invocations']:.1%} of "
        f"{w['function_spans_share']:.1%} function spans, "
        f"{w['spans_per_record_protobuf']} spans/record"
    )
    if t := m.get("throughput"):
        for decoder, by_form in t["by_decoder"].items():
            lines.append("")
            lines.append(
                f"[1,2] spans/s per core (CPU {t['pinned_cpu']}), decoder {decoder}, "
                f"median of {t['repeats']}; speed-ups are medians of paired ratios;"
                " gc: share of the pass spent in the garbage collector"
            )
            rows = [
                [
                    form,
                    r["decode"],
                    r["decode_aggregate"],
                    r["full"],
                    r["naive"],
                    r["full_over_naive"],
                    r["decode_aggregate_over_naive"],
                    f"{r['full_gc_share']:.1%}",
                    f"{r['naive_gc_share']:.1%}",
                ]
                for form, r in ((f, by_form[f]) for f in FORMS)
            ]
            lines += _table(
                [
                    "form",
                    "decode+enrich",
                    "+aggregate",
                    "full path",
                    "naive",
                    "full/naive",
                    "dec+agg/naive",
                    "gc full",
                    "gc naive",
                ],
                rows,
            )
    if mem := m.get("memory"):
        lines.append("")
        lines.append(
            f"[3] peak RSS {mem['peak_rss_mb']} MB "
            f"(start-up {mem['startup_rss_mb']} MB): {mem['series']:,} series, "
            f"{mem['pending_traces']:,} pending traces of "
            f"{mem['spans_per_trace']} spans, {mem['pending_archive_rows']:,} rows "
            "awaiting the archive"
        )
    if cost := m.get("cost"):
        lines.append("")
        lines.append(
            f"[4] per million spans, put at {cost['steady_spans_per_sec']:g} spans/s "
            f"(achieved {cost['achieved_spans_per_sec']:,}); kcl replays the first "
            f"{cost['replayed_secs']:g} s, lambda runs live on as many seconds; "
            f"{cost['region']} prices of {cost['prices_as_of']}"
        )
        rows = []
        for shape, c in cost["shapes"].items():
            per, usd = c["per_million_spans"], c["usd_per_million_spans"]
            rows.append(
                [
                    shape,
                    per["dynamodb_write_units"],
                    per["dynamodb_read_units"],
                    per["s3_puts"],
                    per["kinesis_get_records"],
                    per["kinesis_put_payload_units"],
                    per["lambda_requests"],
                    per["lambda_gb_seconds"],
                    usd["dynamodb_and_s3"],
                    usd["total"],
                ]
            )
        lines += _table(
            [
                "shape",
                "WRU",
                "RRU",
                "S3 PUT",
                "GetRecords",
                "trace-stream PUT units",
                "Lambda req",
                "GB-s",
                "$ DDB+S3",
                "$ total",
            ],
            rows,
        )
        for shape, c in cost["shapes"].items():
            lines.append(f"  {shape}: {c['how']}")
            if "spans_per_invocation_sec" in c:
                lines.append(
                    f"  {shape}: {c['spans_per_invocation_sec']:,} spans per "
                    "invocation-second"
                )
        stream = cost["stream_usd_per_million_spans"]
        lines.append(f"  stream (every shape): ${stream['usd']} ({stream['how']})")
    if lag := m.get("lag"):
        lines.append("")
        lines.append(
            f"[5] lag put -> counted in DynamoDB, put at {lag['spans_per_sec']:g} "
            f"spans/s (achieved {lag['achieved_spans_per_sec']:,}) "
            f"for {lag['duration_secs']:g} s, "
            f"flush every {lag['flush_interval_secs']:g} s: p50 {lag['p50_secs']} s, "
            f"p99 {lag['p99_secs']} s, max {lag['max_secs']} s "
            f"({lag['spans']:,} spans, {lag['flushes']} flushes)"
        )
    if k := m.get("kcl"):
        b, st = k["backlog"], k["steady"]
        lines.append("")
        lines.append(
            f"[KCL] backlog of {b['spans']:,} spans on {b['shards']} shards: one KCL "
            f"worker {b['kcl_spans_per_sec_per_worker']:,} spans/s "
            f"({b['kcl_worker_secs']} s), local runner "
            f"{b['local_runner_spans_per_sec']:,} spans/s ({b['local_runner_secs']} s)"
            f", KCL/local {b['kcl_over_local']}x, same emulators"
        )
        lines.append(
            "[KCL] lag put -> counted in DynamoDB (before the checkpoint) at "
            f"{st['spans_per_sec']:g} spans/s (achieved "
            f"{st['achieved_spans_per_sec']:,}), flush every "
            f"{st['flush_interval_secs']:g} s: p50 {st['p50_secs']} s, p99 "
            f"{st['p99_secs']} s, max {st['max_secs']} s ({st['flushes']} flushes)"
        )
    if s := m.get("scaling"):
        lines.append("")
        lines.append(
            f"[6] 2 workers vs 1 (CPUs {s['cpus']}): {s['scaling_2_workers']}x "
            f"({s['one_worker_secs']} s vs {s['two_workers_secs']} s, median of "
            f"{s['repeats']})"
        )
    lines.append("")
    lines += _table(
        ["target", "bound", "measured", "met"],
        [[r["what"], r["target"], r["value"], r["met"]] for r in results["targets"]],
    )
    return "\n".join(lines)
