"""The soak's bookkeeping: lags per flush, bounded memory, and the flatness verdict.

GIVEN records put on shards, reads and flushes covering sequence numbers
WHEN the tracker hears of each read and flush
THEN a record's lag is its covering flush's completion minus its put time,
split at the read that returned it, and it is forgotten once covered; the
verdict compares the last third of the samples taken while putting with the
middle third, ignoring the drain.
"""

from __future__ import annotations

from bench.e2e import PutRecord
from bench.soak import Lags, LagTracker, Sample, verdict


def test_a_flush_makes_the_records_it_covers_durable_and_forgets_them() -> None:
    tracker = LagTracker()
    tracker.put(
        [
            PutRecord("shard-0", "10", 5, 100.0),
            PutRecord("shard-0", "20", 7, 101.0),
            PutRecord("shard-1", "15", 3, 102.0),
        ]
    )

    tracker.read({"shard-0": 10, "shard-1": 0}, 104.0)
    tracker.read({"shard-0": 20, "shard-1": 15}, 106.0)
    tracker.flushed({"shard-0": 10, "shard-1": 14}, 110.0)
    assert tracker.take() == [Lags(10.0, 6.0, 4.0, 5)]
    assert tracker.pending_records() == 2

    tracker.flushed({"shard-0": 25, "shard-1": 15}, 120.0)
    assert sorted(tracker.take()) == [
        Lags(18.0, 14.0, 4.0, 3),
        Lags(19.0, 14.0, 5.0, 7),
    ]
    assert tracker.pending_records() == 0
    assert tracker.read_unix_secs == {}  # forgotten with the records
    assert tracker.take() == []


def _samples(rss: list[float], lag: list[float]) -> list[Sample]:
    """Samples whose read-to-durable lag p99 is ``lag``; the stream's part grows."""
    return [
        Sample(float(i), True, r, 100, p99 + 10 * i, p99 + 10 * i, p99 / 2, p99, 10 * i)
        for i, (r, p99) in enumerate(zip(rss, lag, strict=True))
    ]


def test_steady_memory_and_lag_are_flat() -> None:
    found = verdict(_samples([300, 250, 251, 252, 253, 252], [20, 12, 12, 13, 12, 13]))

    assert found["rss_flat"] is True
    assert found["processing_lag_flat"] is True  # the emulator's lag is not judged
    assert found["rss_middle_third"] == 252  # the warm-up third is ignored


def test_growing_memory_or_lag_is_not_flat() -> None:
    growing_rss = verdict(_samples([100, 200, 210, 220, 300, 310], [5] * 6))
    growing_lag = verdict(_samples([200] * 6, [5, 5, 5, 6, 20, 30]))

    assert growing_rss["rss_flat"] is False
    assert growing_rss["processing_lag_flat"] is True
    assert growing_lag["processing_lag_flat"] is False
    assert growing_lag["rss_flat"] is True


def test_the_drain_after_the_put_loop_is_not_judged() -> None:
    samples = _samples([200] * 6, [5] * 6)
    drain = [
        Sample(7.0, False, 400, 0, None, None),
        Sample(8.0, False, 500, 9, 60, 90, 60, 90, 0),
    ]

    found = verdict(samples + drain)

    assert found["samples"] == 6
    assert found["rss_flat"] is True and found["processing_lag_flat"] is True


def test_too_few_samples_cannot_be_judged() -> None:
    assert verdict(_samples([200, 200], [5, 5]))["rss_flat"] is None
