"""Cost of the protocol's hot paths, against plain orjson on the same frames, in one run.

Prints the median of several repeats, in microseconds per operation, and the ratio to the
baseline (orjson alone, no validation), so that noisy machines still compare like with like.
Run: python bench/protocol_codec.py
"""

from __future__ import annotations

import statistics
import timeit
import uuid
from collections.abc import Callable

import orjson

from protocol import NewTask, Session, decode_from_client, decode_from_server, encode

REPEATS = 7


def per_call_us(func: Callable[[], object], number: int) -> float:
    runs = timeit.repeat(func, number=number, repeat=REPEATS)
    return statistics.median(runs) / number * 1e6


def images_frame(task_uuid: str, count: int = 1) -> bytes:
    images = [
        {
            "imageSrc": f"http://127.0.0.1:8765/images/{uuid.uuid4()}.jpg",
            "imageUUID": str(uuid.uuid4()),
            "bNSFWContent": False,
            "taskUUID": task_uuid,
            "cost": 0.0013,
        }
        for _ in range(count)
    ]
    return orjson.dumps({"newImages": {"images": images}})


def session_round_trip_us(tasks: int = 20_000) -> float:
    """send_task + receive(result) + completion, per task, through one session."""
    session = Session("key")
    session.send_connect()
    session.receive(b'{"newConnectionSessionUUID": {"connectionSessionUUID": "s"}}')
    prepared = [
        (NewTask(task_uuid=str(uuid.uuid4()), prompt_text="a fox"), b"") for _ in range(tasks)
    ]
    prepared = [(t, images_frame(t.task_uuid)) for t, _ in prepared]

    def run() -> None:
        for task, frame in prepared:
            session.send_task(task)
            session.receive(frame)

    runs = []
    for _ in range(3):
        runs.append(timeit.timeit(run, number=1) / tasks * 1e6)
    return statistics.median(runs)


def main() -> None:
    task_uuid = str(uuid.uuid4())
    result = images_frame(task_uuid)
    task = NewTask(task_uuid=task_uuid, prompt_text="a red fox", number_results=2, seed=42)
    request = encode(task)
    task_dict = orjson.loads(request)
    rows = [
        (
            "decode newImages (1 image)",
            lambda: decode_from_server(result),
            lambda: orjson.loads(result),
        ),
        ("decode newTask", lambda: decode_from_client(request), lambda: orjson.loads(request)),
        ("encode newTask", lambda: encode(task), lambda: orjson.dumps(task_dict)),
        (
            "build + encode newTask",
            lambda: encode(NewTask(task_uuid=task_uuid, prompt_text="a red fox", number_results=2)),
            lambda: orjson.dumps(
                {"newTask": {"taskUUID": task_uuid, "promptText": "a red fox", "numberResults": 2}}
            ),
        ),
    ]
    print(f"{'operation':<30} {'protocol us':>12} {'orjson us':>10} {'ratio':>7}")
    for name, ours, baseline in rows:
        a, b = per_call_us(ours, 20_000), per_call_us(baseline, 20_000)
        print(f"{name:<30} {a:>12.2f} {b:>10.2f} {a / b:>6.1f}x")
    print(f"{'session: send_task+receive':<30} {session_round_trip_us():>12.2f}")


if __name__ == "__main__":
    main()
