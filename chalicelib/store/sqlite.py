"""SQLite adapter of the task store: the local stage's embedded store.

Same semantics as the DynamoDB adapter: a claim is one conditional UPDATE, every other change
one UPDATE conditioned on the version it read; due_at is set only while a task waits
(next_run_at), is paused until a time, or holds a lease (lease expiry), and partial indexes
cover just those rows, so the due query reads due rows only, one query per priority. WAL
journal with synchronous=FULL: a committed write survives a crash. Reads use one
connection per thread and take no lock. The writes of one process share one connection
and are committed in groups: writers that arrive while another writes join its
transaction (each in a savepoint of its own), and the last of them commits for all, so a
burst of claims and results pays one fsync per group, not one per write. Every write
still returns only once its commit is durable (or raises, and then none of its group was
acknowledged), so a crash loses no acknowledged write. Other processes on the same file
wait for the transaction through busy_timeout.
"""
import contextlib
import json
import logging
import os
import sqlite3
import threading
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

from chalicelib.errors import (
    ClaimLost, FlowConflict, StateConflict, StoreUnavailable, TaskExists, TaskNotFound,
)
from chalicelib.flow import FlowState, Limits
from chalicelib.models import (
    DEFAULT_TENANT, OPTIONS, RETRYING, RUNNING, SCHEDULED, DueRef, Option, Page, Run, Task,
    iso_ms, parse_iso, tenant_flow_key, utcnow,
)
from chalicelib.store import LEASE_SECONDS, Tag, TaskStore, decode_token, encode_token

