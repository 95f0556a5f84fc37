"""Local dispatch: webhooks due together (a burst) and spread out (sparse), delivered to a
loopback receiver by three schedulers in the same run:

- ours: `make dev`'s server (SQLite store, in-process trigger, 16 workers), tasks created
  through POST /schedule-task; every run is claimed and recorded in the store (fsync'd);
- APScheduler 3 (BackgroundScheduler, memory job store, a 16-thread pool), one date-triggered
  job per task posting with a per-thread `requests.Session`: nothing persisted;
- a bare `requests.Session` loop: one thread that sleeps until each due time and posts,
  the client's own limit with no scheduler at all.

The receiver runs in a process of its own. The systems take turns within each round, the
order rotating between rounds; medians over the rounds are reported, and every lateness
sample is kept for the chart. Lateness is the arrival time at the receiver minus the due
time; due times are whole seconds because `run_at` is.

    python bench/dispatch.py [--burst 1000] [--sparse 200] [--rounds 3]
"""
import argparse
import json
import math
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    ReceiverProcess, markdown_table, percentile, schedule, start_server, stop_server,
)

WORKERS = 16
SPARSE_WINDOW_SECONDS = 40
SYSTEMS = ("ours", "apscheduler", "requests loop")


def due_times(workload: str, tasks: int, start: datetime) -> list:
    """Every task's due time: all at `start` (burst), or spread evenly over the window."""
    if workload == "burst":
        return [start] * tasks
    return [start + timedelta(seconds=n % SPARSE_WINDOW_SECONDS) for n in range(tasks)]


def _start_after(seconds: float) -> datetime:
    """A whole second at least `seconds` from now (run_at has whole seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(
        seconds=math.ceil(seconds) + 1)


def _deadline(last_due: datetime, slack: float = 60) -> float:
    return time.monotonic() + (last_due - datetime.now(timezone.utc)).total_seconds() + slack


def run_ours(workload: str, tasks: int, receiver: ReceiverProcess) -> tuple:
    """Tasks created through the dev server's API; (due time by id, arrivals)."""
    with tempfile.TemporaryDirectory() as data:
        process, url = start_server(Path(data), WORKERS)
        try:
            # Creation runs at a few hundred requests/s here; the first due time is after it.
            start = _start_after(5 + tasks / 100)
            times = due_times(workload, tasks, start)

            def create(due):
                return schedule(url, receiver.url, due.strftime("%Y-%m-%dT%H:%M:%SZ")), due

            with ThreadPoolExecutor(8) as pool:
                due = dict(pool.map(create, times))
            if datetime.now(timezone.utc) >= start:
                raise SystemExit("creating the tasks took longer than the margin")
            arrivals = receiver.wait_for(tasks, _deadline(max(times)))
            time.sleep(1.0)  # a duplicate would show up here
            arrivals = receiver.arrivals()
        finally:
            stop_server(process)
    return due, arrivals


class _Sessions(threading.local):
    """One keep-alive requests.Session per thread (a Session is not thread-safe)."""

    def __init__(self):
        import requests

        self.session = requests.Session()


def _post(sessions: _Sessions, url: str, task_id: str) -> None:
    sessions.session.post(url, json={"n": 1}, headers={"X-Task-Id": task_id}, timeout=10)


def run_apscheduler(workload: str, tasks: int, receiver: ReceiverProcess) -> tuple:
    """One date-triggered APScheduler job per task; (due time by id, arrivals)."""
    from apscheduler.executors.pool import ThreadPoolExecutor as JobPool
    from apscheduler.schedulers.background import BackgroundScheduler

    scheduler = BackgroundScheduler(executors={"default": JobPool(WORKERS)},
                                    job_defaults={"misfire_grace_time": None}, timezone="UTC")
    sessions = _Sessions()
    start = _start_after(3)
    due = {str(uuid.uuid4()): moment for moment in due_times(workload, tasks, start)}
    for task_id, moment in due.items():
        scheduler.add_job(_post, "date", run_date=moment, args=(sessions, receiver.url, task_id))
    scheduler.start()
    try:
        receiver.wait_for(tasks, _deadline(max(due.values())))
        time.sleep(1.0)
        arrivals = receiver.arrivals()
    finally:
        scheduler.shutdown(wait=True)
    return due, arrivals


