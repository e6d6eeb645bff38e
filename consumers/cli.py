"""The ``spanstream`` command: one entry point for the runtime shells and tools.

``spanstream local``  run the local runner (``python -m consumers.local``)
``spanstream kcl``    run KCL MultiLangDaemon workers (``python -m consumers.kcl``)
``spanstream demo``   the demo (``python -m consumers.demo``)
``spanstream traffic`` put generated traffic on a stream
                      (``python -m spanstream.traffic``)
``spanstream dlq``    list, show and re-drive dead letters
                      (``python -m consumers.dlq``)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence


def _local(argv: Sequence[str]) -> int:
    from consumers.local.__main__ import main

    return main(argv)


def _kcl(argv: Sequence[str]) -> int:
    from consumers.kcl.__main__ import main

    return main(argv)


def _demo(argv: Sequence[str]) -> int:
    from consumers.demo import main

    return main(argv)


def _traffic(argv: Sequence[str]) -> int:
    from spanstream.traffic.__main__ import main

    return main(argv)


def _dlq(argv: Sequence[str]) -> int:
    from consumers.dlq import main

    return main(argv)


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "local": _local,
    "kcl": _kcl,
    "demo": _demo,
    "traffic": _traffic,
    "dlq": _dlq,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Dispatch ``spanstream COMMAND ...``; return the command's exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        return 2
    return COMMANDS[args[0]](args[1:])


if __name__ == "__main__":
    sys.exit(main())
