"""Fixtures shared by the unit tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from spanstream.traffic.real import ROBOT_SHOP_CSV, shared_data_dir


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Return the directory of the recorded real traces (``../shared/data``).

    A missing copy fails the test that needs it, loudly, instead of skipping
    it: decoders and aggregates must meet real traces in every run.
    ``SPANSTREAM_SHARED_DATA`` points elsewhere.
    """
    path = shared_data_dir()
    if not (path / "real-traces").is_dir():
        pytest.fail(
            f"the recorded real traces are not at {path} (expected beside the "
            "checkout, as ../shared/data); set SPANSTREAM_SHARED_DATA to them"
        )
    return path


@pytest.fixture(scope="session")
def robot_shop_csv(shared_data: Path) -> Path:
    """Return the path of the robot-shop OpenTelemetry capture."""
    return shared_data / ROBOT_SHOP_CSV


@pytest.fixture(params=["python", "native"])
def trace_implementation(request: pytest.FixtureRequest) -> str:
    """Return each implementation of the trace assembler in turn.

    ``native`` needs the extension, which ``make install`` always builds: a
    missing build fails the test (`make_trace_assembler` raises) rather
    than skipping it.
    """
    return str(request.param)
