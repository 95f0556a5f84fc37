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
PAUSED = "paused"

STATUSES = (SCHEDULED, RUNNING, RETRYING, PAUSED, COMPLETED, FAILED, CANCELLED)
WAITING = (SCHEDULED, RETRYING)
FINISHED = (COMPLETED, FAILED, CANCELLED)
# What a client may still change (PATCH, pause, run now): a task that waits or is paused.
CHANGEABLE = (SCHEDULED, RETRYING, PAUSED)

RUN_SUCCEEDED = "succeeded"
RUN_FAILED = "failed"
RUN_SKIPPED = "skipped"  # a firing that did not run (catch_up, overlap): recorded, not run

MAX_RUNS_KEPT = 20
DEFAULT_TENANT = "default"
ALL_TENANTS = "*"  # an admin's caller: sees and changes every tenant's tasks


def tenant_flow_key(tenant: str, key: str) -> str:
    """Where a tenant's flow-control key is kept: the default tenant's under its own name
    (as before tenants), any other's under `<tenant>\x1f<key>`: the separator is a control
    character, which no key may hold (flow_control.key's pattern), so no key of one tenant
    is another's."""
    return key if tenant == DEFAULT_TENANT else f"{tenant}\x1f{key}"


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
    return None if moment is None else _utc_iso(moment, "seconds")


def iso_ms(moment: Optional[datetime]) -> Optional[str]:
    """UTC time with milliseconds, for run records where sub-second matters."""
    return None if moment is None else _utc_iso(moment, "milliseconds")


