"""A thread pool that a sink keeps across writes, for its concurrent AWS calls.

Starting a `ThreadPoolExecutor` per write cost more than the writes
themselves once the round trip is fast (every flush started and joined up to
eight threads per sink). A `WorkerPool` starts its threads on first use and
keeps them; `WorkerPool.tasks` then gives each write what ``with
ThreadPoolExecutor(...) as pool`` gave it: a ``submit`` and, on leaving the
block, a wait until every task submitted in it has finished, so no call is
still running when the write returns or raises.

A group of one worker runs its tasks inline in the calling thread: one task
gains nothing from a thread, and skipping the hand-off is what makes a
single-object flush cheap.

Idle threads never keep a process from exiting: `concurrent.futures` stops and
joins them at interpreter exit, and a pool that is garbage collected lets them
end. `WorkerPool.close` stops them at once (a later task starts new ones). A
pool used after ``fork`` starts fresh threads in the child, since the parent's
do not exist there.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from typing import Any, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


class TaskGroup:
    """The tasks of one write; see `WorkerPool.tasks`."""

    def __init__(self, executor: ThreadPoolExecutor | None) -> None:
        self._executor = executor
        self._futures: list[Future[Any]] = []

    @property
    def is_inline(self) -> bool:
        """True when tasks run in the calling thread, one after the other."""
        return self._executor is None

    def submit(self, function: Callable[..., T], *args: Any) -> Future[T]:
        """Run ``function(*args)``; return its future (done already if inline).

        An exception of the task is kept in the future, never raised here
        (inline, an interrupt such as KeyboardInterrupt still propagates).
        """
        if self._executor is not None:
            future = self._executor.submit(function, *args)
            self._futures.append(future)
            return future
        future = Future()
        try:
            result = function(*args)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future

    def wait(self) -> None:
        """Return once every task submitted so far has finished."""
        wait(self._futures)


class WorkerPool:
    """Up to ``max_workers`` threads, started on first use and kept.

    Thread-safe: concurrent writes share the threads (each of their tasks
    waits its turn).
    """

    def __init__(self, max_workers: int, thread_name_prefix: str) -> None:
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers!r}")
        self.max_workers = max_workers
        self.thread_name_prefix = thread_name_prefix
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._owner_pid = 0

    @property
    def is_started(self) -> bool:
        """True while threads of this process may be running."""
        return self._executor is not None and self._owner_pid == os.getpid()

    @contextmanager
    def tasks(self, workers: int | None = None) -> Iterator[TaskGroup]:
        """Yield a `TaskGroup`; leaving the block waits for all its tasks.

        ``workers`` (default ``max_workers``) is how many threads the caller
        wants: with 1 the tasks run inline, else they share the pool's
        ``max_workers`` threads. The wait happens also when the block raises,
        as it did on leaving a ``with ThreadPoolExecutor(...)`` block.
        """
        limit = self.max_workers if workers is None else min(workers, self.max_workers)
        group = TaskGroup(self._started() if limit > 1 else None)
        try:
            yield group
        finally:
            group.wait()

    def _started(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._owner_pid != os.getpid():
                # After fork the parent's threads are gone; the old executor
                # must not be shut down here (it would wait for them).
                self._executor = ThreadPoolExecutor(
                    self.max_workers, thread_name_prefix=self.thread_name_prefix
                )
                self._owner_pid = os.getpid()
                logger.debug(
                    "started pool %s of %d threads",
                    self.thread_name_prefix,
                    self.max_workers,
                )
            return self._executor

    def close(self) -> None:
        """Stop the threads once their tasks are done; idempotent."""
        with self._lock:
            executor, self._executor = self._executor, None
            owned = self._owner_pid == os.getpid()
        if executor is not None and owned:
            executor.shutdown(wait=True)
