"""A client-only install (``pip install imagegen-orchestrator``, no extras) works on its own.

``.ci/run`` makes ``.client-venv`` with ``pip install -e .``; ``CLIENT_PYTHON`` may point
elsewhere. The reference server runs from the full install, as ``orchestrator serve``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import anyio
import httpx
import pytest

from conftest import venv_python
from serverkit import KEY, server_process

pytestmark = [pytest.mark.timeout(120)]

SCRIPT = Path(__file__).parent / "client_only" / "run_task.py"
SERVER_STACK = ("numpy", "scipy", "PIL")


def client_python() -> str:
    return venv_python("CLIENT_PYTHON", ".client-venv", "client-only install")


async def test_the_client_only_install_has_none_of_the_servers_image_stack() -> None:
    python = client_python()
    probe = "import importlib.util as u, json, sys; "
    probe += "print(json.dumps([m for m in sys.argv[1:] if u.find_spec(m)]))"
    done = await anyio.run_process([python, "-c", probe, *SERVER_STACK])
    assert json.loads(done.stdout) == []


async def test_a_client_only_install_runs_a_task_against_orchestrator_serve() -> None:
    python = client_python()
    with server_process() as server:
        with anyio.fail_after(90):
            done = await anyio.run_process(
                [python, str(SCRIPT), server.url, KEY], check=False, stderr=sys.stderr.fileno()
            )
        assert done.returncode == 0
        result = json.loads(done.stdout)
        assert result["loaded"] == []
        images = result["images"]
        assert len({image["imageUUID"] for image in images}) == 2
        async with httpx.AsyncClient() as http:
            for image in images:
                response = await http.get(image["url"])
                assert response.status_code == 200 and len(response.content) > 0
    # Without endpoints, the embedded server is the [server] extra: the error says so.
    assert "pip install 'imagegen-orchestrator[server]'" in result["hint"]
