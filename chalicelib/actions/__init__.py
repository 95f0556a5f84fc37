"""What a task does when it fires: every action by name.

Each action validates its payload when the task is created (so a bad task is refused
with a 400 and never stored) and runs it when the task fires: `webhook`, `log`, and the
AWS targets (`sqs`, `sns`, `lambda`, `eventbridge`).
"""
from typing import Dict

from chalicelib.actions import aws_targets, log, webhook
from chalicelib.actions.base import Action, ActionContext, ActionResult, payload_error

__all__ = ["Action", "ActionContext", "ActionResult", "REGISTRY", "payload_error"]

REGISTRY: Dict[str, Action] = {"webhook": webhook.ACTION, "log": log.ACTION,
                               **aws_targets.ACTIONS}

