"""The server's outbound HTTP: retries, the address policy, URL templates."""

from __future__ import annotations

import httpx
import pytest

from orchestrator.server.push import Pusher, PushError, expand_url
from protocol.retry import Backoff

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


def pusher(statuses: list[int], calls: list[httpx.Request], sleeps: list[float]) -> Pusher:
    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(statuses[min(len(calls), len(statuses)) - 1])

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    return Pusher(
        allow_private=True,
        retries=3,
        backoff=Backoff(initial=0.2, jitter=0),
        sleep=sleep,
        transport=httpx.MockTransport(answer),
    )


async def test_a_put_is_retried_with_backoff_until_it_succeeds() -> None:
    calls: list[httpx.Request] = []
    sleeps: list[float] = []
    push = pusher([503, 503, 200], calls, sleeps)
    await push.put("http://sink.test/a.jpg", b"\xff\xd8\xff", "image/jpeg")
    await push.aclose()
    assert len(calls) == 3 and sleeps == [0.2, 0.4]
    assert calls[-1].method == "PUT" and calls[-1].content == b"\xff\xd8\xff"
    assert calls[-1].headers["content-type"] == "image/jpeg"


async def test_a_refusal_is_not_retried_and_exhausted_retries_fail() -> None:
    calls: list[httpx.Request] = []
    push = pusher([404], calls, [])
    with pytest.raises(PushError, match="HTTP 404"):
        await push.put("http://sink.test/a.jpg", b"x", "image/jpeg")
    assert len(calls) == 1
    calls.clear()
    push = pusher([500], calls, [])
    with pytest.raises(PushError, match="HTTP 500"):
        await push.put("http://sink.test/a.jpg", b"x", "image/jpeg")
    assert len(calls) == 3


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1/x", "http://10.1.2.3/x", "http://169.254.169.254/latest", "http://[::1]/x"],
)
async def test_private_loopback_and_link_local_targets_are_refused(url: str) -> None:
    push = Pusher()
    with pytest.raises(PushError, match="private, loopback or link-local"):
        await push.check(url)
    await push.aclose()


def test_url_templates_are_filled() -> None:
    url = expand_url("https://b.test/{taskUUID}/{index}.{ext}", taskUUID="t", index=2, ext="jpg")
    assert url == "https://b.test/t/2.jpg"
