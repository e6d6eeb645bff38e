"""``python -m devenv up|down|serve|create|delete``: emulators for manual use.

``up`` starts ``serve`` in the background and returns once the endpoints are
in ``<run-dir>/endpoints.env``; ``down`` stops it. ``serve`` runs the
emulators in the foreground until SIGTERM or Ctrl-C. ``create``/``delete``
make or remove the stream, tables and bucket that ``SPANSTREAM_*`` names, on
the endpoints in ``endpoints.env`` (or in the environment if there is none).
Each command exits 0 on success and 1 with a message on stderr on failure.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from devenv.emulators import EmulatorError, Emulators, emulators_from_env
from devenv.env import read_env_file, write_env_file
from devenv.ports import DeadlineExceeded, wait_until
from devenv.resources import create_resources, delete_resources
from spanstream.aws import make_client
from spanstream.config import Settings

logger = logging.getLogger("devenv")

ENDPOINTS_FILE = "endpoints.env"
PID_FILE = "devenv.pids"
SERVE_LOG = "devenv.log"
_HEALTH_CHECK_INTERVAL_SECS = 1.0


def _read_pids(run_dir: Path) -> list[int]:
    try:
        text = (run_dir / PID_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    return [int(word) for word in text.split()]


def _is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; only its parent's wait is missing.
    with contextlib.suppress(OSError):
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    return True


def serve(run_dir: Path) -> int:
    """Run the emulators until SIGTERM/SIGINT; return the exit status.

    Writes ``endpoints.env`` and the pid file once they answer and removes
    both on the way out. Returns 1 if they fail to start or one dies.
    """
    # Handlers, not a blocked signal mask: children inherit a mask, and a
    # moto server with SIGTERM blocked would ignore `stop`.
    stop_requested = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signo, _frame: stop_requested.set())
    backend = emulators_from_env(run_dir=run_dir / "emulators")
    try:
        backend.start()
    except EmulatorError as exc:
        print(f"emulators failed to start: {exc}", file=sys.stderr)
        return 1
    try:
        child_pids = backend.pids if isinstance(backend, Emulators) else []
        (run_dir / PID_FILE).write_text(
            " ".join(str(pid) for pid in [os.getpid(), *child_pids]) + "\n",
            encoding="utf-8",
        )
        write_env_file(run_dir / ENDPOINTS_FILE, backend.settings_env())
        while not stop_requested.wait(_HEALTH_CHECK_INTERVAL_SECS):
            if isinstance(backend, Emulators) and (dead := backend.exit_messages()):
                print("\n".join(dead), file=sys.stderr)
                return 1
        logger.info("asked to stop")
        return 0
    finally:
        for name in (ENDPOINTS_FILE, PID_FILE):
            (run_dir / name).unlink(missing_ok=True)
        backend.stop()


def up(run_dir: Path, timeout_secs: float) -> int:
    """Start ``serve`` in the background; return once endpoints.env exists."""
    pids = _read_pids(run_dir)
    if pids and _is_alive(pids[0]) and (run_dir / ENDPOINTS_FILE).exists():
        print(f"emulators already up; endpoints in {run_dir / ENDPOINTS_FILE}")
        return 0
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / ENDPOINTS_FILE).unlink(missing_ok=True)
    log_path = run_dir / SERVE_LOG
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "devenv", "serve", "--run-dir", str(run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def exited() -> str | None:
        code = process.poll()
        if code is None:
            return None
        return f"serve exited with status {code}:\n{log_path.read_text()[-4000:]}"

    try:
        wait_until(
            (run_dir / ENDPOINTS_FILE).exists,
            timeout_secs=timeout_secs,
            what="the emulators to come up",
            abort=exited,
        )
    except (DeadlineExceeded, RuntimeError) as exc:
        process.terminate()
        print(str(exc), file=sys.stderr)
        return 1
    print((run_dir / ENDPOINTS_FILE).read_text(encoding="utf-8"), end="")
    print(f"emulators up (pid {process.pid}); endpoints in {run_dir / ENDPOINTS_FILE}")
    return 0


def down(run_dir: Path, timeout_secs: float) -> int:
    """Stop what ``up`` started: SIGTERM, then SIGKILL of every pid after a deadline."""
    pids = _read_pids(run_dir)
    if not pids or not _is_alive(pids[0]):
        print("emulators are not running")
        for name in (ENDPOINTS_FILE, PID_FILE):
            (run_dir / name).unlink(missing_ok=True)
        return 0
    os.kill(pids[0], signal.SIGTERM)
    try:
        wait_until(
            lambda: not any(_is_alive(pid) for pid in pids),
            timeout_secs=timeout_secs,
            what="the emulators to stop",
        )
    except DeadlineExceeded:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        print("emulators did not stop in time; killed them", file=sys.stderr)
    for name in (ENDPOINTS_FILE, PID_FILE):
        (run_dir / name).unlink(missing_ok=True)
    print("emulators stopped")
    return 0


def _settings_and_clients(run_dir: Path) -> tuple[Settings, Any, Any, Any]:
    endpoints_path = run_dir / ENDPOINTS_FILE
    if endpoints_path.exists():
        for key, value in read_env_file(endpoints_path).items():
            os.environ.setdefault(key, value)
    settings = Settings.from_env()
    return (
        settings,
        make_client("kinesis", settings),
        make_client("dynamodb", settings),
        make_client("s3", settings),
    )


def create(run_dir: Path, shard_count: int) -> int:
    """Create the resources the environment's settings name; print them."""
    settings, kinesis, dynamodb, s3 = _settings_and_clients(run_dir)
    resources = create_resources(settings, kinesis, dynamodb, s3, shard_count)
    print(f"stream {resources.stream_name} ({resources.shard_count} shards)")
    for physical in resources.table_names.values():
        print(f"table {physical}")
    print(f"bucket {resources.bucket}")
    return 0


def delete(run_dir: Path) -> int:
    """Delete the resources the environment's settings name."""
    settings, kinesis, dynamodb, s3 = _settings_and_clients(run_dir)
    delete_resources(settings, kinesis, dynamodb, s3)
    print("deleted")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run the command; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m devenv", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "serve", "create", "delete"])
    parser.add_argument("--run-dir", type=Path, default=Path(".run"))
    parser.add_argument("--timeout-secs", type=float, default=60.0)
    parser.add_argument("--shard-count", type=int, default=4)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    run_dir: Path = args.run_dir.resolve()
    if args.command == "serve":
        return serve(run_dir)
    if args.command == "up":
        return up(run_dir, args.timeout_secs)
    if args.command == "down":
        return down(run_dir, args.timeout_secs)
    if args.command == "create":
        return create(run_dir, args.shard_count)
    return delete(run_dir)


if __name__ == "__main__":
    sys.exit(main())
