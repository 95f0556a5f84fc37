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


class FlowKeyNotFound(SchedulerError):
    """No task has declared or used this flow-control key."""

    status = 404
    code = "flow_key_not_found"


class QuotaExceeded(SchedulerError):
    """The tenant has as many waiting tasks as TENANT_MAX_WAITING allows."""

    status = 429
    code = "quota_exceeded"


class Conflict(SchedulerError):
    """The task's state does not allow what was asked."""

    status = 409
    code = "conflict"


class PreconditionFailed(SchedulerError):
    """The task changed since the version the client's If-Match names."""

    status = 412
    code = "precondition_failed"


class StoreUnavailable(SchedulerError):
    """The store cannot take or keep a write now (read-only or full disk, its file gone):
    nothing was acknowledged, and trying again later may work."""

    status = 503
    code = "store_unavailable"


# ---------------------------------------------------------------- what stores raise
# Besides TaskNotFound and StoreUnavailable (which mean the same to every caller), a store
# adapter raises only these; they never reach a client as such: the use case that asked
# decides what the answer is.

class StoreError(Exception):
    """Base of the store's own outcomes that are not an answer by themselves."""


class TaskExists(StoreError):
    """A task with this id is already stored (ids are uuid4, or derived from an
    Idempotency-Key)."""


class ClaimLost(StoreError):
    """A conditional write found the task no longer in the state the caller held; `current`
    is the task as stored (None when it is gone). The executor and sweeper read it as
    "someone else has it"."""

    def __init__(self, task_id: str, current=None):
        super().__init__(f"task {task_id} is not in the expected state")
        self.task_id = task_id
        self.current = current


class StateConflict(StoreError):
    """The task's status does not allow the change asked for; `current` is the task as
    stored."""

    def __init__(self, current):
        super().__init__(f"task {current.task_id} is {current.status}")
        self.current = current


class FlowConflict(StoreError):
    """A flow-control key's state changed since the version the caller read; `current` is
    its state as stored."""

    def __init__(self, current):
        super().__init__(f"flow key {current.key} changed")
        self.current = current


class InvalidPageToken(StoreError):
    """A next_token that this store did not make, or made for other filters."""


# ---------------------------------------------------------------- what a run meets
# Internal too: a run records them as its error; the local server says them and exits.

class DeadlineExceeded(Exception):
    """A webhook's request and its response took longer than the run may."""

    def __init__(self, seconds: float):
        super().__init__(seconds)
        self.seconds = seconds


class BlockedAddress(Exception):
    """A target is, or resolves to, an address webhooks may not reach (the SSRF guard)."""


class SigningUnavailable(Exception):
    """The signing secret could not be read or parsed; a later attempt may succeed."""


class LocalSetupError(Exception):
    """A file beside the local data is unusable: the local server says which and why, and
    does not start."""


def normalize_framework_error(body) -> Optional[dict]:
    """The API's error body for one of Chalice's own ({"Code", "Message"}), else None."""
    if isinstance(body, dict) and "Code" in body and "code" not in body:
        return {"code": body["Code"], "message": body.get("Message", ""), "field": None}
    return None
