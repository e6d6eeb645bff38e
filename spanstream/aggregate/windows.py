"""The rules that place a span in a series: its window, status class, lateness.

These are the reference spellings of the rules. `ShardAggregator` inlines the
same arithmetic in its loop for speed; the unit tests hold the two together.
"""

from __future__ import annotations

NANOS_PER_SEC = 1_000_000_000
MILLIS_PER_SEC = 1_000


def window_start_secs(end_unix_nanos: int, window_secs: int) -> int:
    """Return the unix second at which the window holding ``end_unix_nanos`` opens."""
    return end_unix_nanos // NANOS_PER_SEC // window_secs * window_secs


def arrival_window_start_secs(arrival_unix_millis: int, window_secs: int) -> int:
    """Return the start (unix seconds) of the window a record arrived in."""
    return arrival_unix_millis // MILLIS_PER_SEC // window_secs * window_secs


def status_class(http_status_code: int | None, status_code: str) -> str:
    """Return ``"2xx"``..``"5xx"`` for an HTTP span, else its OTel status code."""
    if http_status_code is not None:
        return f"{http_status_code // 100}xx"
    return status_code


def is_late(
    arrival_unix_millis: int,
    window_start: int,
    window_secs: int,
    allowed_lateness_secs: int,
) -> bool:
    """Return whether a span of the window at ``window_start`` arrived too late.

    A span arrived late when its record arrived after its window closed plus
    the allowed lateness. An unknown arrival time (0) is never late.
    """
    deadline_millis = (window_start + window_secs + allowed_lateness_secs) * 1000
    return arrival_unix_millis > 0 and arrival_unix_millis > deadline_millis
