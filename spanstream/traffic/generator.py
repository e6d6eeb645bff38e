"""A seeded generator of multi-service, multi-tenant traces.

`generate_traces` returns `GeneratedTrace` values: spans ready to encode as
OTLP, each carrying the `SpanTruth` the generator intended, so tests can
compute what the pipeline should output (`spanstream.traffic.reference`)
without going through the pipeline's own code. The same seed and ``now``
always give the same traces.
"""

from __future__ import annotations

import gc
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from spanstream.traffic.builder import finish, layout, new_trace_id, shift, walk
from spanstream.traffic.hops import Calls
from spanstream.traffic.model import (
    GeneratedEvent,
    GeneratedResource,
    GeneratedSpan,
    GeneratedTrace,
    iter_spans,
    span_count,
    truths,
)
from spanstream.traffic.services import DEFAULT_TENANTS, make_tenants
from spanstream.traffic.shapes import SHAPES

__all__ = [
    "DEFAULT_TENANTS",
    "GeneratedEvent",
    "GeneratedResource",
    "GeneratedSpan",
    "GeneratedTrace",
    "TrafficGenerator",
    "gc_paused",
    "generate_spans",
    "generate_traces",
    "iter_spans",
    "span_count",
    "truths",
]

NANOS_PER_SEC = 1_000_000_000


class TrafficGenerator:
    """Makes traces one at a time from one `random.Random(seed)`.

    Each trace ends (its last span ends) at a uniformly drawn moment in
    ``[now - spread_secs, now]``; ``now`` may be moved between calls, which
    is how a long-running load keeps its windows current.
    """

    def __init__(
        self,
        seed: int,
        tenants: Sequence[str | None] = DEFAULT_TENANTS,
        spread_secs: float = 50.0,
    ) -> None:
        if not tenants:
            raise ValueError("tenants must name at least one tenant (None = default)")
        self.rng = random.Random(seed)
        self.tenants = make_tenants(list(tenants))
        self.spread_secs = spread_secs
        self._names = [name for name, _, _ in SHAPES]
        self._shapes = {name: shape for name, shape, _ in SHAPES}
        self._weights = [weight for _, _, weight in SHAPES]

    def trace(self, now_unix_nanos: int) -> GeneratedTrace:
        """Return the next trace, ending no later than ``now_unix_nanos``."""
        rng = self.rng
        tenant = rng.choice(self.tenants)
        name = rng.choices(self._names, self._weights)[0]
        trace_id = new_trace_id(rng)
        root = self._shapes[name](Calls(rng, tenant))
        layout(root, 0)
        nodes = walk(root)
        last_end_nanos = max(node.end_unix_nanos for node in nodes)
        before_now_secs = rng.uniform(0, self.spread_secs)
        end_nanos = now_unix_nanos - int(before_now_secs * NANOS_PER_SEC)
        shift(nodes, end_nanos - last_end_nanos)
        return GeneratedTrace(trace_id, tenant.label, name, finish(root, trace_id))


def generate_traces(
    count: int,
    seed: int,
    now_unix_nanos: int | None = None,
    tenants: Sequence[str | None] = DEFAULT_TENANTS,
    spread_secs: float = 50.0,
) -> list[GeneratedTrace]:
    """Return ``count`` traces drawn with ``seed``, all ending by ``now``.

    ``now_unix_nanos`` defaults to the current time. ``tenants`` lists the
    ``tenant.id`` values to use; ``None`` stands for a tenant that sends no
    ``tenant.id`` (reported as ``"default"``).
    """
    now = time.time_ns() if now_unix_nanos is None else now_unix_nanos
    generator = TrafficGenerator(seed, tenants, spread_secs)
    with gc_paused():
        return [generator.trace(now) for _ in range(count)]


def generate_spans(
    min_span_count: int,
    seed: int,
    now_unix_nanos: int | None = None,
    tenants: Sequence[str | None] = DEFAULT_TENANTS,
    spread_secs: float = 50.0,
) -> list[GeneratedTrace]:
    """Return whole traces drawn with ``seed`` until they hold ``min_span_count``."""
    now = time.time_ns() if now_unix_nanos is None else now_unix_nanos
    generator = TrafficGenerator(seed, tenants, spread_secs)
    traces: list[GeneratedTrace] = []
    total = 0
    with gc_paused():
        while total < min_span_count:
            trace = generator.trace(now)
            traces.append(trace)
            total += len(trace.spans)
    return traces


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects.

    Generation allocates millions of long-lived objects and no cycles; each
    allocation burst would otherwise trigger full collections that rescan
    everything built so far, which more than doubles the run time.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
