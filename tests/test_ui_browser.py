"""The web page in a real browser: Debian's chromium, driven by Playwright's Python API.

The page is served by the real app on uvicorn (127.0.0.1, a free port), its orchestrator
connected to a reference server in this process. The server's backend is the procedural
one, except that a prompt with "hold" in it keeps reporting its first step until the task
is cancelled: that is how the test sees a page's closing cancel a task on the server.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from orchestrator import Orchestrator
from orchestrator.asgi import serve_http
from orchestrator.server import ReferenceServer, ServerConfig, ServerLimits
from orchestrator.server.backends import Job, JobCancelled, JobContext, ProceduralBackend
from orchestrator.ui import create_app
from orchestrator.ui.command import ui_config
from protocol import NewTask

from conftest import component

CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
# As root and on a closed network: no sandbox, and none of the browser's own calls home.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = pytest.mark.timeout(180)


def _browser_or_skip() -> Any:
    playwright = component("playwright.async_api", "Playwright's Python API")
    if not Path(CHROMIUM).exists():
        message = f"no chromium at {CHROMIUM} (.ci/run installs Debian's chromium package)"
        if os.environ.get("CI"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return playwright


class HoldingBackend(ProceduralBackend):
    """Procedural, but a "hold" prompt reports step 1 of 10 until its task is cancelled."""

    def __init__(self) -> None:
        self.holding = threading.Event()
        self.cancelled = threading.Event()

    def run(self, job: Job, ctx: JobContext) -> None:
        request = job.request
        if isinstance(request, NewTask) and "hold" in request.prompt_text:
            self.holding.set()
            try:
                while True:  # each call raises JobCancelled once the server cancelled it
                    ctx.progress(1, 10, 0)
                    self.cancelled.wait(0.05)
            except JobCancelled:
                self.cancelled.set()
                raise
        super().run(job, ctx)


@asynccontextmanager
async def page_server(backend: HoldingBackend) -> AsyncIterator[tuple[str, Orchestrator]]:
    config = ServerConfig(limits=ServerLimits(max_number_results=4), workers=2)
    async with ReferenceServer(config, backend=backend) as server:
        async with Orchestrator([server.url], api_key=server.api_key, config=ui_config()) as orch:
            async with anyio.create_task_group() as tg:
                port = await tg.start(partial(serve_http, create_app(orch), "127.0.0.1", 0))
                yield f"http://127.0.0.1:{port}/", orch
                tg.cancel_scope.cancel()


CARDS = """(id) => [...document.querySelectorAll(`.generation[data-id="${id}"] .card`)].map(c => ({
    state: c.dataset.state,
    maxStep: Number(c.dataset.maxStep),
    width: c.querySelector("img.image").naturalWidth,
    height: c.querySelector("img.image").naturalHeight,
    status: c.querySelector(".status").textContent,
    meta: c.querySelector(".meta").textContent,
    link: c.querySelector(".meta a")?.href ?? null,
}))"""


def _count(id_: str, state: str, n: int) -> str:
    selector = f'.generation[data-id="{id_}"] .card[data-state="{state}"]'
    return f"document.querySelectorAll('{selector}').length === {n}"


async def _generate(page: Any, prompt: str, number: int, steps: int) -> None:
    await page.fill("#prompt", prompt)
    await page.fill("#number", str(number))
    await page.fill("#steps", str(steps))
    await page.fill("#seed", "42")
    await page.click("#generate")


async def test_the_page_streams_cards_shows_refusals_and_cancels_when_closed(
    tmp_path: Path,
) -> None:
    playwright = _browser_or_skip()
    backend = HoldingBackend()
    async with page_server(backend) as (url, orch), playwright.async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 900})
            await page.goto(url)
            await page.wait_for_selector('#connection[data-state="open"]')

            # Three images: three cards, each through its steps to a decoded image.
            await _generate(page, "a red fox in the snow", 3, 8)
            await page.wait_for_function(_count("g1", "done", 3))
            cards = await page.evaluate(CARDS, "g1")
            assert [c["state"] for c in cards] == ["done"] * 3
            assert [c["maxStep"] for c in cards] == [8, 8, 8]  # the last step always shows
            assert all((c["width"], c["height"]) == (512, 512) for c in cards), cards
            assert [c["meta"].split(" · ")[0] for c in cards] == ["seed 42", "seed 43", "seed 44"]
            assert len({c["link"] for c in cards}) == 3
            await page.wait_for_function("document.querySelector('#fig-done').textContent >= '1'")
            assert await page.text_content("#fig-connections li span:last-child") == "open · 0"

            # The server allows 4 images a task: 6 is refused there, on every card.
            await _generate(page, "too many foxes", 6, 8)
            await page.wait_for_function(_count("g2", "failed", 6))
            refused = await page.evaluate(CARDS, "g2")
            assert all("numberResults" in c["status"] for c in refused), refused
            await page.screenshot(path=str(tmp_path / "ui-desktop.png"), full_page=True)

            # A phone's width: one column, nothing wider than the screen.
            await page.set_viewport_size({"width": 390, "height": 844})
            overflow = "document.documentElement.scrollWidth - window.innerWidth"
            assert await page.evaluate(overflow) <= 0
            await page.screenshot(path=str(tmp_path / "ui-phone.png"), full_page=True)

            # A task still running when the page closes is cancelled on the server.
            await _generate(page, "hold this one", 1, 10)
            await page.wait_for_function(_count("g3", "running", 1))
            task_uuid = await page.get_attribute('.generation[data-id="g3"]', "data-task")
            await page.close()
            assert await anyio.to_thread.run_sync(backend.cancelled.wait, 30)
        finally:
            await browser.close()
        assert orch.pool.in_flight == 0
        assert task_uuid and orch.stats.failed == 2  # the refusal, and the cancelled task
    print(f"screenshots: {tmp_path / 'ui-desktop.png'} {tmp_path / 'ui-phone.png'}")


@pytest.mark.timeout(60)
def test_orchestrator_ui_prints_its_url_serves_the_page_and_stops_on_sigint() -> None:
    command = [sys.executable, "-m", "orchestrator.cli", "ui", "--port", "0", "--backend", "fixed"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            first = process.stdout.readline()
            assert first.startswith("ui on http://127.0.0.1:"), first
            url = first.split()[-1]
            page = httpx.get(url, timeout=10)
            assert page.status_code == 200 and '<script type="module"' in page.text
            script = httpx.get(url + "static/app.js", timeout=10)
            assert script.status_code == 200 and "new WebSocket" in script.text
            process.send_signal(signal.SIGINT)
            rest = process.stdout.read()
            assert process.wait(timeout=30) == 0 and "stopped" in rest
        finally:
            process.kill()
