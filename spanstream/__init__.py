"""spanstream: the asynchronous back half of a tracing platform.

The package is the runtime-free core. It decodes span records read from a
Kinesis stream (`spanstream.decode`), enriches them (`spanstream.enrich`),
aggregates them (`spanstream.aggregate`) and writes archives and aggregates
(`spanstream.sinks`). The runtime shells under ``consumers/`` (local runner,
KCL worker, Lambda handler) feed records in and decide when to flush; nothing
in this package knows which runtime it runs in.
"""

__version__ = "0.1.0"
