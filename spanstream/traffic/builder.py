"""Build one trace as a tree of nodes, then lay it out in time.

A `Node` is a span before it has absolute times: it knows how long it runs
by itself (``self_nanos``) and which calls it makes. `layout` runs children
one after another inside their parent, so a parent always encloses its
synchronous children; an asynchronous child (a queue consumer) starts after
its parent has ended. `finish` turns the laid-out tree into
`GeneratedSpan` values, and computes the intended `SpanTruth` of each.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from spanstream.model import SPAN_KINDS, STATUS_CODES
from spanstream.traffic.model import (
    AttributeValue,
    GeneratedEvent,
    GeneratedResource,
    GeneratedSpan,
)
from spanstream.traffic.truth import SpanTruth

KIND_NUMBERS = {name: number for number, name in enumerate(SPAN_KINDS)}
STATUS_NUMBERS = {name: number for number, name in enumerate(STATUS_CODES)}


@dataclass(eq=False, slots=True)
class Node:
    """A span in the making; ``kind`` and ``status_code`` are names."""

    resource: GeneratedResource
    tenant: str
    service: str
    faas_name: str | None
    scope: tuple[str, str]
    span_id: bytes
    name: str
    kind: str
    attributes: dict[str, AttributeValue]
    self_nanos: int
    operation: str
    status_code: str = "UNSET"
    status_message: str = ""
    http_status_code: int | None = None
    is_cold_start: bool = False
    #: (name, fraction of the span's duration, attributes)
    events: list[tuple[str, float, dict[str, AttributeValue]]] = field(
        default_factory=list
    )
    children: list[Node] = field(default_factory=list)
    #: starts ``lag_nanos`` after its parent ends instead of inside it
    is_async: bool = False
    lag_nanos: int = 0
    peer_service: str | None = None
    db_system: str | None = None
    messaging_system: str | None = None
    edge_server: str | None = None
    edge_type: str | None = None
    caller: Node | None = None
    start_unix_nanos: int = 0
    end_unix_nanos: int = 0

    def add(self, child: Node) -> Node:
        """Make ``child`` a call of this node and return it."""
        self.children.append(child)
        return child

    @property
    def has_exception(self) -> bool:
        return any(name == "exception" for name, _, _ in self.events)

    @property
    def is_error(self) -> bool:
        """The generator's intent, stated in the same terms as the rules."""
        if self.status_code == "ERROR" or self.has_exception:
            return True
        code = self.http_status_code
        if code is None:
            return False
        return (self.kind == "SERVER" and code >= 500) or (
            self.kind == "CLIENT" and code >= 400
        )

    @property
    def status_class(self) -> str:
        if self.http_status_code is not None:
            return f"{self.http_status_code // 100}xx"
        return self.status_code


def new_span_id(rng: random.Random) -> bytes:
    """Return 8 random non-zero bytes."""
    return (rng.getrandbits(64) or 1).to_bytes(8, "big")


def new_trace_id(rng: random.Random) -> bytes:
    """Return 16 random non-zero bytes."""
    return (rng.getrandbits(128) or 1).to_bytes(16, "big")


def layout(node: Node, start_unix_nanos: int) -> int:
    """Give ``node`` and its subtree times from ``start_unix_nanos``.

    Half of the node's own time comes before its first call and half after
    the last, so calls sit inside. Returns the node's end.
    """
    node.start_unix_nanos = start_unix_nanos
    cursor = start_unix_nanos + node.self_nanos // 2
    for child in node.children:
        if not child.is_async:
            cursor = layout(child, cursor)
    node.end_unix_nanos = cursor + node.self_nanos - node.self_nanos // 2
    for child in node.children:
        if child.is_async:
            layout(child, node.end_unix_nanos + child.lag_nanos)
    return node.end_unix_nanos


def walk(node: Node) -> list[Node]:
    """Return ``node`` and its subtree, parents before children."""
    ordered = [node]
    index = 0
    while index < len(ordered):
        ordered.extend(ordered[index].children)
        index += 1
    return ordered


def shift(nodes: list[Node], delta_nanos: int) -> None:
    """Move every node by ``delta_nanos``."""
    for node in nodes:
        node.start_unix_nanos += delta_nanos
        node.end_unix_nanos += delta_nanos


def finish(root: Node, trace_id: bytes) -> list[GeneratedSpan]:
    """Return the spans of the laid-out tree under ``root``, root first."""
    parents: dict[int, Node] = {}
    for node in walk(root):
        for child in node.children:
            parents[id(child)] = node
    trace_hex = trace_id.hex()
    spans = []
    for node in walk(root):
        parent = parents.get(id(node))
        spans.append(_span(node, parent, trace_id, trace_hex))
    return spans


def _span(
    node: Node, parent: Node | None, trace_id: bytes, trace_hex: str
) -> GeneratedSpan:
    duration_nanos = node.end_unix_nanos - node.start_unix_nanos
    events = [
        GeneratedEvent(name, node.start_unix_nanos + int(duration_nanos * at), attrs)
        for name, at, attrs in node.events
    ]
    # Positional: keyword construction of a NamedTuple costs twice as much.
    truth = SpanTruth(
        node.tenant,
        trace_hex,
        node.span_id.hex(),
        parent.span_id.hex() if parent else None,
        node.service,
        node.operation,
        node.name,
        node.kind,
        node.start_unix_nanos,
        node.end_unix_nanos,
        duration_nanos,
        node.is_error,
        node.status_code,
        node.status_class,
        node.http_status_code,
        node.is_cold_start,
        node.faas_name,
        node.peer_service,
        node.db_system,
        node.messaging_system,
        node.caller.span_id.hex() if node.caller else None,
        node.edge_server,
        node.edge_type,
    )
    return GeneratedSpan(
        resource=node.resource,
        scope_name=node.scope[0],
        scope_version=node.scope[1],
        trace_id=trace_id,
        span_id=node.span_id,
        parent_span_id=parent.span_id if parent else b"",
        name=node.name,
        kind=KIND_NUMBERS[node.kind],
        start_unix_nanos=node.start_unix_nanos,
        end_unix_nanos=node.end_unix_nanos,
        attributes=node.attributes,
        events=events,
        status_code=STATUS_NUMBERS[node.status_code],
        status_message=node.status_message,
        truth=truth,
    )
