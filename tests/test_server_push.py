"""The server's outbound HTTP: retries, the address policy, caps, URL templates.

Against a real HTTP server on 127.0.0.1, port 0 (stdlib), answering as each test scripts it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orchestrator.server.push import Pusher, PushError, is_public
from protocol.requests import upload_url
from protocol.retry import Backoff

pytestmark = [pytest.mark.timeout(30)]


@dataclass
class Sink:
    """What the server was asked, and what it answers (the last status repeats)."""

    statuses: list[int]
    body: bytes = b""
    trickle: threading.Event | None = None  # when set up, the body waits for it
    requests: list[tuple[str, str, dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@contextmanager
def sink(statuses: list[int], body: bytes = b"", *, trickle: bool = False) -> Iterator[Sink]:
    state = Sink(statuses, body, threading.Event() if trickle else None)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            data = self.rfile.read(length) if length else b""
            state.requests.append((self.command, self.path, dict(self.headers), data))
            status = state.statuses[min(len(state.requests), len(state.statuses)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            if state.trickle is not None:
                self.wfile.write(state.body[:1])
                self.wfile.flush()
                state.trickle.wait(10)
                self.wfile.write(state.body[1:])
            else:
                self.wfile.write(state.body)

        do_PUT = do_GET = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        if state.trickle is not None:
            state.trickle.set()
        server.shutdown()
        server.server_close()


def pusher(sleeps: list[float], **options: object) -> Pusher:
    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return Pusher(
        allow_private=True,
        retries=3,
        backoff=Backoff(initial=0.2, jitter=0),
        sleep=sleep,
        **options,  # type: ignore[arg-type]
    )


async def test_a_put_is_retried_with_backoff_until_it_succeeds() -> None:
    sleeps: list[float] = []
    with sink([503, 503, 200]) as target:
        push = pusher(sleeps)
        await push.put(f"{target.url}/a.jpg", b"\xff\xd8\xff", "image/jpeg")
        await push.aclose()
    assert len(target.requests) == 3 and sleeps == [0.2, 0.4]
    method, path, headers, data = target.requests[-1]
    assert (method, path, data) == ("PUT", "/a.jpg", b"\xff\xd8\xff")
    assert headers["Content-Type"] == "image/jpeg"
    assert headers["Host"] == target.url.removeprefix("http://")  # the name, not the pin


async def test_a_refusal_is_not_retried_and_exhausted_retries_fail() -> None:
    with sink([404]) as target:
        push = pusher([])
        with pytest.raises(PushError, match="HTTP 404"):
            await push.put(f"{target.url}/a.jpg", b"x", "image/jpeg")
        assert len(target.requests) == 1
    with sink([500]) as target:
        with pytest.raises(PushError, match="HTTP 500"):
            await push.put(f"{target.url}/a.jpg", b"x", "image/jpeg")
        assert len(target.requests) == 3
    await push.aclose()


async def test_a_fetch_is_capped_in_bytes_and_in_time_as_a_whole() -> None:
    with sink([200], b"x" * 5000) as target:
        push = pusher([])
        assert len(await push.get(f"{target.url}/g.png", 5000)) == 5000
        with pytest.raises(PushError, match="larger than 4999 bytes"):
            await push.get(f"{target.url}/g.png", 4999)
        await push.aclose()
    with sink([200], b"x" * 100, trickle=True) as target:
        push = pusher([], timeout=0.5)  # each read is quick; the whole is not
        with pytest.raises(PushError, match="no whole answer within 0.5 s"):
            await push.get(f"{target.url}/g.png", 1000)
        await push.aclose()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest",
        "http://[::1]/x",
        "http://[::ffff:127.0.0.1]/x",  # IPv4-mapped
        "http://[::10.0.0.1]/x",  # IPv4-compatible
        "http://[64:ff9b::a9fe:a9fe]/x",  # NAT64 of 169.254.169.254
        "http://[2002:c0a8:0101::1]/x",  # 6to4 of 192.168.1.1
        "http://localhost/x",
    ],
)
async def test_private_loopback_and_link_local_targets_are_refused(url: str) -> None:
    push = Pusher()
    with pytest.raises(PushError, match="private, loopback or link-local"):
        await push.check(url)
    await push.aclose()


def test_public_addresses_pass_even_inside_ipv6_forms() -> None:
    assert is_public("8.8.8.8") and is_public("2606:4700::1111")
    assert is_public("64:ff9b::808:808")  # NAT64 of 8.8.8.8
    assert not is_public("64:ff9b::a00:1") and not is_public("::ffff:192.168.0.1")


def test_url_templates_are_filled() -> None:
    template = "https://b.test/{taskUUID}/{index}.{ext}"
    url = upload_url(template, task_uuid="t", image_uuid="i", index=2, ext="jpg")
    assert url == "https://b.test/t/2.jpg"
