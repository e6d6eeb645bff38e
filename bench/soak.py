"""The soak test: a long steady run, with memory and lag sampled as it goes.

``python -m bench.soak`` (``make soak``; not in CI) starts the emulators,
puts generated traces at a steady rate for ``--secs`` (30 minutes by
default) from a forked process, and runs the local runner on the stream in
this process with the default flush interval, at `DEFAULT_SPANS_PER_SEC`
unless ``--spans-per-sec`` says otherwise. Every ``--sample-secs`` it
records the runner process's resident memory and, for the spans whose
records became durable in that interval, three lags: put to durable (the
completion of the flush that covered the record, as in `bench.lag`), put to
read (the GetRecords call that returned it: the stream's part, here the
emulator's) and read to durable (spanstream's part). Memory stays bounded
here: a record is forgotten as soon as a flush covers it.

At the end it judges flatness on the samples after the first third (the
warm-up: windows filling, traces remembered for late spans): resident memory
of the last third at most `RSS_GROWTH_LIMIT` times the middle third's
(medians), and the read-to-durable lag p99 of the last third at most
`LAG_GROWTH_LIMIT` times the middle third's. kinesis-mock slows down as its
stream grows (it keeps every record in memory, in one process), so the
put-to-read lag is reported, not judged. The
samples, the verdict and the run's shape go to ``bench/soak-results.json``;
the exit status is 1 when either is not flat.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import queue
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from bench.e2e import PutRecord, RecordingRunner, aws_backend, put_ticks
from bench.lag import weighted_percentile
from bench.timing import machine
from consumers.local.runner import ShardReader
from devenv.resources import create_resources
from spanstream import heap
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.sinks.factory import make_sinks

logger = logging.getLogger("bench.soak")

DEFAULT_OUTPUT = Path(__file__).resolve().parent / "soak-results.json"
#: Below what one reader gets from kinesis-mock on 2 cores (about 2,300
#: spans/s in `make bench`'s backlog run): the soak judges spanstream's
#: memory and lag, not the emulator's read speed.
DEFAULT_SPANS_PER_SEC = 1000.0
RSS_GROWTH_LIMIT = 1.10
LAG_GROWTH_LIMIT = 1.5
SHARD_COUNT = 4


@dataclass
class Sample:
    """One sampling interval of the soak."""

    at_secs: float
    #: the put loop was still running (the verdict judges only these)
    producing: bool
    rss_mb: float
    spans_durable: int
    #: put to durable
    lag_p50_secs: float | None
    lag_p99_secs: float | None
    #: read to durable: spanstream's own part of the lag
    processing_lag_p50_secs: float | None = None
    processing_lag_p99_secs: float | None = None
    #: put to read: the stream's (the emulator's) part
    read_lag_p99_secs: float | None = None


class Lags(NamedTuple):
    """One durable record's lags and its span count."""

    put_to_durable_secs: float
    read_to_durable_secs: float
    put_to_read_secs: float
    span_count: int


@dataclass
class LagTracker:
    """Records put but not yet durable, per shard, and the lags of the last interval.

    A record is read once a GetRecords page of its shard reached its
    sequence number (`read`), durable once a flush covered it (`flushed`).
    """

    pending: dict[str, deque[PutRecord]] = field(default_factory=dict)
    read_unix_secs: dict[tuple[str, str], float] = field(default_factory=dict)
    lags: list[Lags] = field(default_factory=list)

    def put(self, records: list[PutRecord]) -> None:
        for record in records:
            self.pending.setdefault(record.shard_id, deque()).append(record)

    def read(self, through: dict[str, int], read_unix_secs: float) -> None:
        """Every pending record at or below ``through[shard]`` has been read."""
        for shard_id, sequence in through.items():
            for record in self.pending.get(shard_id, ()):
                if int(record.sequence_number) > sequence:
                    break
                key = (shard_id, record.sequence_number)
                self.read_unix_secs.setdefault(key, read_unix_secs)

    def flushed(self, covered: dict[str, int], done_unix_secs: float) -> None:
        """Every pending record at or below ``covered[shard]`` became durable."""
        for shard_id, through in covered.items():
            waiting = self.pending.get(shard_id)
            while waiting and int(waiting[0].sequence_number) <= through:
                record = waiting.popleft()
                read_secs = self.read_unix_secs.pop(
                    (shard_id, record.sequence_number), done_unix_secs
                )
                self.lags.append(
                    Lags(
                        done_unix_secs - record.put_unix_secs,
                        done_unix_secs - read_secs,
                        read_secs - record.put_unix_secs,
                        record.span_count,
                    )
                )

    def take(self) -> list[Lags]:
        taken, self.lags = self.lags, []
        return taken

    def pending_records(self) -> int:
        return sum(len(waiting) for waiting in self.pending.values())


