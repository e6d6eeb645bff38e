"""Settings of the Lambda runtime, read from ``SPANSTREAM_LAMBDA_*`` variables.

The core's `spanstream.config.Settings` covers everything the pipeline
needs; these are the few choices only the Lambda shell makes. Like the
core's, a bad value fails at start with the variable's name and the value.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from spanstream.config import Settings
from spanstream.errors import ConfigError

#: The stages a function can run; the trace stage (summaries and service
#: graph over a stream re-keyed by trace id) runs on the KCL and local
#: runtimes only, see docs/lambda.md.
STAGES = ("spans",)
#: Lambda's limit on the tumbling-window state of one shard.
LAMBDA_STATE_LIMIT_BYTES = 1024 * 1024
DEFAULT_MAX_STATE_BYTES = 768 * 1024
CHECKPOINT_TABLE = "lambda-checkpoints"


@dataclass(frozen=True)
class LambdaSettings:
    """What the Lambda shell adds to the core's settings.

    ``max_state_bytes`` bounds the serialised tumbling-window state: a window
    whose aggregates would grow past it is written early, well before Lambda's
    own 1 MB limit would end the window.
    """

    stage: str = "spans"
    checkpoint_table: str = ""
    max_state_bytes: int = DEFAULT_MAX_STATE_BYTES

    @classmethod
    def from_env(
        cls, settings: Settings, environ: Mapping[str, str] | None = None
    ) -> LambdaSettings:
        """Read the ``SPANSTREAM_LAMBDA_*`` variables of ``environ``.

        ``..._STAGE`` (one of `STAGES`), ``..._CHECKPOINT_TABLE`` (default
        ``{table_prefix}lambda-checkpoints``), ``..._MAX_STATE_BYTES``.

        Raises `ConfigError` naming the variable for an unknown stage, a
        state budget that is not a positive integer below Lambda's limit, or a
        trace stream to forward to (a redone unit would forward its spans
        again).
        """
        environ = os.environ if environ is None else environ
        stage = environ.get("SPANSTREAM_LAMBDA_STAGE", "spans")
        if stage not in STAGES:
            raise ConfigError(
                f"SPANSTREAM_LAMBDA_STAGE must be one of {STAGES}, got {stage!r}"
            )
        raw_budget = environ.get(
            "SPANSTREAM_LAMBDA_MAX_STATE_BYTES", str(DEFAULT_MAX_STATE_BYTES)
        )
        try:
            budget = int(raw_budget)
        except ValueError as exc:
            raise ConfigError(
                f"SPANSTREAM_LAMBDA_MAX_STATE_BYTES must be an int, got {raw_budget!r}"
            ) from exc
        if not 0 < budget < LAMBDA_STATE_LIMIT_BYTES:
            raise ConfigError(
                "SPANSTREAM_LAMBDA_MAX_STATE_BYTES must be > 0 and below "
                f"{LAMBDA_STATE_LIMIT_BYTES}, got {budget!r}"
            )
        if settings.trace_stream_name:
            raise ConfigError(
                "SPANSTREAM_TRACE_STREAM_NAME must be empty on Lambda (no trace "
                f"stage runs there), got {settings.trace_stream_name!r}"
            )
        table = environ.get("SPANSTREAM_LAMBDA_CHECKPOINT_TABLE", "")
        return cls(
            stage=stage,
            checkpoint_table=table or settings.table_name(CHECKPOINT_TABLE),
            max_state_bytes=budget,
        )
