"""QStash's callbacks: after a run, its outcome is POSTed to the task's `callback_url`, and
after a final failure to its `failure_callback_url`.

A callback is sent as a webhook is (signed with Standard Webhooks, SSRF-guarded, bounded
by its timeout), tried up to three times with short pauses within a budget that keeps the
run inside its lease, before the run's result is written: what became of it is recorded on the run (`callback`), so a failing callback is
visible in the task's runs and never changes the run's outcome.
"""
import time
from typing import Callable, Dict, List, Optional

from chalicelib import actions
from chalicelib.actions import exchange
from chalicelib.actions.base import ActionContext, ActionResult
from chalicelib.actions.webhook import run_webhook
from chalicelib.models import Run, Task

# Pauses before the second and third try.
PAUSES = (0.5, 2.0)
TIMEOUT_SECONDS = 5
# All of a run's callbacks together take at most this long (each try may take its
# timeout and the exchange's margin): with the action's own 65 s at most, a run stays
# inside its 120 s lease, so no other executor takes the task over meanwhile.
BUDGET_SECONDS = 40.0


def body(task: Task, run: Run, status: str, result: ActionResult) -> Dict[str, object]:
    """What a callback receives: the run's outcome and the task's status after it."""
    # The receiver's answer may echo the task's own secrets (an Authorization header):
    # scrubbed as the run's error is.
    answer = actions.REGISTRY[task.action].scrub(task.payload, result.response_body) \
        if result.response_body else None
    return {"task_id": task.task_id, "run_id": run.run_id, "attempt": run.attempt,
            "outcome": run.outcome, "http_status": run.http_status, "error": run.error,
            "status": status, "response_body": answer}


def after_run(task: Task, run: Run, status: str, result: ActionResult, final_failure: bool,
              sleep: Callable[[float], None]) -> Optional[str]:
    """Send the run's callbacks; what became of them, for the run's record (None: the
    task has none)."""
    sent: List[str] = []
    payload = body(task, run, status, result)
    until = time.monotonic() + BUDGET_SECONDS
    if task.callback_url:
        sent.append("callback " + _deliver(task, run, task.callback_url, payload, "callback",
                                           sleep, until))
    if final_failure and task.failure_callback_url:
        sent.append("failure callback " + _deliver(task, run, task.failure_callback_url,
                                                   payload, "failure-callback", sleep, until))
    return "; ".join(sent) or None


def _deliver(task: Task, run: Run, url: str, payload: Dict[str, object], kind: str,
             sleep: Callable[[float], None], until: float) -> str:
    # One message id for every try: the receiver may drop a repeat by it.
    context = ActionContext(task_id=task.task_id, run_id=run.run_id, attempt=run.attempt,
                            idempotency_key=f"{task.task_id}:{run.run_id}:{kind}")
    tries, result = 0, None
    for pause in (0.0,) + PAUSES:
        if time.monotonic() + pause + exchange.deadline(TIMEOUT_SECONDS) > until:
            break  # no time left for a whole try
        if pause:
            sleep(pause)
        tries += 1
        result = run_webhook({"url": url, "data": payload, "timeout": TIMEOUT_SECONDS},
                             context)
        if result.success:
            return f"delivered (HTTP {result.http_status})"
        if not result.retryable:
            break
    if result is None:
        return "not sent: the run's time for callbacks was spent"
    return f"failed after {tries} {'try' if tries == 1 else 'tries'}: {result.error}"
