"""The Lambda handler against sample events and an in-process AWS (moto).

GIVEN documented and generated event-source-mapping events; WHEN the handler
runs them, fails part-way, is retried from the reported record, gets a
bisected half or the same batch twice; THEN S3 and DynamoDB hold exactly what
one clean run writes, and the response says what Lambda must retry.
"""

from __future__ import annotations

import base64
import copy
import sys
import time
from typing import Any

import pytest
from lambdaevents import (
    FailingCalls,
    FakeAws,
    fake_aws,
    load_event,
    outputs,
    spans_event,
    window_event,
)

from consumers.aws_lambda.window import WindowState, WindowStateError
from spanstream.model import KinesisRecord
from spanstream.sinks import readers
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans
from spanstream.traffic.model import truths

NOW_NANOS = time.time_ns()


@pytest.fixture(autouse=True)
def _spans_end_now(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give each test spans that end at its own start.

    A time taken once at import would age with the suite: after the allowed
    lateness every span would only be counted late, by arrival minute.
    """
    monkeypatch.setattr(sys.modules[__name__], "NOW_NANOS", time.time_ns())


def fresh_records(aws: FakeAws, spans: int = 300, seed: int = 1) -> list[KinesisRecord]:
    """Put generated records (every form) on the stream; return them as stored."""
    traces = generate_spans(
        spans, seed=seed, now_unix_nanos=NOW_NANOS, spread_secs=20.0
    )
    records = encode_records(traces, Form.MIXED, seed=seed, batch_spans=20)
    return aws.put([(key, data) for key, data in records])


def failed_from(response: dict[str, Any]) -> list[str]:
    return [f["itemIdentifier"] for f in response["batchItemFailures"]]


def clean_run(spans: int, seed: int) -> dict[str, Any]:
    """Return what one successful invocation over `fresh_records` writes.

    Moto numbers a new stream's records from 1, so the sequence numbers (and
    the archive keys) are those of the test's own stream.
    """
    with fake_aws() as aws:
        records = fresh_records(aws, spans, seed)
        aws.invoke(aws.handler(), spans_event(records, aws.stream_arn))
        return aws.snapshot()


def test_documented_event_dead_letters_both_records_and_reports_none() -> None:
    # GIVEN the documented Kinesis event, whose records are plain text
    event = load_event("kinesis-event")
    with fake_aws() as aws:
        # WHEN the handler runs it
        response = aws.invoke(aws.handler(), event)
        # THEN nothing is reported (poison never blocks the shard) and both
        # records are dead letters with their original bytes
        assert response == {"batchItemFailures": []}
        assert readers.count_dead_letters(aws.s3, aws.settings) == 2
        assert readers.scan_metrics(aws.dynamodb, aws.settings) == []


def test_spans_event_is_archived_and_aggregated_once() -> None:
    # GIVEN the sample event of OTLP protobuf and KPL-aggregated records
    event = load_event("spans-event")
    with fake_aws() as aws:
        handler = aws.handler()
        # WHEN it is delivered, then delivered again (a duplicate delivery)
        assert aws.invoke(handler, event) == {"batchItemFailures": []}
        first = aws.snapshot()
        assert aws.invoke(handler, copy.deepcopy(event)) == {"batchItemFailures": []}
        # THEN every span is archived once and the duplicate changed nothing
        assert len(first["span_ids"]) == 64
        assert len(set(first["span_ids"])) == 64
        total = sum(stats[0] for stats in first["metrics"].values())
        late = sum(row.late_count for row in first["late"])
        assert total + late == 64
        assert aws.snapshot() == first


def test_failed_write_reports_the_batch_and_the_retry_completes_it_exactly() -> None:
    expected = clean_run(300, 1)
    with fake_aws() as aws:
        records = fresh_records(aws, 300, 1)
        event = spans_event(records, aws.stream_arn)
        dynamodb = FailingCalls(
            aws.dynamodb, "put_item", sparing_table=aws.checkpoint_table
        )
        handler = aws.handler(dynamodb=dynamodb)
        # WHEN the archive is written but every aggregate put fails
        response = aws.invoke(handler, event)
        # THEN every record is reported, from the first on
        assert dynamodb.failed > 0
        reported = failed_from(response)
        assert min(reported, key=int) == records[0].ref.sequence_number
        assert len(reported) == len(records)
        # WHEN Lambda retries from that record and the writes work again
        dynamodb.failing = False
        assert aws.invoke(handler, event) == {"batchItemFailures": []}
        # THEN the outputs equal one clean run's: no span archived twice
        assert aws.snapshot() == expected


def test_a_bisected_half_redoes_the_whole_unit_read_from_the_stream() -> None:
    expected = clean_run(400, 2)
    with fake_aws() as aws:
        records = fresh_records(aws, spans=400, seed=2)
        s3 = FailingCalls(aws.s3, "put_object")
        handler = aws.handler(s3=s3)
        # GIVEN an invocation that started its unit and then failed
        response = aws.invoke(handler, spans_event(records, aws.stream_arn))
        assert failed_from(response)
        s3.failing = False
        # WHEN Lambda bisects: the first half, then the second half
        middle = len(records) // 2
        halves = (records[:middle], records[middle:])
        for half in halves:
            assert aws.invoke(handler, spans_event(half, aws.stream_arn)) == {
                "batchItemFailures": []
            }
        # THEN the first half redid the whole unit (archive keys of one range)
        # and the second half was a duplicate: outputs equal one clean run's
        assert aws.snapshot() == expected


def test_a_completed_unit_delivered_again_in_part_is_dropped_unread() -> None:
    expected = clean_run(300, 8)
    with fake_aws() as aws:
        records = fresh_records(aws, spans=300, seed=8)
        kinesis = FailingCalls(aws.kinesis, "get_shard_iterator", "get_records")
        handler = aws.handler(kinesis=kinesis)
        # GIVEN a batch whose effects all became durable (the response was
        # then lost, so Lambda delivers it again, bisected)
        assert aws.invoke(handler, spans_event(records, aws.stream_arn)) == {
            "batchItemFailures": []
        }
        # WHEN a half of it comes again, while the stream cannot be read
        middle = len(records) // 2
        for half in (records[middle:], records[:middle]):
            response = aws.invoke(handler, spans_event(half, aws.stream_arn))
            # THEN it is a duplicate: nothing is redone, nothing is read back
            assert response == {"batchItemFailures": []}
        assert kinesis.failed == 0
        assert aws.snapshot() == expected


def test_an_unfinished_unit_delivered_in_part_is_redone_from_the_stream() -> None:
    with fake_aws() as aws:
        records = fresh_records(aws, spans=300, seed=8)
        s3 = FailingCalls(aws.s3, "put_object")
        kinesis = FailingCalls(aws.kinesis, "get_shard_iterator", "get_records")
        handler = aws.handler(s3=s3, kinesis=kinesis)
        assert failed_from(aws.invoke(handler, spans_event(records, aws.stream_arn)))
        s3.failing = False
        # WHEN a part of the unfinished unit comes while the stream is unreadable
        half = records[: len(records) // 2]
        response = aws.invoke(handler, spans_event(half, aws.stream_arn))
        # THEN the unit is not taken for done: the half is reported for a retry
        assert kinesis.failed > 0
        assert failed_from(response)[0] == half[0].ref.sequence_number


def test_records_after_the_unit_form_a_new_unit_after_the_redo() -> None:
    with fake_aws() as aws:
        records = fresh_records(aws, spans=400, seed=3)
        head, tail = records[: len(records) // 3], records[len(records) // 3 :]
        dynamodb = FailingCalls(
            aws.dynamodb, "put_item", sparing_table=aws.checkpoint_table
        )
        handler = aws.handler(dynamodb=dynamodb)
        assert failed_from(aws.invoke(handler, spans_event(head, aws.stream_arn)))
        dynamodb.failing = False
        # WHEN the retry (without bisection) reads on past the failed unit
        assert aws.invoke(handler, spans_event(records, aws.stream_arn)) == {
            "batchItemFailures": []
        }
        # THEN the failed unit was redone as it was, the rest is a new unit
        snapshot = aws.snapshot()
        stems = {key.rsplit("/", 1)[-1] for key in snapshot["archive_keys"]}
        head_stem = f"{head[0].ref.sequence_number}-{head[-1].ref.sequence_number}"
        assert any(head_stem in stem for stem in stems)
        total = sum(stats[0] for stats in snapshot["metrics"].values())
        late = sum(row.late_count for row in snapshot["late"])
        assert len(snapshot["span_ids"]) == len(set(snapshot["span_ids"]))
        assert len(snapshot["span_ids"]) == total + late
        assert tail


def test_tumbling_window_writes_once_and_equals_the_plain_run() -> None:
    expected = clean_run(600, 4)
    with fake_aws() as aws:
        records = fresh_records(aws, spans=600, seed=4)
        shard = records[0].ref.shard_id
        handler = aws.handler()
        state: dict[str, Any] = {}
        batches = (records[:10], records[10:40], records[40:])
        # WHEN three batches aggregate into the window state
        for batch in batches:
            response = aws.invoke(
                handler, window_event(batch, aws.stream_arn, shard, state)
            )
            assert response["batchItemFailures"] == []
            state = response["state"]
            # THEN nothing is aggregated in DynamoDB before the window ends
            assert readers.scan_metrics(aws.dynamodb, aws.settings) == []
        assert all(isinstance(value, str) for value in state.values())
        # WHEN the final invocation of the window comes, with no records
        response = aws.invoke(
            handler, window_event([], aws.stream_arn, shard, state, final=True)
        )
        # THEN the aggregates equal a plain (windowless) run's
        assert response["batchItemFailures"] == []
        assert outputs(aws.snapshot()) == outputs(expected)


def test_a_window_batch_delivered_twice_is_counted_once() -> None:
    expected = clean_run(300, 5)
    with fake_aws() as aws:
        records = fresh_records(aws, spans=300, seed=5)
        shard = records[0].ref.shard_id
        handler = aws.handler()
        event = window_event(records, aws.stream_arn, shard, {})
        state = aws.invoke(handler, event)["state"]
        # WHEN the same batch comes again with the state that already holds it
        again = aws.invoke(handler, window_event(records, aws.stream_arn, shard, state))
        assert again["state"] == state
        aws.invoke(handler, window_event([], aws.stream_arn, shard, state, final=True))
        # THEN it is counted once
        assert aws.snapshot() == expected


def test_a_failed_window_invocation_returns_the_state_it_was_given() -> None:
    with fake_aws() as aws:
        records = fresh_records(aws, spans=200, seed=6)
        shard = records[0].ref.shard_id
        s3 = FailingCalls(aws.s3, "put_object")
        given = WindowState().to_event()
        response = aws.invoke(
            aws.handler(s3=s3), window_event(records, aws.stream_arn, shard, given)
        )
        assert failed_from(response)
        assert response["state"] == given


def test_a_state_over_budget_is_written_early(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = clean_run(600, 7)
    monkeypatch.setenv("SPANSTREAM_LAMBDA_MAX_STATE_BYTES", "2000")
    with fake_aws() as aws:
        records = fresh_records(aws, spans=600, seed=7)
        shard = records[0].ref.shard_id
        handler = aws.handler()
        response = aws.invoke(handler, window_event(records, aws.stream_arn, shard, {}))
        # THEN the aggregates were written at once and the state is small
        assert readers.scan_metrics(aws.dynamodb, aws.settings)
        assert WindowState.from_event(response["state"]).metrics == {}
        aws.invoke(
            handler,
            window_event([], aws.stream_arn, shard, response["state"], final=True),
        )
        assert aws.snapshot() == expected


def test_documented_window_event_with_a_foreign_state_is_a_function_error() -> None:
    # The documented sample carries a state another function wrote; taking it
    # for empty would lose that window's aggregates, so Lambda must retry.
    with fake_aws() as aws, pytest.raises(WindowStateError):
        aws.invoke(aws.handler(), load_event("kinesis-window-event"))


def test_documented_window_event_with_empty_state_returns_a_state() -> None:
    event = load_event("kinesis-window-event")
    event["state"] = {}
    with fake_aws() as aws:
        response = aws.invoke(aws.handler(), event)
        assert response["batchItemFailures"] == []
        assert (
            WindowState.from_event(response["state"]).merged_through
            == (event["Records"][0]["kinesis"]["sequenceNumber"])
        )


def test_generated_records_match_their_truth() -> None:
    # Guards the factories above: what is put is what the handler reads.
    traces = generate_spans(100, seed=9, now_unix_nanos=NOW_NANOS, spread_secs=20.0)
    with fake_aws() as aws:
        records = fresh_records(aws, spans=100, seed=9)
        event = spans_event(records, aws.stream_arn)
        assert (
            base64.b64decode(event["Records"][0]["kinesis"]["data"]) == records[0].data
        )
        aws.invoke(aws.handler(), event)
        assert len(aws.snapshot()["span_ids"]) == len(truths(traces))
