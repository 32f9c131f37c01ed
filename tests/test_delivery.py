"""Delivery to sinks the orchestrator itself writes to: a real HTTP store and directories on
this machine, against the reference server on 127.0.0.1 (S3: tests/test_delivery_s3.py)."""

from __future__ import annotations

import hashlib
import random
import threading
import zlib
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import httpx
import pytest

from orchestrator import (
    Config,
    ImageDelivered,
    ImageReady,
    Orchestrator,
    TaskCancelled,
    TaskDone,
    TextToImage,
    UploadError,
    UsageError,
)
from orchestrator.config import Backoff, DeliverySettings
from orchestrator.delivery.transfer import PutPolicy, http_client, put
from orchestrator.server import FixedBackend
from orchestrator.testing import FakeClock

from serverkit import running
from sinkkit import http_store

FAST = DeliverySettings(backoff=Backoff(initial=0.001, maximum=0.002), timeout=10.0)
TEMPLATE = "{task_uuid}/{image_uuid}.{ext}"


def files_under(root: Path, pattern: str = "*") -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file())


def read(path: str | Path) -> bytes:
    return Path(path).read_bytes()


def orchestrator(server: Any, **kwargs: Any) -> Orchestrator:
    delivery = kwargs.pop("delivery", FAST)
    return Orchestrator(server.url, api_key="key-a", config=Config(delivery=delivery), **kwargs)


async def test_an_image_put_to_an_http_store_is_the_image() -> None:
    with http_store() as store:
        async with running(FixedBackend()) as server:
            async with orchestrator(server, deliver_to=[f"{store.url}/{TEMPLATE}"]) as orch:
                result = await orch.run(TextToImage(prompt="a fox", number_results=2))
                for image in result.images:
                    data = await image.read()
                    (delivery,) = image.deliveries
                    assert delivery.ok and delivery.attempts == 1
                    path = f"/{result.task_uuid}/{image.image_uuid}.jpg"
                    assert delivery.location == store.url + path
                    assert store.stored[path] == [data]
                    assert delivery.sha256 == hashlib.sha256(data).hexdigest()
                    assert delivery.bytes == len(data)
                    assert store.headers[path]["Content-Type"] == "image/jpeg"


async def test_503_503_200_gets_there() -> None:
    def script(path: str, n: int) -> tuple[int, dict[str, str]]:
        return (503, {}) if n <= 2 else (200, {})

    with http_store(script=script) as store:
        async with running(FixedBackend()) as server:
            async with orchestrator(server, deliver_to=[f"{store.url}/{TEMPLATE}"]) as orch:
                result = await orch.run(TextToImage(prompt="a fox"))
    (delivery,) = result.image.deliveries
    assert delivery.ok and delivery.attempts == 3
    assert len(store.requests) == 3 and len(store.stored) == 1


async def test_a_403_is_not_retried_and_fails_only_that_delivery(tmp_path: Path) -> None:
    with http_store(script=lambda path, n: (403, {})) as store:
        async with running(FixedBackend()) as server:
            sinks = [f"{store.url}/{TEMPLATE}", str(tmp_path)]
            async with orchestrator(server, deliver_to=sinks) as orch:
                handle = await orch.submit(TextToImage(prompt="a fox"))
                events = [event async for event in handle.events()]
                result = await handle.result()  # the task itself succeeded
                data = await result.image.read()  # while the server still hosts it
    assert len(store.requests) == 1
    refused, written = sorted(result.image.deliveries, key=lambda d: d.ok)
    assert isinstance(refused.error, UploadError) and refused.error.status_code == 403
    assert refused.error.attempts == 1 and "HTTP 403" in str(refused.error)
    assert refused.error.sink == f"{store.url}/{TEMPLATE}"
    assert written.ok and read(written.location) == data
    delivered = [e for e in events if isinstance(e, ImageDelivered)]
    assert len(delivered) == 2 and isinstance(events[-1], TaskDone)  # "stored", then done


