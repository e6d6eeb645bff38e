"""Run the local runner against the configured stream until stopped.

``python -m consumers.local`` reads every shard of ``SPANSTREAM_STREAM_NAME``
(endpoints and names from ``SPANSTREAM_*``, see the README) and writes to S3
and DynamoDB until SIGINT or SIGTERM, then flushes everything it read and
exits 0. Logs go to stderr as JSON lines.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from consumers.local.runner import LocalRunner
from consumers.logs import log_json_to_stderr
from spanstream import heap
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.errors import ConfigError
from spanstream.sinks.factory import make_sinks

logger = logging.getLogger("consumers.local")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--start-at-latest",
        action="store_true",
        help="read only records put after start (default: from the oldest)",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    log_json_to_stderr(args.log_level)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return 2
    stop_requested = False

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stop_requested
        logger.info("signal %d: flushing and stopping", signum)
        stop_requested = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    kinesis, dynamodb, s3 = (
        make_client(name, settings) for name in ("kinesis", "dynamodb", "s3")
    )
    runner = LocalRunner(
        settings,
        kinesis,
        make_sinks(settings, s3, dynamodb),
        start_at_latest=args.start_at_latest,
    )
    heap.settle("local runner")
    logger.info("reading stream %s", settings.stream_name)
    stats = runner.run(lambda _: stop_requested, deadline_secs=float("inf"))
    logger.info("stopped after %d records, %d spans", stats.records, stats.spans)
    return 0


if __name__ == "__main__":
    sys.exit(main())
