"""Tenant isolation end to end, with tenants that send hostile names.

GIVEN generated traffic of tenants whose ids, service names, operation names,
function names, peer names and attribute values hold path syntax (``/``,
``..``), Hive partition syntax (``tenant=victim``), the DynamoDB key
separator ``#``, percent-escapes that look like another tenant's encoded id,
control characters, unicode and 2,000- to 5,000-character values; tenants
that reuse another tenant's trace and span ids; a tenant whose resources put
``tenant.id`` after the attribute count limit; every input form, with
records that mix tenants and a few poison records; WHEN the local runner
reads it into moto's S3 and DynamoDB; THEN, reading every object of the
bucket and every item of every table:

* every archive object sits under exactly one ``tenant=`` prefix, that
  prefix is the encoding of one tenant that sent spans, and the Parquet file
  holds only that tenant's spans; per tenant, the archive holds exactly the
  spans it sent;
* every item's partition key starts with the encoding of the tenant whose
  raw name the item carries, its keys are the encodings of its raw names,
  and the counts under each tenant's partitions equal what that tenant sent
  (RED, edges, cold starts and trace summaries also match the independent
  reference series by series);
* no key holds a control character or a ``.``/``..`` path segment, and no
  attribute value reaches a key, an item or a log line.

Names longer than `MAX_COMPONENT_CHARS` once encoded are cut and end in a
hash (docs/data-model.md), so their components cannot be decoded; the test
checks them against the encoding of the name the tenant sent instead.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import random
import re
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow.parquet as pq
import pytest
from compare import (
    cold_start_problems,
    edge_problems,
    red_problems,
    report,
    trace_problems,
)
from traffic import put_with_poison

from consumers.local.runner import LocalRunner
from devenv import Resources
from spanstream.config import Settings
from spanstream.sinks import items, readers
from spanstream.sinks.factory import make_sinks
from spanstream.sinks.keys import (
    MAX_COMPONENT_CHARS,
    SEPARATOR,
    decode_component,
    encode_component,
    is_capped,
    join_key,
)
from spanstream.sinks.summaries import latest_state, summaries_of
from spanstream.traffic import otlp
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_traces
from spanstream.traffic.model import GeneratedResource, GeneratedTrace, iter_spans
from spanstream.traffic.reference import expected
from spanstream.traffic.truth import DEFAULT_TENANT, SpanTruth

RUN_DEADLINE_SECS = 300
TRACES_PER_TENANT = 5
POISON_COUNT = 4
LEAK_MARKER = "LEAKMARK-7f3a9c"
#: A value no key, item or log line may hold: the marker among hostile bytes.
HOSTILE_VALUE = f"{LEAK_MARKER}\x00\n\x1b[2J../../tenant=victim/#pk#%2F"

#: Tenant ids; None sends no ``tenant.id`` (the default tenant).
HOSTILE_TENANTS: tuple[str | None, ...] = (
    None,
    "acme",
    "acme-evil",  # its prefix starts with acme's
    "../acme",
    "../other-tenant",
    "%2E%2E%2Facme",  # the encoding of ../acme, sent as a name
    "a/b",
    "x=y",
    "#",
    "acme#frontend",  # acme's metrics partition key for service frontend
    "tenant-b",
    "tenant-b/",
    "tenant-b%2F",
    "tenant-b%252F",
    "tenant=victim",
    "acme/dt=2024-01-01/hour=00",
    ".",
    "..",
    "~",  # the encoding of the empty name
    "%7E",
    "nul\x00byte",
    "line\nfeed\r",
    "esc\x1b[31mred\x1b[0m",
    "ünïcødé-租户-🙂",
    "L" * 2_000,
    "L" * 1_999 + "M",  # shares its first 1,999 characters with the one above
    "租" * 2_000,
    "T" * 5_000,  # past max_attribute_value_chars: stored cut (`stored_tenant`)
)
#: (victim, attacker): the attacker's traces reuse the victim's trace and span
#: ids, so only the tenant keeps them apart.
SHARED_IDS = (("acme", "../acme"), ("acme", "acme#frontend"), ("tenant-b", "#"))
#: This tenant's resources put ``tenant.id`` after 130 other attributes.
FLOODING_TENANT = "tenant-b/"

Twist = Callable[[str], str]
SERVICE_TWISTS: tuple[Twist, ...] = (
    lambda name: name,
    lambda name: f"../{name}",
    lambda name: f"{name}/../../..",
    lambda name: f"{name}/x=y",
    lambda name: f"tenant=victim/{name}",
    lambda name: f"{name}#GET /cart#SERVER#2xx",
    lambda name: f"{name}\x00\n\x1b[31m",
    lambda name: f"{name}%2F",
    lambda name: f"ünïcødé-{name}-服务",
    lambda name: name + "λ" * 2_000,
    lambda name: f"{name}~",
    lambda name: f"{name}.",
)
OPERATION_TWISTS: tuple[Twist, ...] = (
    lambda name: name,
    lambda name: f"{name}/../../../etc/passwd",
    lambda name: f"{name}#2024-01-01T00:00:00Z#x",
    lambda name: f"{name}=x=y",
    lambda name: f"{name}\x00\r\n\x1b[2J",
    lambda name: f"{name}%00",
    lambda name: f"{name} " + "ø" * 2_000,
    lambda name: "__late__",
    lambda name: f"tenant=victim/{name}",
)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ARCHIVE_KEY = re.compile(
    r"tenant=(?P<tenant>[^/]+)/dt=\d{4}-\d{2}-\d{2}/hour=\d{2}/[^/]+\.parquet"
)


def short(name: str) -> str:
    """Return ``repr(name)``, cut to fit a problem line."""
    text = repr(name)
    return text if len(text) <= 48 else f"{text[:40]}...({len(name)} chars)"


def label(tenant_id: str | None) -> str:
    return DEFAULT_TENANT if tenant_id is None else tenant_id


def stored_tenant(tenant_id: str | None) -> str:
    """Return the tenant the pipeline stores for ``tenant_id``: a name past
    ``max_attribute_value_chars`` is cut and marked (docs/enrichment.md)."""
    name = label(tenant_id)
    limit = Settings().max_attribute_value_chars
    return name if len(name) <= limit else name[:limit] + "...[truncated]"


# -- GIVEN: the traffic ----------------------------------------------------------


def twist_names(traces: list[GeneratedTrace], tenant_index: int) -> None:
    """Give one tenant's services, operations, functions and peers hostile names.

    Mutates the spans and their resources, and their truths to match.
    """
    resources: dict[int, GeneratedResource] = {}
    for span in iter_spans(traces):
        resources.setdefault(id(span.resource), span.resource)
    services: dict[str, str] = {}
    functions: dict[str, str] = {}
    for index, resource in enumerate(resources.values()):
        attributes = resource.attributes
        service = str(attributes["service.name"])
        twist = SERVICE_TWISTS[(tenant_index + index) % len(SERVICE_TWISTS)]
        services[service] = attributes["service.name"] = twist(service)
        if "faas.name" in attributes:
            function = str(attributes["faas.name"])
            functions[function] = attributes["faas.name"] = f"../{function}#x=y\x00"
        attributes["app.note"] = HOSTILE_VALUE
    for index, span in enumerate(iter_spans(traces)):
        truth = span.truth
        changes: dict[str, Any] = {"service": services[truth.service]}
        if truth.faas_name is not None:
            changes["faas_name"] = functions[truth.faas_name]
        if truth.operation == truth.span_name:
            twist = OPERATION_TWISTS[(tenant_index + index) % len(OPERATION_TWISTS)]
            span.name = changes["operation"] = changes["span_name"] = twist(span.name)
        span.attributes = {**span.attributes, "app.note": HOSTILE_VALUE}
        peer = span.attributes.get("peer.service")
        if isinstance(peer, str) and truth.peer_service == peer:
            span.attributes["peer.service"] = changes["peer_service"] = (
                f"{peer}/../x#y=z\x1b"
            )
        span.truth = truth._replace(**changes)


def flood_resources(traces: list[GeneratedTrace]) -> None:
    """Put 130 attributes before ``tenant.id`` in every resource of ``traces``.

    Only ``tenant.id`` moves past the count limit: the rest are read as usual.
    """
    seen: set[int] = set()
    for span in iter_spans(traces):
        resource = span.resource
        if id(resource) in seen:
            continue
        seen.add(id(resource))
        attributes = dict(resource.attributes)
        tenant_id = attributes.pop("tenant.id")
        fillers = {f"filler.{index:03d}": index for index in range(130)}
        resource.attributes = {**attributes, **fillers, "tenant.id": tenant_id}


def adopt_ids(attacker: GeneratedTrace, victim: GeneratedTrace) -> None:
    """Give ``attacker`` the trace id and (by position) span ids of ``victim``."""
    new_ids = {
        span.span_id: victim_span.span_id
        for span, victim_span in zip(attacker.spans, victim.spans, strict=False)
    }
    attacker.trace_id = victim.trace_id
    for span in attacker.spans:
        span.trace_id = victim.trace_id
        span.span_id = new_ids.get(span.span_id, span.span_id)
        span.parent_span_id = new_ids.get(span.parent_span_id, span.parent_span_id)
        truth = span.truth
        caller = truth.caller_span_id
        span.truth = truth._replace(
            trace_id=victim.trace_id.hex(),
            span_id=span.span_id.hex(),
            parent_span_id=span.parent_span_id.hex() if span.parent_span_id else None,
            caller_span_id=(
                new_ids.get(bytes.fromhex(caller), bytes.fromhex(caller)).hex()
                if caller
                else None
            ),
        )


def hostile_traces(now_unix_nanos: int) -> list[GeneratedTrace]:
    by_tenant: dict[str, list[GeneratedTrace]] = {}
    for index, tenant_id in enumerate(HOSTILE_TENANTS):
        traces = generate_traces(
            TRACES_PER_TENANT,
            seed=1_000 + index,
            now_unix_nanos=now_unix_nanos,
            tenants=[tenant_id],
            spread_secs=20.0,
        )
        twist_names(traces, index)
        if tenant_id == FLOODING_TENANT:
            flood_resources(traces)
        if stored_tenant(tenant_id) != label(tenant_id):
            for span in iter_spans(traces):
                span.truth = span.truth._replace(tenant=stored_tenant(tenant_id))
        by_tenant[label(tenant_id)] = traces
    for victim, attacker in SHARED_IDS:
        for victim_trace, attacker_trace in zip(
            by_tenant[victim], by_tenant[attacker], strict=True
        ):
            adopt_ids(attacker_trace, victim_trace)
    traces = [trace for tenant in by_tenant.values() for trace in tenant]
    random.Random(3).shuffle(traces)
    return traces


def encode_mixed_tenants(traces: list[GeneratedTrace]) -> list[tuple[str, bytes]]:
    """Encode chunks of a few traces (of several tenants) in every form in turn.

    Every fourth chunk is one ``ExportTraceServiceRequest`` holding the
    resources of several tenants, as a Collector batching many senders writes.
    """
    forms = [form for form in Form if form is not Form.MIXED]
    records: list[tuple[str, bytes]] = []
    chunk_traces = 4
    for index in range(0, len(traces), chunk_traces):
        chunk = traces[index : index + chunk_traces]
        number = index // chunk_traces
        if number % 4 == 3:
            data = otlp.export_request(iter_spans(chunk)).SerializeToString()
            records.append((f"multi-{number}", data))
            continue
        form = forms[number % len(forms)]
        records += [
            (record.partition_key, record.data)
            for record in encode_records(chunk, form, seed=number, batch_spans=64)
        ]
    return records


# -- THEN: what the stores hold -------------------------------------------------


def key_text_problems(what: str, key: str) -> list[str]:
    problems = []
    if _CONTROL.search(key):
        problems.append(f"{what} holds a control character: {key!r}")
    if {".", ".."} & set(key.split("/")):
        problems.append(f"{what} holds a '.' or '..' path segment: {key!r}")
    return problems


def tenant_of(component: str, tenants: dict[str, str]) -> str | None:
    """Return the tenant whose encoding ``component`` is, checked by decoding."""
    tenant = tenants.get(component)
    if tenant is not None and not is_capped(component):
        assert decode_component(component) == tenant
    return tenant


def all_objects(s3: Any, bucket: str) -> Iterator[str]:
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for entry in page.get("Contents", ()):
            yield entry["Key"]


def archive_problems(
    s3: Any,
    settings: Settings,
    tenants: dict[str, str],
    sent: Counter[tuple[str, str, str]],
) -> list[str]:
    """Check every object of the bucket; compare archived spans with ``sent``."""
    problems = []
    archived: Counter[tuple[str, str, str]] = Counter()
    for key in all_objects(s3, settings.bucket):
        problems += key_text_problems("S3 key", key)
        if key.startswith((settings.dead_letter_prefix, settings.trace_archive_prefix)):
            continue
        if not key.startswith(settings.archive_prefix):
            problems.append(f"object outside the three prefixes: {key!r}")
            continue
        match = _ARCHIVE_KEY.fullmatch(key[len(settings.archive_prefix) :])
        if match is None:
            problems.append(f"archive key not of one tenant partition: {key!r}")
            continue
        tenant = tenant_of(match["tenant"], tenants)
        if tenant is None:
            problems.append(f"archive key of no tenant that sent spans: {key!r}")
            continue
        body = s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
        table = pq.read_table(io.BytesIO(body))
        strangers = set(table.column("tenant").to_pylist()) - {tenant}
        if strangers:
            names = ", ".join(short(name) for name in sorted(strangers))
            problems.append(f"{key!r} holds spans of {names}")
        archived.update(
            zip(
                table.column("tenant").to_pylist(),
                table.column("trace_id").to_pylist(),
                table.column("span_id").to_pylist(),
                strict=True,
            )
        )
    if archived != sent:
        lost, extra = sent - archived, archived - sent
        problems.append(
            f"archive: {sum(lost.values())} spans lost, of "
            f"{sorted({short(tenant) for tenant, _, _ in lost})}; "
            f"{sum(extra.values())} unexpected, of "
            f"{sorted({short(tenant) for tenant, _, _ in extra})}"
        )
    return problems


def trace_archive_problems(
    s3: Any, settings: Settings, tenants: dict[str, str]
) -> tuple[list[str], Counter[str]]:
    """Check every trace archive object holds summaries of its key's tenant
    only; return problems and the spans the latest states count by tenant."""
    problems = []
    found = []
    prefix = settings.trace_archive_prefix
    for key in all_objects(s3, settings.bucket):
        if not key.startswith(prefix):
            continue
        match = _ARCHIVE_KEY.fullmatch(key[len(prefix) :])
        tenant = None if match is None else tenant_of(match["tenant"], tenants)
        if tenant is None:
            problems.append(f"trace archive key of no tenant partition: {key!r}")
            continue
        body = s3.get_object(Bucket=settings.bucket, Key=key)["Body"].read()
        rows = summaries_of(pq.read_table(io.BytesIO(body)))
        strangers = {row.tenant for row in rows} - {tenant}
        if strangers:
            names = ", ".join(short(name) for name in sorted(strangers))
            problems.append(f"{key!r} holds summaries of {names}")
        found.extend(rows)
    counts: Counter[str] = Counter()
    for summary in latest_state(found):
        counts[summary.tenant] += summary.span_count
    return problems, counts


def all_items(dynamodb: Any, table_name: str) -> Iterator[dict[str, Any]]:
    pages = dynamodb.get_paginator("scan").paginate(
        TableName=table_name, ConsistentRead=True
    )
    for page in pages:
        yield from page["Items"]


def expected_keys(table: str, item: dict[str, Any]) -> dict[str, str]:
    """Return the keys an item must have, computed from its raw names."""

    def raw(name: str) -> str:
        return str(item[name]["S"])

    tenant = raw("tenant")
    if table == items.TRACES:
        root = item.get("root_service", {}).get("S", items.UNKNOWN_SERVICE)
        return {
            "pk": join_key(tenant, raw("trace_id")),
            "service_key": join_key(tenant, root),
        }
    window = items.window_label(int(item["window_start_secs"]["N"]))
    if table == items.METRICS:
        return {
            "pk": join_key(tenant, raw("service")),
            "sk": f"{window}{SEPARATOR}{items.SERIES_MARKER}",
        }
    if table == items.EDGES:
        names = join_key(raw("client"), raw("server"), raw("connection_type"))
        return {"pk": encode_component(tenant), "sk": f"{window}{SEPARATOR}{names}"}
    if table == items.COLDSTARTS:
        return {"pk": join_key(tenant, raw("function")), "sk": window}
    raise AssertionError(f"no keys known for table {table!r}")


#: What each table counts per tenant, to compare with what the tenant sent.
COUNTED = {
    items.METRICS: ("count",),
    items.EDGES: ("count",),
    items.COLDSTARTS: ("cold_count", "warm_count"),
    items.TRACES: ("span_count",),
}


def item_problems(
    dynamodb: Any, settings: Settings, tenants: dict[str, str]
) -> tuple[list[str], dict[str, Counter[str]]]:
    """Check every item of every table; return problems and counts by tenant.

    Counts are summed under the tenant the partition key names, not the
    item's raw ``tenant`` attribute.
    """
    problems = []
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for table in (items.METRICS, items.EDGES, items.COLDSTARTS, items.TRACES):
        for item in all_items(dynamodb, settings.table_name(table)):
            pk = item["pk"]["S"]
            for name in ("pk", "sk", "service_key"):
                if name in item:
                    problems += key_text_problems(f"{table} {name}", item[name]["S"])
            if LEAK_MARKER in repr(item):
                problems.append(f"{table} item {pk!r} holds an attribute value")
            tenant = tenant_of(pk.split(SEPARATOR)[0], tenants)
            if tenant is None or tenant != item["tenant"]["S"]:
                problems.append(
                    f"{table} pk {pk!r} names {short(str(tenant))}, item counts "
                    f"spans of {short(item['tenant']['S'])}"
                )
                continue
            if table == items.METRICS and items.is_late_item(item):
                problems.append(f"late counter {pk!r}: no span should be late")
                continue
            for name, want in expected_keys(table, item).items():
                if item[name]["S"] != want:
                    problems.append(f"{table} {name} {item[name]['S']!r} != {want!r}")
            if table == items.METRICS:
                problems += series_name_problems(item)
                counted = [entry["M"] for entry in item["series"]["M"].values()]
            else:
                counted = [item]
            counts[table][tenant] += sum(
                int(values[n]["N"]) for values in counted for n in COUNTED[table]
            )
    return problems, counts


def series_name_problems(item: dict[str, Any]) -> list[str]:
    """Return problems of a metrics item's series names (each entry's must be
    the key encoding of its raw names)."""
    problems = []
    for name, entry in item["series"]["M"].items():
        fields = entry["M"]
        want = join_key(
            fields["operation"]["S"],
            fields["span_kind"]["S"],
            fields["status_class"]["S"],
        )
        problems += key_text_problems("metrics series name", name)
        if name != want:
            problems.append(f"metrics series name {name!r} != {want!r}")
    return problems


def sent_counts(truth: list[SpanTruth], window_secs: int) -> dict[str, Counter[str]]:
    """Return what each table should count per tenant, from the reference."""
    want = expected(truth, window_secs)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for red_key, stats in want.red.items():
        counts[items.METRICS][red_key[0]] += stats.count
    for edge_key, stats in want.edges.items():
        counts[items.EDGES][edge_key[0]] += stats.count
    for cold_key, cold in want.cold_starts.items():
        counts[items.COLDSTARTS][cold_key[0]] += cold.cold_count + cold.warm_count
    for trace in want.traces.values():
        counts[items.TRACES][trace.tenant] += trace.span_count
    return counts


def test_hostile_names_stay_in_their_tenant(
    settings: Settings,
    resources: Resources,
    kinesis: Any,
    dynamodb: Any,
    s3: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # GIVEN hostile tenants' traffic, every form, poison records among it
    settings = dataclasses.replace(settings, allowed_lateness_secs=3_600)
    traces = hostile_traces(time.time_ns())
    truth = [span.truth for span in iter_spans(traces)]
    tenants = {
        encode_component(stored_tenant(t)): stored_tenant(t) for t in HOSTILE_TENANTS
    }
    assert len(tenants) == len(HOSTILE_TENANTS), "two tenants share an encoding"
    assert {t.tenant for t in truth} == set(tenants.values())
    assert any(len(c) == MAX_COMPONENT_CHARS and is_capped(c) for c in tenants)
    record_count = put_with_poison(
        kinesis,
        settings.stream_name,
        encode_mixed_tenants(traces),
        POISON_COUNT,
        seed=9,
    )

    # WHEN the local runner reads every record
    runner = LocalRunner(settings, kinesis, make_sinks(settings, s3, dynamodb))
    with (
        caplog.at_level(logging.DEBUG, logger="spanstream"),
        caplog.at_level(logging.DEBUG, logger="consumers"),
    ):
        stats = runner.run(
            lambda s: s.records >= record_count, deadline_secs=RUN_DEADLINE_SECS
        )
    # botocore's own debug lines echo request bodies; ours must say no payload.
    our_logs = "\n".join(
        record.getMessage()
        for record in caplog.records
        if record.name.startswith(("spanstream", "consumers"))
    )

    # THEN each tenant's spans are under its own prefix and partitions only
    assert stats.spans == len(truth)
    sent = Counter((t.tenant, t.trace_id, t.span_id) for t in truth)
    problems = archive_problems(s3, settings, tenants, sent)
    item_issues, counted = item_problems(dynamodb, settings, tenants)
    problems += item_issues
    summary_issues, counted[items.TRACES] = trace_archive_problems(
        s3, settings, tenants
    )
    problems += summary_issues
    want_counts = sent_counts(truth, settings.window_secs)
    for table, per_tenant in want_counts.items():
        for tenant in sorted(per_tenant.keys() | counted[table].keys()):
            if counted[table][tenant] != per_tenant[tenant]:
                problems.append(
                    f"{table}: {counted[table][tenant]} counted under tenant "
                    f"{short(tenant)}, which sent {per_tenant[tenant]}"
                )
    want = expected(truth, settings.window_secs)
    problems += red_problems(dynamodb, settings, want)
    problems += edge_problems(dynamodb, settings, want)
    problems += cold_start_problems(dynamodb, settings, want)
    problems += trace_problems(dynamodb, s3, settings, want)
    assert not problems, report(problems)
    # Tenants that reused another's ids got summaries of their own.
    summaries = Counter(
        s.trace_id for s in readers.scan_summaries(settings, s3, dynamodb)
    )
    assert max(summaries.values()) == 3  # acme, ../acme and acme#frontend
    assert readers.count_dead_letters(s3, settings) == POISON_COUNT
    # The traffic had what the checks above need, or they prove little.
    assert all(want_counts[table] for table in COUNTED), want_counts
    assert any(len(s) > MAX_COMPONENT_CHARS for _, s, *_ in want.red)
    # No attribute value, nor a raw escape or NUL of a name, reaches the logs.
    assert our_logs, "the run logged nothing: the checks below prove nothing"
    assert LEAK_MARKER not in our_logs
    assert "\x1b" not in our_logs
    assert "\x00" not in our_logs
