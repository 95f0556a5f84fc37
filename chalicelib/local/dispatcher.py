"""The local dispatcher: fires due tasks in-process, through the same executor as
execute_task.

A dispatcher thread sleeps until the earliest due time in the store (or until a task is
added or changed: the local trigger's arm and after_run wake it, and so does a run that
ends), then claims the due tasks that fit, highest priority first, in one write (one
commit for all of them), and starts them on reused threads. The store stays the source of truth, so a restart loses nothing:
at start, runs cut off by the last stop are made due again, and everything that fell due
while the server was down runs at once. The daily sweeper also runs on its schedule.

A run that waits on a slow receiver must not hold back the others. So `workers` bounds
only the runs started in the last FAST_GRACE_SECONDS (the fast lane): a run still going
after that moves to the slow lane, where it goes on to its end without holding a slot, and
the next due task starts. Tasks for a host that already has a run in the slow lane start
there directly; when that host has SLOW_PER_HOST runs there (or the lane is full), its
tasks wait and later tasks for other hosts go first. Likewise the runs of one flow-control
key hold at most `workers - 1` fast slots, so a saturated key never holds every worker.
"""
import logging
import threading
import time
import uuid
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from itertools import islice
from typing import Callable, Dict, List, Optional, Tuple
from urllib.parse import urlsplit

from chalicelib import sweeper
from chalicelib.errors import StoreUnavailable
from chalicelib.executor import execute_claimed, execute_task
from chalicelib.models import DueRef, Task
from chalicelib.threads import DaemonThreads
from chalicelib.wiring import Runtime

logger = logging.getLogger("task_scheduler.local")

# Even with nothing due the dispatcher looks at the store this often, so a task written
# by another process (a second server on the same file) is not missed for long.
IDLE_POLL_SECONDS = 30.0
DUE_PAGE = 200
ERROR_BACKOFF_SECONDS = 1.0
# A run holds its fast slot this long at most: several times a run in a 1,000-task burst
# (16 at a time at ~450/s here, ~35 ms each; none was demoted), so quick webhooks stay at
# `workers` at a time, yet 64 hung receivers hold the fast lane ~0.2 s, not their timeout.
FAST_GRACE_SECONDS = 0.2
# Runs in the slow lane at most (each holds two threads: its own and its exchange's), and
# at most so many for one host, so that hosts that hang in turn leave room for one another.
SLOW_LANE = 256
SLOW_PER_HOST = 64


def host_of(task: DueRef) -> str:
    """What a task waits on when it runs: the host of a webhook, else its action."""
    if task.action == "webhook":
        return "webhook:" + urlsplit(task.url or "").netloc.lower()
    return task.action


@dataclass
class _Run:
    host: str
    fast: bool
    flow_key: Optional[str] = None


