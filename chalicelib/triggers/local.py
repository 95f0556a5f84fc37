"""Local trigger: fires due tasks in-process, through the same executor as execute_task.

A dispatcher thread sleeps until the earliest due time in the store (or until a task is
added or changed: arm and after_run wake it), then hands every due task, highest priority
first, to a small worker pool. The store stays the source of truth, so a restart loses
nothing: at start, runs cut off by the last stop are made due again, and everything that
fell due while the server was down runs at once. The daily sweeper also runs on its
schedule.
"""
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor, wait
from datetime import timedelta
from typing import Dict, Optional

from chalicelib import config, sweeper
from chalicelib.executor import Clock, execute_task
from chalicelib.models import Task
from chalicelib.store import get_store
from chalicelib.triggers import Trigger

logger = logging.getLogger("task_scheduler.local")

# Even with nothing due the dispatcher looks at the store this often, so a task written
# by another process (a second server on the same file) is not missed for long.
IDLE_POLL_SECONDS = 30.0
DUE_PAGE = 200
ERROR_BACKOFF_SECONDS = 1.0


class Dispatcher:
    """The in-process scheduler loop and its worker pool."""

    def __init__(self, workers: int, clock: Optional[Clock] = None, run_prefix: str = ""):
        self._clock = clock or Clock()
        self._run_prefix = run_prefix
        self._condition = threading.Condition()
        self._woken = False
        self._stopping = False
        self._inflight: Dict[str, Future] = {}
        self._inflight_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="task-run")
        self._thread = threading.Thread(target=self._loop, name="local-trigger", daemon=True)
        self._next_sweep = sweeper.next_sweep_after(self._clock.now())

    def start(self) -> dict:
        """Recover cut-off runs, then start dispatching. Returns what start found."""
        store = get_store()
        now = self._clock.now()
        recovered = store.recover_running(now, self._run_prefix)
        overdue = sum(1 for _ in store.due(now, DUE_PAGE))
        self._thread.start()
        summary = {"event": "local_trigger_started", "recovered_runs": recovered,
                   "due_at_start": overdue}
        logger.info("local trigger started: %d due now, %d cut-off runs recovered",
                    overdue, recovered)
        return summary

    def wake(self) -> None:
        """Look at the store again now (a task was added or changed)."""
        with self._condition:
            self._woken = True
            self._condition.notify()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop taking work; wait up to `timeout` for runs in flight. True if all ended.

        Tasks queued but not started stay waiting in the store and run at the next start;
        a run still going when the process exits is recovered then."""
        with self._condition:
            self._stopping = True
            self._condition.notify()
        self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._inflight_lock:
            started = [f for f in self._inflight.values() if not f.cancelled()]
        _, still_running = wait(started, timeout)
        return not still_running

    @property
    def inflight(self) -> int:
        """How many tasks are queued or running."""
        with self._inflight_lock:
            return len(self._inflight)

    def _loop(self) -> None:
        store = get_store()
        while True:
            with self._condition:
                if self._stopping:
                    return
                self._woken = False
            try:
                timeout = self._tick(store)
            except Exception:  # noqa: BLE001 - logged; the loop must outlive a bad moment
                # A store error (a locked file, an unreachable endpoint) must not end the
                # thread that fires every task: log it, wait a little, look again.
                logger.exception("local trigger: looking for due tasks failed")
                timeout = ERROR_BACKOFF_SECONDS
            with self._condition:
                if not self._woken and not self._stopping:
                    self._condition.wait(timeout)

    def _tick(self, store) -> float:
        """Dispatch what is due; how long to sleep before looking again."""
        now = self._clock.now()
        self._dispatch_due(store, now)
        if now >= self._next_sweep:
            self._pool.submit(self._guarded, "daily sweep", sweeper.sweep, self._clock)
            self._next_sweep = sweeper.next_sweep_after(now)
        return self._sleep_seconds(store, now)

    def _sleep_seconds(self, store, now) -> float:
        wake_at = min(now + timedelta(seconds=IDLE_POLL_SECONDS), self._next_sweep)
        next_due = store.next_due_after(now)
        if next_due is not None:
            wake_at = min(wake_at, next_due)
        return max((wake_at - self._clock.now()).total_seconds(), 0.0)

    def _dispatch_due(self, store, now) -> None:
        for task in store.due(now, DUE_PAGE):
            with self._inflight_lock:
                if task.task_id in self._inflight:
                    continue
                try:
                    self._inflight[task.task_id] = self._pool.submit(self._run, task.task_id)
                except RuntimeError:  # the pool is shutting down
                    return

    def _run(self, task_id: str) -> None:
        try:
            self._guarded(f"task {task_id}", execute_task, task_id, self._clock,
                          self._run_prefix)
        finally:
            with self._inflight_lock:
                self._inflight.pop(task_id, None)

    @staticmethod
    def _guarded(what: str, function, *args) -> None:
        # A worker thread has no caller to raise to: record the failure and keep serving.
        # The task's claim stays; its lease expires and the dispatcher runs it again.
        try:
            function(*args)
        except Exception:  # noqa: BLE001 - logged with traceback, never swallowed silently
            logger.exception("%s failed", what)


_dispatcher: Optional[Dispatcher] = None
_dispatcher_lock = threading.Lock()


def start_dispatcher(clock: Optional[Clock] = None, run_prefix: str = "") -> Dispatcher:
    """Start the process's dispatcher (once). Its run ids start with `run_prefix`, and at
    start it recovers the cut-off runs that carry it."""
    global _dispatcher
    with _dispatcher_lock:
        if _dispatcher is None:
            _dispatcher = Dispatcher(config.local_workers(), clock, run_prefix)
            _dispatcher.start()
        return _dispatcher


def stop_dispatcher(timeout: float = 10.0) -> bool:
    """Stop the process's dispatcher, if running."""
    global _dispatcher
    with _dispatcher_lock:
        dispatcher, _dispatcher = _dispatcher, None
    return dispatcher.stop(timeout) if dispatcher else True


class LocalTrigger(Trigger):
    """Arming is waking the dispatcher: the store already holds the time."""

    def arm(self, task: Task) -> None:
        if _dispatcher is not None:
            _dispatcher.wake()

    def disarm(self, task: Task) -> None:
        # Nothing to remove: a cancelled task is no longer in the due index.
        return None

    def after_run(self, task: Task) -> None:
        if task.waiting:
            self.arm(task)
