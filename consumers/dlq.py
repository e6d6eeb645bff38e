"""List, show and re-drive dead letters: ``spanstream dlq``.

``spanstream dlq list [--stream S [--shard ID]] [--redriven] [--json]``
    one line per dead letter: stream, shard, position (sequence number and
    sub-sequence number), stage, reason (cut short), size of the original
    bytes, key. ``--redriven`` lists those already re-driven instead.
``spanstream dlq show KEY [--bytes-out FILE] [--json]``
    one dead letter's metadata (and, for a re-driven one, where it was put);
    ``--bytes-out`` writes its original bytes to FILE.
``spanstream dlq redrive [--stream S [--shard ID]] [--to-stream T]
[--dry-run] [--limit N]``
    put each dead letter's original bytes back on the stream it came from
    (or T), then move it below ``{dead_letter_prefix}redriven/``. See
    `spanstream.deadletters.redrive` for the order of operations and what a
    crash costs.

Settings (bucket, prefix, endpoints) come from ``SPANSTREAM_*`` like every
other command. Nothing prints a record's bytes: they are customer data.
Results go to stdout, logs to stderr (JSON lines). Exit status: 0 when all
went well, 1 when some dead letter could not be read or re-driven (each is
named), 2 for a usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from consumers.logs import log_json_to_stderr
from spanstream.aws import make_client
from spanstream.config import Settings
from spanstream.deadletters import (
    DeadLetterSummary,
    Outcome,
    Redriver,
    RedriveRequest,
    RedriveResult,
    UnreadableDeadLetter,
    list_summaries,
    redrive_marks,
    summarise,
    write_record_bytes,
)
from spanstream.errors import ConfigError, SinkError
from spanstream.model import DeadLetter
from spanstream.sinks.deadletter import REDRIVEN_FOLDER, read_dead_letter

logger = logging.getLogger("consumers.dlq")

REASON_MAX_CHARS = 60
LIST_HEADER = ("STREAM", "SHARD", "POSITION", "STAGE", "REASON", "BYTES", "KEY")
_CONTROL_CHARS = {code: " " for code in (*range(0x20), 0x7F)}


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``spanstream dlq ...``; return the exit status (0, 1 or 2)."""
    parser = _parser()
    args = parser.parse_args(argv)
    if getattr(args, "shard", None) and not args.stream:
        parser.error("--shard needs --stream")
    if getattr(args, "bytes_out", None) == "-":
        parser.error("--bytes-out needs a file: record bytes never go to stdout")
    log_json_to_stderr(args.log_level)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        logger.error("configuration error: %s", exc)
        return 2
    command: Callable[[argparse.Namespace, Settings], int] = args.run
    try:
        return command(args, settings)
    except (SinkError, ClientError, BotoCoreError) as exc:
        # Listing the bucket failed (no such bucket, no permission, no
        # endpoint): nothing was done past what was already printed.
        logger.error("dlq failed: %s", exc)
        print(f"spanstream dlq: {exc}", file=sys.stderr)
        return 1


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="WARNING", help="of stderr's logs")
    parser = argparse.ArgumentParser(
        prog="spanstream dlq",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    add = partial(commands.add_parser, parents=[common])

    listing = add("list", help="one line per dead letter")
    _add_selection(listing)
    listing.add_argument(
        "--redriven", action="store_true", help="list the re-driven ones instead"
    )
    listing.add_argument("--json", action="store_true", help="one JSON object a line")
    listing.set_defaults(run=run_list)

    show = add("show", help="one dead letter's metadata")
    show.add_argument("key", metavar="KEY", help="the dead letter's S3 key")
    show.add_argument("--bytes-out", metavar="FILE", help="write its original bytes")
    show.add_argument("--json", action="store_true", help="as one JSON object")
    show.set_defaults(run=run_show)

    redrive = add("redrive", help="put dead letters back on a stream")
    _add_selection(redrive)
    redrive.add_argument(
        "--to-stream", metavar="T", help="put them on T (default: where they came from)"
    )
    redrive.add_argument(
        "--dry-run", action="store_true", help="say what would be put; change nothing"
    )
    redrive.add_argument(
        "--limit", type=_positive_int, metavar="N", help="re-drive at most N"
    )
    redrive.set_defaults(run=run_redrive)
    return parser


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stream", metavar="S", help="only dead letters of stream S")
    parser.add_argument("--shard", metavar="ID", help="only those of shard ID of S")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# -- list ------------------------------------------------------------------
def run_list(args: argparse.Namespace, settings: Settings) -> int:
    """Print one line per dead letter; 1 if some could not be read."""
    s3 = make_client("s3", settings)
    listed = list_summaries(s3, settings, args.stream, args.shard, args.redriven)
    return print_listing(listed, as_json=args.json)


def print_listing(
    listed: Iterable[DeadLetterSummary | UnreadableDeadLetter], as_json: bool
) -> int:
    """Print ``listed`` as tab-separated lines (or JSON lines); return 0 or 1."""
    if not as_json:
        print("\t".join(LIST_HEADER))
    unreadable = 0
    count = 0
    for item in listed:
        if isinstance(item, UnreadableDeadLetter):
            unreadable += 1
            print(f"unreadable {item.key}: {one_line(item.error)}", file=sys.stderr)
            continue
        count += 1
        print(json.dumps(summary_document(item)) if as_json else list_line(item))
    logger.info("listed %d dead letters, %d unreadable", count, unreadable)
    return 1 if unreadable else 0


def list_line(summary: DeadLetterSummary) -> str:
    """Return the tab-separated list line of ``summary``."""
    fields = (
        summary.stream,
        summary.shard_id,
        summary.position,
        summary.stage,
        one_line(summary.reason, REASON_MAX_CHARS),
        str(summary.record_size_bytes),
        summary.key,
    )
    return "\t".join(one_line(field) for field in fields)


def one_line(text: str, max_chars: int | None = None) -> str:
    """Return ``text`` without control characters, cut to ``max_chars`` with …."""
    flat = text.translate(_CONTROL_CHARS)
    if max_chars is not None and len(flat) > max_chars:
        return flat[: max_chars - 1] + "…"
    return flat


def summary_document(summary: DeadLetterSummary) -> dict[str, Any]:
    """Return ``summary`` as a JSON-ready dict (no record bytes in it)."""
    return {**summary._asdict(), "position": summary.position}


# -- show ------------------------------------------------------------------
def run_show(args: argparse.Namespace, settings: Settings) -> int:
    """Print one dead letter's metadata, write its bytes if asked; 0 or 1."""
    s3 = make_client("s3", settings)
    try:
        dead_letter = read_dead_letter(s3, settings, args.key)
        document = summary_document(summarise(args.key, dead_letter))
        if is_redriven_key(settings, args.key):
            document["redriven"] = redrive_marks(s3, settings, args.key)
    except SinkError as exc:
        print(f"cannot show {args.key}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(document) if args.json else show_text(document))
    if args.bytes_out:
        return write_bytes(dead_letter, args.bytes_out)
    return 0


def is_redriven_key(settings: Settings, key: str) -> bool:
    return key.startswith(settings.dead_letter_prefix + REDRIVEN_FOLDER)


def show_text(document: dict[str, Any]) -> str:
    """Return ``name: value`` lines of a summary document (nested ones flat)."""
    flat: dict[str, Any] = {}
    for name, value in document.items():
        flat.update(value if isinstance(value, dict) else {name: value})
    lines = [f"{name}: {one_line(str(value))}" for name, value in flat.items()]
    arrival = datetime.fromtimestamp(document["arrival_unix_millis"] / 1000, UTC)
    lines.append(f"arrival_time: {arrival.isoformat(timespec='milliseconds')}")
    return "\n".join(lines)


def write_bytes(dead_letter: DeadLetter, path: str) -> int:
    """Write the original bytes to ``path``; say so on stderr; return 0 or 1."""
    try:
        written = write_record_bytes(dead_letter, path)
    except (OSError, ValueError) as exc:
        print(f"cannot write the record bytes to {path}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {written} bytes to {path}", file=sys.stderr)
    return 0


# -- redrive ---------------------------------------------------------------
def run_redrive(args: argparse.Namespace, settings: Settings) -> int:
    """Re-drive the selected dead letters; 1 if some failed (each is named)."""
    s3, kinesis = (make_client(name, settings) for name in ("s3", "kinesis"))
    request = RedriveRequest(
        stream=args.stream,
        shard_id=args.shard,
        to_stream=args.to_stream,
        dry_run=args.dry_run,
        limit=args.limit,
    )
    logger.info("re-driving dead letters: %s", request)
    return print_redrive(Redriver(s3, kinesis, settings).redrive(request))


def print_redrive(results: Iterable[RedriveResult]) -> int:
    """Print one line per outcome and a summary; return 1 if any failed."""
    counts = dict.fromkeys(Outcome, 0)
    failed: list[RedriveResult] = []
    for result in results:
        counts[result.outcome] += 1
        print(redrive_line(result))
        if result.outcome is Outcome.FAILED:
            failed.append(result)
    print(", ".join(f"{outcome.value}: {count}" for outcome, count in counts.items()))
    for result in failed:
        print(f"not re-driven: {result.key}: {one_line(result.error)}", file=sys.stderr)
    logger.info("re-drive done: %s", {o.value: n for o, n in counts.items()})
    return 1 if failed else 0


def redrive_line(result: RedriveResult) -> str:
    """Return the line that reports ``result``."""
    if result.outcome is Outcome.FAILED:
        return f"failed\t{result.key}\t{one_line(result.error)}"
    if result.outcome is Outcome.ALREADY_REDRIVEN:
        return f"already-redriven\t{result.key}"
    where = result.target_stream
    if result.outcome is Outcome.REDRIVEN:
        where += f"/{result.shard_id}@{result.sequence_number}"
    return (
        f"{result.outcome.value}\t{result.key}\t-> {where}\t"
        f"partition key {result.partition_key}, {result.record_size_bytes} bytes"
    )


if __name__ == "__main__":
    sys.exit(main())
