"""Run real MultiLangDaemon workers against the emulators and watch their leases.

`KclFleet` starts and kills workers (JVMs in their own process groups, with
their Python record processors); the ``read_*`` helpers look at the KCL's
lease and coordinator tables and at the stream, so that tests wait on
conditions with deadlines (`devenv.ports.wait_until`), never on sleeps.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consumers.kcl.daemon import Daemon, KclTuning, application_name, render_properties
from consumers.kcl.processor import FENCED_EXIT_MESSAGE
from consumers.kcl.progress import checkpoints_reached, last_sequence_numbers
from devenv.ports import wait_until
from spanstream.config import Settings
from spanstream.sinks.kinesis import put_records
from spanstream.traffic.encode import Form, encode_records
from spanstream.traffic.generator import generate_spans
from spanstream.traffic.model import truths
from spanstream.traffic.truth import SpanTruth

#: Flush often, so that kills land between, inside and after flushes.
FLUSH_INTERVAL_SECS = "2"


@dataclass
class KclFleet:
    """The workers of one stage of one test; every worker gets a fresh id."""

    settings: Settings
    environ: dict[str, str]
    run_dir: Path
    stage: str = "spans"
    workers: dict[str, Daemon] = field(default_factory=dict)
    #: workers that exited on purpose (fenced off) and were replaced
    restarts: list[str] = field(default_factory=list)
    _started: int = 0

    @property
    def app_name(self) -> str:
        return application_name(self.settings, self.stage)

    def start(self) -> str:
        """Start a worker; return its worker id."""
        self._started += 1
        worker_id = f"{self.stage}-w{self._started}"
        properties = self.run_dir / f"{worker_id}.properties"
        properties.write_text(
            render_properties(
                self.settings, self.stage, KclTuning.fast(), worker_id=worker_id
            )
        )
        env = {
            **self.environ,
            "SPANSTREAM_KCL_STAGE": self.stage,
            "SPANSTREAM_FLUSH_INTERVAL_SECS": FLUSH_INTERVAL_SECS,
        }
        daemon = Daemon(
            worker_id, properties, self.run_dir / f"{worker_id}.log", self.settings, env
        )
        daemon.start()
        self.workers[worker_id] = daemon
        return worker_id

    def kill(self, worker_id: str) -> None:
        """``kill -9`` the worker's JVM and its record processors."""
        self.workers.pop(worker_id).kill()

    def stop(self, worker_id: str, timeout_secs: float = 90.0) -> bool:
        """SIGTERM the worker; return True if it shut down cleanly."""
        return self.workers.pop(worker_id).stop(timeout_secs)

    def kill_all(self) -> None:
        for worker_id in list(self.workers):
            self.kill(worker_id)

    def died(self) -> str | None:
        """Return a message if a worker exited on its own (for `wait_until`).

        A worker whose record processor exited because it was fenced off
        while still holding a lease (`consumers.kcl.processor`) is started
        again, as the launcher does, under a new id; that is not a death.
        """
        for worker_id, daemon in list(self.workers.items()):
            code = daemon.poll()
            if code is None:
                continue
            log = daemon.log_path.read_text(errors="replace")
            if FENCED_EXIT_MESSAGE in log:
                del self.workers[worker_id]
                self.restarts.append(worker_id)
                self.start()
                continue
            return f"worker {worker_id} exited with {code}:\n{log[-3000:]}"
        return None

    def log_lines(self) -> list[dict[str, Any]]:
        """Return the record processors' JSON log lines of every worker."""
        lines = []
        for path in sorted(self.run_dir.glob("*.log")):
            for line in path.read_text(errors="replace").splitlines():
                if line.startswith("{") and '"logger"' in line:
                    try:
                        lines.append(json.loads(line))
                    except ValueError:
                        continue
        return lines


def wait_until_checkpointed(
    fleet: KclFleet,
    dynamodb: Any,
    kinesis: Any,
    timeout_secs: float,
) -> float:
    """Wait until the fleet has checkpointed everything now on the stream."""
    targets = last_sequence_numbers(kinesis, fleet.settings.stream_name)
    return wait_until(
        lambda: checkpoints_reached(dynamodb, fleet.app_name, targets),
        timeout_secs=timeout_secs,
        what=f"{fleet.app_name} to checkpoint {targets}",
        poll_interval_secs=1.0,
        abort=fleet.died,
    )


def put_spans(
    kinesis: Any, settings: Settings, span_count: int, seed: int
) -> list[SpanTruth]:
    """Put freshly generated spans in every form; return their truth."""
    traces = generate_spans(span_count, seed=seed, spread_secs=20.0)
    records = [tuple(r) for r in encode_records(traces, Form.MIXED, seed=seed)]
    assert put_records(kinesis, settings.stream_name, records) == len(records)  # type: ignore[arg-type]
    return truths(traces)


def random_pause(rng: random.Random, low_secs: float, high_secs: float) -> None:
    """Let the workers run for a random while before the next kill.

    Not a wait for a condition: the point is to hit a random moment of the
    workers' flush cycle (reading, writing, checkpointing).
    """
    time.sleep(rng.uniform(low_secs, high_secs))


def environ_for(settings_environ: dict[str, str]) -> dict[str, str]:
    """The environment of worker processes: the test's settings, Python unbuffered."""
    return {**settings_environ, "PYTHONUNBUFFERED": "1", "PATH": os.environ["PATH"]}


Condition = Callable[[], bool]
