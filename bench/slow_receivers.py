"""Slow receivers among normal ones: `make dev`'s server (16 workers) with webhooks due at the
same whole second, half of `--slow` to a receiver that accepts and never answers, half to one
that answers a byte a second (neither ever completes), and `--normal` to a fast receiver.

What it reports: how late the normal tasks arrive (arrival at the receiver minus the due
time), how long the slow ones held on, and the server process's thread count before,
at its peak, and once the slow exchanges have ended.

    python bench/slow_receivers.py [--slow 64] [--normal 60] [--timeout 10] [--rounds 1]
"""
import argparse
import json
import math
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    TOKEN, ReceiverProcess, SlowReceivers, markdown_table, percentile, schedule, start_server,
    stop_server,
)

WORKERS = 16
# A dripping exchange gives up at its timeout + 5 s; the drip goes on a little longer, so
# the exchange thread outlives the run, as it does against a real trickling receiver.
DRIP_EXTRA_SECONDS = 5


def threads_of(pid: int) -> int:
    """The thread count of a process (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise RuntimeError("no Threads line")


class ThreadSampler:
    """Samples a process's thread count every 20 ms in the background."""

    def __init__(self, pid: int):
        self.pid, self.samples, self._stop = pid, [], threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.02):
            self.samples.append((time.monotonic(), threads_of(self.pid)))

    def settled(self, quiet: float = 2.0, limit: float = 60.0) -> int:
        """The thread count once it has not changed for `quiet` seconds (or after `limit`)."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            recent = [count for moment, count in self.samples
                      if moment > time.monotonic() - quiet]
            if len(recent) > quiet / 0.05 and len(set(recent)) == 1:
                break
            time.sleep(0.1)
        return self.samples[-1][1]

    def stop(self) -> int:
        """Stop sampling; the peak count seen."""
        self._stop.set()
        self._thread.join()
        return max(count for _, count in self.samples)


def task_status(url: str, task_id: str) -> dict:
    request = urllib.request.Request(f"{url}/tasks/{task_id}",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def run_round(slow: int, normal: int, timeout: int) -> dict:
    """One round on a fresh server and data folder; the measured numbers."""
    receiver, slow_receivers = ReceiverProcess(), SlowReceivers(timeout + 5 + DRIP_EXTRA_SECONDS)
    try:
        with tempfile.TemporaryDirectory() as data:
            process, url = start_server(Path(data), WORKERS)
            try:
                return _measure(process, url, receiver, slow_receivers, slow, normal, timeout)
            finally:
                stop_server(process)
    finally:
        receiver.stop()
        slow_receivers.close()


def _measure(process, url, receiver, slow_receivers, slow, normal, timeout) -> dict:
    sampler = ThreadSampler(process.pid)
    idle_threads = sampler.settled(quiet=1.0)
    start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(
        seconds=math.ceil(3 + (slow + normal) / 100) + 1)
    run_at = start.strftime("%Y-%m-%dT%H:%M:%SZ")
    targets = [slow_receivers.hang_url if n % 2 else slow_receivers.drip_url
               for n in range(slow)] + [receiver.url] * normal
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda target: schedule(url, target, run_at, timeout=timeout,
                                                    max_attempts=1), targets))
    if datetime.now(timezone.utc) >= start:
        raise SystemExit("creating the tasks took longer than the margin")
    slow_ids, normal_ids = set(ids[:slow]), set(ids[slow:])
    arrivals = receiver.wait_for(normal, time.monotonic() + 120 + (
        start - datetime.now(timezone.utc)).total_seconds())
    lateness = [(moment - start).total_seconds() for task_id, moment, _ in arrivals
                if task_id in normal_ids]
    # The slow tasks end at their deadline (timeout + 5 s) at the latest.
    held = []
    deadline = time.monotonic() + 4 * (timeout + 5) * math.ceil(slow / WORKERS) + 30
    for task_id in slow_ids:
        while True:
            task = task_status(url, task_id)
            if task["status"] in ("failed", "completed") or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        held.extend(run["duration_ms"] / 1000 for run in task["runs"])
    while slow_receivers.dripping and time.monotonic() < deadline:
        time.sleep(0.2)  # the exchanges left behind by their runs end with their drip
    final_threads = sampler.settled()
    peak_threads = sampler.stop()
    return {
        "normal_arrived": len(lateness), "normal_tasks": normal, "slow_tasks": slow,
        "normal_late_p50_s": round(percentile(lateness, 0.5), 2) if lateness else None,
        "normal_late_max_s": round(max(lateness), 2) if lateness else None,
        "slow_held_max_s": round(max(held), 1) if held else None,
        "threads_idle": idle_threads, "threads_peak": peak_threads,
        "threads_final": final_threads,
    }


def table(rounds: list) -> str:
    """A Markdown table, one line per round."""
    return markdown_table(
        ["round", "normal arrived", "normal late p50", "max", "slow held (max)",
         "threads idle / peak / final"],
        [[n + 1, f"{r['normal_arrived']}/{r['normal_tasks']}",
          f"{r['normal_late_p50_s']} s", f"{r['normal_late_max_s']} s",
          f"{r['slow_held_max_s']} s",
          f"{r['threads_idle']} / {r['threads_peak']} / {r['threads_final']}"]
         for n, r in enumerate(rounds)])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow", type=int, default=64)
    parser.add_argument("--normal", type=int, default=60)
    parser.add_argument("--timeout", type=int, default=10, help="the slow tasks' timeout (s)")
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    results = []
    for _ in range(args.rounds):
        results.append(run_round(args.slow, args.normal, args.timeout))
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    print(table(results))
