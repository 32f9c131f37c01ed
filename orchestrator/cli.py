"""The ``orchestrator`` command: generate images, run the reference server, check frames.

Subcommands:
    run INPUT        bulk generation: a prompt file (JSON lines, CSV or text) in, a dataset
                     (images, ``manifest.jsonl``, a ledger that makes a rerun resume) out
    generate PROMPT  generate images and deliver them: to a directory (``--out``), and to
                     ``--upload`` sinks (paths, ``http(s)://`` templates, ``s3://``); embedded
                     server by default, ``--endpoint URL --api-key KEY`` for a real one
    serve            run the reference server (prints ``listening on ws://HOST:PORT`` first)
    ui               a web page on 127.0.0.1 that streams each image and progress step
    check FILE       validate frames, one JSON object per line, as a peer would read them
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import orjson

from protocol import RemoteProtocolError, decode, decode_from_client, decode_from_server
from protocol.dialects import DEFAULT_DIALECT, DIALECTS
from protocol.tables import size_id_for

from . import __version__
from .client import Orchestrator
from .errors import OrchestratorError
from .options import add_dialect, choice, dialect_config, endpoint_has_key
from .results import GeneratedImage, TaskResult
from .serving import add_embedded, embedded_settings
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
    check.add_argument(
        "--dialect",
        choices=sorted(DIALECTS),
        default=DEFAULT_DIALECT,
        help="the seed's frames, or the current Runware dialect's (arrays of tasks)",
    )
    check.set_defaults(run=_check)
    _add_run(commands)
    _add_generate(commands)
    _add_serve(commands)
    _add_ui(commands)
    return parser


def _add_generate(commands: Any) -> None:
    generate = _command(commands, "generate", "generate images and deliver them")
    generate.add_argument("prompt", help="what to draw")
    generate.add_argument("-n", "--number", type=int, default=1, help="images (numberResults)")
    generate.add_argument(
        "--out", help="directory (or path template) to write; default 'out' unless --upload"
    )
    generate.add_argument(
        "--upload",
        action="append",
        default=[],
        metavar="TEMPLATE",
        help="a sink too (repeatable): a path, file://, http(s):// URL template or s3:// URI; "
        "placeholders {task_uuid} {image_uuid} {index} {seed} {ext}",
    )
    generate.add_argument(
        "--json", action="store_true", help="print a JSON line per image instead of its path"
    )
    generate.add_argument(
        "--endpoint", action="append", default=[], help="ws:// URL (repeatable; default: embedded)"
    )
    generate.add_argument("--api-key", help="the key for --endpoint")
    add_dialect(generate)
    generate.add_argument("--negative", help="negative prompt")
    generate.add_argument(
        "--size",
        type=choice,
        help="a sizeId or WIDTHxHEIGHT (a size outside protocol.tables.SIZES is sent as "
        "width and height)",
    )
    generate.add_argument("--seed", type=int, help="seed of the first image")
    generate.add_argument("--model", help="a model id, name or AIR id")
    generate.add_argument("--steps", type=int, help="inference steps (server default: 20)")
    generate.add_argument("--deadline", type=float, default=300.0, help="seconds before giving up")
    add_embedded(generate)
    generate.set_defaults(run=_generate)


def _generate(args: argparse.Namespace) -> int:
    if not endpoint_has_key(args):
        return 2
    try:
        embedded = embedded_settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.out if args.out is not None or args.upload else "out"
    sinks = ([out] if out is not None else []) + list(args.upload)
    try:
        # Sinks are built (directories created and checked) before anything is sent.
        orch = Orchestrator(
            args.endpoint or None,
            api_key=args.api_key,
            config=dialect_config(args),
            deliver_to=sinks,
            embedded=embedded,
        )
        result = anyio.run(_generate_async, orch, args)
    except OrchestratorError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    failed = 0
    for image in result.images:
        for delivery in image.deliveries:
            if delivery.error is not None:
                failed += 1
                print(f"error: {_one_line(delivery.error)}", file=sys.stderr)
        if args.json:
            print(orjson.dumps(_image_line(args.prompt, image)).decode())
        elif out is not None:
            print(next((d.location for d in image.deliveries if d.sink == out and d.ok), ""))
    summary = sys.stderr if args.json else sys.stdout  # --json: stdout is JSON lines only
    if out is not None:
        wrote = sum(d.ok for i in result.images for d in i.deliveries if d.sink == out)
        print(f"wrote {wrote} images to {out}", file=summary)
    if args.upload:
        total = len(result.images) * len(args.upload)
        stored = sum(d.ok for i in result.images for d in i.deliveries if d.sink != out)
        print(f"delivered {stored} of {total} to --upload sinks", file=summary, flush=True)
    return 1 if failed else 0


def _free_size(size: int | str | None) -> tuple[int | str | None, int | None, int | None]:
    # "WxH" outside the sizeId table is a free size (width and height), not a table name.
    width, x, height = str(size).lower().partition("x")
    if not (x and width.isdigit() and height.isdigit()):
        return size, None, None
    try:
        return size_id_for(int(width), int(height)), None, None
    except LookupError:
        return None, int(width), int(height)


async def _generate_async(orch: Orchestrator, args: argparse.Namespace) -> TaskResult:
    size, width, height = _free_size(args.size)
    task = TextToImage(
        prompt=args.prompt,
        negative_prompt=args.negative,
        number_results=args.number,
        size=size,
        width=width,
        height=height,
        seed=args.seed,
        model=args.model,
        steps=args.steps,
        return_base64_image=True,  # the bytes come with the result: no second request per image
    )
    async with orch:
        return await orch.run(task, deadline=args.deadline)


def _image_line(prompt: str, image: GeneratedImage) -> dict[str, Any]:
    stored = [
        {"sink": d.sink, "location": d.location, "bytes": d.bytes, "sha256": d.sha256}
        for d in image.deliveries
        if d.ok
    ]
    failed = [{"sink": d.sink, "error": str(d.error)} for d in image.deliveries if not d.ok]
    sha256 = next((d.sha256 for d in image.deliveries if d.sha256), None)
    line = {
        "prompt": prompt,
        "seed": image.seed,
        "imageUUID": image.image_uuid,
        "taskUUID": image.task_uuid,
        "sha256": sha256,
        "stored": stored,
    }
    return line | ({"failed": failed} if failed else {})


def _add_run(commands: Any) -> None:
    from .bulk.command import add_run

    add_run(_command(commands, "run", "generate a dataset from a prompt file, resumably"))


def _add_serve(commands: Any) -> None:
    from .serving import add_serve

    add_serve(_command(commands, "serve", "run the reference server"))


def _add_ui(commands: Any) -> None:
    from .ui.command import add_ui

    add_ui(_command(commands, "ui", "a web page that streams images as they are made"))


def _check(args: argparse.Namespace) -> int:
    legacy = args.dialect == DEFAULT_DIALECT
    decoder = _DECODERS[args.sender] if legacy else _current(args.sender)
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
                print(f"line {number}: ok {_names(message)}")
    return 1 if failures else 0


def _current(sender: str) -> Callable[[bytes], Any]:
    from protocol import runware

    def decode_frame(line: bytes) -> Any:
        if sender == "server":
            return runware.decode_from_server(line)
        if sender == "client":
            for task in (tasks := runware.decode_from_client(line)):
                if isinstance(task, runware.Refused):
                    raise task.error
            return tasks
        return runware.decode(line)

    return decode_frame


def _names(message: Any) -> str:
    # A legacy frame is one message; a current one, a list of tasks or items.
    if not isinstance(message, list):
        return str(message.wire_name)
    return ", ".join(getattr(m, "task_type", None) or m.wire_name for m in message)


if __name__ == "__main__":
    raise SystemExit(main())
