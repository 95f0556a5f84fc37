"""Every action a task can name: a plain dict from name to Action."""
from typing import Dict

from chalicelib import actions, aws_targets
from chalicelib.actions import Action

REGISTRY: Dict[str, Action] = {**actions.ACTIONS, **aws_targets.ACTIONS}
