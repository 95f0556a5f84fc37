"""Dataclasses the store adapters return and the service works with, and the clock."""
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable, Dict, List, Optional

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
    name: Optional[str] = None
    priority: int = 5
    max_attempts: int = 3
    notify: str = "failure"
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
            "name": self.name,
            "priority": self.priority,
            "max_attempts": self.max_attempts,
            "notify": self.notify,
            "status": self.status,
            "attempts": self.attempts,
            # A finished task runs no more, whatever time its last firing left behind.
            "next_run_at": None if self.status in FINISHED else iso(self.next_run_at),
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "runs": [run.to_api() for run in sorted(
                self.runs, key=lambda r: r.started_at, reverse=True)],
        }


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

