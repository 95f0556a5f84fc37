"""Load with restarts: N webhooks due within 10 s, the server stopped and started again
while they fire.

Starts the dev server (SQLite, in-process trigger), schedules N tasks through the HTTP API
due at whole seconds spread over a 10-second window, then `--restarts` times stops the
server (SIGTERM: a graceful shutdown; SIGKILL: kill -9, runs cut off mid-flight and results
not yet committed lost with the process) and starts it again on the same data and port
while they are firing. A keep-alive receiver on 127.0.0.1 records each delivery with its
Idempotency-Key. Prints lost, duplicated and early deliveries, whether every duplicate
carried its first delivery's key (the receiver can drop it), lateness percentiles against
each task's own run_at, and the wall time.

    .venv/bin/python bench/load_restart.py [--tasks 5000] [--signal TERM|KILL]
        [--restarts 1] [--restart-after 4]
"""
import argparse
import json
import signal
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ReceiverProcess, free_port, markdown_table, percentile, schedule, start_server, stop_server,
)

WINDOW_SECONDS = 10


def measure(tasks: int = 5000, workers: int = 16, restart_after: float = 4.0,
            kill: str = "TERM", restarts: int = 1) -> dict:
    """Lost, duplicated and early deliveries of `tasks` with restarts in the window."""
    receiver = ReceiverProcess()
    try:
        return _measure(receiver, tasks, workers, restart_after, kill, restarts)
    finally:
        receiver.stop()


def _measure(receiver, tasks: int, workers: int, restart_after: float, kill: str,
             restarts: int) -> dict:
    wall_started = time.monotonic()
    stop_signal = getattr(signal, f"SIG{kill}")
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
        stops = []
        for number in range(restarts):
            # Restarts spread over the window: at restart_after, then as far again apart.
            at = window + timedelta(seconds=restart_after * (number + 1))
            time.sleep(max((at - datetime.now(timezone.utc)).total_seconds(), 0))
            delivered = len(receiver.arrivals())
            stops.append({"delivered_before": delivered,
                          "stop_s": round(stop_server(process, sig=stop_signal), 2)})
            process, url = start_server(Path(data), workers, port)
        receiver.wait_for(tasks, time.monotonic() + 180)
        time.sleep(2.0)  # a duplicate would arrive here
        stop_server(process)
    arrivals = receiver.arrivals()
    keys_of: dict = {}
    for task_id, _, key in arrivals:
        keys_of.setdefault(task_id, []).append(key)
    delivered = set(keys_of)
    lateness = [(moment - due[task_id]).total_seconds() * 1000
                for task_id, moment, _ in arrivals if task_id in due]
    result = {
        "tasks": tasks, "window_s": WINDOW_SECONDS, "signal": kill, "restarts": stops,
        "workers": workers,
        "lost": len(set(due) - delivered),
        "duplicates": sum(len(keys) - 1 for keys in keys_of.values()),
        # A duplicate the receiver cannot recognise: a second delivery under another key.
        "duplicates_with_another_key": sum(len(set(keys)) - 1 for keys in keys_of.values()),
        "early": sum(1 for value in lateness if value < 0),
        "lateness_min_ms": round(min(lateness), 1),
        "lateness_p50_ms": round(percentile(lateness, 0.50), 1),
        "lateness_p99_ms": round(percentile(lateness, 0.99), 1),
        "lateness_max_ms": round(max(lateness), 1),
        "wall_s": round(time.monotonic() - wall_started, 1),
    }
    return result


def in_flight_bound(result: dict) -> int:
    """The most duplicates the kills can explain: per kill, the runs in flight (at most
    `workers` started, and as many waiting for their result's commit)."""
    return 0 if result["signal"] == "TERM" else len(result["restarts"]) * 2 * result["workers"]


def kept_its_promises(result: dict) -> bool:
    """Nothing lost or early; duplicates only from runs cut off by a kill, each under the
    key of its first delivery."""
    return (result["lost"] == result["early"] == result["duplicates_with_another_key"] == 0
            and result["duplicates"] <= in_flight_bound(result))


def table(result: dict) -> str:
    """A Markdown table of one result."""
    stops = ", ".join(f"{stop['stop_s']} s" for stop in result["restarts"])
    how = ("SIGTERM + start" if result["signal"] == "TERM" else "kill -9 + start")
    return markdown_table(
        ["tasks", "window", "restarts", "lost", "duplicated (same key)", "early",
         "lateness p50", "p99", "max"],
        [[f"{result['tasks']:,}", f"{result['window_s']} s",
          f"{len(result['restarts'])} x {how} (stopped in {stops})", result["lost"],
          f"{result['duplicates']} "
          f"({result['duplicates'] - result['duplicates_with_another_key']})",
          result["early"], f"{result['lateness_p50_ms']:.0f} ms",
          f"{result['lateness_p99_ms']:.0f} ms", f"{result['lateness_max_ms']:.0f} ms"]])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--signal", choices=("TERM", "KILL"), default="TERM",
                        help="how the server is stopped: TERM (graceful) or KILL (kill -9)")
    parser.add_argument("--restarts", type=int, default=1)
    parser.add_argument("--restart-after", type=float, default=4.0,
                        help="seconds into the due window of the first restart (and between "
                             "restarts)")
    args = parser.parse_args()
    result = measure(args.tasks, args.workers, args.restart_after, args.signal, args.restarts)
    print(table(result))
    print(json.dumps(result))
    return 0 if kept_its_promises(result) else 1


if __name__ == "__main__":
    sys.exit(main())
