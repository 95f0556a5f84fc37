"""What a task does when it fires: every action by name, and the one way to show a payload.

Each action validates its payload when the task is created (so a bad task is refused
with a 400 and never stored) and runs it when the task fires: `webhook`, `log`, and the
AWS targets (`sqs`, `sns`, `lambda`, `eventbridge`).
"""
from typing import Any, Dict

from chalicelib.actions import aws_targets, log, webhook
from chalicelib.actions.base import Action, ActionContext, ActionResult, payload_error

__all__ = ["Action", "ActionContext", "ActionResult", "REGISTRY", "payload_error",
           "redacted"]

REGISTRY: Dict[str, Action] = {"webhook": webhook.ACTION, "log": log.ACTION,
                               **aws_targets.ACTIONS}


def redacted(action_name: str, payload: Any) -> Any:
    """The payload as shown outside the store (API answers, dead letters): without the
    action's secrets; an action no longer registered shows it as stored."""
    action = REGISTRY.get(action_name)
    return action.redact(payload) if action is not None else payload