def _utc_iso(moment: datetime, timespec: str) -> str:
    # isoformat, not strftime: it pads a year before 1000 to four digits, as parse_iso
    # needs. A UTC time (nearly all) is written as it is, "+00:00" made "Z": a run writes
    # a score of these, and converting each first cost a delivery 2% of its CPU.
    if moment.tzinfo is not timezone.utc:
        moment = moment.astimezone(timezone.utc)
    return moment.isoformat(timespec=timespec)[:-6] + "Z"


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
    callback: Optional[str] = None  # what became of its callbacks, if the task has any

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
            "callback": self.callback,
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
    start_at: Optional[str] = option(None, "recurring only: no firing before this date-time",
                                     type="string", format="date-time", nullable=True)
    end_at: Optional[str] = option(None, "recurring only: no firing after this date-time; "
                                         "the task is completed then", type="string",
                                   format="date-time", nullable=True)
    max_runs: Optional[int] = option(None, "recurring only: completed after this many runs "
                                           "(runs_done)", type="integer", minimum=1,
                                     maximum=1_000_000, nullable=True)
    catch_up: str = option("latest", "firings missed while it could not run (service down, "
                                     "paused): run the latest once, none, or all (oldest "
                                     "first, at most 100)", type="string",
                           enum=["latest", "none", "all"])
    overlap: str = option("skip", "recurring only: a firing due while the previous run still "
                                  "runs is skipped, or runs right after it (at most one waits)",
                          type="string", enum=["skip", "buffer_one"])
    window_minutes: int = option(0, "each firing runs at a stable moment within this many "
                                    "minutes after its time (spreads a herd)",
                                 type="integer", minimum=0, maximum=1440)
    tags: Dict[str, str] = option({}, "labels to find the task by (GET /tasks?tag=key:value)",
                                  type="object", maxProperties=10,
                                  propertyNames={"type": "string", "minLength": 1,
                                                 "maxLength": 128},
                                  additionalProperties={"type": "string", "maxLength": 256})
    flow_control: Optional[Dict[str, Any]] = option(
        None, "limits shared by every task with the same key (the latest task that sets "
              "them wins): at most rate starts per period and parallelism runs at once; a "
              "task over them waits, using no attempt", type="object", nullable=True,
        properties={"key": {"type": "string", "minLength": 1, "maxLength": 128,
                            "pattern": "^[^\\x00-\\x1f]+$"},
                    "rate": {"type": "integer", "minimum": 1, "maximum": 10_000},
                    "period": {"type": "string", "enum": ["second", "minute", "hour"],
                               "default": "second"},
                    "parallelism": {"type": "integer", "minimum": 1, "maximum": 1000}},
        required=["key"], anyOf=[{"required": ["rate"]}, {"required": ["parallelism"]}],
        additionalProperties=False)
    callback_url: Optional[str] = option(
        None, "called after every run with its outcome (POST, signed as webhooks are)",
        type="string", format="uri", maxLength=2048, nullable=True)
    failure_callback_url: Optional[str] = option(
        None, "called after the run whose failure is final (no attempt left)",
        type="string", format="uri", maxLength=2048, nullable=True)
    attempts: int = 0
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    run_id: Optional[str] = None
    lease_until: Optional[datetime] = None
    runs: List[Run] = field(default_factory=list)
    firing_at: Optional[datetime] = None
    idempotency_key: Optional[str] = None
    request_hash: Optional[str] = None
    # Raised by every stored change: the ETag, and the condition of every client change.
    version: int = 1
    runs_done: int = 0
    paused_until: Optional[datetime] = None
    # An extra run asked for by POST .../run of a recurring task: its own key, and whether
    # the task goes back to paused after it.
    extra_run_key: Optional[str] = None
    pause_after_run: bool = False
    # While the task waits for room under its flow-control key: its entry in the key's
    # queue (see chalicelib.flowcontrol), and since when its current firing is delayed.
    flow_waiting: Optional[str] = None
    flow_delayed_at: Optional[datetime] = None
    # Whose task it is: the tenant of the token that made it (tasks from before tenants
    # are the default tenant's).
    tenant: str = DEFAULT_TENANT

    def __post_init__(self):
        if self.firing_at is None:
            self.firing_at = self.next_run_at

    @property
    def flow_key(self) -> Optional[str]:
        """The flow-control key whose limits the task's runs keep, if any (another tenant's
        key of the same name is another key)."""
        return tenant_flow_key(self.tenant, self.flow_control["key"]) \
            if self.flow_control else None

    @property
    def recurring(self) -> bool:
        """Whether the task fires more than once."""
        return self.schedule_kind != "once"

    @property
    def waiting(self) -> bool:
        """Whether the task waits for its next firing."""
        return self.status in WAITING

    @property
    def wake_at(self) -> Optional[datetime]:
        """When the executor must next look at the task: its next run while it waits, the
        end of its pause when it was paused until a time; None otherwise."""
        if self.status in WAITING:
            return self.next_run_at
        if self.status == PAUSED:
            return self.paused_until
        return None

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
            "runs_done": self.runs_done,
            "version": self.version,
            # A finished or paused task runs no more (until resumed), whatever time its
            # last firing left behind.
            "next_run_at": iso(self.next_run_at) if self.status in WAITING + (RUNNING,)
            else None,
            "paused_until": iso(self.paused_until) if self.status == PAUSED else None,
            "flow_delayed_since": iso(self.flow_delayed_at) if self.status in WAITING
            else None,
            "tenant": self.tenant,
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
    (a retry or the next firing), which firing that belongs to, whether the attempt
    count starts again (a new firing), the firings it passed over and whether a run ended."""

    status: str
    next_run_at: Optional[datetime] = None
    firing_at: Optional[datetime] = None
    reset_attempts: bool = False
    skipped: List[Run] = field(default_factory=list)  # firings passed over, recorded
    counts_run: bool = False  # a firing's run ended (runs_done + 1)


@dataclass(frozen=True)
class DueRef:
    """What the local dispatcher needs of a due task to place it: its id, its action and
    webhook URL (what its run will wait on) and its flow-control key."""

    task_id: str
    action: str
    url: Optional[str]
    flow_key: Optional[str]

    @classmethod
    def of(cls, task: "Task") -> "DueRef":
        """The reference to a task."""
        url = task.payload.get("url") if isinstance(task.payload, dict) else None
        return cls(task.task_id, task.action, url if isinstance(url, str) else None,
                   task.flow_key)


@dataclass
class Page:
    """One page of a listing and the opaque token of the next."""

    tasks: List[Task]
    next_token: Optional[str] = None

