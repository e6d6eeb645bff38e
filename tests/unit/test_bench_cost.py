"""How the cost benchmark adds up what it counted.

GIVEN counted calls of a shape, and of another shape added to it
WHEN figures per million spans are computed
THEN each shape is scaled by its own span count before they are added, and
Lambda's GB-seconds are billed per invocation rounded up to 1 ms.
"""

from __future__ import annotations

from bench.calls import CallCounter
from bench.cost import Usage
from bench.lambdarun import LambdaRun


def _counter(put_items: int, write_units: float) -> CallCounter:
    counter = CallCounter()
    counter.calls["dynamodb:PutItem"] = put_items
    counter.write_units = write_units
    return counter


def test_an_added_shape_is_scaled_by_its_own_spans() -> None:
    trace_stage = Usage("trace", 2_000_000, _counter(10, 10.0), "x")
    lambda_usage = Usage(
        "lambda",
        500_000,
        _counter(4, 4.0),
        "y",
        lambda_requests=50,
        added=[trace_stage],
    )
    per = lambda_usage.per_million_spans()
    # 4 units / 0.5 M spans + 10 units / 2 M spans
    assert per["dynamodb_write_units"] == 8.0 + 5.0
    assert per["lambda_requests"] == 100.0


def test_merged_counters_add_every_count() -> None:
    merged = _counter(3, 3.5).merged(_counter(2, 1.0))
    assert merged.calls["dynamodb:PutItem"] == 5
    assert merged.write_units == 4.5


def test_lambda_gb_seconds_round_each_invocation_up_to_a_millisecond() -> None:
    run = LambdaRun(
        spans=3_000,
        records=30,
        counted=CallCounter(),
        invocation_secs=[0.0101, 0.0200, 1.0],
        memory_mb=2048,
    )
    assert run.invocations == 3
    # 0.011 + 0.020 + 1.000 s at 2 GB
    assert abs(run.billed_gb_seconds - 1.031 * 2) < 1e-9
    assert run.median_invocation_secs() == 0.02
    assert abs(run.spans_per_invocation_sec - 3_000 / 1.0301) < 1e-6
