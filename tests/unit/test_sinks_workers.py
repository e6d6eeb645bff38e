"""The sinks' kept thread pools: reuse, inline single tasks, waiting, shutdown."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from spanstream.config import Settings
from spanstream.sinks.archive import ArchiveWriter
from spanstream.sinks.dynamodb import AggregateWriter
from spanstream.sinks.retry import RetryPolicy
from spanstream.sinks.s3put import PendingObject, put_objects
from spanstream.sinks.workers import WorkerPool


def _pool_threads(prefix: str) -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name.startswith(prefix)}


def _run_idents(pool: WorkerPool, count: int) -> set[int]:
    barrier = threading.Barrier(count, timeout=5)

    def task() -> int:
        barrier.wait()  # every task on its own thread at the same time
        return threading.get_ident()

    with pool.tasks() as tasks:
        futures = [tasks.submit(task) for _ in range(count)]
    return {future.result() for future in futures}


def test_threads_start_on_first_use_and_are_kept_across_groups() -> None:
    pool = WorkerPool(3, thread_name_prefix="test-keep")
    assert not pool.is_started and not _pool_threads("test-keep")

    first = _run_idents(pool, 3)
    second = _run_idents(pool, 3)

    assert len(first) == 3
    assert first == second
    assert len(_pool_threads("test-keep")) == 3
    pool.close()


def test_one_worker_runs_tasks_inline_and_starts_no_thread() -> None:
    pool = WorkerPool(4, thread_name_prefix="test-inline")
    with pool.tasks(1) as tasks:
        assert tasks.is_inline
        future = tasks.submit(threading.get_ident)
        assert future.done()

    assert future.result() == threading.get_ident()
    assert not pool.is_started and not _pool_threads("test-inline")


def test_a_task_error_stays_in_its_future_inline_and_threaded() -> None:
    pool = WorkerPool(2, thread_name_prefix="test-error")

    def fail() -> None:
        raise ValueError("boom")

    for workers in (1, 2):
        with pool.tasks(workers) as tasks:
            failed = tasks.submit(fail)
            fine = tasks.submit(lambda: 7)
        assert isinstance(failed.exception(), ValueError)
        assert fine.result() == 7
    pool.close()


def test_an_interrupt_of_an_inline_task_propagates() -> None:
    def interrupt() -> None:
        raise KeyboardInterrupt

    with (
        pytest.raises(KeyboardInterrupt),
        WorkerPool(2, "test-interrupt").tasks(1) as tasks,
    ):
        tasks.submit(interrupt)


def test_leaving_the_block_waits_for_every_task_even_on_error() -> None:
    pool = WorkerPool(2, thread_name_prefix="test-wait")
    finished: list[int] = []

    def slow() -> None:
        time.sleep(0.2)
        finished.append(1)

    with pytest.raises(RuntimeError), pool.tasks() as tasks:
        tasks.submit(slow)
        raise RuntimeError("caller failed")
    assert finished == [1]
    pool.close()


def test_close_stops_the_threads_is_idempotent_and_a_later_use_restarts() -> None:
    pool = WorkerPool(2, thread_name_prefix="test-close")
    _run_idents(pool, 2)
    threads = _pool_threads("test-close")

    pool.close()
    pool.close()

    assert not pool.is_started
    assert not any(thread.is_alive() for thread in threads)
    assert len(_run_idents(pool, 2)) == 2
    pool.close()


def test_at_least_one_worker() -> None:
    with pytest.raises(ValueError, match="max_workers"):
        WorkerPool(0, "test-zero")


def test_an_idle_started_pool_does_not_keep_the_process_alive() -> None:
    script = (
        "from spanstream.sinks.workers import WorkerPool\n"
        "pool = WorkerPool(4, 'idle')\n"
        "with pool.tasks() as tasks:\n"
        "    [tasks.submit(int) for _ in range(8)]\n"
        "print('done')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert result.stdout == "done\n"


def _use_after_fork(pool: WorkerPool, results: Any) -> None:
    results.put(len(_run_idents(pool, 2)))


@pytest.mark.skipif(sys.platform == "win32", reason="fork only")
def test_a_pool_started_before_fork_works_in_the_child() -> None:
    pool = WorkerPool(2, thread_name_prefix="test-fork")
    _run_idents(pool, 2)
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    child = context.Process(target=_use_after_fork, args=(pool, results))
    child.start()
    child.join(timeout=30)

    assert child.exitcode == 0
    assert results.get(timeout=5) == 2
    pool.close()


def test_put_objects_reuses_the_pool_it_is_given() -> None:
    class Recording:
        def __init__(self) -> None:
            self.threads: set[str] = set()

        def put_object(self, **params: Any) -> dict[str, Any]:
            self.threads.add(threading.current_thread().name)
            return {}

    s3 = Recording()
    pool = WorkerPool(2, thread_name_prefix="test-s3put")
    objects = [PendingObject(f"k{i}", lambda: b"x", "text/plain") for i in range(6)]
    for _ in range(3):
        keys = put_objects(s3, "bucket", objects, RetryPolicy(), 2, pool=pool)
        assert keys == [f"k{i}" for i in range(6)]

    assert s3.threads and all(name.startswith("test-s3put") for name in s3.threads)
    assert len(_pool_threads("test-s3put")) <= 2
    pool.close()


def test_put_objects_without_a_pool_leaves_no_thread_behind() -> None:
    class Null:
        def put_object(self, **params: Any) -> dict[str, Any]:
            return {}

    objects = [PendingObject(f"k{i}", lambda: b"x", "text/plain") for i in range(3)]
    before = _pool_threads("s3put")
    put_objects(Null(), "bucket", objects, RetryPolicy(), 3)

    assert not [t for t in _pool_threads("s3put") - before if t.is_alive()]


def test_writers_close_their_pools() -> None:
    settings = Settings(dynamodb_write_concurrency=4)
    archive = ArchiveWriter(object(), settings)
    aggregates = AggregateWriter(object(), settings)
    for writer in (archive, aggregates):
        assert writer._pool.max_workers >= 1
        _run_idents(writer._pool, 2)
        assert writer._pool.is_started
        writer.close()
        assert not writer._pool.is_started