class RecordingClock(FakeClock):
    """A fake clock whose sleeps return at once, having moved time on; it keeps the waits."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.advance(seconds)
        await anyio.lowlevel.checkpoint()


POLICY = PutPolicy(attempts=4, backoff=Backoff(initial=0.5), retry_after_cap=60.0, timeout=5.0)


async def _put(url: str, policy: PutPolicy = POLICY, clock: Any = None) -> Any:
    async with http_client() as client:
        return await put(
            client, url, b"bytes", {}, policy=policy, clock=clock or RecordingClock(),
            rng=random.Random(1), sink="store", limiter=anyio.CapacityLimiter(1),
        )  # fmt: skip


async def test_a_429_with_retry_after_waits_that_long() -> None:
    def script(path: str, n: int) -> tuple[int, dict[str, str]]:
        return (429, {"Retry-After": "7"}) if n == 1 else (200, {})

    clock = RecordingClock()
    with http_store(script=script) as store:
        outcome = await _put(f"{store.url}/x", clock=clock)
    assert outcome.attempts == 2 and clock.waits == [7.0]


async def test_retry_after_is_capped_and_5xx_backs_off_with_jitter() -> None:
    answers = {1: (503, {"Retry-After": "3600"}), 2: (502, {})}
    clock = RecordingClock()
    with http_store(script=lambda path, n: answers.get(n, (200, {}))) as store:
        outcome = await _put(f"{store.url}/x", clock=clock)
    assert outcome.attempts == 3
    assert clock.waits[0] == 60.0  # the cap, not an hour
    assert 0.5 <= clock.waits[1] <= 1.0  # backoff's second step (1.0), less its jitter


async def test_attempts_run_out_with_the_last_status_named() -> None:
    with http_store(script=lambda path, n: (500, {})) as store:
        with pytest.raises(UploadError, match=r"after 4 attempts: HTTP 500") as caught:
            await _put(f"{store.url}/x")
    assert caught.value.status_code == 500 and caught.value.attempts == 4


async def test_a_hanging_store_hits_the_timeout() -> None:
    policy = PutPolicy(attempts=1, backoff=Backoff(), retry_after_cap=1.0, timeout=0.2)
    with http_store(hang=threading.Event()) as store:
        with pytest.raises(UploadError, match=r"no answer within 0.2 s") as caught:
            await _put(f"{store.url}/x", policy)
    assert caught.value.status_code is None


async def test_uploads_in_flight_never_exceed_the_limit(tmp_path: Path) -> None:
    settings = DeliverySettings(concurrency=3, timeout=10.0)
    with http_store(hold=0.02) as store:
        async with running(FixedBackend()) as server:
            sinks = [f"{store.url}/{TEMPLATE}"]
            async with orchestrator(server, deliver_to=sinks, delivery=settings) as orch:
                tasks = [TextToImage(prompt=f"fox {i}", number_results=2) for i in range(12)]
                results = [r async for r in orch.map(tasks)]
    assert sum(len(r.images) for r in results) == 24 == len(store.stored)
    assert 1 <= store.max_in_flight <= 3


async def test_hostile_metadata_stays_inside_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "dataset"
    hostile = ["../x", "/etc/x", "a/../../b", "..", "nul\x00byte"]
    async with running(FixedBackend()) as server:
        async with orchestrator(server, deliver_to=[f"{root}/{{label}}/{{index}}.{{ext}}"]) as orch:
            specs = [TextToImage(prompt="a fox", metadata={"label": h}) for h in hostile]
            results = [r async for r in orch.map(specs)]
    files = files_under(tmp_path)
    assert len(files) == len(hostile)
    assert all(p.is_relative_to(root) and p.parent.parent == root for p in files)
    for result in results:
        (delivery,) = result.image.deliveries
        assert delivery.ok and Path(delivery.location) in files


async def test_a_task_overrides_the_sinks_and_its_metadata_fills_them(tmp_path: Path) -> None:
    async with running(FixedBackend()) as server:
        async with orchestrator(server, deliver_to=[str(tmp_path / "default")]) as orch:
            own = TextToImage(
                prompt="a fox",
                metadata={"shard": 7},
                deliver_to=[f"file://{tmp_path}/own/{{shard:03d}}-{{index}}.{{ext}}"],
            )
            result = await orch.run(own)
            plain = await orch.run(TextToImage(prompt="a fox"))
    assert result.image.deliveries[0].location == str(tmp_path / "own" / "007-0.jpg")
    assert Path(plain.image.deliveries[0].location).parent == tmp_path / "default"


async def test_bad_sinks_are_refused_before_anything_is_sent(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(UsageError, match="s3:/prefix"):
        Orchestrator(deliver_to=["s3:/prefix"])
    with pytest.raises(UsageError, match="not a writable directory|cannot create"):
        Orchestrator(deliver_to=[str(blocker / "sub")])
    with pytest.raises(UsageError, match=r"\{a\.b\}"):
        Orchestrator(deliver_to=["http://127.0.0.1:1/{a.b}"])
    async with running(FixedBackend()) as server:
        async with orchestrator(server, deliver_to=[f"{tmp_path}/{{missing}}/x.jpg"]) as orch:
            with pytest.raises(UsageError, match="uses missing"):
                await orch.submit(TextToImage(prompt="a fox"))
            assert orch.stats.submitted == 0


async def test_200_tasks_two_sinks_one_flaky_every_image_in_both_once(tmp_path: Path) -> None:
    def flaky(path: str, n: int) -> tuple[int, dict[str, str]]:
        return (503, {}) if (n == 1 and zlib.crc32(path.encode()) % 3 == 0) else (200, {})

    with http_store(script=flaky) as store:
        async with running(FixedBackend()) as server:
            sinks = [f"{store.url}/{TEMPLATE}", f"{tmp_path}/{TEMPLATE}"]
            async with orchestrator(server, deliver_to=sinks) as orch:
                tasks = (TextToImage(prompt=f"fox {i}") for i in range(200))
                results = [r async for r in orch.map(tasks)]
    assert len(results) == 200
    expected = {f"/{r.task_uuid}/{r.image.image_uuid}.jpg" for r in results}
    assert set(store.stored) == expected
    assert all(len(bodies) == 1 for bodies in store.stored.values())
    on_disk = {"/" + str(p.relative_to(tmp_path)) for p in files_under(tmp_path, "*.jpg")}
    assert on_disk == expected
    assert not files_under(tmp_path, ".*.tmp")  # no temporary file left behind
    assert all(d.ok for r in results for d in r.image.deliveries)


async def test_save_and_read_work_for_url_and_base64_images(tmp_path: Path) -> None:
    async with running(FixedBackend()) as server:
        async with orchestrator(server) as orch:
            by_url = (await orch.run(TextToImage(prompt="a fox"))).image
            inline = (await orch.run(TextToImage(prompt="a fox", return_base64_image=True))).image
            for image in (by_url, inline):
                saved = await image.save(tmp_path)
                assert saved == tmp_path / f"{image.image_uuid}.jpg"
                assert saved.read_bytes() == await image.read()
                async with httpx.AsyncClient() as client:
                    assert (await client.get(image.url)).content == saved.read_bytes()
            named = await by_url.save(tmp_path / "named.jpg")
            assert named.read_bytes() == await by_url.read()


async def test_a_server_push_is_recorded_where_it_went() -> None:
    with http_store() as store:
        async with running(FixedBackend(), allow_private_uploads=True) as server:
            async with orchestrator(server) as orch:
                upload = f"{store.url}/pushed/{{taskUUID}}-{{index}}.{{ext}}"
                spec = TextToImage(prompt="a fox", number_results=2, upload_endpoint=upload)
                result = await orch.run(spec)
    pushed = sorted(image.uploaded_to or "" for image in result.images)
    assert pushed == [f"{store.url}/pushed/{result.task_uuid}-{i}.jpg" for i in range(2)]
    assert sorted(store.url + path for path in store.stored) == pushed
    assert all(image.deliveries == () for image in result.images)  # the server did it


async def test_cancelling_a_task_that_waits_for_its_deliveries_stops_them() -> None:
    with http_store(hang=threading.Event()) as store:
        async with running(FixedBackend()) as server:
            async with orchestrator(server, deliver_to=[f"{store.url}/{TEMPLATE}"]) as orch:
                handle = await orch.submit(TextToImage(prompt="a fox"))
                async for event in handle.events():
                    if isinstance(event, ImageReady):
                        break
                # The PUT reached the store, which holds it.
                await anyio.to_thread.run_sync(store.received.wait, 10)
                handle.cancel()
                with pytest.raises(TaskCancelled):
                    await handle.result()
                await anyio.wait_all_tasks_blocked()  # the cancelled job has unwound
                assert orch.pool.in_flight == 0
                orch.pool.check_consistent()  # its slot of the in-flight limit came back
                assert orch.deliverer.uploads_in_flight == 0


async def test_closing_the_orchestrator_cancels_a_task_waiting_for_its_deliveries() -> None:
    with http_store(hang=threading.Event()) as store:
        async with running(FixedBackend()) as server:
            orch = orchestrator(server, deliver_to=[f"{store.url}/{TEMPLATE}"])
            async with orch:
                handle = await orch.submit(TextToImage(prompt="a fox"))
                await anyio.to_thread.run_sync(store.received.wait, 10)
                assert not handle.done()  # done on the wire, its PUT held by the store
            with pytest.raises(TaskCancelled):
                await handle.result()


async def test_a_directory_sink_never_writes_outside_its_root_through_a_symlink(
    tmp_path: Path,
) -> None:
    from orchestrator.delivery import DirectorySink
    from orchestrator.delivery.sinks import Payload
    from orchestrator.delivery.templates import Placeholders

    outside = tmp_path / "outside"
    outside.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    (root / "link").symlink_to(outside)
    target = DirectorySink(root / "{label}/{image_uuid}.{ext}")
    payload = Payload(b"\xff\xd8\xff-bytes", "image/jpeg", "0" * 64, b"0" * 16)

    def where(label: str) -> Placeholders:
        return Placeholders("t", "i", 0, None, "jpg", {"label": label})

    with pytest.raises(UploadError, match="is outside"):
        await target.store(payload, where("link"), None)  # type: ignore[arg-type]
    assert list(outside.iterdir()) == []
    location, _ = await target.store(payload, where("plain"), None)  # type: ignore[arg-type]
    assert location == str(root.resolve() / "plain" / "i.jpg")
    assert await anyio.Path(location).read_bytes() == payload.data
