"""One tree of domain errors; http_status and body are the only mapping to HTTP."""
from typing import Optional


def shown(text: str, limit: int = 60) -> str:
    """User input as quoted in an error message: at most `limit` characters of it."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...({len(text)} characters)"


class SchedulerError(Exception):
    """Base of every error the service reports to a client."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, field: Optional[str] = None, code: Optional[str] = None):
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code

    def body(self) -> dict:
        """The SPEC error body: code, message, field."""
        return {"code": self.code, "message": self.message, "field": self.field}


class ValidationError(SchedulerError):
    """A request field is missing or wrong."""

    status = 400
    code = "invalid_field"


class PayloadTooLarge(SchedulerError):
    """The request body exceeds what the API accepts."""

    status = 413
    code = "payload_too_large"


class TaskNotFound(SchedulerError):
    """No task has this id."""

    status = 404
    code = "task_not_found"


class Conflict(SchedulerError):
    """The task's state does not allow what was asked."""

    status = 409
    code = "conflict"


class StoreUnavailable(SchedulerError):
    """The store cannot take or keep a write now (read-only or full disk, its file gone):
    nothing was acknowledged, and trying again later may work."""

    status = 503
    code = "store_unavailable"


class ClaimLost(Exception):
    """A conditional write found the task no longer in the state the caller held.

    Internal: it never reaches a client; the executor and sweeper treat it as
    "someone else has it".
    """

    def __init__(self, task_id: str, current=None):
        super().__init__(f"task {task_id} is not in the expected state")
        self.task_id = task_id
        self.current = current


class TaskExists(Exception):
    """A task with this id is already stored (internal: ids are uuid4)."""


def normalize_framework_error(body) -> Optional[dict]:
    """The API's error body for one of Chalice's own ({"Code", "Message"}), else None."""
    if isinstance(body, dict) and "Code" in body and "code" not in body:
        return {"code": body["Code"], "message": body.get("Message", ""), "field": None}
    return None
