"""The ``orchestrator`` command: generate images, run the reference server, check frames.

Subcommands:
    generate PROMPT  generate images and write them to a directory (embedded server by
                     default; ``--endpoint URL --api-key KEY`` for a real one)
    serve            run the reference server (prints ``listening on ws://HOST:PORT`` first)
    check FILE       validate frames, one JSON object per line, as a peer would read them
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from protocol import RemoteProtocolError, decode, decode_from_client, decode_from_server

from . import __version__
from .client import Orchestrator
from .errors import OrchestratorError
from .specs import TextToImage

_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "any": decode,
    "client": decode_from_client,
    "server": decode_from_server,
}


_DESCRIPTION = (
    "Generate images through WebSocket image-generation services (or the embedded reference "
    "server), run that server, or check recorded frames against the protocol."
)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status. Errors are one line, never a trace."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        status: int = args.run(args)
    except (OSError, OrchestratorError) as exc:  # a missing file, a busy port, a refusal
        print(f"error: {_one_line(exc)}", file=sys.stderr)
        return 1
    except BaseExceptionGroup as group:  # from a task group: the one error inside it
        leaf = _leaf(group)
        if not isinstance(leaf, OSError | OrchestratorError):
            raise
        print(f"error: {_one_line(leaf)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status


def _leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        where = exc.filename if exc.filename is not None else ""
        return f"{exc.strerror}{f': {where}' if where else ''}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _command(commands: Any, name: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=text, description=text, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    return parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestrator", description=_DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = _command(commands, "check", "validate frames (JSON lines) against the protocol")
    check.add_argument("file", type=Path, help="frames, one JSON object per line ('-' = stdin)")
    check.add_argument(
        "--from",
        dest="sender",
        choices=sorted(_DECODERS),
        default="any",
        help="who sent the frames: a client, a server, or either",
    )
    check.set_defaults(run=_check)
    _add_generate(commands)
    _add_serve(commands)
    return parser


def _add_generate(commands: Any) -> None:
    generate = _command(commands, "generate", "generate images into a directory")
    generate.add_argument("prompt", help="what to draw")
    generate.add_argument("-n", "--number", type=int, default=1, help="images (numberResults)")
    generate.add_argument("--out", type=Path, default=Path("out"), help="directory to write")
    generate.add_argument(
        "--endpoint", action="append", default=[], help="ws:// URL (repeatable; default: embedded)"
    )
    generate.add_argument("--api-key", help="the key for --endpoint")
    generate.add_argument("--negative", help="negative prompt")
    generate.add_argument(
        "--size", type=_choice, help="a sizeId or WIDTHxHEIGHT (see protocol.tables.SIZES)"
    )
    generate.add_argument("--seed", type=int, help="seed of the first image")
    generate.add_argument("--model", help="a model id, name or AIR id")
    generate.add_argument("--steps", type=int, help="inference steps (server default: 20)")
    generate.add_argument("--deadline", type=float, default=300.0, help="seconds before giving up")
    generate.set_defaults(run=_generate)


def _choice(value: str) -> int | str:
    # A table choice: its id (a number) or its name, as the specs take them.
    return int(value) if value.isdigit() else value


def _generate(args: argparse.Namespace) -> int:
    if args.endpoint and not args.api_key:
        print("error: --api-key is required with --endpoint", file=sys.stderr)
        return 2
    try:
        paths = anyio.run(_generate_async, args)
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(path)
    print(f"wrote {len(paths)} images to {args.out}", flush=True)
    return 0


async def _generate_async(args: argparse.Namespace) -> list[Path]:
    task = TextToImage(
        prompt=args.prompt,
        negative_prompt=args.negative,
        number_results=args.number,
        size=args.size,
        seed=args.seed,
        model=args.model,
        steps=args.steps,
        return_base64_image=True,  # the bytes come with the result: no second request per image
    )
    async with Orchestrator(args.endpoint or None, api_key=args.api_key) as orch:
        result = await orch.run(task, deadline=args.deadline)
    out = anyio.Path(args.out)
    await out.mkdir(parents=True, exist_ok=True)
    paths = []
    for image in result.images:
        data = image.data() or b""
        suffix = ".png" if data.startswith(b"\x89PNG") else ".jpg"
        path = out / f"{image.image_uuid}{suffix}"
        await path.write_bytes(data)
        paths.append(Path(path))
    return paths


def _add_serve(commands: Any) -> None:
    serve = _command(commands, "serve", "run the reference server")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    serve.add_argument(
        "--api-key", action="append", default=[], help="an accepted key (repeatable)"
    )
    serve.add_argument("--api-keys-file", type=Path, help="accepted keys, one per line")
    serve.add_argument("--public-url", help="base of image URLs (default http://HOST:PORT)")
    serve.add_argument(
        "--backend",
        choices=("procedural", "fixed"),
        default="procedural",
        help="procedural: real image work; fixed: one tiny image at once, for load tests",
    )
    serve.add_argument("--workers", type=int, help="image workers (default: one per core)")
    serve.add_argument("--max-queue", type=int, default=10_000, help="queued tasks per session")
    serve.add_argument(
        "--max-queue-total", type=int, default=100_000, help="queued tasks on the whole server"
    )
    serve.add_argument(
        "--retention", type=float, default=120.0, help="seconds results wait for a resume"
    )
    serve.add_argument("--image-ttl", type=float, default=3600.0, help="seconds images are hosted")
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        default=10.0,
        help="seconds running tasks get to finish when stopping",
    )
    serve.add_argument(
        "--allow-private-uploads",
        action="store_true",
        help="let uploadEndpoint and guideImageUrl reach loopback and private addresses",
    )
    serve.set_defaults(run=_serve)


def _serve(args: argparse.Namespace) -> int:
    # Imported here: the server is the [server] extra, which a client-only install lacks.
    try:
        from .server import ServerConfig, ServerLimits
    except ImportError as exc:
        print(
            f"error: the reference server needs the [server] extra ({exc.name} is missing): "
            "pip install 'imagegen-orchestrator[server]'",
            file=sys.stderr,
        )
        return 2

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
    from .server import ReferenceServer  # the [server] extra: see _serve

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with ReferenceServer(config) as server:
            # Everything made so far (modules, schemas, tables) lives as long as the process:
            # out of the collector's sight, so its full passes walk only the tasks' objects.
            gc.freeze()
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
