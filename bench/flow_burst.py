"""Flow control under a burst: N tasks due together on one key with parallelism 10 against a
receiver that takes 50 ms.

- local: `make dev`'s server process; wall time against the ideal (N x 50 ms / 10), the
  start delay (arrival - due time) against the ideal queue's, the most requests the
  receiver answered at once (never above the parallelism), lost and duplicated deliveries.
- aws: the same burst through the executor over moto, EventBridge played by a pool of
  threads that invokes the executor for each task its trigger arms (as many at once as
  Lambda would run): the AWS calls per task, and which.

    python bench/flow_burst.py [--tasks N]     (prints Markdown tables and the JSON)
"""
import argparse
import json
import os
import queue
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.aws_calls import CallCounter  # noqa: E402
from bench.common import (  # noqa: E402
    MOTO_STAGE, Receiver, create_executor_function, markdown_table, moto_dynamodb_atomic,
    percentile, schedule, start_server, stop_server, use_moto_stage,
)

PARALLELISM = 10
RECEIVER_SECONDS = 0.05
KEY = "bench-receiver"
# Executors EventBridge runs at once in the moto run (Lambda would run more; more threads
# only add contention on the key's state, which the figure should include at some level).
AWS_CONCURRENCY = 24


EXPLAINED = """Local: `make dev`'s server, every task due in the same second; the start delay
is each request's arrival at the receiver after the due time, the ideal that of a perfect
queue (rounds of 10 every 50 ms). On moto: the same burst through the executor, EventBridge
played by 24 threads that invoke the executor for every task at its time and for every task
its trigger arms; the calls are everything the executors sent to AWS, over the tasks."""