class _SoakRunner(RecordingRunner):
    """The local runner, handing each flush's coverage to a `LagTracker`."""

    def __init__(self, tracker: LagTracker, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tracker = tracker

    def _read(self, reader: ShardReader) -> int:
        # Per page, not per poll: a poll ends with the flush that is due, and
        # what it read must be marked read before that flush.
        read = super()._read(reader)
        if reader.last_sequence_number is not None:
            self.tracker.read(
                {reader.shard_id: int(reader.last_sequence_number)}, time.time()
            )
        return read

    def flush_shards(self) -> None:
        super().flush_shards()
        done = self.flush_log.pop()  # kept bounded: the tracker has it
        self.tracker.flushed(done.covered, done.done_unix_secs)


def current_rss_mb() -> float:
    """Return this process's resident set size now (Linux ``/proc``)."""
    with open("/proc/self/statm", encoding="ascii") as statm:
        pages = int(statm.read().split()[1])
    return pages * 4096 / 1024 / 1024


def _produce(
    settings: Settings, spans_per_sec: float, secs: float, seed: int, out: Any
) -> None:
    for tick in put_ticks(settings, spans_per_sec, secs, seed):
        out.put(tick)
    out.put(None)
    out.close()
    out.join_thread()


def soak(
    settings: Settings,
    spans_per_sec: float,
    secs: float,
    sample_secs: float,
    seed: int = 42,
    drain_deadline_secs: float = 180.0,
) -> list[Sample]:
    """Run the soak against the live backend ``settings`` names; return the samples.

    Raises TimeoutError when records are still not durable
    ``drain_deadline_secs`` after the put loop ended.
    """
    kinesis, dynamodb, s3 = (
        make_client(name, settings) for name in ("kinesis", "dynamodb", "s3")
    )
    create_resources(settings, kinesis, dynamodb, s3, shard_count=SHARD_COUNT)
    tracker = LagTracker()
    runner = _SoakRunner(tracker, settings, kinesis, make_sinks(settings, s3, dynamodb))
    runner.discover_shards()
    heap.settle("soak runner")  # as the local runner's shell does
    context = multiprocessing.get_context("fork")
    ticks = context.Queue()
    producer = context.Process(
        target=_produce, args=(settings, spans_per_sec, secs, seed, ticks)
    )
    producer.start()
    started = time.monotonic()
    next_sample = started + sample_secs
    samples: list[Sample] = []
    producing = True
    deadline = float("inf")
    while producing or tracker.pending_records():
        if runner.poll_once() == 0:
            time.sleep(0.05)
        producing = _drain(ticks, tracker) if producing else False
        if not producing and deadline == float("inf"):
            deadline = time.monotonic() + drain_deadline_secs
        now = time.monotonic()
        if now >= next_sample:
            samples.append(_sample(now - started, producing, tracker))
            logger.info("%s", samples[-1])
            next_sample += sample_secs
        if now > deadline:
            raise TimeoutError(
                f"{tracker.pending_records()} records still not durable "
                f"{drain_deadline_secs} s after the put loop ended"
            )
    producer.join(timeout=30)
    return samples


def _drain(ticks: Any, tracker: LagTracker) -> bool:
    """Move the producer's ticks into ``tracker``; False once it said it ended."""
    while True:
        try:
            tick = ticks.get_nowait()
        except queue.Empty:
            return True
        if tick is None:
            return False
        tracker.put(tick)


def _sample(at_secs: float, producing: bool, tracker: LagTracker) -> Sample:
    lags = tracker.take()
    total = [(lag.put_to_durable_secs, lag.span_count) for lag in lags]
    processing = [(lag.read_to_durable_secs, lag.span_count) for lag in lags]
    reading = [(lag.put_to_read_secs, lag.span_count) for lag in lags]
    return Sample(
        at_secs=round(at_secs, 1),
        producing=producing,
        rss_mb=round(current_rss_mb(), 1),
        spans_durable=sum(lag.span_count for lag in lags),
        lag_p50_secs=_percentile(total, 0.50),
        lag_p99_secs=_percentile(total, 0.99),
        processing_lag_p50_secs=_percentile(processing, 0.50),
        processing_lag_p99_secs=_percentile(processing, 0.99),
        read_lag_p99_secs=_percentile(reading, 0.99),
    )


def _percentile(weighted: list[tuple[float, int]], fraction: float) -> float | None:
    return round(weighted_percentile(weighted, fraction), 2) if weighted else None


def verdict(samples: list[Sample]) -> dict[str, Any]:
    """Compare the last third of the samples taken while the put loop ran
    with the middle third (the drain after it is not a steady state).

    Returns the medians compared, their ratios and whether each is flat
    (None when there are too few samples to judge).
    """
    samples = [s for s in samples if s.producing]
    third = len(samples) // 3
    if third < 1:
        return {
            "rss_flat": None,
            "processing_lag_flat": None,
            "samples": len(samples),
        }
    middle, last = samples[third : 2 * third], samples[2 * third :]
    found: dict[str, Any] = {"samples": len(samples)}
    for name, limit, values in (
        ("rss", RSS_GROWTH_LIMIT, lambda s: [x.rss_mb for x in s]),
        (
            "processing_lag",
            LAG_GROWTH_LIMIT,
            lambda s: [x.processing_lag_p99_secs for x in s],
        ),
    ):
        before = _median([v for v in values(middle) if v is not None])
        after = _median([v for v in values(last) if v is not None])
        ratio = after / before if before and after is not None else None
        found[f"{name}_middle_third"] = before
        found[f"{name}_last_third"] = after
        found[f"{name}_ratio"] = round(ratio, 3) if ratio is not None else None
        found[f"{name}_limit"] = limit
        found[f"{name}_flat"] = ratio is not None and ratio <= limit
    return found


def _median(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--secs", type=float, default=1800.0)
    parser.add_argument("--spans-per-sec", type=float, default=DEFAULT_SPANS_PER_SEC)
    parser.add_argument("--sample-secs", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (make interrupted, a CI timeout) unwinds like Ctrl-C, so the
    # emulators are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = Settings(
        stream_name="soak-spans", table_prefix="soak-", bucket="soak-archive"
    )
    started = datetime.now(UTC)
    with aws_backend("emulators", settings) as live:
        samples = soak(live, args.spans_per_sec, args.secs, args.sample_secs, args.seed)
    found = verdict(samples)
    results = {
        "date": started.isoformat(timespec="seconds"),
        "command": "python -m bench.soak "
        + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine(),
        "spans_per_sec": args.spans_per_sec,
        "secs": args.secs,
        "sample_secs": args.sample_secs,
        "flush_interval_secs": settings.flush_interval_secs,
        "verdict": found,
        "samples": [asdict(s) for s in samples],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for sample in samples:
        print(
            f"{sample.at_secs:8.0f} s  rss {sample.rss_mb:7.1f} MB  "
            f"{sample.spans_durable:9,} spans durable  lag p50 "
            f"{sample.lag_p50_secs} s  p99 {sample.lag_p99_secs} s  "
            f"(read to durable p99 {sample.processing_lag_p99_secs} s, "
            f"put to read p99 {sample.read_lag_p99_secs} s)"
        )
    print(json.dumps(found, indent=2))
    print(f"wrote {args.output}")
    return 0 if found["rss_flat"] and found["processing_lag_flat"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
