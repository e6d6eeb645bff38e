"""``python -m spanstream.traffic``: put generated spans on a Kinesis stream.

Example::

    python -m spanstream.traffic --stream spanstream-spans --spans 50000 \\
        --form mixed --seed 7 --rate 5000

The stream, region and endpoint default to the ``SPANSTREAM_*`` settings.
Traces are generated in chunks stamped with the current time, so windows
stay current however long the run takes; ``--rate`` paces the spans sent.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence

from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.sinks.kinesis import put_records
from spanstream.traffic.encode import Form, encode_labelled_records
from spanstream.traffic.generator import DEFAULT_TENANTS, TrafficGenerator
from spanstream.traffic.poison import poison_records

logger = logging.getLogger("spanstream.traffic")

CHUNK_SPANS = 2_000


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m spanstream.traffic", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--stream", help="stream name (default SPANSTREAM_STREAM_NAME)")
    parser.add_argument("--spans", type=int, default=10_000, help="spans to send")
    parser.add_argument(
        "--form", choices=[form.value for form in Form], default=Form.MIXED.value
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--rate", type=float, default=0.0, help="spans per second (0: no pacing)"
    )
    parser.add_argument(
        "--tenants",
        default=",".join(t or "-" for t in DEFAULT_TENANTS),
        help="comma-separated tenant ids; '-' is a tenant without tenant.id",
    )
    parser.add_argument("--poison", type=int, default=0, help="poison records to add")
    parser.add_argument(
        "--dry-run", action="store_true", help="generate and encode, put nothing"
    )
    args = parser.parse_args(argv)
    if args.spans <= 0:
        parser.error(f"--spans must be > 0, got {args.spans!r}")
    if args.rate < 0:
        parser.error(f"--rate must be >= 0, got {args.rate!r}")
    return args


def send(
    put: Callable[[list[tuple[str, bytes]]], int],
    span_total: int,
    form: str,
    seed: int,
    tenants: Sequence[str | None],
    rate_spans_per_sec: float = 0.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[int, int]:
    """Generate, encode and ``put`` chunks until ``span_total`` spans went out.

    Returns (spans sent, records put).
    """
    generator = TrafficGenerator(seed, tenants)
    chunk_spans = CHUNK_SPANS
    if rate_spans_per_sec:
        chunk_spans = max(1, min(CHUNK_SPANS, int(rate_spans_per_sec)))
    started = clock()
    spans_sent = records_put = chunk_index = 0
    while spans_sent < span_total:
        now_nanos = time.time_ns()
        traces = []
        chunk_count = 0
        while chunk_count < min(chunk_spans, span_total - spans_sent):
            trace = generator.trace(now_nanos)
            traces.append(trace)
            chunk_count += len(trace.spans)
        labelled = encode_labelled_records(traces, form, seed * 1_000_003 + chunk_index)
        records_put += put([item.record for item in labelled])
        spans_sent += chunk_count
        chunk_index += 1
        if rate_spans_per_sec:
            ahead_secs = spans_sent / rate_spans_per_sec - (clock() - started)
            if ahead_secs > 0:
                sleep(ahead_secs)
    return spans_sent, records_put


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    args = parse_args(argv)
    settings = Settings.from_env()
    stream = args.stream or settings.stream_name
    tenants = [None if t in ("-", "") else t for t in args.tenants.split(",")]
    put = _count_only if args.dry_run else _putter(settings, stream)
    logger.info(
        "sending %d spans to stream %s as %s (seed %d)",
        args.spans,
        stream,
        args.form,
        args.seed,
    )
    started = time.monotonic()
    spans, records = send(put, args.spans, args.form, args.seed, tenants, args.rate)
    if args.poison:
        records += put(list(poison_records(args.poison, args.seed)))
    elapsed = time.monotonic() - started
    logger.info(
        "sent %d spans in %d records (%d poison) to %s in %.1f s",
        spans,
        records,
        args.poison,
        stream,
        elapsed,
    )
    return 0


def _count_only(records: list[tuple[str, bytes]]) -> int:
    return len(records)


def _putter(
    settings: Settings, stream: str
) -> Callable[[list[tuple[str, bytes]]], int]:
    client = make_client("kinesis", settings)

    def put(records: list[tuple[str, bytes]]) -> int:
        return put_records(client, stream, records)

    return put


if __name__ == "__main__":
    sys.exit(main())