def _ideal(tasks: int) -> dict:
    """What a perfect key would do: rounds of `PARALLELISM` runs of 50 ms each."""
    rounds = -(-tasks // PARALLELISM)
    starts = [(n // PARALLELISM) * RECEIVER_SECONDS * 1000 for n in range(tasks)]
    return {"wall_s": rounds * RECEIVER_SECONDS, "p99_start_delay_ms": percentile(starts, 0.99)}


def measure_local(tasks: int) -> dict:
    """The burst through the dev server: timings against the ideal, and correctness."""
    receiver = Receiver(delay=RECEIVER_SECONDS)
    with tempfile.TemporaryDirectory() as data:
        process, url = start_server(Path(data))
        try:
            start = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(
                seconds=int(5 + tasks / 100))
            flow_control = {"key": KEY, "parallelism": PARALLELISM}

            def create(_):
                return schedule(url, receiver.url, start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                                flow_control=flow_control)

            with ThreadPoolExecutor(8) as pool:
                ids = set(pool.map(create, range(tasks)))
            if datetime.now(timezone.utc) >= start:
                raise SystemExit("creating the tasks took longer than the margin")
            deadline = time.monotonic() + (start - datetime.now(timezone.utc)).total_seconds() \
                + 60 + tasks * RECEIVER_SECONDS
            while len(receiver.arrivals) < tasks and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(1.0)  # a duplicate would show up here
        finally:
            stop_server(process)
    arrivals = list(receiver.arrivals)
    counts = Counter(task_id for task_id, _, _ in arrivals)
    delays = sorted((moment - start).total_seconds() * 1000 for _, moment, _ in arrivals)
    wall = (max(moment for _, moment, _ in arrivals) - start).total_seconds() + RECEIVER_SECONDS
    ideal = _ideal(tasks)
    return {
        "tasks": tasks, "missing": len(ids - set(counts)),
        "duplicates": sum(count - 1 for count in counts.values()),
        "most_in_flight": receiver.most_in_flight, "parallelism": PARALLELISM,
        "wall_s": round(wall, 2), "ideal_wall_s": ideal["wall_s"],
        "wall_vs_ideal": round(wall / ideal["wall_s"], 2),
        "p50_start_delay_ms": round(percentile(delays, 0.50), 1),
        "p99_start_delay_ms": round(percentile(delays, 0.99), 1),
        "ideal_p99_start_delay_ms": round(ideal["p99_start_delay_ms"], 1),
    }


def measure_aws(tasks: int) -> dict:
    """The burst through the executor over moto; AWS calls per task, and which."""
    from moto import mock_aws

    use_moto_stage(
        EXECUTOR_ARN="arn:aws:lambda:us-east-1:123456789012:function:"
                     "task-scheduler-dev-execute_task",
        SCHEDULER_ROLE_ARN="arn:aws:iam::123456789012:role/task-scheduler-dev-scheduler",
        WEBHOOK_SIGNING_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ALLOW_PRIVATE_TARGETS="true")
    from chalicelib import bootstrap

    receiver = Receiver(delay=RECEIVER_SECONDS)
    with moto_dynamodb_atomic(), mock_aws(config={"lambda": {"use_docker": False}}):
        bootstrap.bootstrap(MOTO_STAGE)
        create_executor_function()
        return _burst_on_moto(tasks, receiver)


def _burst_on_moto(tasks: int, receiver: Receiver) -> dict:
    from dataclasses import replace

    from chalicelib import aws, service, wiring
    from chalicelib.executor import execute_task

    runtime = wiring.runtime()
    fired: "queue.Queue" = queue.Queue()
    real_arm = runtime.trigger.arm

    def arm(task):  # the real CreateSchedule (counted), and EventBridge firing it
        real_arm(task)
        fired.put(task.task_id)

    counter = CallCounter()
    in_an_hour = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")
    body = {"action": "webhook", "payload": {"url": receiver.url, "data": {"n": 1}},
            "run_at": in_an_hour, "flow_control": {"key": KEY, "parallelism": PARALLELISM}}
    ids = [service.schedule_task(runtime, body)[0]["task_id"] for _ in range(tasks)]
    runtime = replace(runtime, trigger=_Arming(runtime.trigger, arm))
    for name in ("dynamodb", "scheduler", "lambda", "sqs", "sns", "ssm", "sts"):
        aws.client(name).meta.events.register("before-call", counter)
    counter.take()
    due = runtime.store.get(ids[0]).next_run_at
    outcomes: Counter = Counter()
    lock = threading.Lock()
    # The burst fires at its due time: every task at once; later, each armed wake.
    for task_id in ids:
        fired.put(task_id)
    started = time.monotonic()

    def executor():
        while True:
            task_id = fired.get()
            if task_id is None:
                return
            clock = replace(runtime.clock, now=lambda: max(due, datetime.now(timezone.utc)))
            result = execute_task(replace(runtime, clock=clock), task_id)
            with lock:
                outcomes[result.outcome] += 1
            fired.task_done()

    workers = [threading.Thread(target=executor, daemon=True)
               for _ in range(AWS_CONCURRENCY)]
    for worker in workers:
        worker.start()
    fired.join()
    for _ in workers:
        fired.put(None)
    elapsed = time.monotonic() - started
    calls = counter.take()
    done = sum(1 for task_id in ids if runtime.store.get(task_id).status == "completed")
    return {"tasks": tasks, "completed": done, "deliveries": len(receiver.arrivals),
            "most_in_flight": receiver.most_in_flight, "executor_invocations": dict(outcomes),
            "aws_calls_per_task": round(sum(calls.values()) / tasks, 1),
            "calls": {op: round(n / tasks, 2) for op, n in sorted(calls.items())},
            "seconds_on_moto": round(elapsed, 1)}


class _Arming:
    """The stage's trigger, with `arm` replaced (everything else as it is)."""

    def __init__(self, trigger, arm):
        self._trigger, self.arm = trigger, arm

    def __getattr__(self, name):
        return getattr(self._trigger, name)


def measure(tasks: int = 1000, aws_tasks: int = 200) -> dict:
    """Both runs (the moto one last: it sets a stage's variables in this process)."""
    baseline = dict(os.environ)
    local = measure_local(tasks)
    try:
        on_moto = measure_aws(aws_tasks)
    finally:
        os.environ.clear()
        os.environ.update(baseline)
    return {"local": local, "aws": on_moto}


def table(report: dict) -> str:
    """Markdown tables of both runs."""
    local, on_moto = report["local"], report["aws"]
    first = markdown_table(
        ["tasks (parallelism 10, 50 ms each)", "wall", "ideal", "wall / ideal",
         "p50 / p99 start delay", "ideal p99", "most at once", "lost / duplicated"],
        [[local["tasks"], f"{local['wall_s']} s", f"{local['ideal_wall_s']} s",
          local["wall_vs_ideal"],
          f"{local['p50_start_delay_ms']} / {local['p99_start_delay_ms']} ms",
          f"{local['ideal_p99_start_delay_ms']} ms", local["most_in_flight"],
          f"{local['missing']} / {local['duplicates']}"]])
    second = markdown_table(
        ["tasks on moto", "AWS calls per task", "which (per task)", "executor invocations"],
        [[on_moto["tasks"], on_moto["aws_calls_per_task"],
          ", ".join(f"{op} {n}" for op, n in on_moto["calls"].items()),
          ", ".join(f"{outcome} {n}" for outcome, n in
                    sorted(on_moto["executor_invocations"].items()))]])
    return first + "\n\n" + second


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--aws-tasks", type=int, default=200)
    arguments = parser.parse_args()
    result = measure(arguments.tasks, arguments.aws_tasks)
    print(table(result))
    print(json.dumps(result))
