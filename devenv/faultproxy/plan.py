"""What a fault proxy does to requests (`FaultPlan`) and what it did (`FaultCounts`)."""

from __future__ import annotations

import enum
from collections import Counter
from dataclasses import dataclass, field

#: The services whose protocols the proxy can answer errors in.
FAULTABLE_SERVICES = frozenset({"dynamodb", "kinesis", "s3"})


class FaultKind(enum.StrEnum):
    """What the proxy does to a faulted request."""

    THROTTLE = "throttle"
    ERROR_500 = "500"
    ERROR_503 = "503"
    RESET = "reset"
    LOST_RESPONSE = "lost-response"
    SLOW = "slow"


#: The kinds answered by the proxy itself: the upstream never sees the request.
ANSWERED_KINDS = frozenset(
    {FaultKind.THROTTLE, FaultKind.ERROR_500, FaultKind.ERROR_503}
)


@dataclass(frozen=True)
class FaultPlan:
    """Which requests are faulted, and how.

    ``rate``: probability that a request of one of ``services`` (and of
    ``operations``, if given: ``"PutItem"``, ``"PutObject"``) is faulted;
    the kind is then picked uniformly from ``kinds``. ``max_faults`` stops
    faulting after that many (None: never). ``slow_secs``: the range a slow
    response is delayed by. ``seed`` seeds the generator; requests of
    concurrent connections still arrive in no fixed order. Raises
    ValueError for a rate outside [0, 1], no kinds, a bad range or count.
    """

    rate: float = 0.0
    kinds: tuple[FaultKind, ...] = tuple(FaultKind)
    seed: int = 0
    slow_secs: tuple[float, float] = (0.05, 0.3)
    services: frozenset[str] = FAULTABLE_SERVICES
    operations: frozenset[str] | None = None
    max_faults: int | None = None

    def applies_to(self, request: ProxiedRequest) -> bool:
        """Return True if ``request`` may be faulted under this plan."""
        return request.service in self.services and (
            self.operations is None or request.operation in self.operations
        )

    def __post_init__(self) -> None:
        if not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"fault rate must be within [0, 1], got {self.rate!r}")
        if not self.kinds:
            raise ValueError("a fault plan needs at least one fault kind")
        low, high = self.slow_secs
        if not 0.0 <= low <= high:
            raise ValueError(f"slow_secs must be (low, high), got {self.slow_secs!r}")
        if self.max_faults is not None and self.max_faults < 0:
            raise ValueError(f"max_faults must be >= 0, got {self.max_faults!r}")
        unknown = self.services - FAULTABLE_SERVICES
        if unknown:
            raise ValueError(
                f"cannot fault {sorted(unknown)!r}: only {sorted(FAULTABLE_SERVICES)!r}"
            )


@dataclass(frozen=True)
class ProxiedRequest:
    """One request as the proxy read it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    service: str
    operation: str

    def header(self, name: str) -> str:
        """Return the first value of header ``name`` (any case), or ""."""
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), "")

    @property
    def wants_close(self) -> bool:
        return self.header("Connection").lower() == "close"


@dataclass
class FaultCounts:
    """What one or more proxies did; add two with ``+``.

    ``requests`` and ``forwarded`` count by service; ``faults`` by
    (service, kind). A slow or lost-response request is both forwarded and
    faulted. ``upstream_errors``: requests the upstream failed to answer
    (answered 502).
    """

    requests: Counter[str] = field(default_factory=Counter)
    forwarded: Counter[str] = field(default_factory=Counter)
    faults: Counter[tuple[str, FaultKind]] = field(default_factory=Counter)
    operations: Counter[tuple[str, str]] = field(default_factory=Counter)
    upstream_errors: int = 0

    def __add__(self, other: FaultCounts) -> FaultCounts:
        return FaultCounts(
            self.requests + other.requests,
            self.forwarded + other.forwarded,
            self.faults + other.faults,
            self.operations + other.operations,
            self.upstream_errors + other.upstream_errors,
        )

    def copy(self) -> FaultCounts:
        return self + FaultCounts()

    def by_kind(self) -> Counter[FaultKind]:
        """Return the number of faults of each kind, over all services."""
        counts: Counter[FaultKind] = Counter()
        for (_, kind), count in self.faults.items():
            counts[kind] += count
        return counts

    def by_service(self) -> Counter[str]:
        """Return the number of faults of each service, over all kinds."""
        counts: Counter[str] = Counter()
        for (service, _), count in self.faults.items():
            counts[service] += count
        return counts

    @property
    def total_faults(self) -> int:
        return sum(self.faults.values())

    def summary(self) -> str:
        """Return a one-line account: requests, faults by kind and by service."""
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(self.by_kind().items()))
        services = ", ".join(
            f"{s} {self.by_service()[s]}/{n}" for s, n in sorted(self.requests.items())
        )
        return (
            f"{sum(self.requests.values())} requests, {self.total_faults} faulted "
            f"({kinds}); faulted/requests by service: {services}; "
            f"{self.upstream_errors} upstream errors"
        )
