"""Coverage-guided fuzzing of the record decoders with atheris, for long runs.

CI runs the hypothesis version (tests/unit/test_fuzz_decoders.py) for a
minute; this harness is for runs of minutes to hours (``make fuzz``). Each
input is one Kinesis record, decoded between two valid records by
`RecordDecoder` with the Python and, when it is installed, the compiled
decoder. The invariants are the unit test's:

* nothing escapes ``decode``: any exception is a crash, however odd the bytes;
* the valid neighbours keep every span;
* the input yields spans, or dead letters (stage ``decode`` or ``limit``, a
  reason, the record's own location, and its bytes or, for a KPL user record,
  that user record's), never nothing;
* both decoders give the same rows, dead letters and counts (the compiled
  one reads OTLP protobuf and most OTLP/JSON itself, and hands the rest to
  the Python path);
* the rows fit the archive's schema (types and ranges).

libFuzzer's ``-timeout`` and ``-rss_limit_mb`` turn a hang or unbounded memory
into a crash too. Coverage comes from the Python code only: the compiled
decoder runs on every input but is not instrumented.

Usage::

    python -m fuzz.decoders --write-corpus DIR    # seed inputs, one per file
    python -m fuzz.decoders [libFuzzer flags] CORPUS_DIR [SEED_DIR ...]
    python -m fuzz.decoders CRASH_FILE            # replay one input
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import sys
from pathlib import Path

from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
)

from spanstream.config import Settings
from spanstream.decode import RecordDecoder, native
from spanstream.model import DeadLetter, KinesisRecord, RecordRef, SpanBatch
from spanstream.sinks.archive import arrow_table
from spanstream.traffic import otlp
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_traces
from spanstream.traffic.poison import poison_records

try:
    import atheris
except ImportError:  # one_input runs without it (tests/unit/test_fuzz_harness.py)
    atheris = None

#: A small record limit keeps bombs and huge messages cheap, as in the unit test.
FUZZ_SETTINGS = Settings(max_record_bytes=64 * 1024)
DECODERS = ("python", "native") if native.is_available() else ("python",)
NOW_UNIX_NANOS = 1_700_000_000_000_000_000
SERVER_KIND, CLIENT_KIND = 2, 3
FIRST_SEQUENCE = 49_000_000_000_000_000_000_000_000_000_000_000_000_000_000
SAMPLE_EVENTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "lambda"

_TRACES = generate_traces(4, seed=7, now_unix_nanos=NOW_UNIX_NANOS)
NEIGHBOUR_BEFORE = encode_records(_TRACES[:2], Form.OTLP_PROTO, seed=1)[0].data
NEIGHBOUR_AFTER = encode_records(_TRACES[2:], Form.GZIP, seed=2)[0].data


def ref(offset: int) -> RecordRef:
    return RecordRef(
        "fuzz-stream",
        "shardId-000000000007",
        str(FIRST_SEQUENCE + offset),
        partition_key=f"pk-{offset}",
        arrival_unix_millis=NOW_UNIX_NANOS // 1_000_000,
    )


class Outcome:
    """What decoding the fuzzed record between its neighbours gave."""

    def __init__(self, batch: SpanBatch, dead_letters: list[DeadLetter]) -> None:
        self.batch = batch
        self.dead_letters = dead_letters

    def comparable(self) -> tuple[str, list[tuple[str, str, bytes, int]]]:
        letters = [
            (d.stage, d.reason, d.record_bytes, d.ref.sub_sequence_number)
            for d in self.dead_letters
        ]
        return repr(self.batch.columns()), letters


def decode_between_neighbours(data: bytes, decoder: str) -> Outcome:
    """Decode ``data`` between the two valid neighbours; check the invariants.

    Raises AssertionError naming the broken invariant; any other exception
    is one that escaped ``decode``.
    """
    record_decoder = RecordDecoder(FUZZ_SETTINGS, decoder)
    batch = SpanBatch()
    dead_letters: list[DeadLetter] = []
    for offset, record_bytes in enumerate((NEIGHBOUR_BEFORE, data, NEIGHBOUR_AFTER)):
        record_decoder.decode(
            KinesisRecord(record_bytes, ref(offset)), batch, dead_letters
        )
    spans_by_record = [
        batch.source_sequence_number.count(ref(offset).sequence_number)
        for offset in range(3)
    ]
    expected = NEIGHBOUR_SPANS[decoder]
    got = (spans_by_record[0], spans_by_record[2])
    assert got == expected, f"{decoder}: neighbours' spans {got}, expected {expected}"
    assert len(batch) == sum(spans_by_record), f"{decoder}: rows of no record"
    fuzzed = ref(1)
    for letter in dead_letters:
        where = letter.ref
        assert (where.shard_id, where.sequence_number) == (
            fuzzed.shard_id,
            fuzzed.sequence_number,
        ), f"{decoder}: dead letter of {where.describe()}, not the fuzzed record"
        assert letter.reason, f"{decoder}: dead letter without a reason"
        assert letter.stage in ("decode", "limit"), f"{decoder}: {letter.stage!r}"
        assert letter.record_bytes == data or where.sub_sequence_number, (
            f"{decoder}: dead letter does not hold the record's bytes"
        )
    assert spans_by_record[1] > 0 or dead_letters, (
        f"{decoder}: record vanished without a dead letter"
    )
    assert record_decoder.stats.dead_letters == len(dead_letters)
    return Outcome(batch, dead_letters)


def one_input(data: bytes) -> None:
    """Check every invariant for one fuzzed record; raise on a broken one."""
    outcomes = [decode_between_neighbours(data, decoder) for decoder in DECODERS]
    # The rows must fit the archive, or one span fails its whole batch's write
    # (the arrow conversion is what refuses; writing Parquet would be 15x dearer).
    arrow_table(outcomes[0].batch)
    first = outcomes[0].comparable()
    for decoder, outcome in zip(DECODERS[1:], outcomes[1:], strict=True):
        assert outcome.comparable() == first, f"{decoder} differs from python"


def _spans_alone(data: bytes, decoder: str) -> int:
    batch = SpanBatch()
    dead_letters: list[DeadLetter] = []
    count = RecordDecoder(FUZZ_SETTINGS, decoder).decode(
        KinesisRecord(data, ref(0)), batch, dead_letters
    )
    if dead_letters or not count:
        raise RuntimeError(f"a fuzz neighbour does not decode with {decoder}")
    return count


NEIGHBOUR_SPANS = {
    decoder: (
        _spans_alone(NEIGHBOUR_BEFORE, decoder),
        _spans_alone(NEIGHBOUR_AFTER, decoder),
    )
    for decoder in DECODERS
}


def odd_typed_request() -> bytes:
    """Return a request whose rule-read attributes have unusual value types.

    The generator writes every attribute with its usual type; these give the
    fuzzer doubles, ints and strings a byte or two away from odd cases
    (infinite status codes, non-string paths) to mutate.
    """
    request = otlp.export_request(_TRACES[0].spans[:1])
    resource_spans = request.resource_spans[0]
    resource_spans.resource.attributes.add(key="tenant.id").value.int_value = 42
    server = resource_spans.scope_spans[0].spans[0]
    client = resource_spans.scope_spans[0].spans.add()
    client.CopyFrom(server)
    client.span_id = b"\x5a" * 8
    server.name, server.kind = "GET", SERVER_KIND
    server.attributes.add(key="http.status_code").value.double_value = 503.0
    server.attributes.add(key="url.path").value.string_value = "/a/1"
    client.kind = CLIENT_KIND
    client.attributes.add(key="http.response.status_code").value.string_value = "404"
    client.attributes.add(key="peer.service").value.bool_value = True
    return request.SerializeToString()


def odd_json_request() -> bytes:
    """Return `odd_typed_request` as OTLP/JSON with snake_case names, enum
    numbers and int64 as numbers: JSON that the compiled decoder reads
    itself, a byte or two away from JSON it hands to the Python path."""
    request = ExportTraceServiceRequest.FromString(odd_typed_request())
    document = json_format.MessageToDict(
        request, preserving_proto_field_name=True, use_integers_for_enums=True
    )
    document["resourceSpans"] = document.pop("resource_spans")
    for resource_spans in document["resourceSpans"]:
        resource_spans["scopeSpans"] = resource_spans.pop("scope_spans")
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for name, hex_name in _JSON_ID_NAMES:
                    if name in span:
                        span[hex_name] = base64.b64decode(span.pop(name)).hex()
                span["start_time_unix_nano"] = int(span["start_time_unix_nano"])
    return json.dumps(document, separators=(",", ":")).encode()


_JSON_ID_NAMES = (
    ("trace_id", "traceId"),
    ("span_id", "spanId"),
    ("parent_span_id", "parentSpanId"),
)


def seed_inputs() -> list[bytes]:
    """Return the seed corpus: valid records of every form, poison records,
    odd attribute types (protobuf and JSON) and the record data of the
    sample Lambda events in tests/data."""
    seeds = [
        record.data
        for form in Form
        for record in encode_records(_TRACES, form, seed=3, batch_spans=16)[:3]
    ]
    seeds.append(odd_typed_request())
    seeds.append(odd_json_request())
    seeds += [poison.data for poison in poison_records(16, seed=5)]
    for path in sorted(SAMPLE_EVENTS.glob("*.json")):
        event = json.loads(path.read_text(encoding="utf-8"))
        for record in event.get("Records", ()):
            seeds.append(base64.b64decode(record["kinesis"]["data"]))
    return seeds


def write_corpus(directory: Path) -> int:
    """Write each seed input to ``directory`` (named by its SHA-1); return how many."""
    directory.mkdir(parents=True, exist_ok=True)
    seeds = {hashlib.sha1(data).hexdigest(): data for data in seed_inputs()}
    for name, data in seeds.items():
        (directory / name).write_bytes(data)
    return len(seeds)


def main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == "--write-corpus":
        count = write_corpus(Path(argv[2]))
        print(f"wrote {count} seed inputs to {argv[2]}")
        return
    if atheris is None:
        raise SystemExit(
            "atheris is not installed: pip install -r requirements-fuzz.txt"
        )
    # Every dead letter logs a warning; at thousands of inputs a second that
    # is most of the run.
    logging.disable(logging.CRITICAL)
    atheris.instrument_all()
    atheris.Setup(argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
