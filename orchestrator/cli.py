"""The ``orchestrator`` command.

Subcommands:
    serve        run the reference server (prints ``listening on ws://HOST:PORT`` first)
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
    _add_serve(commands)
    return parser


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser("serve", help="run the reference server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    serve.add_argument(
        "--api-key", action="append", default=[], help="an accepted key (repeatable)"
    )
    serve.add_argument("--api-keys-file", type=Path, help="accepted keys, one per line")
    serve.add_argument("--public-url", help="base of image URLs (default http://HOST:PORT)")
    serve.add_argument("--backend", choices=("procedural", "fixed"), default="procedural")
    serve.add_argument("--workers", type=int, help="image workers (default: one per core)")
    serve.add_argument("--max-queue", type=int, default=10_000, help="queued tasks per session")
    serve.add_argument("--max-queue-total", type=int, default=100_000)
    serve.add_argument("--retention", type=float, default=120.0, help="seconds results wait")
    serve.add_argument("--image-ttl", type=float, default=3600.0, help="seconds images are hosted")
    serve.add_argument("--shutdown-grace", type=float, default=10.0)
    serve.add_argument(
        "--allow-private-uploads",
        action="store_true",
        help="let uploadEndpoint and guideImageUrl reach loopback and private addresses",
    )
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    # Imported here: ``check`` must not pay for the server's imports.
    import anyio

    from .server import ServerConfig, ServerLimits

    keys = list(args.api_key)
    if args.api_keys_file is not None:
        lines = args.api_keys_file.read_text().splitlines()
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    limits = ServerLimits(
        max_queued_per_connection=args.max_queue, max_queued_total=args.max_queue_total
    )
    config = ServerConfig(
        host=args.host,
        port=args.port,
        api_keys=tuple(keys),
        public_url=args.public_url,
        backend=args.backend,
        limits=limits,
        retention=args.retention,
        image_ttl=args.image_ttl,
        shutdown_grace=args.shutdown_grace,
        allow_private_uploads=args.allow_private_uploads,
        **({"workers": args.workers} if args.workers else {}),
    )
    return anyio.run(_serve_until_signal, config)


async def _serve_until_signal(config: Any) -> int:
    import signal

    import anyio

    from .server import ReferenceServer

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with ReferenceServer(config) as server:
            print(f"listening on {server.url}", flush=True)
            if not config.api_keys:
                print(f"api key: {server.api_key}", flush=True)
            async for signum in signals:
                print(f"stopping on {signal.Signals(signum).name}", flush=True)
                break
    print("stopped", flush=True)
    return 0


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
