"""The AWS Lambda runtime: handlers for Kinesis event-source mappings.

`handler.handler` is the function entry point; ``SPANSTREAM_LAMBDA_STAGE``
selects the stage it runs (``spans``: decode, archive, RED metrics;
``traces``: trace summaries and service-graph edges from the re-keyed trace
stream). `esm.LocalEventSourceMapping` invokes the same handler against the
emulated stream exactly as the service would. The protocol that makes
retries, bisected batches and duplicate deliveries harmless is in
docs/lambda.md.
"""
