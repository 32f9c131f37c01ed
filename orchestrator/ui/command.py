"""``orchestrator ui``: the web page on 127.0.0.1, on the embedded server by default.

Only the parser is built at start-up; Starlette and uvicorn are imported when the command
runs, so that a client-only install gets a one-line hint instead of a trace.
"""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial
from typing import Any

import anyio

from protocol.tables import DEFAULT_EXTENSIONS

from ..client import Orchestrator
from ..config import Config
from ..serving import add_embedded, embedded_settings

__all__ = ["add_ui", "run_ui", "ui_config"]


def add_ui(command: argparse.ArgumentParser) -> None:
    """The ``ui`` command's options."""
    command.add_argument(
        "--endpoint", action="append", default=[], help="ws:// URL (repeatable; default: embedded)"
    )
    command.add_argument("--api-key", help="the key for --endpoint")
    command.add_argument("--host", default="127.0.0.1", help="address the page is served on")
    command.add_argument("--port", type=int, default=0, help="the page's port (0: a free one)")
    add_embedded(command)
    command.set_defaults(run=run_ui)


def ui_config() -> Config:
    """The orchestrator's settings for a page: every extension, previews included."""
    return Config(extensions=DEFAULT_EXTENSIONS | {"preview"})


def run_ui(args: argparse.Namespace) -> int:
    """Serve the page until SIGINT or SIGTERM; print its URL first."""
    if args.endpoint and not args.api_key:
        print("error: --api-key is required with --endpoint", file=sys.stderr)
        return 2
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        print(
            f"error: the web page needs the [ui] extra ({exc.name} is missing): "
            "pip install 'imagegen-orchestrator[ui]'",
            file=sys.stderr,
        )
        return 2
    try:
        embedded = embedded_settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    orch = Orchestrator(
        args.endpoint or None, api_key=args.api_key, config=ui_config(), embedded=embedded
    )
    return anyio.run(_serve, orch, args.host, args.port)


async def _serve(orch: Orchestrator, host: str, port: int) -> int:
    from ..asgi import serve_http
    from .app import create_app

    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with orch, anyio.create_task_group() as tg:
            bound: Any = await tg.start(partial(serve_http, create_app(orch), host, port))
            print(f"ui on http://{host}:{bound}/", flush=True)
            print(f"endpoints: {', '.join(orch.endpoints)}", flush=True)
            async for signum in signals:
                print(f"stopping on {signal.Signals(signum).name}", flush=True)
                break
            tg.cancel_scope.cancel()
    print("stopped", flush=True)
    return 0
