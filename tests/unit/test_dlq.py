"""``spanstream dlq``: list, show and re-drive dead letters (in-process moto)."""

from __future__ import annotations

import base64
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from aws_kinesis_agg.aggregator import RecordAggregator
from moto import mock_aws
from otlpfactory import make_record, make_request, make_span

from consumers import dlq
from spanstream.config import Settings
from spanstream.deadletters import Outcome, Redriver, RedriveRequest, redrive_marks
from spanstream.deadletters.put import PutEntry, put_entries
from spanstream.deadletters.routing import Routing, routing_for
from spanstream.decode import RecordDecoder
from spanstream.errors import SinkError
from spanstream.model import DeadLetter, RecordRef, SpanBatch
from spanstream.sinks.deadletter import (
    DeadLetterWriter,
    list_dead_letter_objects,
    list_dead_letters,
    read_dead_letter,
    redriven_key,
)
from spanstream.sinks.kinesis import MAX_RECORD_BYTES
from spanstream.sinks.retry import RetryPolicy

BUCKET = "dlq-bucket"
STREAM = "spans"
OTHER_STREAM = "spans-fixed"
TRACE_STREAM = "traces"
SHARD = "shardId-000000000001"
#: In every payload: must never appear in what the tool prints or logs.
SECRET = "customer-secret-7f3a9c"
SEQUENCE_BASE = 49590338271490256608559692538361571095921575989136588000


def payload(span_count: int = 3) -> bytes:
    spans = [
        make_span(span_id=(i + 1).to_bytes(8, "big"), attributes={"card": SECRET})
        for i in range(span_count)
    ]
    return make_request(spans).SerializeToString()


def dead_letter(
    index: int,
    record_bytes: bytes | None = None,
    stream: str = STREAM,
    shard_id: str = SHARD,
    sub_sequence_number: int = 0,
    partition_key: str = "trace-1",
    reason: str = "record holds 3 spans, over the limit of 2",
) -> DeadLetter:
    ref = RecordRef(
        stream=stream,
        shard_id=shard_id,
        sequence_number=str(SEQUENCE_BASE + index),
        sub_sequence_number=sub_sequence_number,
        partition_key=partition_key,
        arrival_unix_millis=1_714_557_600_123,
    )
    data = payload() if record_bytes is None else record_bytes
    return DeadLetter(ref, data, reason, "limit")


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("SPANSTREAM_BUCKET", BUCKET)
    monkeypatch.setenv("SPANSTREAM_STREAM_NAME", STREAM)
    monkeypatch.setenv("SPANSTREAM_TRACE_STREAM_NAME", TRACE_STREAM)
    return Settings.from_env()


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, settings: Settings) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", settings.region)
    with mock_aws():
        yield


@pytest.fixture
def s3(aws: None, settings: Settings) -> Any:
    client = boto3.client("s3", region_name=settings.region)
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def kinesis(aws: None, settings: Settings) -> Any:
    client = boto3.client("kinesis", region_name=settings.region)
    for name in (STREAM, OTHER_STREAM, TRACE_STREAM):
        client.create_stream(StreamName=name, ShardCount=2)
    return client


def write(s3: Any, settings: Settings, *letters: DeadLetter) -> list[str]:
    return DeadLetterWriter(s3, settings).write(list(letters))


def stream_records(kinesis: Any, stream: str) -> list[dict[str, Any]]:
    """Return every record on ``stream``, shard by shard."""
    records = []
    for shard in kinesis.list_shards(StreamName=stream)["Shards"]:
        iterator = kinesis.get_shard_iterator(
            StreamName=stream,
            ShardId=shard["ShardId"],
            ShardIteratorType="TRIM_HORIZON",
        )["ShardIterator"]
        records += kinesis.get_records(ShardIterator=iterator)["Records"]
    return records


def assert_no_payload(*outputs: str) -> None:
    for output in outputs:
        assert SECRET not in output
        assert base64.b64encode(payload()).decode()[:40] not in output


