"""The compiled extension, `spanstream_native`, and the switch that picks it.

The extension (built from ``native/``) has compiled twins of the hot spots:
the OTLP decoder (`spanstream.decode.native`), the trace assembler
(`spanstream.aggregate.nativetraces`), the per-span loop of the shard
aggregator (`spanstream.aggregate.aggregator`) and the archive's arrow
conversion (`spanstream.sinks.arrays`). The Python code stays the reference
for each, and the fallback when the extension is not installed.

One setting chooses for all, ``SPANSTREAM_DECODER`` (named after the first
twin): ``auto`` (the default) uses the extension if it imports, ``python``
never does, ``native`` requires it. This module imports nothing else of
spanstream's core, so any stage may ask it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from spanstream.config import ENV_PREFIX
from spanstream.errors import ConfigError

try:
    import spanstream_native
except ImportError:  # the extension is optional
    spanstream_native = None

logger = logging.getLogger(__name__)

IMPLEMENTATION_VARIABLE = ENV_PREFIX + "DECODER"
IMPLEMENTATIONS = ("auto", "python", "native")


def is_available() -> bool:
    """Return True if the compiled extension imported."""
    return spanstream_native is not None


def use_native(
    implementation: str | None = None,
    environ: Mapping[str, str] | None = None,
    available: bool | None = None,
) -> bool:
    """Return whether the compiled twins are used.

    ``implementation`` overrides ``SPANSTREAM_DECODER`` from ``environ``
    (default ``os.environ``); ``available`` overrides `is_available` (for a
    caller that holds its own reference to the extension). Raises
    `ConfigError` for a value other than ``auto``, ``python`` or ``native``,
    and for ``native`` when the extension is missing.
    """
    if implementation is None:
        environ = os.environ if environ is None else environ
        implementation = environ.get(IMPLEMENTATION_VARIABLE, "auto")
    if available is None:
        available = is_available()
    if implementation not in IMPLEMENTATIONS:
        raise ConfigError(
            f"{IMPLEMENTATION_VARIABLE} must be one of {', '.join(IMPLEMENTATIONS)}, "
            f"got {implementation!r}"
        )
    if implementation == "native" and not available:
        raise ConfigError(
            f"{IMPLEMENTATION_VARIABLE}=native but the spanstream_native extension "
            "is not installed (pip install ./native)"
        )
    return implementation != "python" and available
