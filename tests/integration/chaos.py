"""Fault proxies for chaos tests: 20 % of a worker's AWS calls faulted.

`FaultyEndpoints` puts a `devenv.faultproxy.FaultProxy` in front of each
emulator endpoint; the ``faulty`` fixture (conftest.py) yields one for a
test. A test points the worker's settings at ``faulty.settings(...)``,
keeps its own setup and verification calls direct, and checks with
`assert_faults_happened` that the proxies were really in the worker's path.
"""

from __future__ import annotations

import dataclasses
import logging

from devenv.faultproxy import FaultCounts, FaultKind, FaultProxy
from spanstream.config import Settings

FAULT_RATE = 0.2
#: Each kind is a sixth of the faults: thousands in a run; far fewer means
#: the proxy was not in the worker's path.
MIN_FAULTS_PER_KIND = 50
SERVICES = ("kinesis", "dynamodb", "s3")


@dataclasses.dataclass
class FaultyEndpoints:
    """One fault proxy per distinct emulator endpoint."""

    proxies: dict[str, FaultProxy]

    def settings(self, settings: Settings) -> Settings:
        """Return ``settings`` with every service's endpoint behind its proxy."""
        return dataclasses.replace(
            settings,
            **{
                f"{service}_endpoint_url": self.proxies[service].endpoint_url
                for service in SERVICES
            },
        )

    def counts(self) -> FaultCounts:
        """Return what all proxies did, each counted once."""
        total = FaultCounts()
        for proxy in {id(p): p for p in self.proxies.values()}.values():
            total += proxy.counts
        return total


class RetryWarnings(logging.Handler):
    """Counts spanstream's own retries: calls botocore had given up on."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def assert_faults_happened(
    counts: FaultCounts, services: tuple[str, ...], minimum: int = MIN_FAULTS_PER_KIND
) -> None:
    by_kind = counts.by_kind()
    too_few = {k: by_kind[k] for k in FaultKind if by_kind[k] < minimum}
    assert not too_few, counts.summary()
    assert all(counts.by_service()[s] > 0 for s in services), counts.summary()
    assert counts.upstream_errors == 0, counts.summary()