def no_wait_policy(deadline_secs: float = 60.0) -> RetryPolicy:
    """A policy whose sleeps advance a fake clock instead of waiting."""
    now = [0.0]

    def sleep(secs: float) -> None:
        now[0] += secs

    return RetryPolicy(
        deadline_secs=deadline_secs,
        clock=lambda: now[0],
        sleep=sleep,
        rng=lambda: 0.99,
    )


class FlakyKinesis:
    """Forwards to a real client, but rejects chosen partition keys.

    ``reject`` maps a partition key to how many attempts fail with ``code``.
    """

    def __init__(
        self,
        client: Any,
        reject: dict[str, int],
        code: str = "ProvisionedThroughputExceededException",
    ) -> None:
        self.client = client
        self.reject = dict(reject)
        self.code = code
        self.calls: list[list[str]] = []

    def put_records(self, StreamName: str, Records: list[dict[str, Any]]) -> Any:
        self.calls.append([entry["PartitionKey"] for entry in Records])
        rejected = []
        for entry in Records:
            left = self.reject.get(entry["PartitionKey"], 0)
            rejected.append(left > 0)
            self.reject[entry["PartitionKey"]] = left - 1
        accepted = [e for e, no in zip(Records, rejected, strict=True) if not no]
        real = iter(
            self.client.put_records(StreamName=StreamName, Records=accepted)["Records"]
            if accepted
            else ()
        )
        results = [
            {"ErrorCode": self.code, "ErrorMessage": "Rate exceeded for shard"}
            if no
            else next(real)
            for no in rejected
        ]
        failed = sum(rejected)
        return {"FailedRecordCount": failed, "Records": results}


