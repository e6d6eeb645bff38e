"""The Lambda package ships bytecode its runtime uses, so cold starts compile nothing.

GIVEN a copy of the project's packages, as ``make lambda-package`` lays them out
WHEN ``make lambda-bytecode`` compiles it with the function's Python (3.13)
THEN every module has bytecode for that Python, and that interpreter, on a
read-only copy, loads every module it imports from it from bytecode rather
than compiling the source, even after the sources' times changed (as a zip
may change them).
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULES = ("spanstream.config", "spanstream.sinks.keys")


def _make(*args: str) -> str:
    done = subprocess.run(
        ["make", "--no-print-directory", "-s", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def _read_only(tree: Path) -> None:
    for path in [tree, *tree.rglob("*")]:
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def test_lambda_bytecode_is_what_the_runtime_loads(tmp_path: Path) -> None:
    build = tmp_path / "lambda"
    build.mkdir()
    for package in ("spanstream", "consumers"):
        shutil.copytree(ROOT / package, build / package)
    python = _make("lambda-python")
    assert python, "make found no Python for the function's runtime"

    _make("lambda-bytecode", f"LAMBDA_BUILD={build}")

    sources = sorted(build.rglob("*.py"))
    tag = subprocess.run(
        [python, "-c", "import sys; print(sys.implementation.cache_tag)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert tag == "cpython-313"
    missing = [
        s
        for s in sources
        if not (s.parent / "__pycache__" / f"{s.stem}.{tag}.pyc").exists()
    ]
    assert missing == []
    for source in sources:
        os.utime(source, (1, 1))  # what a zip's two-second times may do
    _read_only(build)
    try:
        done = subprocess.run(
            [python, "-v", "-c", "; ".join(f"import {m}" for m in MODULES)],
            env={"PATH": os.environ["PATH"], "PYTHONPATH": str(build)},
            cwd=tmp_path,  # not the repository, whose sources -c would find first
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    finally:
        for path in [build, *build.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    loaded = [
        line
        for line in done.stderr.splitlines()
        if line.startswith("# code object from") and str(build) in line
    ]
    assert len(loaded) >= len(MODULES) + 2  # the modules and their packages
    compiled = [line for line in loaded if not line.rstrip("'").endswith(".pyc")]
    assert compiled == []
