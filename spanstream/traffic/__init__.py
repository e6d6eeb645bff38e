"""Test traffic: generated and recorded spans, their records, and the answers.

* `generator`: seeded multi-tenant traces whose spans carry the enrichment
  truth the generator intended (`truth.SpanTruth`).
* `encode`: those traces as Kinesis records in every input form, plus
  poison records for dead-letter tests.
* `real`: the recorded robot-shop (OTLP) and Zipkin traces in
  ``../shared/data``.
* `reference`: the RED series, edges, trace summaries and cold starts the
  pipeline should produce, computed independently from span truth.
* `kinesis` and ``python -m spanstream.traffic``: putting records on a stream.
"""

from spanstream.traffic.encode import (
    EncodedRecord,
    Form,
    encode_labelled_records,
    encode_records,
    poison_records,
)
from spanstream.traffic.generator import (
    GeneratedSpan,
    GeneratedTrace,
    TrafficGenerator,
    generate_spans,
    generate_traces,
    iter_spans,
    truths,
)
from spanstream.traffic.reference import Expected, expected
from spanstream.traffic.truth import SpanTruth

__all__ = [
    "EncodedRecord",
    "Expected",
    "Form",
    "GeneratedSpan",
    "GeneratedTrace",
    "SpanTruth",
    "TrafficGenerator",
    "encode_labelled_records",
    "encode_records",
    "expected",
    "generate_spans",
    "generate_traces",
    "iter_spans",
    "poison_records",
    "truths",
]
