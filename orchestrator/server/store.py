"""Hosted images and the result cache: bounded, in memory, expiring on an injected clock."""

from __future__ import annotations

import hashlib
import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Final

import orjson

__all__ = ["CONTENT_TYPES", "ImageStore", "ResultCache", "StoredImage"]

CONTENT_TYPES: Final = {"jpeg": "image/jpeg", "png": "image/png"}
EXTENSIONS: Final = {"jpeg": "jpg", "png": "png"}

Clock = Callable[[], float]


@dataclass(frozen=True, slots=True)
class StoredImage:
    """One hosted image."""

    uuid: str
    data: bytes
    format: str  # "jpeg" or "png"
    width: int
    height: int
    prompt: str | None = None
    seed: int | None = None

    @property
    def content_type(self) -> str:
        """The HTTP ``Content-Type``."""
        return CONTENT_TYPES[self.format]

    @property
    def extension(self) -> str:
        """The file extension of its URL (``jpg`` or ``png``)."""
        return EXTENSIONS[self.format]


#: An ImageStore entry: (expires, uuid, data, format, width, height, prompt, seed).
_Entry = tuple[float, str, bytes, str, int, int, str | None, int | None]


class ImageStore:
    """Images by imageUUID, each kept for ``ttl`` seconds, at most ``max_bytes`` in all.

    When full, the oldest images go first. Images that share bytes (a cached result served
    to another task under a new imageUUID) are counted once per entry, which overestimates
    and so stays within the bound.
    """

    def __init__(self, ttl: float, max_bytes: int, clock: Clock) -> None:
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._clock = clock
        # Each entry is a plain tuple of plain values, expiry first, not the StoredImage:
        # the cyclic collector stops tracking such tuples, so a store of a million images
        # costs its full passes next to nothing (it walks every dataclass, each pass).
        self._images: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._images)

    @property
    def size_bytes(self) -> int:
        """Bytes held."""
        return self._bytes

    def put(self, image: StoredImage) -> None:
        """Store (or refresh) an image."""
        self.discard(image.uuid)
        self._images[image.uuid] = (
            self._clock() + self._ttl,
            image.uuid,
            image.data,
            image.format,
            image.width,
            image.height,
            image.prompt,
            image.seed,
        )
        self._bytes += len(image.data)
        while self._bytes > self._max_bytes and len(self._images) > 1:
            self.discard(next(iter(self._images)))

    def get(self, image_uuid: str) -> StoredImage | None:
        """The image, or ``None`` if unknown or expired."""
        entry = self._images.get(image_uuid.lower())
        if entry is None:
            return None
        if entry[0] <= self._clock():
            self.discard(image_uuid.lower())
            return None
        return StoredImage(*entry[1:])

    def holds(self, image_uuid: str) -> bool:
        """Whether the image is here and live (what ``get`` finds, without building it)."""
        entry = self._images.get(image_uuid.lower())
        return entry is not None and entry[0] > self._clock()

    def discard(self, image_uuid: str) -> None:
        """Forget an image if held."""
        entry = self._images.pop(image_uuid, None)
        if entry is not None:
            self._bytes -= len(entry[2])

    def sweep(self) -> int:
        """Drop expired images (oldest first); return how many went."""
        now, dropped = self._clock(), 0
        # Insertion order is expiry order (one ttl for all), so stop at the first live one.
        while self._images:
            key, entry = next(iter(self._images.items()))
            if entry[0] > now:
                break
            self.discard(key)
            dropped += 1
        return dropped


class ResultCache:
    """Generated images by generation parameters, for ``useCache`` / ``saveToCache``.

    Each entry lists imageUUIDs oldest first. Images leave the :class:`ImageStore` oldest
    first too (one time to live; eviction by age), so expired ones are trimmed from the
    front, and a page costs O(offset + count), never the whole entry. Keys are kept as
    digests (a prompt may be long), and at most ``max_entries`` of them, the least
    recently used leaving first.
    """

    def __init__(self, store: ImageStore, max_entries: int = 10_000) -> None:
        self._store = store
        self._max_entries = max_entries
        self._entries: OrderedDict[bytes, deque[str]] = OrderedDict()

    @staticmethod
    def digest(key: Hashable) -> bytes:
        """The entry's name for ``key`` (a tuple of plain values and models, see
        ``state.cache_key``); a task computes it once. JSON, not ``repr``: a quarter of the
        cost, and as exact (a float keeps its shortest round-trip form, ``1`` is not ``1.0``,
        models go by their repr)."""
        return hashlib.sha256(orjson.dumps(key, default=repr)).digest()

    def count(self, digest: bytes) -> int:
        """How many live images are cached under ``digest``."""
        uuids = self._trimmed(digest)
        return len(uuids) if uuids is not None else 0

    def page(self, digest: bytes, offset: int, count: int) -> list[StoredImage]:
        """Up to ``count`` cached images under ``digest``, skipping the first ``offset``."""
        uuids = self._trimmed(digest)
        if uuids is None:
            return []
        window = itertools.islice(uuids, offset, offset + count)
        return [image for u in window if (image := self._store.get(u)) is not None]

    def add(self, digest: bytes, image_uuid: str) -> None:
        """Record a newly made image under ``digest``."""
        uuids = self._entries.get(digest)
        if uuids is None:
            uuids = self._entries[digest] = deque()
            if len(self._entries) > self._max_entries:
                self._entries.popitem(last=False)
        else:
            self._entries.move_to_end(digest)
        uuids.append(image_uuid)

    def __len__(self) -> int:
        return len(self._entries)

    def sweep(self) -> None:
        """Drop entries whose images have all gone."""
        for digest in list(self._entries):
            self._trimmed(digest)

    def _trimmed(self, digest: bytes) -> deque[str] | None:
        uuids = self._entries.get(digest)
        if uuids is None:
            return None
        while uuids and not self._store.holds(uuids[0]):
            uuids.popleft()
        if not uuids:
            del self._entries[digest]
            return None
        return uuids