class Dispatcher:
    """The in-process scheduler loop over `runtime`'s store, and the runs it has started.

    `grace`, `slow_lane` and `slow_per_host` default to the module's values; `monotonic`
    (the lanes' clock), `threads` (where runs start) and `execute` (what a run is) let a
    test step through the lanes."""

    def __init__(self, runtime: Runtime, workers: int, run_prefix: str = "",
                 grace: Optional[float] = None, slow_lane: Optional[int] = None,
                 slow_per_host: Optional[int] = None,
                 monotonic: Callable[[], float] = time.monotonic,
                 threads: Optional[DaemonThreads] = None,
                 execute: Callable[[Runtime, str, str], object] = execute_task):
        self._runtime = runtime
        self._clock = runtime.clock
        self._run_prefix = run_prefix
        self._recovery_pending = False  # cut-off runs still to recover (store down at start)
        self._look_again_at: Optional[float] = None  # sooner than planned, after a failed run
        self._workers = workers
        # The module's values when not given, read now so that a test can set them.
        self._grace = FAST_GRACE_SECONDS if grace is None else grace
        self._slow_lane = SLOW_LANE if slow_lane is None else slow_lane
        self._slow_per_host = SLOW_PER_HOST if slow_per_host is None else slow_per_host
        self._monotonic = monotonic
        self._execute = execute
        self._threads = threads or DaemonThreads("task-run", keep_idle=workers)
        self._condition = threading.Condition()
        # Everything below is guarded by _condition.
        self._woken = False
        self._slots_freed = False  # a run ended: start what now fits, without a store look
        self._stopping = False
        self._wake_at = 0.0  # when the sleeping dispatcher looks again (monotonic)
        # (task id, host, flow-control key), in priority order
        self._pending: List[Tuple[str, str, Optional[str]]] = []
        self._page_full = False  # the last look at the store may have left due tasks out
        self._refresh_asked = False
        self._runs: Dict[str, _Run] = {}
        self._fast: "OrderedDict[str, float]" = OrderedDict()  # task id -> start, oldest first
        self._slow_hosts: Counter = Counter()  # host -> its runs in the slow lane
        self._fast_keys: Counter = Counter()  # flow-control key -> its runs in the fast lane
        self._fast_per_key = max(workers - 1, 1)
        self._thread = threading.Thread(target=self._loop, name="local-trigger", daemon=True)
        self._next_sweep = sweeper.next_sweep_after(self._clock.now())

    def start(self) -> dict:
        """Recover cut-off runs, then start dispatching. Returns what start found."""
        store = self._runtime.store
        now = self._clock.now()
        try:
            recovered = store.recover_running(now, self._run_prefix)
            overdue = sum(1 for _ in store.due_refs(now, DUE_PAGE))
        except StoreUnavailable as error:
            # The server still starts (its API answers 503 meanwhile); the loop recovers
            # the cut-off runs first, once the store takes writes again.
            logger.warning("local trigger: the store is unavailable at start: %s", error)
            recovered = overdue = None
            self._recovery_pending = True
        self._thread.start()
        summary = {"event": "local_trigger_started", "recovered_runs": recovered,
                   "due_at_start": overdue}
        logger.info("local trigger started: %s due now, %s cut-off runs recovered",
                    overdue, recovered)
        return summary

    def wake(self) -> None:
        """Look at the store again now (a task was added or changed)."""
        with self._condition:
            self._woken = True
            self._condition.notify_all()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop taking work; wait up to `timeout` for runs in flight. True if all ended.

        Tasks due but not started stay waiting in the store and run at the next start;
        a run still going when the process exits is recovered then."""
        deadline = time.monotonic() + timeout  # real waiting, whatever clock runs lanes
        with self._condition:
            self._stopping = True
            self._pending = []
            self._condition.notify_all()
        self._thread.join(timeout)
        self._threads.close()  # each run's thread ends with it
        with self._condition:
            while self._runs and (left := deadline - time.monotonic()) > 0:
                self._condition.wait(left)
            return not self._runs

    # ------------------------------------------------------------ the dispatcher thread

    def _loop(self) -> None:
        store = self._runtime.store
        next_look = self._monotonic()
        while True:
            with self._condition:
                if self._stopping:
                    return
                look = self._woken or self._monotonic() >= next_look
                self._woken = False
            if look:
                try:
                    timeout = self._tick(store)
                except StoreUnavailable as error:
                    logger.warning("local trigger: %s", error)  # one line a second, not a trace
                    timeout = ERROR_BACKOFF_SECONDS
                except Exception:  # noqa: BLE001 - logged; the loop must outlive a bad moment
                    # A store error (a locked file, an unreachable endpoint) must not end the
                    # thread that fires every task: log it, wait a little, look again.
                    logger.exception("local trigger: looking for due tasks failed")
                    timeout = ERROR_BACKOFF_SECONDS
                next_look = self._monotonic() + timeout
            with self._condition:
                self._slots_freed = False
                started = self._admit()
            self._start(started)
            with self._condition:
                if self._look_again_at is not None:  # a run failed: its task is still due
                    next_look = min(next_look, self._look_again_at)
                    self._look_again_at = None
                # Between looks at the store it wakes to start tasks in the slots runs
                # freed, and to move runs out of the fast lane.
                demotion = self._next_demotion()
                self._wake_at = next_look if demotion is None else min(next_look, demotion)
                if not (self._woken or self._slots_freed or self._stopping):
                    self._condition.wait(max(self._wake_at - self._monotonic(), 0.0))

    def runs_in_flight(self) -> int:
        """How many runs have started and not ended (read without the lock: an estimate)."""
        return len(self._runs)

    def _tick(self, store) -> float:
        """Start what is due; how long to sleep before looking again."""
        now = self._clock.now()
        if self._recovery_pending:
            store.recover_running(now, self._run_prefix)
            self._recovery_pending = False
        self._refresh(store, now)
        if now >= self._next_sweep:
            self._threads.run(partial(self._guarded, "daily sweep", sweeper.sweep,
                                      self._runtime))
            self._next_sweep = sweeper.next_sweep_after(now)
        return self._sleep_seconds(store, now)

    def _sleep_seconds(self, store, now) -> float:
        wake_at = min(now + timedelta(seconds=IDLE_POLL_SECONDS), self._next_sweep)
        next_due = store.next_due_after(now)
        if next_due is not None:
            wake_at = min(wake_at, next_due)
        return max((wake_at - self._clock.now()).total_seconds(), 0.0)

    def _refresh(self, store, now) -> None:
        """Replace the pending tasks with the store's due tasks, and start what can start."""
        with self._condition:
            # Runs not yet claimed and tasks waiting for their host are still due: read
            # past them, so a full page of other tasks comes too.
            wanted = DUE_PAGE + len(self._runs) + len(self._pending)
            self._refresh_asked = False
        due = list(islice(store.due_refs(now, DUE_PAGE), wanted))
        with self._condition:
            if self._stopping:
                return
            self._pending = [(task.task_id, host_of(task), task.flow_key) for task in due
                             if task.task_id not in self._runs]
            self._page_full = len(due) == wanted
            started = self._admit()
        self._start(started)

    # ------------------------------------------------------------ lanes (under _condition)

    def _admit(self) -> List[str]:
        """Move expired fast runs to the slow lane, then take the pending tasks that can
        start now, in order; the ids to start."""
        if self._stopping:
            return []
        now = self._monotonic()
        while self._fast and len(self._runs) - len(self._fast) < self._slow_lane:
            task_id, since = next(iter(self._fast.items()))
            if now - since < self._grace:
                break
            del self._fast[task_id]
            run = self._runs[task_id]
            run.fast = False
            self._slow_hosts[run.host] += 1
            self._fast_keys[run.flow_key] -= 1
        started, waiting = [], []
        for position, (task_id, host, flow_key) in enumerate(self._pending):
            fast_full = len(self._fast) >= self._workers
            slow_full = len(self._runs) - len(self._fast) >= self._slow_lane
            if fast_full and (slow_full or not self._slow_hosts):
                waiting.extend(self._pending[position:])  # nothing more can start
                break
            if task_id in self._runs:
                continue  # started since the store was read
            if self._slow_hosts[host]:
                # Its host is slow already: skip the fast lane, or wait for its share.
                if slow_full or self._slow_hosts[host] >= self._slow_per_host:
                    waiting.append((task_id, host, flow_key))
                    continue
                self._runs[task_id] = _Run(host, fast=False, flow_key=flow_key)
                self._slow_hosts[host] += 1
            elif fast_full or (flow_key is not None
                               and self._fast_keys[flow_key] >= self._fast_per_key):
                waiting.append((task_id, host, flow_key))
                continue
            else:
                self._runs[task_id] = _Run(host, fast=True, flow_key=flow_key)
                self._fast[task_id] = now
                self._fast_keys[flow_key] += 1
            started.append(task_id)
        self._pending = waiting
        if self._page_full and not self._refresh_asked and (
                len(self._fast) < self._workers or len(waiting) < self._workers):
            # The store has more, and what is loaded is about to run out (or waits for its
            # host): read on before the fast lane runs dry.
            self._refresh_asked = self._woken = True
            self._condition.notify_all()
        return started

    def _next_demotion(self) -> Optional[float]:
        """When the oldest fast run moves to the slow lane, if tasks wait for its slot."""
        if (self._pending and self._fast and len(self._fast) >= self._workers
                and len(self._runs) - len(self._fast) < self._slow_lane):
            return next(iter(self._fast.values())) + self._grace
        return None

    def _start(self, task_ids: List[str]) -> None:
        # Outside _condition: claiming and starting threads take a while, and runs end
        # meanwhile.
        claimed = self._claim(task_ids)
        for task_id in task_ids:
            self._threads.run(partial(self._run, task_id, claimed.get(task_id)))

    def _claim(self, task_ids: List[str]) -> Dict[str, Task]:
        """Claim the tasks about to start in one write (one commit for all); a task not
        claimed here goes through execute_task's own claim, which says why."""
        if not task_ids or self._execute is not execute_task:
            return {}
        claims = [(task_id, self._run_prefix + uuid.uuid4().hex) for task_id in task_ids]
        try:
            return self._runtime.store.claim_many(claims, self._clock.now())
        except StoreUnavailable as error:
            logger.warning("local trigger: claiming %d task(s): %s", len(claims), error)
        except Exception:  # noqa: BLE001 - logged; the dispatcher thread must outlive it
            logger.exception("local trigger: claiming %d task(s) failed", len(claims))
        return {}  # each task's own claim in its run says what is wrong

    def _ended(self, task_id: str) -> None:
        run = self._runs.pop(task_id)
        if run.fast:
            del self._fast[task_id]
            self._fast_keys[run.flow_key] -= 1
        else:
            self._slow_hosts[run.host] -= 1
            if not self._slow_hosts[run.host]:
                del self._slow_hosts[run.host]

    # ------------------------------------------------------------ run threads

    def _run(self, task_id: str, claimed: Optional[Task] = None) -> None:
        failed = True
        try:
            if claimed is not None:
                failed = not self._guarded(f"task {task_id}", execute_claimed, self._runtime,
                                           claimed)
            else:
                failed = not self._guarded(f"task {task_id}", self._execute, self._runtime,
                                           task_id, self._run_prefix)
        finally:
            with self._condition:
                if failed:
                    # Its task is still due (a claim the store refused): look again after
                    # the back-off, not at the next future due time or idle poll (30 s).
                    self._look_again_at = self._monotonic() + ERROR_BACKOFF_SECONDS
                    self._condition.notify_all()
                self._ended(task_id)
                # The dispatcher starts the next pending tasks, without asking the store:
                # the slots freed meanwhile are claimed together, in priority order.
                self._slots_freed = True
                self._condition.notify_all()

    @staticmethod
    def _guarded(what: str, function, *args) -> bool:
        """function(*args); False when it raised (logged: a worker thread has no caller)."""
        # A claim that was taken stays; its lease expires and the dispatcher runs it again.
        try:
            function(*args)
        except StoreUnavailable as error:
            logger.warning("%s: %s", what, error)  # one line: the store says what is wrong
            return False
        except Exception:  # noqa: BLE001 - logged with traceback, never swallowed silently
            logger.exception("%s failed", what)
            return False
        return True


_dispatcher: Optional[Dispatcher] = None
_dispatcher_lock = threading.Lock()


def start_dispatcher(runtime: Runtime, workers: int, run_prefix: str = "") -> Dispatcher:
    """Start the process's dispatcher (once) and connect the runtime's local trigger to it.
    Its run ids start with `run_prefix`, and at start it recovers the cut-off runs that
    carry it."""
    global _dispatcher
    with _dispatcher_lock:
        if _dispatcher is None:
            _dispatcher = Dispatcher(runtime, workers, run_prefix)
            runtime.trigger.connect(_dispatcher.wake)
            _dispatcher.start()
        return _dispatcher


def stop_dispatcher(timeout: float = 10.0) -> bool:
    """Stop the process's dispatcher, if running."""
    global _dispatcher
    with _dispatcher_lock:
        dispatcher, _dispatcher = _dispatcher, None
    if dispatcher is None:
        return True
    dispatcher._runtime.trigger.connect(None)
    return dispatcher.stop(timeout)
