"""Aggregation: per-shard RED series, late spans and cold starts
(`ShardAggregator`), and whole-trace summaries and service graph edges
(`TraceAssembler`, with a compiled twin, `NativeTraceAssembler`, picked by
`make_trace_assembler`)."""

from spanstream.aggregate.aggregator import ShardAggregator
from spanstream.aggregate.nativetraces import NativeTraceAssembler, make_trace_assembler
from spanstream.aggregate.traces import TraceAssembler, TraceOutput

__all__ = [
    "NativeTraceAssembler",
    "ShardAggregator",
    "TraceAssembler",
    "TraceOutput",
    "make_trace_assembler",
]
