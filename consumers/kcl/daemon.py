"""Render the MultiLangDaemon properties and run the Java daemon as a child.

One `Daemon` is one KCL worker: a JVM running the MultiLangDaemon from the
jars ``make kcl-jars`` put into the ``amazon_kclpy`` package, which starts a
``python -m consumers.kcl.processor`` per shard lease it holds. The JVM is
started in its own session, so ``kill -9`` of its process group (a test's
crash) takes its record processors with it, and a Ctrl-C in the launcher's
terminal does not reach them before the daemon asked them to flush.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from urllib.parse import urlsplit

from spanstream.config import Settings
from spanstream.errors import ConfigError

logger = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
TEMPLATE_PATH = HERE / "spanstream.properties.template"
LOGBACK_PATH = HERE / "logback.xml"
MAIN_CLASS = "software.amazon.kinesis.multilang.MultiLangDaemon"
#: What the daemon logs once a graceful shutdown (SIGTERM) has completed.
SHUTDOWN_COMPLETE = "Process shutdown is complete."
JAVA_EXIT_ON_SIGTERM = 128 + signal.SIGTERM


#: KCL 3.x lease assignment: balances leases by the workers' CPU, read only on
#: EC2, ECS or EKS; one leader (a 2-minute lock) assigns every lease.
CLIENT_VERSION_3X = "CLIENT_VERSION_CONFIG_3X"
#: KCL 2.x lease taking, which KCL 3.x keeps for rolling upgrades: every worker
#: takes expired leases and steals from the busiest until the counts are even.
CLIENT_VERSION_2X_COMPATIBLE = "CLIENT_VERSION_CONFIG_COMPATIBLE_WITH_2X"


@dataclass(frozen=True)
class KclTuning:
    """The KCL settings the template leaves open (times in milliseconds).

    The defaults suit production on AWS; `KclTuning.fast` suits emulators,
    demos and tests, where workers come and go within seconds.
    """

    client_version_config: str = CLIENT_VERSION_3X
    max_records: int = 10_000
    idle_time_between_reads_millis: int = 1_000
    failover_time_millis: int = 10_000
    lease_assignment_interval_millis: int = 20_000
    shard_sync_interval_millis: int = 60_000
    parent_shard_poll_interval_millis: int = 10_000
    worker_metrics_reporter_millis: int = 30_000
    graceful_handoff_timeout_millis: int = 30_000
    shutdown_grace_millis: int = 60_000

    @classmethod
    def fast(cls) -> KclTuning:
        """Short intervals, small reads and count-based lease balancing.

        Off AWS the KCL 3.x assigner has no CPU figures, so it never moves a
        lease from a busy worker to an idle one, and a dead leader stalls
        every reassignment for its 2-minute lock; KCL 2.x lease taking has
        neither problem (KCL 3.x switches such an application to 3.x mode
        only after 10 stable minutes). kinesis-mock answers a GetRecords of
        10,000 records far more slowly than ten of 1,000.
        """
        return cls(
            client_version_config=CLIENT_VERSION_2X_COMPATIBLE,
            max_records=1_000,
            idle_time_between_reads_millis=200,
            failover_time_millis=3_000,
            lease_assignment_interval_millis=1_000,
            shard_sync_interval_millis=2_000,
            parent_shard_poll_interval_millis=500,
            worker_metrics_reporter_millis=2_000,
            graceful_handoff_timeout_millis=5_000,
            shutdown_grace_millis=30_000,
        )


def application_name(settings: Settings, stage: str) -> str:
    """Return the KCL application name, which also names its lease table."""
    return f"{settings.table_prefix}kcl-{stage}"


def render_properties(
    settings: Settings,
    stage: str,
    tuning: KclTuning | None = None,
    python: str = sys.executable,
    app_name: str | None = None,
    worker_id: str | None = None,
) -> str:
    """Return the properties file for ``stage`` ("spans" or "traces").

    ``worker_id`` names the worker in the lease table (default: a random
    UUID per start).

    Raises `ConfigError` if the stage needs a stream name that is not set.
    """
    stream_name = (
        settings.stream_name if stage == "spans" else settings.trace_stream_name
    )
    if not stream_name:
        raise ConfigError(f"the {stage} stage needs a stream name, got none")
    values = {
        "executable": f"{python} -m consumers.kcl.processor",
        "application_name": app_name or application_name(settings, stage),
        "stream_name": stream_name,
        "region": settings.region,
        "kinesis_endpoint": settings.endpoint_for("kinesis") or "",
        "dynamodb_endpoint": settings.endpoint_for("dynamodb") or "",
        **{name: str(value) for name, value in vars(tuning or KclTuning()).items()},
    }
    rendered = Template(TEMPLATE_PATH.read_text(encoding="utf-8")).substitute(values)
    lines = [line for line in rendered.splitlines() if not line.rstrip().endswith("=")]
    if worker_id:
        lines.append(f"workerId = {worker_id}")
    return "\n".join(lines) + "\n"


def _is_loopback_url(url: str | None) -> bool:
    host = urlsplit(url).hostname if url else None
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def loopback_guard(settings: Settings) -> tuple[list[str], dict[str, str]]:
    """Return (JVM options, environment) that keep the daemon on loopback.

    Only when every endpoint the daemon uses is a loopback address (the
    emulators); against AWS both are empty. Off EC2 the KCL still asks the
    EC2 instance metadata service (169.254.169.254) which platform it runs
    on, and the SDK asks it for credentials and region; an emulated run
    must send nothing off the machine. So plain-HTTP connections to any
    host but loopback go to a proxy address on loopback where nothing
    listens (refused at once), and the SDK's own metadata look-ups are off.
    """
    endpoints = (settings.endpoint_for("kinesis"), settings.endpoint_for("dynamodb"))
    if not all(_is_loopback_url(url) for url in endpoints):
        return [], {}
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]  # closed again when the block ends
    options = [
        f"-D{scheme}.{name}={value}"
        for scheme in ("http", "https")
        for name, value in (("proxyHost", "127.0.0.1"), ("proxyPort", dead_port))
    ]
    options.append("-Dhttp.nonProxyHosts=localhost|127.*|[::1]")
    return options, {"AWS_EC2_METADATA_DISABLED": "true"}


def jars_dir() -> Path:
    """Return the directory of the MultiLangDaemon jars (``make kcl-jars``)."""
    from amazon_kclpy import kcl  # noqa: PLC0415  (only where the daemon runs)

    path = Path(kcl.__file__).resolve().parent / "jars"
    if not any(path.glob("amazon-kinesis-client-multilang-*.jar")):
        raise FileNotFoundError(f"no MultiLangDaemon jar in {path}: run make kcl-jars")
    return path


def daemon_command(
    properties_path: Path, java_options: Sequence[str] = (), java: str = "java"
) -> list[str]:
    """Return the command line of a MultiLangDaemon reading ``properties_path``."""
    return [
        java,
        *java_options,
        "-cp",
        f"{jars_dir()}/*",
        MAIN_CLASS,
        "--properties-file",
        str(properties_path),
        "--log-configuration",
        str(LOGBACK_PATH),
    ]


class Daemon:
    """One MultiLangDaemon worker process, logging to ``log_path``.

    ``settings`` decides whether the daemon is kept on loopback
    (`loopback_guard`); ``env`` is its environment (default: this process's).
    """

    def __init__(
        self,
        name: str,
        properties_path: Path,
        log_path: Path,
        settings: Settings,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.properties_path = properties_path
        self.log_path = log_path
        self.java_options, guard_env = loopback_guard(settings)
        self.env = {**(os.environ if env is None else env), **guard_env}
        self.process: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    def start(self) -> None:
        """Start the JVM in a new session; its output is appended to the log."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self._log_offset = log.tell()
            self.process = subprocess.Popen(
                daemon_command(self.properties_path, self.java_options),
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        logger.info("worker %s started (pid %d)", self.name, self.process.pid)

    def poll(self) -> int | None:
        """Return the exit status, or None while it runs."""
        return None if self.process is None else self.process.poll()

    def stop(self, timeout_secs: float) -> bool:
        """Ask for a graceful shutdown (SIGTERM to the JVM); return True if clean.

        Clean means the daemon logged that its shutdown completed (every
        record processor flushed and checkpointed) and exited. After
        ``timeout_secs`` the whole process group is killed and False returned.
        """
        process = self.process
        if process is None or process.poll() is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=timeout_secs)
        except subprocess.TimeoutExpired:
            logger.error(
                "worker %s did not stop in %.0fs; killing it", self.name, timeout_secs
            )
            self.kill()
            return False
        clean = code in (0, JAVA_EXIT_ON_SIGTERM) and self.shutdown_completed()
        logger.info("worker %s stopped (status %d, clean %s)", self.name, code, clean)
        return clean

    def kill(self) -> None:
        """SIGKILL the JVM and its record processors (its process group)."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    def shutdown_completed(self) -> bool:
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_offset)
                text = log.read().decode("utf-8", errors="replace")
        except OSError:
            return False
        return SHUTDOWN_COMPLETE in text
