"""What kind of image a payload is: its file extension and content type, from its bytes."""

from __future__ import annotations

__all__ = ["sniff"]

# (magic bytes at offset 0, extension, content type); WebP is RIFF....WEBP, checked apart.
_MAGIC = (
    (b"\xff\xd8\xff", "jpg", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "png", "image/png"),
    (b"GIF8", "gif", "image/gif"),
)
_BY_SUFFIX = {
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
}


def sniff(data: bytes, url: str = "") -> tuple[str, str]:
    """``(extension, content type)`` of an image: from its first bytes, else from the
    suffix of ``url``, else ``("bin", "application/octet-stream")``."""
    for magic, ext, content_type in _MAGIC:
        if data.startswith(magic):
            return ext, content_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", "image/webp"
    suffix = url.split("?", 1)[0].rpartition(".")[2].lower()
    if suffix in _BY_SUFFIX and "/" not in suffix:
        return ("jpg" if suffix == "jpeg" else suffix), _BY_SUFFIX[suffix]
    return "bin", "application/octet-stream"
