"""Aggregation: per-shard RED series, late spans and cold starts
(`ShardAggregator`), and whole-trace summaries and service graph edges
(`TraceAssembler`)."""

from spanstream.aggregate.aggregator import ShardAggregator
from spanstream.aggregate.traces import TraceAssembler, TraceOutput

__all__ = ["ShardAggregator", "TraceAssembler", "TraceOutput"]
