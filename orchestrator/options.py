"""Command-line options more than one command takes (the client's side of the CLI)."""

from __future__ import annotations

import argparse
import sys

from protocol.dialects import DEFAULT_DIALECT, DIALECTS

from .config import Config

__all__ = ["add_dialect", "choice", "dialect_config", "endpoint_has_key"]


def add_dialect(command: argparse.ArgumentParser) -> None:
    """``--dialect``: what the endpoints speak."""
    command.add_argument(
        "--dialect",
        choices=sorted(DIALECTS),
        default=DEFAULT_DIALECT,
        help="what the endpoints speak: the seed's frames (legacy) or the current Runware "
        "dialect (runware, the service today)",
    )


def dialect_config(args: argparse.Namespace) -> Config | None:
    """The orchestrator's settings ``--dialect`` asks for (None: the defaults)."""
    return None if args.dialect == DEFAULT_DIALECT else Config(dialect=args.dialect)


def endpoint_has_key(args: argparse.Namespace) -> bool:
    """Whether ``--endpoint`` came with ``--api-key`` (said on stderr when not)."""
    if args.endpoint and not args.api_key:
        print("error: --api-key is required with --endpoint", file=sys.stderr)
        return False
    return True


def choice(value: str) -> int | str:
    """A table choice: its id (a number) or its name, as the specs take them."""
    return int(value) if value.isdigit() else value