PRIORITIES = range(9, -1, -1)
OPTION_TYPES = {declared.name: declared.schema["type"] for declared in OPTIONS}

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    task_id       TEXT PRIMARY KEY,
    action        TEXT NOT NULL,
    payload       TEXT NOT NULL,
    run_at        TEXT NOT NULL,
    schedule_kind TEXT NOT NULL,
    timezone      TEXT NOT NULL,
    name          TEXT,
    priority      INTEGER NOT NULL,
    max_attempts  INTEGER NOT NULL,
    notify        TEXT NOT NULL,
    status        TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    next_run_at   TEXT,
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL,
    run_id        TEXT,
    lease_until   TEXT,
    due_at        TEXT,
    runs          TEXT NOT NULL DEFAULT '[]',
    firing_at     TEXT,
    idempotency_key TEXT,
    request_hash  TEXT,
    version       INTEGER NOT NULL DEFAULT 0,
    runs_done     INTEGER NOT NULL DEFAULT 0,
    paused_until  TEXT,
    extra_run_key TEXT,
    pause_after_run INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS tasks_due ON tasks (priority, due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_due_time ON tasks (due_at) WHERE due_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tasks_status ON tasks (status, created_at, task_id);
CREATE INDEX IF NOT EXISTS tasks_created ON tasks (created_at, task_id);
CREATE TABLE IF NOT EXISTS flow_keys (
    key         TEXT PRIMARY KEY,
    rate        INTEGER,
    period      TEXT NOT NULL,
    parallelism INTEGER,
    slots       TEXT NOT NULL,
    next_start  TEXT,
    last_start  TEXT,
    version     INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tenant_counts (
    tenant  TEXT PRIMARY KEY,
    waiting INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS flow_waiters (
    key     TEXT NOT NULL,
    entry   TEXT NOT NULL,
    task_id TEXT NOT NULL,
    PRIMARY KEY (key, entry)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS store_health (id INTEGER PRIMARY KEY, checked_at TEXT NOT NULL);
"""
# Made once the tenant column exists (added to an earlier file by the migration).
TENANT_INDEXES = """
CREATE INDEX IF NOT EXISTS tasks_tenant ON tasks (tenant, created_at, task_id);
CREATE INDEX IF NOT EXISTS tasks_tenant_status ON tasks (tenant, status, created_at, task_id);
"""
# Columns added after the first release (and any task option declared since), and how;
# statements are built from these constants and the declarations, never from input.
COUNTERS = ("version", "runs_done", "pause_after_run")  # 0 in a row from before them
MIGRATED_COLUMNS = ("firing_at", "idempotency_key", "request_hash", "paused_until",
                    "extra_run_key", "flow_waiting", "flow_delayed_at", "tenant"
                    ) + COUNTERS + tuple(declared.name for declared in OPTIONS)
ADD_COLUMN = {column: "ALTER TABLE tasks ADD COLUMN " + column + " " + (
    "INTEGER NOT NULL DEFAULT 0" if column in COUNTERS
    else "INTEGER" if OPTION_TYPES.get(column) in ("integer", "boolean") else "TEXT")
    for column in MIGRATED_COLUMNS}
# The WAL is cut back to this after each checkpoint, so a file that grew while the disk
# was full does not keep the space once it is free again.
JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024

logger = logging.getLogger("task_scheduler.store")

# Writes that one transaction holds at most: under a steady stream of writers someone is
# always waiting, and the group must still be committed (its writers are waiting too).
GROUP_COMMIT_MAX = 64

# Every statement is built here, once, from these constants; none from input (values are
# always bound as parameters).
COLUMNS = ("task_id", "action", "payload", "run_at", "schedule_kind", "timezone", "status",
           "attempts", "next_run_at", "created_at", "updated_at", "run_id", "lease_until",
           "due_at", "runs", "firing_at", "idempotency_key", "request_hash", "version",
           "runs_done", "paused_until", "extra_run_key", "pause_after_run", "flow_waiting",
           "flow_delayed_at", "tenant") + tuple(
    declared.name for declared in OPTIONS)
INSERT_TASK = ("INSERT INTO tasks (" + ", ".join(COLUMNS) + ") "  # nosec B608 - constant columns
               "VALUES (" + ", ".join("?" for _ in COLUMNS) + ")")
ASSIGN_ALL = ", ".join(f"{column} = ?" for column in COLUMNS)
UPDATE_TASK = ("UPDATE tasks SET " + ASSIGN_ALL +  # nosec B608 - constant columns
               " WHERE task_id = ? AND version = ?")
_DUE_WHERE = ("FROM tasks WHERE priority = ? AND due_at IS NOT NULL AND due_at <= ? "
              "AND (due_at, task_id) > (?, ?) ORDER BY due_at, task_id LIMIT ?")
DUE_TASKS = "SELECT * " + _DUE_WHERE
DUE_REFS = ("SELECT task_id, due_at, action, tenant, "
            "CASE WHEN action = 'webhook' THEN json_extract(payload, '$.url') END AS url, "
            "json_extract(flow_control, '$.key') AS flow_key " + _DUE_WHERE)
CLAIM_TASK = ("UPDATE tasks SET status = ?, run_id = ?, lease_until = ?, due_at = ?, "
              "updated_at = ?, attempts = attempts + 1, version = version + 1 "
              "WHERE task_id = ? AND "
              "((status IN (?, ?) AND next_run_at <= ?) OR (status = ? AND lease_until < ?))")


def _list_query(by_status: bool, after: bool, by_tag: bool = False,
                by_tenant: bool = False) -> str:
    clauses = ["(? IS NULL OR instr(casefold(name), ?) > 0)"]
    if by_tenant:
        clauses.append("tenant = ?")
    if by_status:
        clauses.append("status = ?")
    if by_tag:
        clauses.append("EXISTS (SELECT 1 FROM json_each(tasks.tags) WHERE json_each.key = ? "
                       "AND json_each.value = ?)")
    if after:
        clauses.append("(created_at, task_id) < (?, ?)")
    return ("SELECT * FROM tasks WHERE " + " AND ".join(clauses) +  # nosec B608 - constant clauses
            " ORDER BY created_at DESC, task_id DESC LIMIT ?")


# One statement per shape, so each keeps its index: (status, created_at, task_id) or
# (created_at, task_id), entered at the page's key.
LIST_TASKS = {(by_status, after, by_tag, by_tenant): _list_query(by_status, after, by_tag,
                                                                  by_tenant)
              for by_status in (False, True) for after in (False, True)
              for by_tag in (False, True) for by_tenant in (False, True)}


class _Group:
    """One transaction shared by the writes that arrived together (group commit)."""

    def __init__(self, db: sqlite3.Connection):
        self.db = db
        self.members = 0  # writes done in it, waiting for its commit
        self.error: Optional[Exception] = None
        self.committed = threading.Event()

    def fail(self, cause: BaseException) -> None:
        """Its commit will not happen: each of its writes raises StoreUnavailable."""
        if self.error is None:
            self.error = StoreUnavailable(f"the local store cannot take writes now ({cause}); "
                                          "nothing was changed", field=None)
            self.error.__cause__ = cause


class SQLiteTaskStore(TaskStore):
    """Tasks in one SQLite file, safe for the threads of one process.

    The file's trouble (read-only, full disk, its folder deleted) is a StoreUnavailable
    (503), never an acknowledged write: a write commits only while the path still names
    the file that was opened. After such an error every thread opens a new connection at
    its next call, so the store recovers by itself once the trouble is gone. The folder
    and files are private to their owner (0700 / 0600)."""

    def __init__(self, path: Path, own_folder: bool = True):
        self.path = Path(path)
        self._own_folder = own_folder  # may tighten an existing folder's mode
        self._local = threading.local()
        # Writers of this process queue here (SQLite's own busy handler makes a waiting
        # writer sleep in growing steps, up to 100 ms, which under a burst cost more time
        # than the writes): the holder runs its statements on the shared writer
        # connection. Other processes still meet busy_timeout.
        self._write_lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queued = 0  # writers waiting for _write_lock (under _queue_lock)
        self._group: Optional[_Group] = None  # the open transaction (under _write_lock)
        self._writer: Optional[Tuple[int, sqlite3.Connection]] = None  # (generation, it)
        # Raised after an error: every thread's connection of an older generation is
        # replaced at its next call (a cached connection would keep failing).
        self._generation = 0
        self._prepared = -1  # the generation whose first connection set up the file
        self._opened: Optional[Tuple[int, int]] = None  # (device, inode) of the file
        with self._unavailable_as_error():
            self._raw()

    def _open(self) -> sqlite3.Connection:
        """A new connection to the file, made private and given its schema."""
        _make_private(self.path, self._own_folder)
        connection = sqlite3.connect(self.path, timeout=30, isolation_level=None,
                                     check_same_thread=False)
        connection.row_factory = sqlite3.Row
        # Name search matches as Python does (Unicode), not SQLite's ASCII-only lower().
        connection.create_function("casefold", 1, _casefold, deterministic=True)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute(f"PRAGMA journal_size_limit={JOURNAL_SIZE_LIMIT}")
        return connection

    def _raw(self) -> sqlite3.Connection:
        """The calling thread's reading connection."""
        self._local.held = self._current(getattr(self._local, "held", None))
        return self._local.held[1]

    def _current(self, held: Optional[Tuple[int, sqlite3.Connection]]
                 ) -> Tuple[int, sqlite3.Connection]:
        # `held` if it is of this generation, else a new connection (the file set up by the
        # generation's first).
        generation = self._generation
        if held is not None and held[0] == generation:
            return held
        if held is not None:
            held[1].close()
        connection = self._open()
        if self._prepared != generation:
            self._prepare(connection)
            self._prepared = generation
        return generation, connection

    def _prepare(self, connection: sqlite3.Connection) -> None:
        # Once per generation: the schema (a new or re-created file), then a checkpoint of
        # what a failed write may have left in the WAL (journal_size_limit cuts it back).
        connection.executescript(SCHEMA)
        present = {row["name"] for row in connection.execute("PRAGMA table_info(tasks)")}
        for column in MIGRATED_COLUMNS:
            if column not in present:  # a data file made by an earlier version
                connection.execute(ADD_COLUMN[column])
        if "tenant" not in present:  # tasks from before tenants are the default tenant's
            connection.execute("UPDATE tasks SET tenant = ? WHERE tenant IS NULL",
                               (DEFAULT_TENANT,))
        connection.executescript(TENANT_INDEXES)
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        self._opened = _identity(self.path)

    @contextlib.contextmanager
    def _unavailable_as_error(self):
        try:
            yield
        except sqlite3.IntegrityError:
            raise  # a constraint, not the file's trouble: the caller decides
        except (sqlite3.OperationalError, sqlite3.DatabaseError, OSError) as exc:
            self._generation += 1
            logger.warning({"event": "store_unavailable", "path": str(self.path),
                            "error": str(exc)})
            raise StoreUnavailable(f"the local store cannot take writes now ({exc}); "
                                   "nothing was changed", field=None) from exc

    @contextlib.contextmanager
    def _connection(self):
        """The writer connection for one write, in a savepoint of the group's IMMEDIATE
        transaction; returns once the group's commit is durable, or raises."""
        with self._queue_lock:
            self._queued += 1
        with self._unavailable_as_error():
            with self._write_lock:
                with self._queue_lock:
                    self._queued -= 1
                group = self._join_group()
                try:
                    group.db.execute("SAVEPOINT write")
                    try:
                        yield group.db
                    except (sqlite3.OperationalError, sqlite3.DatabaseError) as error:
                        if isinstance(error, sqlite3.IntegrityError):
                            group.db.execute("ROLLBACK TO write")
                            group.db.execute("RELEASE write")
                        else:  # the file's trouble: the whole group fails with it
                            group.fail(error)
                        raise
                    except BaseException:
                        group.db.execute("ROLLBACK TO write")  # this write only
                        group.db.execute("RELEASE write")
                        raise
                    group.db.execute("RELEASE write")
                    group.members += 1
                finally:
                    self._end_group_if_last(group)
            group.committed.wait()
            if group.error is not None:  # each member its own error, with the group's cause
                raise StoreUnavailable(group.error.message) from group.error.__cause__

    def _join_group(self) -> "_Group":
        # Under _write_lock: the open group, or a new one.
        if self._group is None:
            self._writer = self._current(self._writer)
            db = self._writer[1]
            db.execute("BEGIN IMMEDIATE")
            self._group = _Group(db)
        return self._group

    def _end_group_if_last(self, group: "_Group") -> None:
        # Under _write_lock: commit (or roll back) the group when no writer waits to join
        # it, or it is full, or it failed.
        with self._queue_lock:
            others_waiting = self._queued > 0
        if others_waiting and group.members < GROUP_COMMIT_MAX and group.error is None:
            return
        self._group = None
        try:
            if group.error is None and group.members:
                self._still_the_opened_file()
                group.db.execute("COMMIT")
            else:
                group.db.execute("ROLLBACK")
        except (sqlite3.Error, OSError) as error:  # OSError: the file's folder, checked
            self._abandon(group, error)
        except BaseException as error:  # an interrupt: no member may think it committed
            self._abandon(group, error)
            raise
        finally:
            group.committed.set()

    def _abandon(self, group: "_Group", error: BaseException) -> None:
        # Its commit did not happen: every member fails, and the transaction is ended (a
        # failed COMMIT leaves it open, and every later write on the connection would fail).
        group.fail(error)
        with contextlib.suppress(sqlite3.Error):
            group.db.execute("ROLLBACK")
        if group.members:
            self._generation += 1  # every connection is replaced at its next use
            logger.warning({"event": "store_unavailable", "path": str(self.path),
                            "error": str(error)})

    @contextlib.contextmanager
    def _reading(self):
        """The thread's connection in autocommit: each SELECT is its own read, and in WAL
        mode it needs no lock."""
        with self._unavailable_as_error():
            yield self._raw()

    def _still_the_opened_file(self) -> None:
        # A commit to a file whose folder was deleted (or replaced) would be acknowledged
        # and lost: refuse it instead.
        try:
            current = _identity(self.path)
        except FileNotFoundError:
            raise sqlite3.OperationalError(f"{self.path} is gone") from None
        if current != self._opened:
            raise sqlite3.OperationalError(f"{self.path} was replaced")

    def check(self) -> None:
        """A real write (one row of store_health), committed: what /health reports."""
        with self._connection() as db:
            db.execute("INSERT OR REPLACE INTO store_health (id, checked_at) VALUES (1, ?)",
                       (iso_ms(utcnow()),))

    # ------------------------------------------------------------ writes

    def create(self, task: Task) -> None:
        row = to_row(task)
        try:
            with self._connection() as db:
                db.execute(INSERT_TASK, [row[column] for column in COLUMNS])
        except sqlite3.IntegrityError:
            raise TaskExists(task.task_id) from None

    def claim(self, task_id: str, run_id: str, now: datetime) -> Task:
        lease = iso_ms(now + timedelta(seconds=LEASE_SECONDS))
        now_key = iso_ms(now)
        with self._connection() as db:
            updated = db.execute(
                CLAIM_TASK, (RUNNING, run_id, lease, lease, now_key, task_id,
                 SCHEDULED, RETRYING, now_key, RUNNING, now_key)).rowcount
            row = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if not updated:
            raise ClaimLost(task_id, from_row(row) if row else None)
        return from_row(row)

    def claim_many(self, claims: List[Tuple[str, str]], now: datetime) -> Dict[str, Task]:
        """Every claim in one transaction: one commit for all of them."""
        lease = iso_ms(now + timedelta(seconds=LEASE_SECONDS))
        now_key = iso_ms(now)
        with self._connection() as db:
            rows = [db.execute(CLAIM_TASK + " RETURNING *", (
                RUNNING, run_id, lease, lease, now_key, task_id, SCHEDULED, RETRYING,
                now_key, RUNNING, now_key)).fetchone() for task_id, run_id in claims]
        return {row["task_id"]: from_row(row) for row in rows if row is not None}

    def update(self, task: Task, version: int) -> Task:
        row = to_row(replace(task, version=version + 1))
        with self._connection() as db:
            updated = db.execute(UPDATE_TASK, [*(row[column] for column in COLUMNS),
                                               task.task_id, version]).rowcount
            # Written whole: the row is what was written, read back only when refused.
            stored = row if updated else db.execute(
                "SELECT * FROM tasks WHERE task_id = ?", (task.task_id,)).fetchone()
        return _changed_or_raise(task.task_id, stored, updated)

    def get_flow(self, key: str) -> FlowState:
        with self._reading() as db:
            row = db.execute("SELECT * FROM flow_keys WHERE key = ?", (key,)).fetchone()
        return _flow_from_row(row) if row else FlowState(key, Limits())

    def put_flow(self, state: FlowState, version: int) -> FlowState:
        values = (state.limits.rate, state.limits.period, state.limits.parallelism,
                  json.dumps({run: iso_ms(end) for run, end in state.slots.items()}),
                  iso_ms(state.next_start), iso_ms(state.last_start), version + 1)
        with self._connection() as db:
            if version == 0:
                written = db.execute(
                    "INSERT OR IGNORE INTO flow_keys (key, rate, period, parallelism, slots, "
                    "next_start, last_start, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (state.key, *values)).rowcount
            else:
                written = db.execute(
                    "UPDATE flow_keys SET rate = ?, period = ?, parallelism = ?, slots = ?, "
                    "next_start = ?, last_start = ?, version = ? WHERE key = ? AND version = ?",
                    (*values, state.key, version)).rowcount
            row = db.execute("SELECT * FROM flow_keys WHERE key = ?",
                             (state.key,)).fetchone()
        if not written:
            raise FlowConflict(_flow_from_row(row))
        return _flow_from_row(row)

    def swap_slot(self, key: str, remove: Optional[str] = None,
                  add: Optional[Tuple[str, datetime]] = None) -> Optional[FlowState]:
        with self._connection() as db:
            row = db.execute("SELECT * FROM flow_keys WHERE key = ?", (key,)).fetchone()
            current = _flow_from_row(row) if row else None
            if current is None or (add and remove and remove not in current.slots):
                return None
            slots = {held: end for held, end in current.slots.items() if held != remove}
            slots.update([add] if add else [])
            db.execute("UPDATE flow_keys SET slots = ?, version = version + 1 WHERE key = ?",
                       (json.dumps({held: iso_ms(end) for held, end in slots.items()}), key))
        return replace(current, slots=slots, version=current.version + 1)

    def take_slot(self, key: str, slot: str, until: datetime) -> Tuple[bool, FlowState]:
        with self._connection() as db:
            row = db.execute("SELECT * FROM flow_keys WHERE key = ?", (key,)).fetchone()
            current = _flow_from_row(row) if row else FlowState(key, Limits())
            limits = current.limits
            if (current.version == 0 or limits.rate is not None or limits.parallelism is None
                    or slot in current.slots or len(current.slots) >= limits.parallelism):
                return False, current
            slots = {**current.slots, slot: until}
            db.execute("UPDATE flow_keys SET slots = ?, version = version + 1 WHERE key = ?",
                       (json.dumps({held: iso_ms(end) for held, end in slots.items()}), key))
        return True, replace(current, slots=slots, version=current.version + 1)

    def wake_waiting(self, task_id: str, entry: str, at: datetime, now: datetime
                     ) -> Optional[Task]:
        with self._connection() as db:
            updated = db.execute(
                "UPDATE tasks SET next_run_at = ?, due_at = ?, flow_waiting = NULL, "
                "updated_at = ?, version = version + 1 "
                "WHERE task_id = ? AND flow_waiting = ? AND status IN (?, ?)",
                (iso_ms(at), iso_ms(at), iso_ms(now), task_id, entry, SCHEDULED,
                 RETRYING)).rowcount
            row = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        return from_row(row) if updated else None

    def count_waiting(self, tenant: str, delta: int, below: Optional[int] = None) -> bool:
        with self._connection() as db:
            row = db.execute("SELECT waiting FROM tenant_counts WHERE tenant = ?",
                             (tenant,)).fetchone()
            count = row["waiting"] if row else 0
            if below is not None and count >= below:
                return False
            db.execute("INSERT INTO tenant_counts (tenant, waiting) VALUES (?, ?) "
                       "ON CONFLICT (tenant) DO UPDATE SET waiting = excluded.waiting",
                       (tenant, max(count + delta, 0)))
        return True

    def waiting_count(self, tenant: str) -> int:
        with self._reading() as db:
            row = db.execute("SELECT waiting FROM tenant_counts WHERE tenant = ?",
                             (tenant,)).fetchone()
        return row["waiting"] if row else 0

    def add_waiter(self, key: str, entry: str, task_id: str) -> None:
        with self._connection() as db:
            db.execute("INSERT OR REPLACE INTO flow_waiters (key, entry, task_id) "
                       "VALUES (?, ?, ?)", (key, entry, task_id))

    def remove_waiter(self, key: str, entry: str) -> None:
        with self._connection() as db:
            db.execute("DELETE FROM flow_waiters WHERE key = ? AND entry = ?", (key, entry))

    def waiters(self, key: str, limit: int) -> List[Tuple[str, str]]:
        with self._reading() as db:
            rows = db.execute("SELECT entry, task_id FROM flow_waiters WHERE key = ? "
                              "ORDER BY entry LIMIT ?", (key, limit)).fetchall()
        return [(row["entry"], row["task_id"]) for row in rows]

    def count_waiters(self, key: str) -> int:
        with self._reading() as db:
            return db.execute("SELECT count(*) FROM flow_waiters WHERE key = ?",
                              (key,)).fetchone()[0]

    def delete(self, task_id: str) -> None:
        with self._connection() as db:
            db.execute("DELETE FROM tasks WHERE task_id = ?", (task_id,))

    def recover_running(self, now: datetime, run_prefix: str) -> int:
        expired = iso_ms(now - timedelta(milliseconds=1))
        with self._connection() as db:
            return db.execute(
                "UPDATE tasks SET lease_until = ?, due_at = ?, version = version + 1 "
                "WHERE status = ? AND substr(run_id, 1, ?) = ?",
                (expired, expired, RUNNING, len(run_prefix), run_prefix)).rowcount

    # ------------------------------------------------------------ reads

    def get(self, task_id: str) -> Task:
        with self._reading() as db:
            row = db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,)).fetchone()
        if row is None:
            raise TaskNotFound(f"no task with id {task_id}", field="task_id")
        return from_row(row)

    def list(self, status: Optional[str], limit: int, next_token: Optional[str],
             name: Optional[str] = None, tag: Optional[Tag] = None,
             tenant: Optional[str] = None) -> Page:
        after = decode_token(next_token, status, _is_page_key, name, tag, tenant)
        folded = name.casefold() if name else None
        params: List[Any] = [folded, folded]
        if tenant:
            params.append(tenant)
        if status:
            params.append(status)
        if tag:
            params += list(tag)
        if after:
            params += [after["created_at"], after["task_id"]]
        with self._reading() as db:
            rows = db.execute(LIST_TASKS[bool(status), bool(after), bool(tag), bool(tenant)],
                              params + [limit + 1]).fetchall()
        tasks = [from_row(row) for row in rows[:limit]]
        token = None
        if len(rows) > limit:
            last = rows[limit - 1]
            token = encode_token({"created_at": last["created_at"], "task_id": last["task_id"]},
                                 status, name, tag, tenant)
        return Page(tasks=tasks, next_token=token)

    def due(self, now: datetime, limit: int) -> Iterator[Task]:
        return (from_row(row) for row in self._due_rows(DUE_TASKS, now, limit))

    def due_refs(self, now: datetime, limit: int) -> Iterator[DueRef]:
        """The due tasks' ids, actions, URLs and flow-control keys, read without the rest
        of each row (its payload, runs and times are not parsed)."""
        for row in self._due_rows(DUE_REFS, now, limit):
            key = row["flow_key"]
            yield DueRef(row["task_id"], row["action"], row["url"],
                         tenant_flow_key(row["tenant"] or DEFAULT_TENANT, key)
                         if key is not None else None)

    def _due_rows(self, query: str, now: datetime, limit: int) -> Iterator[sqlite3.Row]:
        now_key = iso_ms(now)
        for priority in PRIORITIES:
            after = ("", "")
            while True:
                with self._reading() as db:
                    rows = db.execute(query, (priority, now_key, after[0], after[1],
                                              limit)).fetchall()
                yield from rows
                if len(rows) < limit:
                    break
                after = (rows[-1]["due_at"], rows[-1]["task_id"])

    def next_due_after(self, now: datetime) -> Optional[datetime]:
        with self._reading() as db:
            row = db.execute("SELECT MIN(due_at) AS due FROM tasks "
                             "WHERE due_at IS NOT NULL AND due_at > ?",
                             (iso_ms(now),)).fetchone()
        return parse_iso(row["due"])

    def explain_due(self, now: datetime) -> List[str]:
        """SQLite's plan for the due query (tests check it uses the partial index)."""
        with self._reading() as db:
            rows = db.execute("EXPLAIN QUERY PLAN " + DUE_TASKS,
                              (9, iso_ms(now), "", "", 10)).fetchall()
        return [row["detail"] for row in rows]


def _flow_from_row(row: sqlite3.Row) -> FlowState:
    return FlowState(key=row["key"],
                     limits=Limits(rate=row["rate"], period=row["period"],
                                   parallelism=row["parallelism"]),
                     slots={run: parse_iso(end) for run, end in json.loads(row["slots"]).items()},
                     next_start=parse_iso(row["next_start"]),
                     last_start=parse_iso(row["last_start"]), version=row["version"])


def _casefold(text: Optional[str]) -> Optional[str]:
    return text.casefold() if text is not None else None


def _is_page_key(key) -> bool:
    return (isinstance(key, dict) and set(key) == {"created_at", "task_id"}
            and all(isinstance(value, str) for value in key.values()))


def _changed_or_raise(task_id: str, row, updated: int) -> Task:
    if row is None:
        raise TaskNotFound(f"no task with id {task_id}", field="task_id")
    task = from_row(row)
    if not updated:
        raise StateConflict(task)
    return task


def _identity(path: Path) -> Tuple[int, int]:
    stat = os.stat(path)
    return stat.st_dev, stat.st_ino


def _make_private(path: Path, own_folder: bool) -> None:
    """The folder 0700 (created so, or tightened when it is the store's own), the file and
    its WAL companions 0600: they hold webhook URLs and header values."""
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    elif own_folder:
        folder.chmod(0o700)
    if not path.exists():
        os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for companion in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        if companion.exists():
            companion.chmod(0o600)


# ---------------------------------------------------------------- row mapping

def to_row(task: Task) -> Dict[str, Any]:
    """The row of a task."""
    due = task.lease_until if task.status == RUNNING else task.wake_at
    return {
        "task_id": task.task_id, "action": task.action,
        "payload": json.dumps(task.payload, separators=(",", ":"), ensure_ascii=False),
        "run_at": task.run_at, "schedule_kind": task.schedule_kind,
        "timezone": task.timezone, "status": task.status,
        "attempts": task.attempts, "next_run_at": iso_ms(task.next_run_at),
        "created_at": iso_ms(task.created_at), "updated_at": iso_ms(task.updated_at),
        "run_id": task.run_id, "lease_until": iso_ms(task.lease_until),
        "due_at": iso_ms(due),
        "runs": _runs_json(task.runs), "firing_at": iso_ms(task.firing_at),
        "idempotency_key": task.idempotency_key, "request_hash": task.request_hash,
        "version": task.version, "runs_done": task.runs_done,
        "paused_until": iso_ms(task.paused_until), "extra_run_key": task.extra_run_key,
        "pause_after_run": int(task.pause_after_run),
        "flow_waiting": task.flow_waiting, "flow_delayed_at": iso_ms(task.flow_delayed_at),
        "tenant": task.tenant,
        **{declared.name: _option_to_column(declared, getattr(task, declared.name))
           for declared in OPTIONS},
    }


def _option_to_column(declared: Option, value: Any) -> Any:
    if declared.schema["type"] in ("array", "object") and value is not None:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return value


def _option_from_column(declared: Option, value: Any) -> Any:
    if value is None:  # a row from before the option was declared
        return declared.default
    if declared.schema["type"] in ("array", "object"):
        return json.loads(value)
    if declared.schema["type"] == "boolean":
        return bool(value)
    return value


def from_row(row: Mapping[str, Any]) -> Task:
    """A Task from its row (as read, or as `to_row` wrote it)."""
    return Task(
        task_id=row["task_id"], action=row["action"], payload=json.loads(row["payload"]),
        run_at=row["run_at"], schedule_kind=row["schedule_kind"],
        next_run_at=parse_iso(row["next_run_at"]), status=row["status"],
        timezone=row["timezone"], attempts=row["attempts"],
        created_at=parse_iso(row["created_at"]), updated_at=parse_iso(row["updated_at"]),
        run_id=row["run_id"], lease_until=parse_iso(row["lease_until"]),
        runs=[_run_from_dict(run) for run in json.loads(row["runs"])],
        firing_at=parse_iso(row["firing_at"]), idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"], version=row["version"],
        runs_done=row["runs_done"], paused_until=parse_iso(row["paused_until"]),
        extra_run_key=row["extra_run_key"], pause_after_run=bool(row["pause_after_run"]),
        flow_waiting=row["flow_waiting"], flow_delayed_at=parse_iso(row["flow_delayed_at"]),
        tenant=row["tenant"] or DEFAULT_TENANT,
        **{declared.name: _option_from_column(declared, row[declared.name])
           for declared in OPTIONS},
    )


def _runs_json(runs: List[Run]) -> str:
    # The store's own shape (what the API shows may change without touching saved rows).
    return json.dumps([_run_to_dict(run) for run in runs], separators=(",", ":"))


def _run_to_dict(run: Run) -> Dict[str, Any]:
    return {"run_id": run.run_id, "attempt": run.attempt,
            "started_at": iso_ms(run.started_at), "ended_at": iso_ms(run.ended_at),
            "outcome": run.outcome, "http_status": run.http_status, "error": run.error,
            "duration_ms": run.duration_ms, "callback": run.callback}


def _run_from_dict(data: Dict[str, Any]) -> Run:
    return Run(
        run_id=data["run_id"], attempt=data["attempt"],
        started_at=parse_iso(data["started_at"]), ended_at=parse_iso(data.get("ended_at")),
        outcome=data.get("outcome"), http_status=data.get("http_status"),
        error=data.get("error"), duration_ms=data.get("duration_ms"),
        callback=data.get("callback"),
    )
