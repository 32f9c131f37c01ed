"""Identities both sides derive the same way: taskUUIDs, imageUUIDs and default seeds.

A server of this project derives each imageUUID from (taskUUID, result index) and a
missing seed from the taskUUID, so a task retried, resumed or failed over between its
servers yields the same imageUUIDs and pixels, and a client's dedupe by imageUUID makes
delivery exactly-once. The in-memory fake server (``orchestrator.testing``) derives them
the same way, so tests can predict them.
"""

from __future__ import annotations

import hashlib
import os

__all__ = ["image_uuid_for", "new_task_uuid", "seed_for_task", "uuid_for"]


def new_task_uuid() -> str:
    """A random UUIDv4 string, as ``str(uuid.uuid4())`` gives, at half the cost."""
    # The same 16 bytes from the operating system's generator, formatted directly rather
    # than through a UUID object; the version nibble is 4 and the variant bits are 10.
    h = os.urandom(16).hex()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def image_uuid_for(task_uuid: str, index: int, scope: str = "") -> str:
    """The imageUUID of result ``index`` of a task: a UUIDv4-shaped digest of both.

    ``scope`` keeps tenants apart: a server passes the id of the API key, so the same
    taskUUID sent under two keys names different images (and one key can neither
    overwrite nor read the other's)."""
    name = f"{scope}/{task_uuid.lower()}/{index}" if scope else f"{task_uuid.lower()}/{index}"
    return uuid_for(name)


def uuid_for(name: str) -> str:
    """A UUIDv4-shaped digest of ``name``: the same name always gives the same UUID (how a
    bulk run's rows keep their taskUUIDs across reruns)."""
    digest = bytearray(hashlib.sha256(name.encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x40  # version 4
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = digest.hex()  # formatted directly: what str(uuid.UUID(bytes=...)) gives, cheaper
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def seed_for_task(task_uuid: str) -> int:
    """The seed of a task that gives none: derived from its taskUUID (1 to 2**32)."""
    digest = hashlib.sha256(task_uuid.lower().encode()).digest()
    return int.from_bytes(digest[:4], "big") + 1
