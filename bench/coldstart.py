"""Cold start of the Lambda handler: import and init times in fresh interpreters.

Run from the repository root: ``python -m bench.coldstart [repeats]``. Every
figure is the median over ``repeats`` fresh subprocesses, run round robin so
that each sees the same load; the handler's import is also given as a ratio
to boto3's and Powertools' alone, measured side by side, because absolute
times on a shared machine say little.

The subprocesses get dummy credentials and every endpoint on a closed
loopback port, so building the runtime's clients (``handler_init_secs``)
reaches no network: botocore connects on the first request, not before.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections import defaultdict
from pathlib import Path

from bench.timing import median
from devenv.ports import LOOPBACK_HOST, free_loopback_port

ROOT = Path(__file__).resolve().parent.parent
HANDLER = "consumers.aws_lambda.handler"
_TIMED = "import time\nt = time.perf_counter()\n{}\nprint(time.perf_counter() - t)"
#: result key -> program that prints the seconds one step took
PROGRAMS = {
    f"{name}_import_secs": _TIMED.format(f"import {module}")
    for name, module in (
        ("handler", HANDLER),
        ("boto3", "boto3"),
        ("powertools", "aws_lambda_powertools"),
        ("pyarrow", "pyarrow.parquet"),
    )
} | {
    # `LambdaRuntime.from_env`: settings, the three clients, the sinks
    "handler_init_secs": f"import {HANDLER} as h\n" + _TIMED.format("h.runtime()"),
}


def offline_environ() -> dict[str, str]:
    """Return this environment without Lambda's variables, AWS on a closed port."""
    dropped = ("AWS_", "SPANSTREAM_", "POWERTOOLS_")
    environ = {k: v for k, v in os.environ.items() if not k.startswith(dropped)}
    environ.update(
        AWS_ACCESS_KEY_ID="coldstart",
        AWS_SECRET_ACCESS_KEY="coldstart",
        AWS_EC2_METADATA_DISABLED="true",
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        SPANSTREAM_ENDPOINT_URL=f"http://{LOOPBACK_HOST}:{free_loopback_port()}",
    )
    return environ


def _run(code: str, environ: dict[str, str], *flags: str) -> str:
    """Return the output of ``code`` in a fresh interpreter (or CalledProcessError)."""
    done = subprocess.run(
        [sys.executable, *flags, "-c", code],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout + done.stderr


def _secs(code: str, environ: dict[str, str]) -> float:
    return float(_run(code, environ).split()[-1])


def _bytecode_caches(cache_dir: Path, environ: dict[str, str]) -> list[dict[str, str]]:
    """Return ``environ`` reading bytecode from a cache of every module the
    programs import, and from one of their standard library modules only."""
    writing = {k: v for k, v in environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    for program in PROGRAMS.values():
        _run(program, {**writing, "PYTHONPYCACHEPREFIX": str(cache_dir / "all")})
    stdlib = Path(sysconfig.get_paths()["stdlib"]).relative_to("/")
    shutil.copytree(cache_dir / "all" / stdlib, cache_dir / "stdlib" / stdlib)
    return [
        {**environ, "PYTHONPYCACHEPREFIX": str(cache_dir / name)}
        | {"PYTHONDONTWRITEBYTECODE": "1"}
        for name in ("all", "stdlib")
    ]


def measure(repeats: int = 5) -> dict[str, float]:
    """Return median seconds of each import and of the handler's init, and ratios.

    ``handler_import_uncached_secs`` compiles every module outside the
    standard library, as Lambda must for a package built without
    ``__pycache__`` (its code directory is read-only, so nothing is cached).
    Raises CalledProcessError if a subprocess fails.
    """
    samples: defaultdict[str, list[float]] = defaultdict(list)
    with tempfile.TemporaryDirectory() as cache_dir:
        cached, uncached = _bytecode_caches(Path(cache_dir), offline_environ())
        for _ in range(repeats):
            for key, program in PROGRAMS.items():
                samples[key].append(_secs(program, cached))
            samples["handler_import_uncached_secs"].append(
                _secs(PROGRAMS["handler_import_secs"], uncached)
            )
    result = {key: median(values) for key, values in samples.items()}
    for base in ("boto3", "powertools"):
        result[f"handler_import_over_{base}"] = (
            result["handler_import_secs"] / result[f"{base}_import_secs"]
        )
    return result


if __name__ == "__main__":
    figures = measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
    for key, value in figures.items():
        print(f"{key:32} {value:8.3f}")
