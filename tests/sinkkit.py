"""A real HTTP store on 127.0.0.1, port 0, for delivery and webhook tests: it keeps what is
PUT (or POSTed) to it, answers from a script of statuses, and can hang or hold requests to
show concurrency."""

from __future__ import annotations

import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# (status, headers) of an answer; a script maps a request number (from 1, per path) to one.
Answer = tuple[int, dict[str, str]]


@dataclass
class HttpStore:
    """What the store received and how it answers."""

    url: str = ""
    stored: dict[str, list[bytes]] = field(default_factory=lambda: defaultdict(list))
    headers: dict[str, dict[str, str]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)  # "PUT /path" (or POST) in order
    script: Callable[[str, int], Answer] = lambda path, n: (200, {})
    hang: threading.Event | None = None  # when set up, requests wait for it (then 200)
    hold: float = 0.0  # seconds each PUT is held before its answer (overlap for limits)
    received: threading.Event = field(default_factory=threading.Event)  # set at each PUT
    kept: threading.Event = field(default_factory=threading.Event)  # set once a body is kept
    in_flight: int = 0
    max_in_flight: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    _counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def answer(
        self, path: str, body: bytes, headers: dict[str, str], method: str = "PUT"
    ) -> Answer:
        with self.lock:
            self.requests.append(f"{method} {path}")
            self.received.set()
            self._counts[path] += 1
            n = self._counts[path]
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.hang is not None:
                self.hang.wait(30)
            elif self.hold:
                threading.Event().wait(self.hold)  # the server's own pace, in its thread
            status, extra = self.script(path, n)
            if 200 <= status < 300:
                with self.lock:
                    self.stored[path].append(body)
                    self.headers[path] = headers
                self.kept.set()
            return status, extra
        finally:
            with self.lock:
                self.in_flight -= 1


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        # A client that went away mid-request (a killed process) is not the store's error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)  # type: ignore[arg-type]


@contextmanager
def http_store(**settings: object) -> Iterator[HttpStore]:
    """Run an :class:`HttpStore` on 127.0.0.1, port 0, for the block."""
    store = HttpStore(**settings)  # type: ignore[arg-type]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_PUT(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            status, extra = store.answer(self.path, body, dict(self.headers), self.command)
            self.send_response(status)
            for name, value in extra.items():
                self.send_header(name, value)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_POST = do_PUT  # a webhook: recorded and answered the same way

        def do_GET(self) -> None:
            bodies = store.stored.get(self.path)
            self.send_response(200 if bodies else 404)
            data = bodies[-1] if bodies else b""
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    store.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield store
    finally:
        if store.hang is not None:
            store.hang.set()
        server.shutdown()
        server.server_close()
        thread.join(10)