def run_requests_loop(workload: str, tasks: int, receiver: ReceiverProcess) -> tuple:
    """One thread, one Session: sleep until each due time, post; (due by id, arrivals)."""
    import requests

    session = requests.Session()
    start = _start_after(3)
    due = {str(uuid.uuid4()): moment for moment in due_times(workload, tasks, start)}
    for task_id, moment in sorted(due.items(), key=lambda pair: pair[1]):
        wait = (moment - datetime.now(timezone.utc)).total_seconds()
        if wait > 0:
            time.sleep(wait)
        session.post(receiver.url, json={"n": 1}, headers={"X-Task-Id": task_id}, timeout=10)
    time.sleep(1.0)
    return due, receiver.arrivals()


RUNNERS = {"ours": run_ours, "apscheduler": run_apscheduler,
           "requests loop": run_requests_loop}


def summarize(due: dict, arrivals: list) -> dict:
    """Lost, duplicated and early deliveries, lateness percentiles and burst throughput."""
    counts = Counter(task_id for task_id, _, _ in arrivals)
    lateness = [(moment - due[task_id]).total_seconds() * 1000
                for task_id, moment, _ in arrivals if task_id in due]
    first_due = min(due.values())
    last_arrival = max(moment for _, moment, _ in arrivals)
    return {
        "tasks": len(due), "missing": len(set(due) - set(counts)),
        "duplicates": sum(count - 1 for count in counts.values()),
        "early": sum(1 for value in lateness if value < 0),
        # Tasks delivered per second, counted from the first due time to the last arrival.
        "throughput_per_s": round(len(set(due) & set(counts)) / max(
            (last_arrival - first_due).total_seconds(), 1e-3), 1),
        "p50_ms": round(percentile(lateness, 0.50), 1),
        "p99_ms": round(percentile(lateness, 0.99), 1),
        "max_ms": round(max(lateness), 1),
        "lateness_ms": lateness,
    }


def measure(burst: int = 1000, sparse: int = 200, rounds: int = 3) -> dict:
    """{workload: {system: {medians..., "rounds": [...], "lateness_ms": all samples}}}."""
    workloads = [(workload, tasks) for workload, tasks in (("burst", burst), ("sparse", sparse))
                 if tasks]  # --burst 0 or --sparse 0 leaves that workload out
    results = {workload: {system: [] for system in SYSTEMS} for workload, _ in workloads}
    for number in range(rounds):
        order = SYSTEMS[number % len(SYSTEMS):] + SYSTEMS[:number % len(SYSTEMS)]
        for workload, tasks in workloads:
            for system in order:
                receiver = ReceiverProcess()
                try:
                    summary = summarize(*RUNNERS[system](workload, tasks, receiver))
                finally:
                    receiver.stop()
                results[workload][system].append(summary)
                print(json.dumps({"round": number + 1, "workload": workload, "system": system,
                                  **{k: v for k, v in summary.items() if k != "lateness_ms"}}),
                      file=sys.stderr, flush=True)
    report = {}
    for workload, systems in results.items():
        report[workload] = {}
        for system, runs in systems.items():
            medians = {key: statistics.median(run[key] for run in runs)
                       for key in ("throughput_per_s", "p50_ms", "p99_ms")}
            medians["max_ms"] = max(run["max_ms"] for run in runs)  # the worst of all rounds
            totals = {key: sum(run[key] for run in runs)
                      for key in ("tasks", "missing", "duplicates", "early")}
            report[workload][system] = {
                **medians, **totals, "rounds": len(runs),
                "lateness_ms": [value for run in runs for value in run["lateness_ms"]]}
    return report


def table(report: dict) -> str:
    """A Markdown table: medians per workload and system, with our throughput ratios."""
    rows = []
    for workload, systems in report.items():
        ours = systems["ours"]["throughput_per_s"]
        for system, r in systems.items():
            ratio = "" if system == "ours" else f"{ours / r['throughput_per_s']:.2f}" + (
                " (we are behind)" if ours < r["throughput_per_s"] else "")
            rate = f"{r['throughput_per_s']:.0f}"
            if workload == "sparse":  # paced by the due times, not by the scheduler
                ratio = rate = "n/a"
            rows.append([f"{workload} ({r['tasks'] // r['rounds']} tasks)", system, rate, ratio,
                         f"{r['p50_ms']:.0f} ms", f"{r['p99_ms']:.0f} ms",
                         f"{r['max_ms']:.0f} ms",
                         f"{r['missing']} / {r['duplicates']} / {r['early']}"])
    return markdown_table(["workload", "system", "throughput/s", "ours ÷ it", "lateness p50",
                           "p99", "max (all rounds)", "lost / dup / early"], rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--sparse", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--window", type=int, default=SPARSE_WINDOW_SECONDS,
                        help="seconds over which the sparse tasks are spread")
    args = parser.parse_args()
    SPARSE_WINDOW_SECONDS = args.window
    print(table(measure(args.burst, args.sparse, args.rounds)))
