"""JSON log lines on stderr, the log format of every runtime shell.

stderr, not stdout: a KCL record processor's stdout carries the
MultiLangDaemon protocol, and the other shells follow the same rule so that
their logs can be read the same way.
"""

from __future__ import annotations

import json
import logging
import sys


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time (and as unix seconds), level, logger,
    message (and exception)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "unix_secs": round(record.created, 3),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def log_json_to_stderr(level: str = "INFO") -> None:
    """Send every log record to stderr as JSON; quiet botocore's debug chatter.

    Replaces whatever handlers the root logger had.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("botocore").setLevel(logging.WARNING)
