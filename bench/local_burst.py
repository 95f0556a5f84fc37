"""Burst benchmark of the local server: N webhooks due in the same second.

Starts the dev server (`python -m chalicelib.local_server`, SQLite, in-process trigger) on a
free port with a fresh data folder, schedules N tasks through the HTTP API all due at one
instant T, and records when each arrives at a keep-alive receiver on 127.0.0.1.
Prints the burst duration, lateness percentiles and whether every task arrived exactly once.

    .venv/bin/python bench/local_burst.py [--tasks 500] [--workers 16] [--rounds 1]
"""
import argparse
import json
import statistics
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

from common import Receiver, percentile, schedule, start_server, stop_server


def one_round(tasks: int, workers: int) -> dict:
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as data:
        process, url = start_server(Path(data), workers)
        try:
            # Time to post everything (measured at ~150-250 requests/s here) plus margin.
            due = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(
                seconds=5 + tasks // 50)
            run_at = due.strftime("%Y-%m-%dT%H:%M:%SZ")
            post_started = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(lambda _: schedule(url, receiver.url, run_at), range(tasks)))
            post_seconds = time.monotonic() - post_started
            assert datetime.now(timezone.utc) < due, "posting took longer than the margin"
            deadline = time.monotonic() + (due - datetime.now(timezone.utc)).total_seconds() + 60
            while len(receiver.arrivals) < tasks and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)  # anything arriving twice would show up here
        finally:
            stop_server(process)
    counts = Counter(task_id for task_id, _, _ in receiver.arrivals)
    lateness = [(moment - due).total_seconds() * 1000 for _, moment, _ in receiver.arrivals]
    return {
        "tasks": tasks, "workers": workers,
        "arrived": len(counts), "duplicates": sum(c - 1 for c in counts.values()),
        "missing": len(set(ids) - set(counts)),
        "early": sum(1 for value in lateness if value < 0),
        "post_rate_per_s": round(tasks / post_seconds, 1),
        "burst_ms": round(max(lateness) - min(lateness), 1) if lateness else None,
        "throughput_per_s": round(tasks / (max(lateness) / 1000), 1) if lateness else None,
        "lateness_p50_ms": round(percentile(lateness, 0.50), 1),
        "lateness_p99_ms": round(percentile(lateness, 0.99), 1),
        "lateness_max_ms": round(max(lateness), 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    results = [one_round(args.tasks, args.workers) for _ in range(args.rounds)]
    for result in results:
        print(json.dumps(result))
    if args.rounds > 1:
        print(json.dumps({"median_" + key: statistics.median(r[key] for r in results)
                          for key in ("burst_ms", "lateness_p50_ms", "lateness_p99_ms",
                                      "lateness_max_ms")}))
    ok = all(r["missing"] == 0 and r["duplicates"] == 0 and r["early"] == 0 for r in results)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
