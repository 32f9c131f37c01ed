"""The s3:// sink against a real S3-compatible server (moto's server mode) on 127.0.0.1."""

from __future__ import annotations

import base64
import hashlib
import random
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import pytest

from orchestrator import Config, Orchestrator, TextToImage, UploadError
from orchestrator.config import Backoff, DeliverySettings
from orchestrator.delivery import S3Sink
from orchestrator.delivery.sinks import Payload, Transfers
from orchestrator.delivery.templates import Placeholders
from orchestrator.delivery.transfer import PutPolicy, http_client
from orchestrator.server import FixedBackend
from orchestrator.timers import SystemClock

from conftest import component
from serverkit import running
from sinkkit import http_store

botocore_session = component("botocore.session", "botocore")
moto_server = component("moto.server", "moto[server]")


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Any]]:
    """An S3 server on 127.0.0.1, port 0, with a bucket ``shots``; its URL and a client."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    client = botocore_session.get_session().create_client("s3", endpoint_url=url)
    client.create_bucket(Bucket="shots")
    try:
        yield url, client
    finally:
        server.stop()


async def test_objects_land_under_their_keys_with_type_and_checksum(s3: tuple[str, Any]) -> None:
    url, client = s3
    sink = S3Sink("s3://shots/run-1/{task_uuid}/{index}.{ext}", endpoint_url=url)
    async with running(FixedBackend()) as server:
        config = Config(delivery=DeliverySettings(timeout=10.0))
        orch = Orchestrator(server.url, api_key="key-a", config=config, deliver_to=[sink])
        async with orch:
            result = await orch.run(TextToImage(prompt="a fox", number_results=2))
            datas = [await image.read() for image in result.images]
    for index, (image, data) in enumerate(zip(result.images, datas, strict=True)):
        key = f"run-1/{result.task_uuid}/{index}.jpg"
        (delivery,) = image.deliveries
        assert delivery.ok and delivery.location == f"s3://shots/{key}"
        stored = client.get_object(Bucket="shots", Key=key)
        assert stored["Body"].read() == data
        assert stored["ContentType"] == "image/jpeg"
        assert stored["ETag"].strip('"') == hashlib.md5(data).hexdigest()
        assert stored["Metadata"]["sha256"] == hashlib.sha256(data).hexdigest()
        assert "X-Amz-Signature" not in str(delivery)  # no credential in the record


async def test_each_put_carries_and_signs_its_content_md5(s3: tuple[str, Any]) -> None:
    # Stores that check Content-MD5 (S3 does; moto's server does not) refuse a corrupted
    # body: the sink sends the header, and signs it, so it cannot be dropped on the way.
    body = b"\xff\xd8\xff an image"
    md5 = hashlib.md5(body).digest()
    payload = Payload(body, "image/jpeg", hashlib.sha256(body).hexdigest(), md5)
    where = Placeholders("t", "i", 0, None, "jpg", {})
    policy = PutPolicy(attempts=1, backoff=Backoff(), retry_after_cap=1.0, timeout=10.0)
    with http_store() as store:
        sink = S3Sink("s3://shots/{image_uuid}.{ext}", endpoint_url=store.url)
        async with http_client() as http:
            io = Transfers(http, policy, SystemClock(), random.Random(), anyio.CapacityLimiter(1))
            location, _ = await sink.store(payload, where, io)
    assert location == "s3://shots/i.jpg"
    (request,) = store.requests
    assert request.startswith("PUT /shots/i.jpg?")
    signed = parse_qs(urlsplit(request.removeprefix("PUT ")).query)["X-Amz-SignedHeaders"][0]
    assert "content-md5" in signed.split(";") and "content-type" in signed.split(";")
    (sent,) = [h["Content-MD5"] for h in store.headers.values()]
    assert base64.b64decode(sent) == md5


async def test_a_missing_bucket_fails_that_delivery_clearly(s3: tuple[str, Any]) -> None:
    url, _ = s3
    sink = S3Sink("s3://no-such-bucket/{image_uuid}.{ext}", endpoint_url=url)
    async with running(FixedBackend()) as server:
        async with Orchestrator(server.url, api_key="key-a", deliver_to=[sink]) as orch:
            result = await orch.run(TextToImage(prompt="a fox"))
    (delivery,) = result.image.deliveries
    assert not delivery.ok and isinstance(delivery.error, UploadError)
    assert delivery.error.status_code == 404 and delivery.error.attempts == 1
    assert "NoSuchBucket" in str(delivery.error) and "no-such-bucket" in str(delivery.error)
    assert "X-Amz-Signature" not in str(delivery.error)
