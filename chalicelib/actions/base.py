"""The types every action shares: what it is, what it knows of its run, what it returns."""
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional

from chalicelib.errors import ValidationError


@dataclass
class ActionContext:
    """What an action knows about the run it performs."""

    task_id: str
    run_id: str
    attempt: int
    idempotency_key: str


@dataclass
class ActionResult:
    """Outcome of one run of an action; a failure says whether trying again may help."""

    success: bool
    http_status: Optional[int] = None
    error: Optional[str] = None
    retryable: bool = False
    retry_after: Optional[float] = None
    response_body: Optional[str] = None  # the start of the receiver's answer (1 KiB)


@dataclass
class Action:
    """A registered action: how to validate its payload, run it, and show it."""

    validate: Callable[[Any], Dict[str, Any]]
    run: Callable[[Dict[str, Any], ActionContext], ActionResult]
    redact: Callable[[Dict[str, Any]], Dict[str, Any]] = lambda payload: payload
    # The longest one run of this payload may take, for callers with a time budget.
    max_seconds: Callable[[Dict[str, Any]], float] = lambda payload: 0.0
    # Text (an error) without the payload's secrets, before it is stored or logged.
    scrub: Callable[[Dict[str, Any], Optional[str]], Optional[str]] = \
        lambda payload, text: text


def payload_error(message: str, field: str = "payload") -> ValidationError:
    """A validation error on the payload (or one of its fields)."""
    return ValidationError(message, field=field, code="invalid_payload")
