"""AWS clients built from `Settings`, with the retry policy spanstream relies on.

Clients are created here and passed in everywhere else, so that tests and
runtimes decide which endpoints (AWS, LocalStack, emulators) the core talks to.
Retries use botocore's ``standard`` mode: jittered exponential backoff on
throttling, 5xx and connection errors only, bounded by ``max_attempts``.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config

from spanstream.config import Settings

DEFAULT_MAX_ATTEMPTS = 8


def client_config(max_pool_connections: int = 32) -> Config:
    """Return the botocore config shared by every spanstream client."""
    return Config(
        retries={"mode": "standard", "max_attempts": DEFAULT_MAX_ATTEMPTS},
        connect_timeout=5,
        read_timeout=30,
        max_pool_connections=max_pool_connections,
    )


def make_client(service: str, settings: Settings, **kwargs: Any) -> Any:
    """Return a boto3 client for ``service`` ("s3", "dynamodb", "kinesis").

    The endpoint comes from `Settings.endpoint_for`; S3 uses path-style
    addressing when an endpoint is set, which emulators need.
    """
    endpoint = settings.endpoint_for(service)
    config = client_config(max(32, settings.dynamodb_write_concurrency * 2))
    if service == "s3" and endpoint:
        config = config.merge(Config(s3={"addressing_style": "path"}))
    return boto3.session.Session().client(
        service,
        region_name=settings.region,
        endpoint_url=endpoint,
        config=config,
        **kwargs,
    )
