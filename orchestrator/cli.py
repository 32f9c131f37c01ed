"""The ``orchestrator`` command.

Subcommands:
    check FILE   validate frames, one JSON object per line, as a peer would read them
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from protocol import RemoteProtocolError, decode, decode_from_client, decode_from_server

from . import __version__

_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "any": decode,
    "client": decode_from_client,
    "server": decode_from_server,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    status: int = args.run(args)
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser("check", help="validate frames (JSON lines) against the protocol")
    check.add_argument("file", type=Path, help="frames, one JSON object per line ('-' = stdin)")
    check.add_argument(
        "--from",
        dest="sender",
        choices=sorted(_DECODERS),
        default="any",
        help="who sent the frames: a client, a server, or either (default)",
    )
    check.set_defaults(run=_check)
    return parser


def _check(args: argparse.Namespace) -> int:
    decoder = _DECODERS[args.sender]
    lines = sys.stdin.buffer if str(args.file) == "-" else args.file.open("rb")
    failures = 0
    with lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                message = decoder(line)
            except RemoteProtocolError as exc:
                failures += 1
                print(f"line {number}: {exc}")
            else:
                print(f"line {number}: ok {message.wire_name}")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
