"""AWS emulators for tests and local runs: kinesis-mock + moto, or a LocalStack.

`Emulators` starts two servers as subprocesses, each on a free port on
127.0.0.1: kinesis-mock (npm ``kinesis-local``, for Kinesis) and a moto server
(for DynamoDB and S3; moto's own Kinesis is never used). `LocalStack` wraps a
LocalStack that is already running. Both give the same interface: endpoint
URLs, `settings_env()` for subprocesses and `settings()` for in-process code.
`emulators_from_env()` picks one according to ``SPANSTREAM_TARGET``.
"""

from __future__ import annotations

import abc
import atexit
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from devenv.ports import LOOPBACK_HOST, DeadlineExceeded, free_loopback_port, wait_until
from spanstream.config import Settings

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
KINESIS_MOCK_JS = PROJECT_ROOT / "node_modules" / "kinesis-local" / "main.js"
LOOPBACK_PRELOAD = Path(__file__).resolve().parent / "loopback.cjs"

#: Dummy credentials: the emulators accept any, botocore needs some to sign.
DUMMY_ACCESS_KEY_ID = "test"
DUMMY_SECRET_ACCESS_KEY = "test"

TARGET_VARIABLE = "SPANSTREAM_TARGET"
TARGETS = ("emulators", "localstack", "auto")

#: kinesis-mock keeps a stream CREATING/UPDATING for these (default 500ms each);
#: short values keep stream set-up and resharding in tests fast.
KINESIS_MOCK_FAST_DURATIONS = {
    name: "10ms"
    for name in (
        "CREATE_STREAM_DURATION",
        "DELETE_STREAM_DURATION",
        "REGISTER_STREAM_CONSUMER_DURATION",
        "DEREGISTER_STREAM_CONSUMER_DURATION",
        "START_STREAM_ENCRYPTION_DURATION",
        "STOP_STREAM_ENCRYPTION_DURATION",
        "MERGE_SHARDS_DURATION",
        "SPLIT_SHARD_DURATION",
        "UPDATE_SHARD_COUNT_DURATION",
        "UPDATE_STREAM_MODE_DURATION",
    )
}

KINESIS_MOCK_SEMI_SPACE_MIB = 128

_ADDRESS_IN_USE_MARKERS = ("EADDRINUSE", "Address already in use")
_LOG_TAIL_LINES = 30
_START_ATTEMPTS = 3


class EmulatorError(RuntimeError):
    """An emulator could not be found, started or reached."""


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return "(no log)"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else "(empty log)"


def _answers_ok(url: str, timeout_secs: float = 1.0) -> bool:
    """Return True if GET ``url`` answers 200 before ``timeout_secs``."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_secs) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.URLError):
        return False


class _ServerProcess:
    """One emulator subprocess: its command line, log file and readiness URL."""

    def __init__(
        self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path
    ) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Launch the process with stdout and stderr appended to the log file."""
        logger.debug("starting %s: %s", self.name, " ".join(self.argv))
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Own process group: a Ctrl-C meant for the test run does not
                # kill the emulators before the fixtures stop them in order.
                start_new_session=True,
            )

    def exit_message(self) -> str | None:
        """Return why the process is gone, with its log tail, or None if alive."""
        if self.process is None:
            return f"{self.name} was never started"
        code = self.process.poll()
        if code is None:
            return None
        return (
            f"{self.name} exited with status {code}; last lines of "
            f"{self.log_path}:\n{_log_tail(self.log_path)}"
        )

    def died_of_port_clash(self) -> bool:
        """Return True if the process exited because its port was taken."""
        if self.exit_message() is None:
            return False
        tail = _log_tail(self.log_path)
        return any(marker in tail for marker in _ADDRESS_IN_USE_MARKERS)

    def stop(self, timeout_secs: float) -> None:
        """Terminate the process group, kill it after ``timeout_secs``; never raise."""
        process = self.process
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            try:
                process.wait(timeout=timeout_secs)
                logger.debug("%s stopped (%s)", self.name, sig.name)
                return
            except subprocess.TimeoutExpired:
                logger.info(
                    "%s still running %.1fs after %s", self.name, timeout_secs, sig.name
                )