# -- list ------------------------------------------------------------------
def test_list_prints_one_line_per_dead_letter_without_the_payload(
    s3: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN dead letters on two shards, one with a long, multi-line reason
    long_reason = "first line\nsecond line " + "x" * 200
    keys = write(
        s3,
        settings,
        dead_letter(1),
        dead_letter(2, shard_id="shardId-000000000002", reason=long_reason),
    )
    # WHEN listing them
    assert dlq.main(["list"]) == 0
    out, err = capsys.readouterr()
    # THEN a header and one tab-separated line each, reason cut to one line
    header, *lines = out.splitlines()
    assert header.split("\t") == list(dlq.LIST_HEADER)
    assert len(lines) == 2
    fields = [line.split("\t") for line in lines]
    assert {tuple(f[:4]) for f in fields} == {
        (STREAM, SHARD, f"{SEQUENCE_BASE + 1}-0", "limit"),
        (STREAM, "shardId-000000000002", f"{SEQUENCE_BASE + 2}-0", "limit"),
    }
    assert {f[6] for f in fields} == set(keys)
    assert {f[5] for f in fields} == {str(len(payload()))}
    cut = next(f[4] for f in fields if f[4].startswith("first"))
    assert len(cut) == dlq.REASON_MAX_CHARS and cut.endswith("…")
    assert "\n" not in cut
    assert_no_payload(out, err)


def test_list_filters_by_stream_and_shard_and_speaks_json(
    s3: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    write(
        s3,
        settings,
        dead_letter(1),
        dead_letter(2, shard_id="shardId-000000000002"),
        dead_letter(3, stream=OTHER_STREAM),
    )
    assert dlq.main(["list", "--stream", STREAM, "--shard", SHARD, "--json"]) == 0
    out, err = capsys.readouterr()
    [document] = [json.loads(line) for line in out.splitlines()]
    assert document["stream"] == STREAM
    assert document["shard_id"] == SHARD
    assert document["position"] == f"{SEQUENCE_BASE + 1}-0"
    assert document["record_size_bytes"] == len(payload())
    assert document["record_envelope"] == "none"
    assert "record_base64" not in document
    assert_no_payload(out, err)

    assert dlq.main(["list", "--stream", OTHER_STREAM, "--json"]) == 0
    out, _ = capsys.readouterr()
    assert [json.loads(line)["stream"] for line in out.splitlines()] == [OTHER_STREAM]


def test_list_names_an_unreadable_object_and_exits_1(
    s3: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    write(s3, settings, dead_letter(1))
    foreign = f"dead-letters/stream={STREAM}/shard={SHARD}/junk.json"
    s3.put_object(Bucket=BUCKET, Key=foreign, Body=b"{}")
    assert dlq.main(["list"]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2  # header and the good one
    assert foreign in err


def test_a_missing_bucket_is_an_error_not_a_traceback(
    aws: None, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dlq.main(["list"]) == 1
    assert "NoSuchBucket" in capsys.readouterr().err


def test_shard_without_stream_is_a_usage_error(s3: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        dlq.main(["redrive", "--shard", SHARD])
    assert exit_info.value.code == 2


# -- show ------------------------------------------------------------------
def test_show_prints_metadata_and_writes_bytes_only_to_the_file(
    s3: Any, settings: Settings, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    [key] = write(s3, settings, dead_letter(1))
    out_file = tmp_path / "record.bin"
    assert dlq.main(["show", key, "--bytes-out", str(out_file)]) == 0
    out, err = capsys.readouterr()
    lines = dict(line.split(": ", 1) for line in out.splitlines())
    assert lines["key"] == key
    assert lines["sequence_number"] == str(SEQUENCE_BASE + 1)
    assert lines["stage"] == "limit"
    assert lines["reason"] == "record holds 3 spans, over the limit of 2"
    assert lines["record_size_bytes"] == str(len(payload()))
    assert lines["arrival_time"] == "2024-05-01T10:00:00.123+00:00"
    assert out_file.read_bytes() == payload()
    assert stat.S_IMODE(os.stat(out_file).st_mode) == 0o600
    assert f"wrote {len(payload())} bytes" in err
    assert_no_payload(out, err)


def test_show_of_a_redriven_dead_letter_says_where_it_was_put(
    s3: Any, kinesis: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    [key] = write(s3, settings, dead_letter(1))
    redriver = Redriver(s3, kinesis, settings, wall_clock=lambda: 1_714_557_700.5)
    [result] = redriver.redrive(RedriveRequest())
    assert dlq.main(["show", redriven_key(settings, key)]) == 0
    lines = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines())
    assert lines["redriven-to-stream"] == STREAM
    assert lines["redriven-shard-id"] == result.shard_id
    assert lines["redriven-sequence-number"] == result.sequence_number
    assert lines["redriven-unix-millis"] == "1714557700500"


def test_show_of_a_missing_key_exits_1(
    s3: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    assert dlq.main(["show", "dead-letters/stream=x/shard=y/1-0.json"]) == 1
    assert "no such dead letter" in capsys.readouterr().err


def test_bytes_out_refuses_stdout(s3: Any) -> None:
    with pytest.raises(SystemExit) as exit_info:
        dlq.main(["show", "any-key", "--bytes-out", "-"])
    assert exit_info.value.code == 2


# -- redrive ---------------------------------------------------------------
def test_redrive_puts_the_bytes_back_and_moves_the_dead_letters(
    s3: Any, kinesis: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN three dead letters of the span stream
    letters = [dead_letter(i, payload(i + 1)) for i in range(3)]
    keys = write(s3, settings, *letters)
    # WHEN they are re-driven
    assert dlq.main(["redrive"]) == 0
    out, err = capsys.readouterr()
    # THEN each one's bytes are on the stream, under its position as key
    records = stream_records(kinesis, STREAM)
    assert sorted(r["Data"] for r in records) == sorted(d.record_bytes for d in letters)
    assert {r["PartitionKey"] for r in records} == {
        f"{SEQUENCE_BASE + i}-0" for i in range(3)
    }
    # AND they are gone from the listing, below redriven/ with where they went
    assert list(list_dead_letters(s3, settings)) == []
    moved = [e.key for e in list_dead_letter_objects(s3, settings, redriven=True)]
    assert sorted(moved) == sorted(redriven_key(settings, key) for key in keys)
    assert moved[0].startswith("dead-letters/redriven/stream=spans/shard=")
    assert [read_dead_letter(s3, settings, k) for k in sorted(moved)] == [
        letters[keys.index(k)]
        for k in sorted(keys, key=lambda k: redriven_key(settings, k))
    ]
    marks = redrive_marks(s3, settings, moved[0])
    sequences = {r["SequenceNumber"] for r in records}
    assert marks["redriven-to-stream"] == STREAM
    assert marks["redriven-sequence-number"] in sequences
    assert out.splitlines()[-1].startswith("redriven: 3, already-redriven: 0")
    assert_no_payload(out, err)


def test_a_second_redrive_puts_nothing(
    s3: Any, kinesis: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    write(s3, settings, dead_letter(1), dead_letter(2))
    assert dlq.main(["redrive"]) == 0
    capsys.readouterr()
    assert dlq.main(["redrive"]) == 0
    assert len(stream_records(kinesis, STREAM)) == 2
    assert capsys.readouterr().out.splitlines() == [
        "redriven: 0, already-redriven: 0, would-redrive: 0, failed: 0"
    ]


def test_a_dead_letter_written_again_after_its_redrive_is_not_put_twice(
    s3: Any, kinesis: Any, settings: Settings
) -> None:
    # GIVEN a re-driven dead letter that reappears (a replay of the original
    # record, or a re-drive that stopped between its copy and its delete)
    letter = dead_letter(1)
    [key] = write(s3, settings, letter)
    redriver = Redriver(s3, kinesis, settings, retry=no_wait_policy())
    assert [r.outcome for r in redriver.redrive(RedriveRequest())] == [Outcome.REDRIVEN]
    write(s3, settings, letter)
    # WHEN re-driving again
    results = list(redriver.redrive(RedriveRequest()))
    # THEN the original is removed and nothing more is put
    assert [(r.key, r.outcome) for r in results] == [(key, Outcome.ALREADY_REDRIVEN)]
    assert len(stream_records(kinesis, STREAM)) == 1
    assert list(list_dead_letters(s3, settings)) == []


def test_dry_run_changes_nothing(
    s3: Any, kinesis: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = write(s3, settings, dead_letter(1), dead_letter(2))
    assert dlq.main(["redrive", "--dry-run", "--to-stream", OTHER_STREAM]) == 0
    out, err = capsys.readouterr()
    assert stream_records(kinesis, STREAM) == []
    assert stream_records(kinesis, OTHER_STREAM) == []
    assert sorted(list_dead_letters(s3, settings)) == sorted(keys)
    assert list(list_dead_letter_objects(s3, settings, redriven=True)) == []
    lines = [line.split("\t") for line in out.splitlines()[:-1]]
    assert {(f[0], f[1], f[2]) for f in lines} == {
        ("would-redrive", key, f"-> {OTHER_STREAM}") for key in keys
    }
    assert out.splitlines()[-1].endswith("would-redrive: 2, failed: 0")
    assert_no_payload(out, err)


def test_limit_and_to_stream(
    s3: Any, kinesis: Any, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    write(s3, settings, *(dead_letter(i) for i in range(3)))
    assert dlq.main(["redrive", "--limit", "2", "--to-stream", OTHER_STREAM]) == 0
    assert len(stream_records(kinesis, OTHER_STREAM)) == 2
    assert stream_records(kinesis, STREAM) == []
    assert len(list(list_dead_letters(s3, settings))) == 1
    [moved, _] = list(list_dead_letter_objects(s3, settings, redriven=True))
    assert redrive_marks(s3, settings, moved.key)["redriven-to-stream"] == OTHER_STREAM
    with pytest.raises(SystemExit) as exit_info:
        dlq.main(["redrive", "--limit", "0"])
    assert exit_info.value.code == 2


def test_redrive_selects_by_stream_and_shard(
    s3: Any, kinesis: Any, settings: Settings
) -> None:
    write(
        s3,
        settings,
        dead_letter(1),
        dead_letter(2, shard_id="shardId-000000000002"),
        dead_letter(3, stream=OTHER_STREAM),
    )
    assert dlq.main(["redrive", "--stream", STREAM, "--shard", SHARD]) == 0
    assert len(stream_records(kinesis, STREAM)) == 1
    assert stream_records(kinesis, OTHER_STREAM) == []
    assert len(list(list_dead_letters(s3, settings))) == 2


def test_partially_failed_put_retries_only_the_failed_entries(
    s3: Any, kinesis: Any, settings: Settings
) -> None:
    # GIVEN a stream that throttles one record twice
    letters = [dead_letter(i) for i in range(4)]
    write(s3, settings, *letters)
    throttled = f"{SEQUENCE_BASE + 2}-0"
    flaky = FlakyKinesis(kinesis, reject={throttled: 2})
    # WHEN re-driving
    results = list(
        Redriver(s3, flaky, settings, retry=no_wait_policy()).redrive(RedriveRequest())
    )
    # THEN one call with all four, then two with only the throttled one
    assert [sorted(call) for call in flaky.calls] == [
        sorted(f"{SEQUENCE_BASE + i}-0" for i in range(4)),
        [throttled],
        [throttled],
    ]
    assert [r.outcome for r in results] == [Outcome.REDRIVEN] * 4
    assert len(stream_records(kinesis, STREAM)) == 4
    assert list(list_dead_letters(s3, settings)) == []


def test_records_still_failing_at_the_deadline_keep_their_dead_letters(
    s3: Any,
    kinesis: Any,
    settings: Settings,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # GIVEN a stream that always throttles one record, and a short deadline
    keys = write(s3, settings, dead_letter(1), dead_letter(2))
    stuck = f"{SEQUENCE_BASE + 2}-0"
    flaky = FlakyKinesis(kinesis, reject={stuck: 10_000})
    monkeypatch.setattr(dlq, "make_client", lambda name, _: {"s3": s3}.get(name, flaky))
    monkeypatch.setattr(dlq, "Redriver", _redriver_with(no_wait_policy(1.0)))
    # WHEN re-driving through the command
    assert dlq.main(["redrive"]) == 1
    out, err = capsys.readouterr()
    # THEN the other is re-driven; the stuck one stays, and is named
    assert list(list_dead_letters(s3, settings)) == [keys[1]]
    assert len(stream_records(kinesis, STREAM)) == 1
    assert f"failed\t{keys[1]}\tProvisionedThroughputExceededException" in out
    assert f"not re-driven: {keys[1]}" in err
    assert out.splitlines()[-1] == (
        "redriven: 1, already-redriven: 0, would-redrive: 0, failed: 1"
    )
    assert len(flaky.calls) > 3  # retried until the deadline
    assert_no_payload(out, err)


def _redriver_with(retry: RetryPolicy) -> Any:
    def make(s3: Any, kinesis: Any, settings: Settings) -> Redriver:
        return Redriver(s3, kinesis, settings, retry=retry)

    return make


def test_a_non_retryable_entry_error_is_not_retried(
    s3: Any, kinesis: Any, settings: Settings
) -> None:
    [key] = write(s3, settings, dead_letter(1))
    flaky = FlakyKinesis(
        kinesis, reject={f"{SEQUENCE_BASE + 1}-0": 1}, code="KMSAccessDeniedException"
    )
    redriver = Redriver(s3, flaky, settings, retry=no_wait_policy())
    [result] = redriver.redrive(RedriveRequest())
    assert result.outcome is Outcome.FAILED
    assert result.error.startswith("KMSAccessDeniedException")
    assert len(flaky.calls) == 1
    assert list(list_dead_letters(s3, settings)) == [key]


def test_a_put_whose_move_fails_says_it_will_be_put_again(
    s3: Any, kinesis: Any, settings: Settings
) -> None:
    # GIVEN an S3 that refuses the copy to redriven/
    [key] = write(s3, settings, dead_letter(1))

    class NoCopyS3:
        def __getattr__(self, name: str) -> Any:
            return getattr(s3, name)

        def copy_object(self, **kwargs: Any) -> Any:
            s3.copy_object(**{**kwargs, "Bucket": "no-such-bucket"})

    redriver = Redriver(NoCopyS3(), kinesis, settings, retry=no_wait_policy())
    # WHEN re-driving
    [result] = redriver.redrive(RedriveRequest())
    # THEN the record was put, the dead letter stays, and the result says so
    assert result.outcome is Outcome.FAILED
    assert f"put as {STREAM}/{result.shard_id}@{result.sequence_number}" in (
        result.error
    )
    assert "puts it again" in result.error
    assert len(stream_records(kinesis, STREAM)) == 1
    assert list(list_dead_letters(s3, settings)) == [key]


def test_an_unreadable_dead_letter_fails_alone(
    s3: Any, kinesis: Any, settings: Settings
) -> None:
    [good] = write(s3, settings, dead_letter(1))
    foreign = f"dead-letters/stream={STREAM}/shard={SHARD}/junk.json"
    s3.put_object(Bucket=BUCKET, Key=foreign, Body=b"not json at all")
    redriver = Redriver(s3, kinesis, settings, retry=no_wait_policy())
    outcomes = {r.key: r.outcome for r in redriver.redrive(RedriveRequest())}
    assert outcomes == {good: Outcome.REDRIVEN, foreign: Outcome.FAILED}


def test_an_oversized_record_is_refused_before_the_call(kinesis: Any) -> None:
    too_big = PutEntry(b"x" * MAX_RECORD_BYTES, Routing("k"))
    [result] = put_entries(kinesis, STREAM, [too_big], no_wait_policy())
    assert not result.is_put
    assert "over the Kinesis limit" in result.error


def test_whole_call_errors_fail_the_batch(kinesis: Any) -> None:
    entries = [PutEntry(b"a", Routing("k1")), PutEntry(b"b", Routing("k2"))]
    results = put_entries(kinesis, "no-such-stream", entries, no_wait_policy())
    assert [r.is_put for r in results] == [False, False]
    assert all("ResourceNotFoundException" in r.error for r in results)


def test_redrive_marks_of_a_missing_key_raise(s3: Any, settings: Settings) -> None:
    with pytest.raises(SinkError, match="no such object"):
        redrive_marks(s3, settings, "dead-letters/redriven/nothing.json")


# -- routing and KPL -------------------------------------------------------
def test_plain_records_are_keyed_by_position_to_spread_them(
    settings: Settings,
) -> None:
    letter = dead_letter(7, sub_sequence_number=2, partition_key="hot-key")
    assert routing_for(letter, settings) == Routing(f"{SEQUENCE_BASE + 7}-2")


def test_trace_stream_records_keep_their_bucket_key(settings: Settings) -> None:
    letter = dead_letter(1, stream=TRACE_STREAM, partition_key="trace-bucket-5")
    assert routing_for(letter, settings) == Routing("trace-bucket-5")


def test_a_whole_kpl_record_goes_where_its_first_user_record_went(
    settings: Settings,
) -> None:
    aggregator = RecordAggregator()
    aggregator.add_user_record("first", payload(1), explicit_hash_key="12345")
    aggregator.add_user_record("second", payload(1), explicit_hash_key="12345")
    _, _, data = aggregator.clear_and_get().get_contents()
    letter = dead_letter(1, data, partition_key="first")
    assert routing_for(letter, settings) == Routing("first", "12345")
    corrupt = data[:-1] + bytes([data[-1] ^ 0xFF])
    assert routing_for(dead_letter(1, corrupt), settings) == Routing("trace-1")


def test_a_kpl_user_record_dead_letter_decodes_as_a_plain_record() -> None:
    # GIVEN a KPL record whose second user record is over the span limit
    aggregator = RecordAggregator()
    aggregator.add_user_record("a", payload(1))
    aggregator.add_user_record("b", payload(3))
    _, _, data = aggregator.clear_and_get().get_contents()
    strict = Settings(max_spans_per_record=2)
    batch, dead_letters = SpanBatch(), []
    RecordDecoder(strict).decode(make_record(data), batch, dead_letters)
    [letter] = dead_letters
    assert (letter.stage, letter.ref.sub_sequence_number) == ("limit", 1)
    assert letter.record_bytes == payload(3)  # the user record's bytes only
    # WHEN its bytes come back as a record of their own, limit raised
    redriven = make_record(letter.record_bytes)
    batch, dead_letters = SpanBatch(), []
    spans = RecordDecoder(Settings()).decode(redriven, batch, dead_letters)
    # THEN they decode as a bare OTLP payload
    assert (spans, dead_letters) == (3, [])
    assert batch.span_attributes[0]["card"] == SECRET
