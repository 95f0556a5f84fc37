"""Dataclasses the store adapters return and the service works with, and the clock.

A task's options (the fields a client may set beyond what and when: name, priority, ...)
are declared once, on Task, with `option(...)`: the declaration drives validation, the
OpenAPI schema, GET's shape and both store mappings (see OPTIONS).
"""
import time
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional, Tuple

SCHEDULED = "scheduled"
RUNNING = "running"
RETRYING = "retrying"
COMPLETED = "completed"
FAILED = "failed"
CANCELLED = "cancelled"

STATUSES = (SCHEDULED, RUNNING, RETRYING, COMPLETED, FAILED, CANCELLED)
WAITING = (SCHEDULED, RETRYING)
FINISHED = (COMPLETED, FAILED, CANCELLED)

RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"

MAX_RUNS_KEPT = 20


def utcnow() -> datetime:
    """Current time, timezone-aware UTC, to the millisecond (what the stores keep), so a
    time read back from a store equals the one written."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


@dataclass(frozen=True)
class Clock:
    """The time source every use case is given: the wall clock, or a test's own."""

    now: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep


SYSTEM_CLOCK = Clock()


def iso(moment: Optional[datetime]) -> Optional[str]:
    """UTC YYYY-MM-DDTHH:MM:SSZ, the one time format of the API and the store."""
    if moment is None:
        return None
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(moment: Optional[datetime]) -> Optional[str]:
    """UTC time with milliseconds, for run records where sub-second matters."""
    if moment is None:
        return None
    text = moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
    return text[:-3] + "Z"


def parse_iso(text: Optional[str]) -> Optional[datetime]:
    """Inverse of iso / iso_ms."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass
class Run:
    """One execution attempt of a task."""

    run_id: str
    attempt: int
    started_at: datetime
    ended_at: Optional[datetime] = None
    outcome: Optional[str] = None
    http_status: Optional[int] = None
    error: Optional[str] = None
    duration_ms: Optional[int] = None

    def to_api(self) -> Dict[str, Any]:
        """JSON shape shown in GET /tasks/{id}."""
        return {
            "run_id": self.run_id,
            "attempt": self.attempt,
            "started_at": iso_ms(self.started_at),
            "ended_at": iso_ms(self.ended_at),
            "outcome": self.outcome,
            "http_status": self.http_status,
            "error": self.error,
            "duration_ms": self.duration_ms,
        }


@dataclass(frozen=True)
class Option:
    """A task option as a client sees it: its JSON schema (type and limits), its default
    and what it is for. `name` is the Task attribute it declares."""

    name: str
    schema: Dict[str, Any]
    default: Any
    help: str

    @property
    def nullable(self) -> bool:
        """Whether null is a value (it means "not set")."""
        return bool(self.schema.get("nullable"))


def option(default: Any, help: str, **schema: Any):  # noqa: A002 - the declaration's word
    """A Task field that is an option: `schema` holds its JSON schema keywords (type,
    minimum, maximum, maxLength, enum, nullable, items...)."""
    metadata = {"option": (schema, help)}
    if isinstance(default, (list, dict)):  # each task gets its own copy
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Task:
    """A stored task and everything known about it."""

    task_id: str
    action: str
    payload: Dict[str, Any]
    run_at: str
    schedule_kind: str
    next_run_at: Optional[datetime]
    status: str = SCHEDULED
    timezone: str = "UTC"
    name: Optional[str] = option(None, "a label to find the task by (GET /tasks?name=)",
                                 type="string", maxLength=200, nullable=True)
    priority: int = option(5, "0-9: when several are due at once, 9 runs first",
                           type="integer", minimum=0, maximum=9)
    max_attempts: int = option(3, "runs tried per firing before it fails (retries with "
                                  "back-off in between)", type="integer", minimum=1, maximum=10)
    notify: str = option("failure", "when the notification topic hears of a run: its final "
                                    "failure, or every run", type="string",
                         enum=["failure", "always"])
    attempts: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    run_id: Optional[str] = None
    lease_until: Optional[datetime] = None
    runs: List[Run] = field(default_factory=list)
    firing_at: Optional[datetime] = None
    idempotency_key: Optional[str] = None
    request_hash: Optional[str] = None

    def __post_init__(self):
        if self.firing_at is None:
            self.firing_at = self.next_run_at

    @property
    def recurring(self) -> bool:
        """Whether the task fires more than once."""
        return self.schedule_kind != "once"

    @property
    def waiting(self) -> bool:
        """Whether the task waits for its next firing."""
        return self.status in WAITING

    def to_api(self) -> Dict[str, Any]:
        """JSON shape of GET /tasks/{id} (without upcoming, which needs the schedule)."""
        return {
            "task_id": self.task_id,
            "action": self.action,
            "payload": self.payload,
            "run_at": self.run_at,
            "timezone": self.timezone,
            **{declared.name: getattr(self, declared.name) for declared in OPTIONS},
            "status": self.status,
            "attempts": self.attempts,
            # A finished task runs no more, whatever time its last firing left behind.
            "next_run_at": None if self.status in FINISHED else iso(self.next_run_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "runs": [run.to_api() for run in sorted(
                self.runs, key=lambda r: r.started_at, reverse=True)],
        }


def _options() -> Tuple[Option, ...]:
    return tuple(Option(each.name, dict(each.metadata["option"][0]),
                        each.default_factory() if callable(each.default_factory)
                        else each.default, each.metadata["option"][1])
                 for each in fields(Task) if "option" in each.metadata)


OPTIONS: Tuple[Option, ...] = _options()


@dataclass
class Transition:
    """What a finished run changes: the new status, when the task next needs to run
    (a retry or the next firing), which firing that belongs to, and whether the attempt
    count starts again (a new firing)."""

    status: str
    next_run_at: Optional[datetime] = None
    firing_at: Optional[datetime] = None
    reset_attempts: bool = False


@dataclass
class Page:
    """One page of a listing and the opaque token of the next."""

    tasks: List[Task]
    next_token: Optional[str] = None

