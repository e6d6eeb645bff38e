"""Dead letters for operators: list them, show one, re-drive them.

The core of ``spanstream dlq`` (`consumers.dlq` is its command line), on
clients passed in:

* `summary`: `list_summaries` and `read_summary` give a dead letter's
  origin, stage, reason and the size, SHA-256 and envelope of its bytes,
  never the bytes; `write_record_bytes` writes them to a file.
* `redrive`: `Redriver` puts the original bytes back on a stream and moves
  each re-driven dead letter below ``{dead_letter_prefix}redriven/``, in an
  order that makes a crash cost at most a duplicate put.
* `routing`: the partition key a re-driven record is put under.
* `put`: PutRecords with an outcome per record.

A dead letter of a KPL user record holds that user record's bytes, an OTLP
or Zipkin payload, which the decoders read as a plain record
(`spanstream.decode.envelope.deaggregate` returns a record without the KPL
magic number as its own only user record); it is re-driven as one.
"""

from spanstream.deadletters.redrive import (
    Outcome,
    Redriver,
    RedriveRequest,
    RedriveResult,
    redrive_marks,
)
from spanstream.deadletters.summary import (
    DeadLetterSummary,
    UnreadableDeadLetter,
    list_summaries,
    read_summary,
    summarise,
    write_record_bytes,
)

__all__ = [
    "DeadLetterSummary",
    "Outcome",
    "RedriveRequest",
    "RedriveResult",
    "Redriver",
    "UnreadableDeadLetter",
    "list_summaries",
    "read_summary",
    "redrive_marks",
    "summarise",
    "write_record_bytes",
]
