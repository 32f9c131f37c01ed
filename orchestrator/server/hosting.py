"""The reference server's HTTP side: the images it made, on the WebSocket's own port.

``GET /images/{imageUUID}.{jpg|png}`` serves a stored image until its TTL; ``/`` and
``/healthz`` answer ``ok``; anything else is 404. ``HEAD`` answers the same headers with no
body; other methods get 405. A GET that asks to upgrade goes on to the WebSocket handshake.
"""

from __future__ import annotations

import re
from typing import Final

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from .store import ImageStore, StoredImage

__all__ = ["Hosting"]

_IMAGE_PATH: Final = re.compile(r"/images/([0-9a-fA-F-]{36})\.(jpg|png)")


class Hosting:
    """Where images are served, and the URL each one is served at.

    Args:
        store: the images.
        image_ttl: seconds an image is hosted (its ``Cache-Control`` max-age).
        base_url: the start of image URLs; set once the port is known.
    """

    def __init__(self, store: ImageStore, image_ttl: float, base_url: str = "") -> None:
        self._store = store
        self._image_ttl = image_ttl
        self.base_url = base_url

    def src(self, image: StoredImage) -> str:
        """The URL ``image`` is served at."""
        return f"{self.base_url}/images/{image.uuid}.{image.extension}"

    def respond(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer a plain HTTP request; ``None`` lets a WebSocket upgrade through."""
        method = request.method
        if method == "GET" and request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if method not in ("GET", "HEAD"):
            return _plain(405, "Method Not Allowed", [("Allow", "GET, HEAD")])
        path = request.path.split("?", 1)[0]
        if path in ("/", "/healthz"):
            return _plain(200, "OK", body=b"ok\n", head=method == "HEAD")
        match = _IMAGE_PATH.fullmatch(path)
        image = self._store.get(match.group(1)) if match else None
        if image is None or match is None or image.extension != match.group(2):
            return _plain(404, "Not Found", body=b"no such image\n", head=method == "HEAD")
        headers = Headers(
            [
                ("Content-Type", image.content_type),
                ("Content-Length", str(len(image.data))),
                ("Cache-Control", f"max-age={int(self._image_ttl)}"),
                ("Connection", "close"),
            ]
        )
        return Response(200, "OK", headers, b"" if method == "HEAD" else image.data)


def _plain(
    status: int,
    reason: str,
    extra: list[tuple[str, str]] | None = None,
    *,
    body: bytes = b"",
    head: bool = False,
) -> Response:
    # A HEAD answer has the GET answer's headers and no body.
    headers = Headers(
        [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
            *(extra or ()),
        ]
    )
    return Response(status, reason, headers, b"" if head else body)
