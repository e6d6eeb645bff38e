"""Settings as environment variables, and the ``KEY=value`` files that hold them.

`settings_to_env` lets a test start a runtime (local runner, KCL worker) as a
subprocess configured exactly like its in-process `Settings`. The env file is
what ``make emulators-up`` leaves in ``.run/endpoints.env`` for shells
(``set -a; . .run/endpoints.env``), docker ``--env-file`` and ``devenv create``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

from spanstream.config import ENV_PREFIX, Settings


def settings_to_env(settings: Settings) -> dict[str, str]:
    """Return ``SPANSTREAM_*`` variables that `Settings.from_env` reads back as-is."""
    return {
        ENV_PREFIX + spec.name.upper(): str(getattr(settings, spec.name))
        for spec in fields(settings)
    }


def write_env_file(path: Path, env: Mapping[str, str]) -> None:
    """Write ``env`` to ``path`` as sorted ``KEY=value`` lines, atomically.

    Values must not contain newlines or quotes (URLs and names never do);
    raises ValueError naming the key otherwise, and OSError if it cannot write.
    """
    lines = []
    for key in sorted(env):
        value = env[key]
        if any(char in value for char in "\n\"'"):
            raise ValueError(f"{key} has a value an env file cannot hold: {value!r}")
        lines.append(f"{key}={value}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(path.suffix + ".tmp")
    partial.write_text("".join(lines), encoding="utf-8")
    partial.replace(path)


def read_env_file(path: Path) -> dict[str, str]:
    """Return the ``KEY=value`` pairs in ``path``, skipping blanks and comments.

    Raises FileNotFoundError if there is no such file and ValueError naming
    the line if one is not ``KEY=value``.
    """
    env = {}
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep or not key:
            raise ValueError(f"{path}:{number}: expected KEY=value, got {raw!r}")
        env[key.strip()] = value.strip()
    return env
