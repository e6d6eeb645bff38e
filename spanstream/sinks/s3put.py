"""Concurrent, encrypted, all-or-error S3 uploads shared by the S3 sinks."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from spanstream.config import Settings
from spanstream.errors import SinkError
from spanstream.sinks.retry import RetryPolicy
from spanstream.sinks.workers import WorkerPool

logger = logging.getLogger(__name__)

DEFAULT_UPLOAD_CONCURRENCY = 8


class PendingObject(NamedTuple):
    """An object to upload; ``render`` builds its body inside the worker thread."""

    key: str
    render: Callable[[], bytes]
    content_type: str


class S3ObjectWriter:
    """What the S3 sinks share: a client, settings, a retry policy and
    upload threads kept across writes (`WorkerPool`)."""

    def __init__(
        self,
        s3_client: Any,
        settings: Settings,
        retry: RetryPolicy | None = None,
        max_workers: int = DEFAULT_UPLOAD_CONCURRENCY,
    ) -> None:
        self.s3_client = s3_client
        self.settings = settings
        self.retry = retry or RetryPolicy()
        self.max_workers = max_workers
        self._pool = WorkerPool(max_workers, thread_name_prefix="s3put")

    def close(self) -> None:
        """Stop the upload threads (a later write starts them again)."""
        self._pool.close()

    def upload(self, objects: Sequence[PendingObject]) -> list[str]:
        """Upload ``objects`` to ``settings.bucket`` (see `put_objects`)."""
        return put_objects(
            self.s3_client,
            self.settings.bucket,
            objects,
            self.retry,
            self.max_workers,
            pool=self._pool,
        )


def put_objects(
    s3_client: Any,
    bucket: str,
    objects: Sequence[PendingObject],
    retry: RetryPolicy,
    max_workers: int = DEFAULT_UPLOAD_CONCURRENCY,
    pool: WorkerPool | None = None,
) -> list[str]:
    """Upload every object with SSE-S3 and return their keys, in input order.

    Uploads run on ``pool``'s threads (a sink passes the pool it keeps), or
    on a pool of ``max_workers`` threads made for this call; a single object
    is uploaded in the calling thread. Returns only after every PUT
    succeeded. Raises `SinkError` naming the bucket and the first failed key
    once all uploads have finished, so no upload is still running when the
    caller sees the error.
    """
    if not objects:
        return []

    def upload(pending: PendingObject) -> str:
        body = pending.render()
        retry.call(
            lambda: s3_client.put_object(
                Bucket=bucket,
                Key=pending.key,
                Body=body,
                ContentType=pending.content_type,
                ServerSideEncryption="AES256",
            ),
            f"s3://{bucket}/{pending.key}",
        )
        return pending.key

    workers = max(1, min(max_workers, len(objects)))
    own_pool = pool is None
    if pool is None:
        pool = WorkerPool(workers, thread_name_prefix="s3put")
    try:
        with pool.tasks(workers) as tasks:
            futures = [tasks.submit(upload, pending) for pending in objects]
    finally:
        if own_pool:
            pool.close()
    failures = [f.exception() for f in futures if f.exception() is not None]
    if failures:
        first = failures[0]
        if not isinstance(first, SinkError):
            # The type only: a library's message may quote span values.
            first = SinkError(f"s3://{bucket}: {type(first).__name__}")
        raise SinkError(
            f"{len(failures)} of {len(objects)} uploads to s3://{bucket} failed; "
            f"first: {first}"
        ) from failures[0]
    keys = [future.result() for future in futures]
    logger.debug("uploaded %d objects to s3://%s", len(keys), bucket)
    return keys
