"""A/B: the client's CPU per task in this tree against another tree, interleaved.

Both trees are driven by the same clients (``bench/throughput.py``'s floor, ``orch run``
and ``orch map``) against one responder process, at ``--in-flight`` K (default 1,024).
Each round runs one child process per tree, alternating which goes first, and each child
measures the floor beside the orchestrator, so every figure is a ratio to a floor taken
moments before it on the same machine. Prints each round, then the medians and the
ratio of the two trees' medians (below 1.0: this tree spends less CPU per task).

With ``--server`` it compares the two trees' reference servers instead (``orchestrator serve
--backend fixed --workers 1``, from each tree), with the responder in the same rounds, under
the floor at K = 64 and 1,024: tasks/s as a ratio to the responder's, p99, server CPU per task.
``--held N`` adds, per tree, N runs of 30,000 tasks at K = 1,024 one after another on one
server, which keeps every finished task for its retention window as a long-running server
does: the series shows what the held tasks cost (the collector walks what it tracks).

Run: python bench/compare.py BASELINE_TREE [--rounds 7] [--in-flight 1024] [--tasks 20000]
[--server [--held 8]] (e.g. ``git worktree add /tmp/base HEAD~1``, or
``git archive REV | tar -x -C /tmp/base``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CLIENTS = ("orch run", "orch map")


def child(total: int, in_flight: int, url: str) -> None:
    """One measurement, in the tree on ``sys.path`` first: CPU us/task of each client."""
    sys.path.insert(0, str(ROOT / "bench"))
    import throughput

    import orchestrator

    throughput._pin(os.getpid(), 0)  # as throughput.py runs: client on core 0, server on 1
    figures: dict[str, object] = {"tree": str(Path(orchestrator.__file__).parent.parent)}
    clients = {"floor": throughput.floor, "orch run": throughput.orch_run}
    clients["orch map"] = throughput.orch_map
    for name, client in clients.items():
        figures[name] = asyncio.run(client(url, total, in_flight)).cpu_us
    print(json.dumps(figures))


def measure(tree: Path, total: int, in_flight: int, url: str) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    command = [sys.executable, __file__, "--child", url, "--tasks", str(total)]
    command += ["--in-flight", str(in_flight)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    figures = json.loads(done.stdout)
    if Path(figures.pop("tree")).resolve() != tree.resolve():
        raise RuntimeError(f"the child did not import orchestrator from {tree}")
    return {name: float(value) for name, value in figures.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("baseline", nargs="?", type=Path, help="the other tree")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--in-flight", type=int, default=1024)
    parser.add_argument("--tasks", type=int, default=20_000)
    parser.add_argument("--server", action="store_true", help="compare the servers instead")
    parser.add_argument("--held", type=int, default=0, help="with --server: runs on one server")
    parser.add_argument("--child", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.tasks, args.in_flight, args.child)
        return
    if args.baseline is None:
        parser.error("give the baseline tree")
    sys.path.insert(0, str(ROOT / "bench"))
    import throughput

    if args.server:
        compare_servers(throughput, args.baseline, args.rounds)
        if args.held:
            held_series(throughput, args.baseline, args.held)
        return

    trees = {"this": ROOT, "baseline": args.baseline}
    ratios: dict[str, dict[str, list[float]]] = {t: {c: [] for c in CLIENTS} for t in trees}
    print(f"K={args.in_flight}, {args.tasks} tasks per client per round; CPU/task / floor's")
    with throughput.server("responder") as srv:
        for number in range(args.rounds):
            order = list(trees) if number % 2 == 0 else list(reversed(trees))
            for name in order:
                figures = measure(trees[name], args.tasks, args.in_flight, srv.url)
                cells = []
                for client in CLIENTS:
                    ratio = figures[client] / figures["floor"]
                    ratios[name][client].append(ratio)
                    cells.append(f"{client} {ratio:.3f}x")
                floor = figures["floor"]
                print(f"round {number + 1} {name:<8} floor {floor:6.1f} us  " + "  ".join(cells))
    print()
    for client in CLIENTS:
        this = statistics.median(ratios["this"][client])
        base = statistics.median(ratios["baseline"][client])
        print(
            f"{client}: median {this:.3f}x the floor (baseline {base:.3f}x); "
            f"this / baseline = {this / base:.3f}"
        )


def compare_servers(throughput: Any, baseline: Path, rounds: int) -> None:
    """Each tree's reference server and the responder under the floor at K = 64 and 1,024,
    in turn each round: medians of tasks/s (and its ratio to the responder's), p99 and the
    server's CPU per task."""
    kinds = {"responder": None, "this": ROOT, "baseline": baseline}
    figures: dict[tuple[str, int], list[Any]] = {}
    throughput._pin(os.getpid(), 0)
    for _ in range(rounds):
        for name, tree in kinds.items():
            with throughput.server("responder" if tree is None else "reference", tree) as srv:
                for k, total in ((64, 20_000), (1024, 30_000)):
                    run = throughput.measure(srv, "floor", total, k)
                    figures.setdefault((name, k), []).append(run)
    for k in (64, 1024):
        base = statistics.median(r.rate for r in figures[("responder", k)])
        for name in kinds:
            runs = figures[(name, k)]
            rate = statistics.median(r.rate for r in runs)
            p99 = statistics.median(r.percentile(0.99) for r in runs)
            cpu = statistics.median(r.server_cpu_us for r in runs)
            print(
                f"K={k:<5} {name:<9} {rate:8.0f} tasks/s {rate / base:5.2f}x the responder  "
                f"p99 {p99:6.1f} ms  server {cpu:6.1f} us/task"
            )


def held_series(throughput: Any, baseline: Path, runs: int) -> None:
    """Each tree's server, ``runs`` runs of 30,000 tasks at K = 1,024 in a row, twice,
    trees alternating: tasks/s, p99 and server CPU per task of each run."""
    for tree in (ROOT, baseline, ROOT, baseline):
        name = "this" if tree == ROOT else "baseline"
        with throughput.server("reference", tree) as srv:
            series = [throughput.measure(srv, "floor", 30_000, 1024) for _ in range(runs)]
        rates = " ".join(f"{r.rate:5.0f}" for r in series)
        p99s = " ".join(f"{r.percentile(0.99):4.0f}" for r in series)
        cpus = " ".join(f"{r.server_cpu_us:4.0f}" for r in series)
        print(f"held {name:<9} tasks/s {rates} | p99 ms {p99s} | server us/task {cpus}")


if __name__ == "__main__":
    main()
