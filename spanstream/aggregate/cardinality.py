"""The cardinality guard: at most N RED series per tenant and window.

A tenant that puts ids in span names would otherwise create a series per span
and a DynamoDB item per series. Spans beyond the cap are not dropped: they are
counted in one overflow series per span kind and status class, so totals stay
right and the overflow is visible.
"""

from __future__ import annotations

import logging

from spanstream.aggregate.types import RedKey

logger = logging.getLogger(__name__)

OVERFLOW = "__overflow__"


def overflow_key(key: RedKey) -> RedKey:
    """Return the overflow series that takes spans of ``key`` past the cap."""
    return key._replace(service=OVERFLOW, operation=OVERFLOW)


class SeriesGuard:
    """Admits the first ``max_series_per_tenant`` series of each tenant and window.

    Which series are admitted depends on the order spans are seen in, so it is
    state of one aggregator: the same records in the same order always give
    the same admissions.
    """

    def __init__(self, max_series_per_tenant: int) -> None:
        self._max_series = max_series_per_tenant
        # (tenant, window_start_secs) -> series admitted in that window
        self._admitted: dict[tuple[str, int], set[RedKey]] = {}
        self._overflowing: set[tuple[str, int]] = set()

    def admit(self, key: RedKey) -> RedKey:
        """Return ``key`` if its series is (or can still be) admitted, else the
        overflow key of its kind and status class."""
        scope = (key.tenant, key.window_start_secs)
        admitted = self._admitted.get(scope)
        if admitted is None:
            admitted = self._admitted[scope] = set()
        if key in admitted:
            return key
        if len(admitted) < self._max_series:
            admitted.add(key)
            return key
        if scope not in self._overflowing:
            self._overflowing.add(scope)
            logger.warning(
                "tenant %r reached %d series in window %d; further series "
                "go to the %s series",
                key.tenant,
                self._max_series,
                key.window_start_secs,
                OVERFLOW,
            )
        return overflow_key(key)

    def forget_windows_before(self, window_start_secs: int) -> int:
        """Drop the admissions of windows that open before ``window_start_secs``.

        Returns how many (tenant, window) scopes were dropped. A span of a
        dropped window that still arrives starts its window's count afresh.
        """
        stale = [scope for scope in self._admitted if scope[1] < window_start_secs]
        for scope in stale:
            del self._admitted[scope]
            self._overflowing.discard(scope)
        return len(stale)

    @property
    def scope_count(self) -> int:
        """How many (tenant, window) scopes are tracked."""
        return len(self._admitted)
