"""Load with a restart: N webhooks due within 10 s, the server restarted in the middle.

Starts the dev server (SQLite, in-process trigger), schedules N tasks through the HTTP API
due at whole seconds spread over a 10-second window, restarts the server (SIGTERM, start
again on the same data and port) while they are firing, and counts each task's
Idempotency-Key at a keep-alive receiver on 127.0.0.1. Prints lost, duplicated and early
deliveries, lateness percentiles against each task's own run_at, and the wall time.

    .venv/bin/python bench/load_restart.py [--tasks 5000] [--restart-after 4]
"""
import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ReceiverProcess, free_port, markdown_table, percentile, schedule, start_server, stop_server,
)

WINDOW_SECONDS = 10


def measure(tasks: int = 5000, workers: int = 16, restart_after: float = 4.0) -> dict:
    """Lost, duplicated and early deliveries of `tasks` with a restart in the window."""
    receiver = ReceiverProcess()
    try:
        return _measure(receiver, tasks, workers, restart_after)
    finally:
        receiver.stop()


def _measure(receiver, tasks: int, workers: int, restart_after: float) -> dict:
    wall_started = time.monotonic()
    with tempfile.TemporaryDirectory() as data:
        port = free_port()
        process, url = start_server(Path(data), workers, port)
        # Posting runs at a few hundred requests/s here; the window opens after it.
        window = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(
            seconds=5 + tasks // 250)
        due = {}

        def post(n):
            run_at = window + timedelta(seconds=n % WINDOW_SECONDS)
            task_id = schedule(url, receiver.url, run_at.strftime("%Y-%m-%dT%H:%M:%SZ"))
            due[task_id] = run_at

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(post, range(tasks)))
        posted_at = datetime.now(timezone.utc)
        if posted_at >= window:
            raise SystemExit(f"posting ended {posted_at - window} after the window opened")
        time.sleep((window - datetime.now(timezone.utc)).total_seconds() + restart_after)
        before_restart = len(receiver.arrivals())
        shutdown_seconds = stop_server(process)
        process, url = start_server(Path(data), workers, port)
        receiver.wait_for(tasks, time.monotonic() + 120)
        time.sleep(2.0)  # a duplicate would arrive here
        stop_server(process)
    arrivals = receiver.arrivals()
    keys = Counter(key for _, _, key in arrivals)
    delivered = {task_id for task_id, _, _ in arrivals}
    lateness = [(moment - due[task_id]).total_seconds() * 1000
                for task_id, moment, _ in arrivals if task_id in due]
    result = {
        "tasks": tasks, "window_s": WINDOW_SECONDS,
        "delivered_before_restart": before_restart,
        "shutdown_s": round(shutdown_seconds, 2),
        "lost": len(set(due) - delivered),
        "duplicates": sum(count - 1 for count in keys.values()),
        "early": sum(1 for value in lateness if value < 0),
        "lateness_min_ms": round(min(lateness), 1),
        "lateness_p50_ms": round(percentile(lateness, 0.50), 1),
        "lateness_p99_ms": round(percentile(lateness, 0.99), 1),
        "lateness_max_ms": round(max(lateness), 1),
        "wall_s": round(time.monotonic() - wall_started, 1),
    }
    return result


def table(result: dict) -> str:
    """A Markdown table of one result."""
    return markdown_table(
        ["tasks", "window", "restart", "lost", "duplicated", "early", "lateness p50", "p99",
         "max"],
        [[f"{result['tasks']:,}", f"{result['window_s']} s",
          f"SIGTERM + start, shutdown {result['shutdown_s']} s", result["lost"],
          result["duplicates"], result["early"], f"{result['lateness_p50_ms']:.0f} ms",
          f"{result['lateness_p99_ms']:.0f} ms", f"{result['lateness_max_ms']:.0f} ms"]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--restart-after", type=float, default=4.0,
                        help="seconds into the due window at which the server restarts")
    args = parser.parse_args()
    result = measure(args.tasks, args.workers, args.restart_after)
    print(table(result))
    print(json.dumps(result))
    return 0 if result["lost"] == result["duplicates"] == result["early"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
