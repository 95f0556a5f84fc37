"""PRECISION=minute against PRECISION=second on AWS, simulated.

EventBridge Scheduler fires "with 60 second precision": a schedule set for 1:00 invokes
its target anywhere from 1:00:00 to 1:00:59. This simulation arms real tasks with the real
trigger code (on moto), draws each firing uniformly from the minute of the `at()` time the
trigger chose (or takes the direct invocation the trigger made), adds an invocation
delay, and runs the real executor on a clock that starts at that firing: waits advance
it, everything else (the claim and result writes) takes its real time. Lateness is when
the run started minus the task's time; a negative one would be an early run.

    python bench/precision_sim.py [--tasks 500] [--seed 7]
"""
import argparse
import json
import random
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    MOTO_STAGE, create_executor_function, percentile, use_moto_stage,
)

# Lambda's asynchronous invocation delay, from the trigger firing to the handler starting.
INVOKE_DELAY = (0.02, 0.25)


class SimulatedClock:
    """Starts at `start`; sleeping advances it at once, real work advances it really."""

    def __init__(self, start: datetime):
        self.start, self.began, self.slept = start, time.monotonic(), 0.0

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self.began + self.slept)

    def sleep(self, seconds: float) -> None:
        self.slept += max(seconds, 0.0)


def _schedules(group: str):
    import boto3

    client, token, found = boto3.client("scheduler"), None, []
    while True:
        page = client.list_schedules(GroupName=group, **({"NextToken": token} if token else {}))
        found += [s["Name"] for s in page["Schedules"]]
        token = page.get("NextToken")
        if not token:
            return [client.get_schedule(Name=name, GroupName=group) for name in found]


def simulate(mode: str, tasks: int, seed: int) -> dict:
    """Lateness figures (seconds) of `tasks` one-time tasks under PRECISION=`mode`."""
    from moto import mock_aws

    use_moto_stage(PRECISION=mode)
    from dataclasses import replace

    from chalicelib import aws, bootstrap, config, service, wiring
    from chalicelib.executor import execute_task
    from chalicelib.models import utcnow
    rng = random.Random(seed)
    with mock_aws(config={"lambda": {"use_docker": False}}):
        bootstrap.bootstrap(MOTO_STAGE)
        create_executor_function()
        invoked = {}

        def note_invocation(params, **_):
            invoked.setdefault(json.loads(params["body"])["task_id"], utcnow())

        aws.client("lambda").meta.events.register("before-call.lambda.Invoke",
                                                  note_invocation)
        now = utcnow()
        ids = []
        for _ in range(tasks):
            # Whole seconds, 30 s to 15 min ahead: some within the direct-invoke window.
            at = (now + timedelta(seconds=rng.uniform(30, 900))).replace(microsecond=0)
            body = {"action": "log", "payload": {"message": "sim"},
                    "run_at": at.strftime("%Y-%m-%dT%H:%M:%SZ")}
            ids.append(service.schedule_task(wiring.runtime(), body)[0]["task_id"])
        armed = {}
        for schedule in _schedules(config.scheduler_group()):
            task_id = json.loads(schedule["Target"]["Input"])["task_id"]
            minute = datetime.strptime(schedule["ScheduleExpression"], "at(%Y-%m-%dT%H:%M:%S)")
            armed[task_id] = minute.replace(second=0, tzinfo=timezone.utc)
        lateness, early, direct = [], 0, 0
        runtime = wiring.runtime()
        store = runtime.store
        for task_id in ids:
            if task_id in armed:  # anywhere in the minute it was given
                fired = armed[task_id] + timedelta(seconds=rng.uniform(0, 60))
            else:
                fired, direct = invoked[task_id], direct + 1
            clock = SimulatedClock(fired + timedelta(seconds=rng.uniform(*INVOKE_DELAY)))
            result = execute_task(replace(runtime, clock=clock), task_id)
            task = store.get(task_id)
            if result.outcome != "ran":
                raise RuntimeError(f"{task_id}: {result.outcome} at {clock.now()} "
                                   f"(due {task.next_run_at})")
            late = (result.run.started_at - task.next_run_at).total_seconds()
            early += late < 0
            lateness.append(late)
    return {"mode": mode, "tasks": tasks, "direct_invocations": direct, "early": early,
            "p50_s": round(percentile(lateness, 0.50), 3),
            "p99_s": round(percentile(lateness, 0.99), 3),
            "max_s": round(max(lateness), 3), "min_s": round(min(lateness), 3)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print(f"{'mode':<8}{'tasks':>7}{'direct':>8}{'early':>7}{'p50 s':>9}{'p99 s':>9}"
          f"{'max s':>9}")
    for mode in ("minute", "second"):
        row = simulate(mode, args.tasks, args.seed)
        print(f"{row['mode']:<8}{row['tasks']:>7}{row['direct_invocations']:>8}"
              f"{row['early']:>7}{row['p50_s']:>9.3f}{row['p99_s']:>9.3f}{row['max_s']:>9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
