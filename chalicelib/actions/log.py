"""The log action: one structured log line per run, for tasks that only need a trace."""
from typing import Any, Dict

from chalicelib import observability
from chalicelib.actions.base import Action, ActionContext, ActionResult, payload_error


def validate_log(payload: Any) -> Dict[str, Any]:
    """A log payload: `message` (string), optional `data`."""
    if not isinstance(payload, dict):
        raise payload_error("payload must be an object with 'message'")
    message = payload.get("message")
    if not isinstance(message, str) or not message:
        raise payload_error("payload.message is required: the text to log",
                             "payload.message")
    unknown = sorted(set(payload) - {"message", "data"})
    if unknown:
        raise payload_error(f"payload.{unknown[0]} is not a log field (allowed: data, "
                             "message)", f"payload.{unknown[0]}")
    return dict(payload)


def run_log(payload: Dict[str, Any], context: ActionContext) -> ActionResult:
    """Write one structured log line; always succeeds."""
    observability.event("task_log", task_id=context.task_id, run_id=context.run_id,
                        attempt=context.attempt, message=payload["message"],
                        data=payload.get("data"))
    return ActionResult(True)


ACTION = Action(validate=validate_log, run=run_log)
