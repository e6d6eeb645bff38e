"""The atheris harness (fuzz/decoders.py) works without atheris, so it cannot rot.

GIVEN the harness's seed corpus and its one-input function; WHEN the seeds
(and a few known-bad inputs) go through it, as libFuzzer would send them;
THEN none breaks an invariant, and a decoder that loses a record or lets an
exception out makes it fail, as a crash would under atheris.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from aws_kinesis_agg import MAGIC

from fuzz import decoders
from spanstream.decode import RecordDecoder
from spanstream.model import DeadLetter, KinesisRecord, SpanBatch

SEEDS = decoders.seed_inputs()


def test_seeds_hold_every_form_poison_and_the_sample_events() -> None:
    starts = {data[:1] for data in SEEDS}
    assert {b"\x0a", b"{", b"\x1f", b"\x28", MAGIC[:1]} <= starts
    assert b"Hello, this is a test." in SEEDS  # tests/data/lambda/kinesis-event.json
    assert len(SEEDS) >= 40


def test_both_decoders_are_fuzzed() -> None:
    assert decoders.DECODERS == ("python", "native")


def test_every_seed_passes_one_input() -> None:
    for data in SEEDS:
        decoders.one_input(data)


@pytest.mark.parametrize(
    "data",
    [b"", b"\x0a\x00", b"\x0a", b"{}", b"[]", MAGIC, b"\x1f\x8b\x08\x00"],
)
def test_short_hostile_inputs_pass_one_input(data: bytes) -> None:
    decoders.one_input(data)


def test_a_record_lost_without_a_dead_letter_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a decoder that drops the fuzzed record silently
    decode = RecordDecoder.decode

    def dropping(
        self: RecordDecoder,
        record: KinesisRecord,
        batch: SpanBatch,
        dead_letters: list[DeadLetter],
    ) -> int:
        if record.ref == decoders.ref(1):
            return 0
        return decode(self, record, batch, dead_letters)

    monkeypatch.setattr(RecordDecoder, "decode", dropping)
    # WHEN a valid record goes through THEN the harness reports it
    with pytest.raises(AssertionError, match="vanished without a dead letter"):
        decoders.one_input(SEEDS[0])


def test_an_escaping_exception_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def raising(*args: object) -> int:
        raise OverflowError("escaped decode")

    monkeypatch.setattr(RecordDecoder, "decode", raising)
    with pytest.raises(OverflowError):
        decoders.one_input(SEEDS[0])


def test_a_row_the_archive_refuses_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a decoder that writes a status code past the int32 column
    decode = RecordDecoder.decode

    def out_of_range(
        self: RecordDecoder,
        record: KinesisRecord,
        batch: SpanBatch,
        dead_letters: list[DeadLetter],
    ) -> int:
        count = decode(self, record, batch, dead_letters)
        if record.ref == decoders.ref(1) and count:
            batch.http_status_code[-1] = 2**40
        return count

    monkeypatch.setattr(RecordDecoder, "decode", out_of_range)
    with pytest.raises((OverflowError, pa.ArrowInvalid)):
        decoders.one_input(SEEDS[0])


def test_write_corpus_writes_each_distinct_seed_once(tmp_path: Path) -> None:
    count = decoders.write_corpus(tmp_path / "seeds")
    files = sorted((tmp_path / "seeds").iterdir())
    assert count == len(files) == len(set(SEEDS))
    assert {path.read_bytes() for path in files} == set(SEEDS)
