"""``orchestrator serve``: the reference server on the command line.

It prints ``listening on ws://HOST:PORT`` first (tests and benches read that line), then
the generated key when none was given, then ``http on http://HOST:PORT`` for the four other
seed APIs, then what the backend runs each task type on.
"""

from __future__ import annotations

import argparse
import gc
import signal
import sys
from pathlib import Path
from typing import Any

import anyio

__all__ = [
    "BACKEND_CHOICES",
    "add_diffusion",
    "add_embedded",
    "add_serve",
    "diffusion_settings",
    "embedded_settings",
    "run_serve",
]

#: The server's backends by name (``orchestrator.server.BACKEND_NAMES``, which a
#: client-only install cannot import to build its parser; a test holds them equal).
BACKEND_CHOICES = ("procedural", "fixed", "diffusers")
_BACKEND_HELP = (
    "procedural: real image work; fixed: one tiny image at once, for load tests; "
    "diffusers: Stable Diffusion from --model-dir (the [diffusion] extra)"
)


def add_diffusion(command: argparse.ArgumentParser) -> None:
    """The ``diffusers`` backend's options (``serve``, and the embedded server's)."""
    group = command.add_argument_group("the diffusers backend")
    group.add_argument("--model-dir", help="a diffusers pipeline directory (local files only)")
    group.add_argument(
        "--device", help="cuda, cuda:N, mps or cpu (default: cuda when present, else cpu)"
    )
    group.add_argument(
        "--dtype",
        choices=("float32", "float16", "bfloat16"),
        help="default: float16 on a GPU, float32 on the CPU",
    )
    group.add_argument(
        "--controlnet",
        action="append",
        default=[],
        metavar="PREPROCESSOR=DIR",
        help="a ControlNet model directory for one preprocessor, e.g. canny=DIR (repeatable)",
    )
    group.add_argument(
        "--lora-dir", help="LoRA files, each named by its model id (':' and '@' as '_')"
    )
    group.add_argument("--max-batch", type=int, default=4, help="images per forward pass at most")
    group.add_argument(
        "--batch-tasks",
        action="store_true",
        help="let text-to-image tasks that queue share a forward pass (faster under load; "
        "an image then depends on its batch by a rounding step here and there)",
    )


def add_embedded(command: argparse.ArgumentParser) -> None:
    """``--backend`` and the diffusers options, for the embedded server of ``run`` and
    ``generate`` (no ``--endpoint``)."""
    command.add_argument(
        "--backend", choices=BACKEND_CHOICES, help=f"the embedded server's: {_BACKEND_HELP}"
    )
    add_diffusion(command)


def embedded_settings(args: argparse.Namespace) -> dict[str, Any] | None:
    """The embedded server's settings from ``add_embedded``'s options (``None``: none
    given). ``--model-dir`` alone means ``--backend diffusers``. Raises ``ValueError``."""
    diffusion = diffusion_settings(args)
    backend = args.backend or ("diffusers" if args.model_dir else None)
    given = backend is not None or any(diffusion[name] for name in _DIFFUSION_FLAGS)
    if given and args.endpoint:
        raise ValueError("--backend and its options are the embedded server's: not with --endpoint")
    if not given:
        return None
    return {"backend": backend or "procedural", "diffusion": diffusion}


_DIFFUSION_FLAGS = ("model_dir", "device", "dtype", "controlnets", "lora_dir", "batch_tasks")


def diffusion_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``diffusion`` field of ServerConfig from the options above."""
    controlnets = {}
    for pair in args.controlnet:
        name, equals, path = pair.partition("=")
        if not equals or not name or not path:
            raise ValueError(f"--controlnet {pair!r}: must be PREPROCESSOR=DIR")
        controlnets[name] = path
    return {
        "model_dir": args.model_dir,
        "device": args.device,
        "dtype": args.dtype,
        "controlnets": controlnets,
        "lora_dir": args.lora_dir,
        "max_batch": args.max_batch,
        "batch_tasks": args.batch_tasks,
    }


def add_serve(serve: argparse.ArgumentParser) -> None:
    """The ``serve`` command's options."""
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    serve.add_argument(
        "--api-key", action="append", default=[], help="an accepted key (repeatable)"
    )
    serve.add_argument("--api-keys-file", type=Path, help="accepted keys, one per line")
    serve.add_argument("--public-url", help="base of image URLs (default http://HOST:PORT)")
    serve.add_argument(
        "--http-port",
        type=int,
        default=0,
        help="the four other seed APIs over HTTP on this port (0: any free one, printed; "
        "-1: not served)",
    )
    serve.add_argument("--backend", choices=BACKEND_CHOICES, help=_BACKEND_HELP)
    add_diffusion(serve)
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
    serve.set_defaults(run=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    """Run the reference server until SIGINT or SIGTERM."""
    # Imported here: the server is the [server] extra, which a client-only install lacks.
    try:
        from .server import DiffusionSettings, ServerConfig, ServerLimits
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
    try:
        diffusion = DiffusionSettings(**diffusion_settings(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    config = ServerConfig(
        diffusion=diffusion,
        host=args.host,
        port=args.port,
        api_keys=tuple(keys),
        public_url=args.public_url,
        backend=args.backend or ("diffusers" if args.model_dir else "procedural"),
        limits=limits,
        retention=args.retention,
        image_ttl=args.image_ttl,
        shutdown_grace=args.shutdown_grace,
        allow_private_uploads=args.allow_private_uploads,
        http_port=None if args.http_port < 0 else args.http_port,
        **({"workers": args.workers} if args.workers else {}),
    )
    return anyio.run(_serve_until_signal, config)


async def _serve_until_signal(config: Any) -> int:
    from .server import BackendError

    try:
        return await _serve(config)
    except BackendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


async def _serve(config: Any) -> int:
    from .server import ReferenceServer, describe  # the [server] extra: see run_serve

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with ReferenceServer(config) as server:
            # Everything made so far (modules, schemas, tables) lives as long as the process:
            # out of the collector's sight, so its full passes walk only the tasks' objects.
            gc.freeze()
            print(f"listening on {server.url}", flush=True)
            if not config.api_keys:
                print(f"api key: {server.api_key}", flush=True)
            if server.http_port is not None:
                print(f"http on {server.http_url}", flush=True)
            for line in describe(server.backend):
                print(line, flush=True)
            async for signum in signals:
                print(f"stopping on {signal.Signals(signum).name}", flush=True)
                break
    print("stopped", flush=True)
    return 0
