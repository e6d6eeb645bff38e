"""``python -m consumers.kcl`` (``spanstream kcl``): run N KCL workers.

Renders the MultiLangDaemon properties from ``SPANSTREAM_*`` (stream,
application name, endpoints, region) into ``--run-dir`` and starts
``--workers`` daemons per stage: ``spans`` reads ``SPANSTREAM_STREAM_NAME``;
with ``SPANSTREAM_TRACE_STREAM_NAME`` set, ``--stage all`` (the default)
also starts the ``traces`` stage on that stream. A worker that dies is
started again. On SIGTERM or SIGINT every worker is asked to shut down
gracefully (its record processors flush and checkpoint); the exit status
is 0 if all of them did, 1 otherwise, 2 for a configuration error.
Worker logs: ``<run-dir>/<stage>-<n>.log``.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import FrameType

from consumers.kcl.daemon import Daemon, KclTuning, render_properties
from consumers.logs import log_json_to_stderr
from spanstream.config import Settings
from spanstream.errors import ConfigError

logger = logging.getLogger("consumers.kcl")

RESTART_DELAY_SECS = 2.0
STOP_TIMEOUT_SECS = 90.0


def stages_for(settings: Settings, stage: str) -> list[str]:
    """Return the stages ``--stage`` asks for; raise ConfigError if impossible."""
    if stage == "all":
        return ["spans", "traces"] if settings.trace_stream_name else ["spans"]
    if stage == "traces" and not settings.trace_stream_name:
        raise ConfigError("--stage traces needs SPANSTREAM_TRACE_STREAM_NAME")
    return [stage]


def make_daemons(
    settings: Settings, stages: list[str], workers: int, run_dir: Path, fast: bool
) -> list[Daemon]:
    """Write one properties file per stage and return the (unstarted) workers."""
    run_dir.mkdir(parents=True, exist_ok=True)
    tuning = KclTuning.fast() if fast else KclTuning()
    daemons = []
    for stage in stages:
        properties_path = run_dir / f"{stage}.properties"
        properties_path.write_text(render_properties(settings, stage, tuning))
        for number in range(1, workers + 1):
            name = f"{stage}-{number}"
            daemon = Daemon(name, properties_path, run_dir / f"{name}.log", settings)
            daemon.env["SPANSTREAM_KCL_STAGE"] = stage
            daemons.append(daemon)
    return daemons


def supervise(daemons: list[Daemon], stop: threading.Event) -> bool:
    """Run ``daemons`` until ``stop`` is set, restarting any that exit.

    Then stops them all at once; returns True if every one stopped cleanly.
    """
    for daemon in daemons:
        daemon.start()
    while not stop.wait(1.0):
        for daemon in daemons:
            code = daemon.poll()
            if code is not None:
                logger.warning(
                    "worker %s exited with status %d; starting it again (log %s)",
                    daemon.name,
                    code,
                    daemon.log_path,
                )
                time.sleep(RESTART_DELAY_SECS)
                daemon.start()
    with ThreadPoolExecutor(max_workers=len(daemons)) as pool:
        results = list(pool.map(lambda d: d.stop(STOP_TIMEOUT_SECS), daemons))
    return all(results)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m consumers.kcl", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--workers", type=int, default=1, help="workers per stage")
    parser.add_argument("--stage", choices=["all", "spans", "traces"], default="all")
    parser.add_argument("--run-dir", type=Path, default=Path(".run/kcl"))
    parser.add_argument(
        "--fast",
        action="store_true",
        help="short failover and sync intervals (emulators, demos, tests)",
    )
    parser.add_argument(
        "--print-properties",
        action="store_true",
        help="print the rendered properties and exit",
    )
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    log_json_to_stderr(args.log_level)
    try:
        if args.workers < 1:
            raise ConfigError(f"--workers must be >= 1, got {args.workers!r}")
        settings = Settings.from_env()
        stages = stages_for(settings, args.stage)
        if args.print_properties:
            tuning = KclTuning.fast() if args.fast else KclTuning()
            for stage in stages:
                print(render_properties(settings, stage, tuning))
            return 0
        daemons = make_daemons(
            settings, stages, args.workers, args.run_dir.resolve(), args.fast
        )
    except (ConfigError, FileNotFoundError) as exc:
        logger.error("configuration error: %s", exc)
        return 2
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        logger.info("signal %d: asking every worker to shut down", signum)
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    clean = supervise(daemons, stop)
    logger.info("all workers stopped (clean: %s)", clean)
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