class _Backend(abc.ABC):
    """What every backend offers: endpoints, env vars, Settings, a `with` block."""

    region: str

    @property
    @abc.abstractmethod
    def kinesis_endpoint_url(self) -> str:
        """Kinesis endpoint URL."""

    @property
    @abc.abstractmethod
    def dynamodb_endpoint_url(self) -> str:
        """DynamoDB endpoint URL."""

    @property
    @abc.abstractmethod
    def s3_endpoint_url(self) -> str:
        """S3 endpoint URL (clients must use path-style addressing)."""

    @abc.abstractmethod
    def start(self) -> Self:
        """Make the backend usable and return self."""

    @abc.abstractmethod
    def stop(self) -> None:
        """Release what `start` started; never raise."""

    def settings_env(self) -> dict[str, str]:
        """Return env vars pointing spanstream and boto3 at this backend.

        ``SPANSTREAM_{KINESIS,DYNAMODB,S3}_ENDPOINT_URL`` and
        ``SPANSTREAM_REGION`` for `Settings.from_env`, plus dummy
        ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` and
        ``AWS_DEFAULT_REGION`` so that clients can sign requests.
        """
        return {
            "SPANSTREAM_KINESIS_ENDPOINT_URL": self.kinesis_endpoint_url,
            "SPANSTREAM_DYNAMODB_ENDPOINT_URL": self.dynamodb_endpoint_url,
            "SPANSTREAM_S3_ENDPOINT_URL": self.s3_endpoint_url,
            "SPANSTREAM_REGION": self.region,
            "AWS_ACCESS_KEY_ID": DUMMY_ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": DUMMY_SECRET_ACCESS_KEY,
            "AWS_DEFAULT_REGION": self.region,
            # Nothing of an emulated run asks the EC2 metadata service.
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def settings(self, **overrides: Any) -> Settings:
        """Return `Settings` with this backend's endpoints and region.

        ``overrides`` replace any other field (``stream_name=...``); raises
        ConfigError if the result is invalid, TypeError for an unknown field.
        """
        settings = replace(Settings.from_env(self.settings_env()), **overrides)
        settings.validate()
        return settings

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class Emulators(_Backend):
    """kinesis-mock and a moto server on free loopback ports, for one session.

    Use as a context manager, or call `start` and `stop`. On `stop` each
    server gets SIGTERM, then SIGKILL after ``stop_timeout_secs``: the moto
    server waits for its clients' idle keep-alive connections to close, which
    they may never do, and both hold their data in memory only. Logs go to
    ``<run_dir>/kinesis-mock.log`` and ``<run_dir>/moto.log``; the run dir is
    a new temporary directory unless given, and is kept after `stop`.
    """

    def __init__(
        self,
        run_dir: Path | None = None,
        *,
        region: str = "us-east-1",
        start_timeout_secs: float = 60.0,
        stop_timeout_secs: float = 3.0,
        kinesis_mock_env: Mapping[str, str] | None = None,
    ) -> None:
        self.run_dir = run_dir
        self.region = region
        self.start_timeout_secs = start_timeout_secs
        self.stop_timeout_secs = stop_timeout_secs
        self.kinesis_mock_env = dict(kinesis_mock_env or {})
        self.kinesis_port = 0
        self.kinesis_tls_port = 0
        self.moto_port = 0
        self.startup_secs = 0.0
        self._servers: list[_ServerProcess] = []

    @property
    def kinesis_endpoint_url(self) -> str:
        """Plain-HTTP Kinesis endpoint; serves HTTP/1.1 and h2c (prior knowledge)."""
        return f"http://{LOOPBACK_HOST}:{self.kinesis_port}"

    @property
    def kinesis_tls_endpoint_url(self) -> str:
        """HTTPS Kinesis endpoint with kinesis-mock's self-signed certificate."""
        return f"https://{LOOPBACK_HOST}:{self.kinesis_tls_port}"

    @property
    def moto_endpoint_url(self) -> str:
        """The moto server, which serves every service moto has."""
        return f"http://{LOOPBACK_HOST}:{self.moto_port}"

    @property
    def dynamodb_endpoint_url(self) -> str:
        return self.moto_endpoint_url

    @property
    def s3_endpoint_url(self) -> str:
        return self.moto_endpoint_url

    @property
    def cloudwatch_endpoint_url(self) -> str:
        """CloudWatch (moto), for the KCL's metrics publisher."""
        return self.moto_endpoint_url

    @property
    def log_paths(self) -> list[Path]:
        """Return the log file of each server started."""
        return [server.log_path for server in self._servers]

    def start(self) -> Self:
        """Start both servers and return once each answers.

        Retries with new ports if a port was taken in the meantime. Raises
        `EmulatorError` with the server's log tail if node or kinesis-mock is
        missing, a server exits, or it does not answer within
        ``start_timeout_secs``; nothing is left running then.
        """
        if self._servers:
            raise EmulatorError("emulators already started")
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="spanstream-emulators-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        for attempt in range(1, _START_ATTEMPTS + 1):
            self._servers = self._launch()
            try:
                self._wait_until_ready()
                break
            except EmulatorError:
                clashed = any(s.died_of_port_clash() for s in self._servers)
                self.stop()
                if not clashed or attempt == _START_ATTEMPTS:
                    raise
                logger.warning("port taken while starting emulators; retrying")
        self.startup_secs = time.monotonic() - started
        atexit.register(self.stop)
        logger.info(
            "emulators up in %.2fs: kinesis %s, dynamodb/s3 %s (logs in %s)",
            self.startup_secs,
            self.kinesis_endpoint_url,
            self.moto_endpoint_url,
            self.run_dir,
        )
        return self

    def stop(self) -> None:
        """Stop both servers (terminate, then kill after a deadline); never raise."""
        for server in self._servers:
            server.stop(self.stop_timeout_secs)
        if self._servers:
            logger.info("emulators stopped")
        self._servers = []
        atexit.unregister(self.stop)

    @property
    def pids(self) -> list[int]:
        """Return the process id of each server started."""
        return [s.process.pid for s in self._servers if s.process is not None]

    def exit_messages(self) -> list[str]:
        """Return a message for each server that has exited (empty if all run)."""
        return [m for s in self._servers if (m := s.exit_message()) is not None]

    def _launch(self) -> list[_ServerProcess]:
        assert self.run_dir is not None
        self.kinesis_port = free_loopback_port()
        self.kinesis_tls_port = free_loopback_port()
        self.moto_port = free_loopback_port()
        servers = [self._kinesis_mock(self.run_dir), self._moto(self.run_dir)]
        for server in servers:
            server.start()
        return servers

    def _kinesis_mock(self, run_dir: Path) -> _ServerProcess:
        node = shutil.which("node")
        if node is None:
            raise EmulatorError("node is not on PATH; kinesis-mock needs Node.js")
        if not KINESIS_MOCK_JS.is_file():
            raise EmulatorError(
                f"kinesis-mock is not installed ({KINESIS_MOCK_JS} is missing); "
                "run `make install`"
            )
        env = {
            **os.environ,
            **KINESIS_MOCK_FAST_DURATIONS,
            "KINESIS_MOCK_PLAIN_PORT": str(self.kinesis_port),
            "KINESIS_MOCK_TLS_PORT": str(self.kinesis_tls_port),
            "KINESIS_MOCK_CERT_PATH": str(KINESIS_MOCK_JS.parent / "server.json"),
            "AWS_REGION": self.region,
            # Tests make a stream per test; the default limits (50 shards,
            # 10 on-demand streams) would be reached within one session.
            "SHARD_LIMIT": "10000",
            "ON_DEMAND_STREAM_COUNT_LIMIT": "1000",
            "LOG_LEVEL": "INFO",
            # On SIGTERM the server waits for idle keep-alive connections to
            # close, which clients never do; the data is in memory anyway.
            "CATS_EFFECT_SHUTDOWN_HOOK_TIMEOUT": "1s",
            **self.kinesis_mock_env,
        }
        argv = [
            node,
            # kinesis-mock allocates heavily per request; with V8's default
            # young generation most of its time goes to garbage collection
            # (GetRecords of 1,000 records: 3.3x faster with this).
            f"--max-semi-space-size={KINESIS_MOCK_SEMI_SPACE_MIB}",
            "--require",
            str(LOOPBACK_PRELOAD),
            str(KINESIS_MOCK_JS),
        ]
        return _ServerProcess("kinesis-mock", argv, env, run_dir / "kinesis-mock.log")

    def _moto(self, run_dir: Path) -> _ServerProcess:
        argv = [
            sys.executable,
            "-m",
            "devenv.motoserver",
            "-H",
            LOOPBACK_HOST,
            "-p",
            str(self.moto_port),
        ]
        return _ServerProcess("moto", argv, dict(os.environ), run_dir / "moto.log")

    def _wait_until_ready(self) -> None:
        checks = {
            "kinesis-mock": f"{self.kinesis_endpoint_url}/healthcheck",
            "moto": f"{self.moto_endpoint_url}/moto-api/data.json",
        }

        def all_answer() -> bool:
            return all(_answers_ok(url) for url in checks.values())

        def first_exit() -> str | None:
            messages = self.exit_messages()
            return messages[0] if messages else None

        try:
            wait_until(
                all_answer,
                timeout_secs=self.start_timeout_secs,
                what="the emulators to answer",
                abort=first_exit,
            )
        except DeadlineExceeded as exc:
            tails = "\n".join(
                f"--- {s.log_path} ---\n{_log_tail(s.log_path)}" for s in self._servers
            )
            raise EmulatorError(f"{exc}; logs:\n{tails}") from exc
        except RuntimeError as exc:
            raise EmulatorError(str(exc)) from exc


def localstack_endpoint_url() -> str:
    """Return the LocalStack URL localstack-client would use (default :4566).

    It honours ``LOCALSTACK_HOST``, ``AWS_ENDPOINT_URL`` and ``USE_SSL``.
    """
    # Imported here: localstack-client is a dev dependency, and `devenv create`
    # also runs in the worker image, which has only the runtime dependencies.
    from localstack_client.config import get_service_endpoint  # noqa: PLC0415

    return get_service_endpoint("kinesis") or "http://localhost:4566"


def localstack_services(endpoint_url: str, timeout_secs: float = 1.0) -> dict[str, str]:
    """Return LocalStack's service states (``{"kinesis": "running", ...}``).

    Returns an empty dict if nothing LocalStack-like answers at ``endpoint_url``.
    """
    url = f"{endpoint_url.rstrip('/')}/_localstack/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout_secs) as response:
            health = json.loads(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return {}
    services = health.get("services") if isinstance(health, dict) else None
    return {str(k): str(v) for k, v in services.items()} if services else {}


class LocalStack(_Backend):
    """A LocalStack that is already running; every endpoint is its one URL.

    `start` only checks that it answers and serves Kinesis, DynamoDB and S3;
    `stop` leaves it running.
    """

    REQUIRED_SERVICES = ("kinesis", "dynamodb", "s3")
    USABLE_STATES = ("available", "running")

    def __init__(
        self,
        endpoint_url: str | None = None,
        *,
        region: str = "us-east-1",
        start_timeout_secs: float = 10.0,
    ) -> None:
        self.endpoint_url = endpoint_url or localstack_endpoint_url()
        self.region = region
        self.start_timeout_secs = start_timeout_secs

    @property
    def kinesis_endpoint_url(self) -> str:
        return self.endpoint_url

    @property
    def dynamodb_endpoint_url(self) -> str:
        return self.endpoint_url

    @property
    def s3_endpoint_url(self) -> str:
        return self.endpoint_url

    def start(self) -> Self:
        """Return self once LocalStack answers with the services spanstream needs.

        Raises `EmulatorError` if nothing answers within ``start_timeout_secs``
        or a required service is disabled or failed.
        """
        try:
            wait_until(
                lambda: bool(localstack_services(self.endpoint_url)),
                timeout_secs=self.start_timeout_secs,
                what=f"LocalStack at {self.endpoint_url} to answer",
                poll_interval_secs=0.5,
            )
        except DeadlineExceeded as exc:
            raise EmulatorError(
                f"{exc}; start it (docker compose up localstack) or unset "
                f"{TARGET_VARIABLE}"
            ) from exc
        services = localstack_services(self.endpoint_url)
        unusable = {
            name: services.get(name, "missing")
            for name in self.REQUIRED_SERVICES
            if services.get(name) not in self.USABLE_STATES
        }
        if unusable:
            raise EmulatorError(
                f"LocalStack at {self.endpoint_url} cannot serve {unusable!r}"
            )
        logger.info("using LocalStack at %s", self.endpoint_url)
        return self

    def stop(self) -> None:
        """Do nothing: this LocalStack was not started here."""


def emulators_from_env(
    environ: Mapping[str, str] | None = None, *, run_dir: Path | None = None
) -> Emulators | LocalStack:
    """Return the (not yet started) backend ``SPANSTREAM_TARGET`` asks for.

    ``emulators`` (default): our kinesis-mock + moto. ``localstack``: the
    LocalStack localstack-client points at; its `start` fails loudly if it
    does not answer. ``auto``: that LocalStack if it answers now, else ours.
    Raises ValueError naming the variable for any other value.
    """
    environ = os.environ if environ is None else environ
    target = environ.get(TARGET_VARIABLE, "emulators").strip().lower() or "emulators"
    region = environ.get("SPANSTREAM_REGION", "us-east-1")
    if target not in TARGETS:
        raise ValueError(f"{TARGET_VARIABLE} must be one of {TARGETS}, got {target!r}")
    if target == "localstack":
        return LocalStack(region=region)
    if target == "auto":
        endpoint_url = localstack_endpoint_url()
        if localstack_services(endpoint_url):
            return LocalStack(endpoint_url, region=region)
        logger.info("no LocalStack at %s; starting our emulators", endpoint_url)
    return Emulators(run_dir, region=region)
