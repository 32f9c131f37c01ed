"""Drive the sans-I/O session through a whole exchange, with scripted server replies.

No socket and no event loop: the session turns frames into events, and the
caller decides what to send. Run: python examples/session_offline.py
"""

from __future__ import annotations

import json
import uuid

from protocol import (
    Authenticated,
    ImageReceived,
    NewTask,
    Session,
    TaskCompleted,
    TaskFailed,
)


def server_reply(frame: bytes, session_uuid: str) -> list[bytes]:
    """A stand-in server: accept the key, make two images per task, in separate frames."""
    message = json.loads(frame)
    if "newConnection" in message:
        body = {"connectionSessionUUID": session_uuid, "extensions": ["seed"]}
        return [json.dumps({"newConnectionSessionUUID": body}).encode()]
    task = message["newTask"]
    replies = []
    for index in range(task.get("numberResults", 1)):
        image_uuid = str(uuid.uuid5(uuid.UUID(task["taskUUID"]), str(index)))
        image = {
            "imageSrc": f"http://127.0.0.1:8765/images/{image_uuid}.jpg",
            "imageUUID": image_uuid,
            "bNSFWContent": False,
            "taskUUID": task["taskUUID"],
            "cost": 0.0013,
            "seed": task.get("seed", 1) + index,
        }
        replies.append(json.dumps({"newImages": {"images": [image]}}).encode())
    return replies


def main() -> None:
    session = Session("API-KEY", extensions=["seed"])
    session_uuid = str(uuid.uuid4())
    for frame in server_reply(session.send_connect(), session_uuid):
        for event in session.receive(frame):
            assert isinstance(event, Authenticated)
            extensions = sorted(event.extensions)
            print(f"authenticated: session {event.session_uuid}, extensions {extensions}")

    task = NewTask(task_uuid=str(uuid.uuid4()), prompt_text="a red fox", number_results=2, seed=42)
    for frame in server_reply(session.send_task(task), session_uuid):
        for event in session.receive(frame):
            if isinstance(event, ImageReceived):
                print(f"image {event.image.image_uuid} seed={event.image.seed}")
            elif isinstance(event, TaskCompleted):
                print(f"task done: {len(event.images)} images, cost {event.cost:.4f}")
            elif isinstance(event, TaskFailed):
                print(f"task failed: {event.error_id} {event.error_message}")


if __name__ == "__main__":
    main()
