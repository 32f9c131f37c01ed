"""protocol/ is sans-I/O: importing it loads no event loop library, socket or HTTP client."""

from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

IO_MODULES = ("anyio", "websockets", "aiofiles", "httpx", "aiohttp", "trio", "asyncio")


def test_importing_protocol_loads_no_io_library() -> None:
    code = (
        "import sys, protocol, protocol.session, protocol.codec;"
        f"print(' '.join(m for m in {IO_MODULES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.strip() == ""
