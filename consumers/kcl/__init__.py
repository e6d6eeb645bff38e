"""The Kinesis Client Library runtime: spanstream as KCL MultiLangDaemon workers.

`consumers.kcl.processor` is the record processor (one Python process per
shard lease, speaking the MultiLangDaemon protocol on stdin/stdout);
`consumers.kcl.daemon` renders the properties and starts the Java daemons;
``python -m consumers.kcl`` (or ``spanstream kcl``) starts N workers. The
exactly-once protocol is in `spanstream.flushlog` and docs/kcl.md.
"""
