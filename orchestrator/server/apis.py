"""The four other seed APIs over HTTP: their paths, auth and shapes, on our scheduler.

Served by Starlette on uvicorn, on a port of their own beside the WebSocket port (the
WebSocket path is untouched: websockets' server reads no request bodies, and its hot path
stays as it was), in the same process and event loop, so that every request runs on the
same scheduler as the sockets (``.local``): the same keys, fairness, limits, cost
accounting and hosting.

| API | route | key |
|---|---|---|
| AKI.IO | ``POST /api/call/{endpoint}`` (:data:`AKI_ENDPOINTS`) | ``key`` in the JSON body |
| ModelsLab | ``POST /api/v6/images/{text2img,img2img,inpaint}``, the same under
  ``/api/v6/realtime/``, and ``POST /api/v6/images/fetch/{id}`` | ``key`` in the body |
| the form API | ``POST /api/generate/basic/imageToImage`` (multipart) | ``Authorization`` |
| Stablecog | ``POST /v1/image/generation/create`` | ``Authorization: Bearer KEY`` |

A ModelsLab request not finished within ``ServerConfig.http_wait`` seconds is answered
``{"status": "processing", "id", "fetch_result", "eta"}``, and is fetched by id (by the
same key) until ``retention`` seconds after it finished; its ``webhook`` gets the finished
answer POSTed, with ``track_id``, once it is answered (a later fetch says how it went).
Bad input gets that API's error shape, naming the parameter in that API's name; a body
over ``ServerConfig.http_max_body`` is refused with 413; a wrong key is refused the same
way whether or not a key like it exists.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final

import anyio
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from protocol.errors import LocalProtocolError
from protocol.vocabularies import Outcome, Plan, Vocabulary, vocabulary
from protocol.vocabularies.steps import carry_out

from .config import ServerConfig
from .local import LocalTaskFailed, LocalTasks
from .push import Pusher, PushError
from .scheduler import Scheduler
from .state import KeyRing

__all__ = ["AKI_ENDPOINTS", "HttpApis"]

log = logging.getLogger("orchestrator.server")

#: AKI.IO's endpoint names -> our model ids.
AKI_ENDPOINTS: Final[Mapping[str, str]] = {
    "sdxl": "4",
    "rev_animated": "13",
    "absolute_reality": "18",
    "cyberrealistic": "19",
    "dreamshaper": "20",
    "ghostmix": "22",
    "samaritan_3d_cartoon": "25",
}
_MODELSLAB_KINDS: Final = ("text2img", "img2img", "inpaint")


class _Refused(Exception):
    """An answer that is not a result: its status and body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(status)
        self.status, self.body = status, body


@dataclass(slots=True)
class _Job:
    """A ModelsLab request, kept to be fetched by id while it runs and ``retention``
    seconds after it finished."""

    key_id: str
    finished: float = 0.0
    response: dict[str, Any] | None = None
    done: anyio.Event = field(default_factory=anyio.Event)


