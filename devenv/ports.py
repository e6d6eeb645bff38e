"""Loopback ports and deadline-bounded waiting, shared by the emulator launchers."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable

logger = logging.getLogger(__name__)

LOOPBACK_HOST = "127.0.0.1"


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks it (bind to port 0); the socket is closed before
    returning, so another process may take the port in between. Callers that
    start a server on it must treat "address in use" as retryable.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK_HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class DeadlineExceeded(TimeoutError):
    """A condition did not become true before its deadline."""


def wait_until(
    condition: Callable[[], bool],
    *,
    timeout_secs: float,
    what: str,
    poll_interval_secs: float = 0.05,
    abort: Callable[[], str | None] | None = None,
) -> float:
    """Poll ``condition`` until it returns True; return the seconds it took.

    ``abort`` is polled too: when it returns a message the wait stops at once
    with a RuntimeError carrying it (used to notice a server that died).
    Raises `DeadlineExceeded` naming ``what`` after ``timeout_secs``.
    """
    started = time.monotonic()
    deadline = started + timeout_secs
    while True:
        if condition():
            return time.monotonic() - started
        if abort is not None:
            reason = abort()
            if reason is not None:
                raise RuntimeError(f"gave up waiting for {what}: {reason}")
        if time.monotonic() >= deadline:
            raise DeadlineExceeded(f"{what} did not happen within {timeout_secs:.1f}s")
        time.sleep(poll_interval_secs)
