"""The AWS Lambda runtime: handlers for Kinesis event-source mappings.

`handler.handler` is the function entry point; it runs the spans stage
(decode, archive, dead letters, RED metrics, cold starts) over one batch of
one shard. `esm.LocalEventSourceMapping` invokes the same handler against the
emulated stream exactly as the service would. The protocol that makes
retries, bisected batches and duplicate deliveries harmless is in
docs/lambda.md.
"""