class HttpApis:
    """The HTTP side of the reference server (see the module docstring)."""

    def __init__(
        self,
        config: ServerConfig,
        keys: KeyRing,
        scheduler: Scheduler,
        local: LocalTasks,
        pusher: Pusher,
        start_soon: Callable[[Callable[[], Coroutine[Any, Any, None]]], object],
        base_url: Callable[[], str],
    ) -> None:
        self._config, self._keys, self._scheduler = config, keys, scheduler
        self._local, self._pusher, self._start_soon = local, pusher, start_soon
        self._base_url = base_url
        self._jobs: dict[str, _Job] = {}
        routes = [
            Route("/api/call/{endpoint}", self._akiio, methods=["POST"]),
            Route("/api/v6/images/fetch/{job}", self._modelslab_fetch, methods=["POST"]),
            Route("/api/v6/images/{kind}", self._modelslab, methods=["POST"]),
            Route("/api/v6/realtime/{kind}", self._modelslab, methods=["POST"]),
            Route("/api/generate/basic/imageToImage", self._imagetoimage, methods=["POST"]),
            Route("/v1/image/generation/create", self._stablecog, methods=["POST"]),
        ]
        self.app = Starlette(routes=routes)

    # -- AKI.IO --

    async def _akiio(self, request: Request) -> Response:
        vocab = vocabulary("akiio")
        try:
            body = await self._json(request, vocab, 400)
            key_id = self._key(body.get("key"), vocab, 401)
            model = AKI_ENDPOINTS.get(request.path_params["endpoint"])
            if model is None:
                known = ", ".join(AKI_ENDPOINTS)
                raise _Refused(404, vocab.refuse(f"no such endpoint: choose one of {known}"))
            parsed, plan = self._prepare(vocab, body, 400)
            plan = replace(plan, fields={**plan.fields, "modelId": model})
            return _json(*await self._answer(vocab, key_id, parsed, plan, 500))
        except _Refused as refused:
            return _json(refused.status, refused.body)

    # -- ModelsLab --

    async def _modelslab(self, request: Request) -> Response:
        vocab = vocabulary("modelslab")
        try:
            kind = request.path_params["kind"]
            if kind not in _MODELSLAB_KINDS:
                raise _Refused(404, vocab.refuse(f"no such endpoint: {kind}"))
            # ModelsLab answers every refusal with HTTP 200 and {"status": "error"}.
            body = await self._json(request, vocab, 200)
            key_id = self._key(body.get("key"), vocab, 200)
            _check_kind(vocab, kind, body)
            parsed, plan = self._prepare(vocab, body, 200)
        except _Refused as refused:
            return _json(refused.status, refused.body)
        self._forget_old_jobs()
        job_id = str(uuid.uuid4())
        job = self._jobs[job_id] = _Job(key_id)
        self._start_soon(lambda: self._run_job(job, job_id, vocab, parsed, plan))
        with anyio.move_on_after(self._config.http_wait):
            await job.done.wait()
        return _json(200, job.response or self._processing(job_id, plan))

    async def _run_job(
        self, job: _Job, job_id: str, vocab: Vocabulary[Any], parsed: Any, plan: Plan
    ) -> None:
        _, response = await self._answer(vocab, job.key_id, parsed, plan, 200, job_id)
        job.response, job.finished = response, time.monotonic()
        job.done.set()  # answered now: the webhook, however slow, holds nobody up
        if plan.webhook is not None:
            try:
                body = orjson.dumps(response)
                await self._pusher.put(plan.webhook, body, "application/json", method="POST")
                response["webhook_status"] = "success"  # what a later fetch says
            except PushError as exc:
                log.warning("a webhook was not told: %s", exc)
                response["webhook_status"] = f"failed: {exc}"

    def _processing(self, job_id: str, plan: Plan) -> dict[str, Any]:
        fetch = f"{self._base_url()}/api/v6/images/fetch/{job_id}"
        return {
            "status": "processing",
            "id": job_id,
            "eta": round(self._config.http_wait, 1),
            "messege": "Try to fetch request after given estimated time",
            "fetch_result": fetch,
            "future_links": [],
            "meta": dict(plan.settings),
        }

    async def _modelslab_fetch(self, request: Request) -> Response:
        vocab = vocabulary("modelslab")
        self._forget_old_jobs()
        try:
            body = await self._json(request, vocab, 200)
            key_id = self._key(body.get("key"), vocab, 200)
        except _Refused as refused:
            return _json(refused.status, refused.body)
        job_id = request.path_params["job"]
        job = self._jobs.get(job_id)
        if job is None or job.key_id != key_id:  # another key's job is as unknown as none
            return _json(200, vocab.refuse(f"no request {job_id!r} to fetch"))
        if job.response is None:
            return _json(
                200, {"status": "processing", "id": job_id, "fetch_result": str(request.url)}
            )
        return _json(200, job.response)

    def _forget_old_jobs(self) -> None:
        horizon = time.monotonic() - self._config.retention
        for job_id, job in list(self._jobs.items()):
            if job.done.is_set() and job.finished < horizon:
                del self._jobs[job_id]

    # -- the form API --

    async def _imagetoimage(self, request: Request) -> Response:
        vocab = vocabulary("imagetoimage")
        try:
            key_id = self._key(_authorization(request), vocab, 401)
            fields = await self._form(request, vocab)
            parsed, plan = self._prepare(vocab, fields, 400)
            return _json(*await self._answer(vocab, key_id, parsed, plan, 200))
        except _Refused as refused:
            return _json(refused.status, refused.body)

    async def _form(self, request: Request, vocab: Vocabulary[Any]) -> dict[str, Any]:
        request._body = await self._body(request, vocab)  # read under the cap, then parsed
        try:
            form = await request.form(max_files=2, max_fields=32)
        except Exception as exc:  # the multipart parser's own errors
            raise _Refused(400, vocab.refuse(f"not a multipart form: {exc}")) from None
        fields: dict[str, Any] = {}
        try:
            for name, value in form.multi_items():
                fields[name] = value if isinstance(value, str) else await value.read()
        finally:
            await form.close()
        return fields

    # -- Stablecog --

    async def _stablecog(self, request: Request) -> Response:
        vocab = vocabulary("stablecog")
        try:
            key_id = self._key(_authorization(request), vocab, 401)
            body = await self._json(request, vocab, 400)
            parsed, plan = self._prepare(vocab, body, 400)
            if self._credits(key_id) <= 0:
                raise _Refused(402, vocab.refuse("insufficient credits"))
            return _json(*await self._answer(vocab, key_id, parsed, plan, 500))
        except _Refused as refused:
            return _json(refused.status, refused.body)

    def _credits(self, key_id: str) -> float:
        # What the key has left: its allowance less what the scheduler charged it.
        return round(self._config.credits_per_key - self._scheduler.spent[key_id], 8)

    # -- shared --

    async def _answer(
        self,
        vocab: Vocabulary[Any],
        key_id: str,
        parsed: Any,
        plan: Plan,
        failed_status: int,
        task_uuid: str | None = None,
    ) -> tuple[int, dict[str, Any]]:
        """Carry the plan out: ``(200, the API's answer)``, or ``(failed_status, its
        failure answer)``."""
        started = time.monotonic()
        task_uuid = task_uuid or str(uuid.uuid4())
        run = carry_out(plan, task_uuid)
        limits = self._config.limits
        try:
            outcome: Outcome = await self._local.drive(
                key_id, run, self._config.http_task_timeout, limits.max_fetch_bytes
            )
        except LocalTaskFailed as exc:
            return failed_status, vocab.refuse(exc.text, parsed)
        except TimeoutError:
            return failed_status, vocab.refuse("the request took too long", parsed)
        left = self._credits(key_id)
        outcome = replace(outcome, seconds=time.monotonic() - started, credits_left=left)
        return 200, vocab.respond(parsed, plan, outcome)

    def _prepare(self, vocab: Vocabulary[Any], body: Any, status: int) -> tuple[Any, Plan]:
        try:
            return vocab.prepare(body, str(uuid.uuid4()))
        except LocalProtocolError as exc:
            raise _Refused(status, vocab.refuse(" ".join(str(exc).split()))) from None

    def _key(self, presented: Any, vocab: Vocabulary[Any], status: int) -> str:
        key_id = self._keys.identify(presented) if isinstance(presented, str) else None
        if key_id is None:  # the same answer for a wrong key and for none
            raise _Refused(status, vocab.refuse("invalid API key"))
        return key_id

    async def _json(self, request: Request, vocab: Vocabulary[Any], status: int) -> Any:
        data = await self._body(request, vocab)
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise _Refused(status, vocab.refuse(f"the body is not JSON: {exc}")) from None
        if not isinstance(body, dict):
            raise _Refused(status, vocab.refuse("the body must be a JSON object"))
        return body

    async def _body(self, request: Request, vocab: Vocabulary[Any]) -> bytes:
        cap = self._config.http_max_body
        too_big = _Refused(413, vocab.refuse(f"the body is over {cap} bytes"))
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise too_big
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > cap:
                raise too_big
        return bytes(data)


def _check_kind(vocab: Vocabulary[Any], kind: str, body: Mapping[str, Any]) -> None:
    # Each endpoint does its own job: text2img takes no init image, img2img and inpaint need one.
    has_init, has_mask = body.get("init_image") is not None, body.get("mask_image") is not None
    if kind == "text2img" and (has_init or has_mask):
        raise _Refused(200, vocab.refuse("init_image: send image-to-image to /img2img"))
    if kind != "text2img" and not has_init:
        raise _Refused(200, vocab.refuse(f"init_image: required by /{kind}"))
    if kind == "inpaint" and not has_mask:
        raise _Refused(200, vocab.refuse("mask_image: required by /inpaint"))


def _authorization(request: Request) -> str | None:
    value = request.headers.get("authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else value.strip()


def _json(status: int, body: Mapping[str, Any]) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")
