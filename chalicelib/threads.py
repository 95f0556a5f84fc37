"""Daemon threads reused across jobs, for webhook exchanges and the local trigger's runs."""
import queue
import threading
from typing import Callable


class DaemonThreads:
    """Reused daemon threads: starting a thread per webhook cost a fifth of a 1,000-task burst
    (bench/dispatch.py). A job never waits for a thread: with none idle, one is started. At
    most `keep_idle` stay idle for later jobs; the others end, so a burst of long jobs (hung
    receivers) does not leave its threads behind."""

    def __init__(self, name: str, keep_idle: int):
        self._name = name
        self._keep_idle = keep_idle
        self._idle = 0
        self._lock = threading.Lock()
        self._jobs: "queue.SimpleQueue[Callable[[], None]]" = queue.SimpleQueue()

    @property
    def idle(self) -> int:
        """How many threads wait for a job."""
        with self._lock:
            return self._idle

    def run(self, job: Callable[[], None]) -> None:
        """Run `job` on a thread of its own now (an idle one, or a new one)."""
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1  # that idle thread takes this job
        self._jobs.put(job)
        if start:
            threading.Thread(target=self._serve, name=self._name, daemon=True).start()

    def close(self) -> None:
        """Let every thread end once it has no job (a later job still gets a thread)."""
        with self._lock:
            self._keep_idle, idle, self._idle = 0, self._idle, 0
        for _ in range(idle):
            self._jobs.put(_nothing)  # wakes an idle thread, which then ends

    def _serve(self) -> None:
        while True:
            # A job must not raise: the caller's wrapper handles its errors. If one does,
            # this thread ends with the usual traceback, and a later job starts another.
            self._jobs.get()()
            with self._lock:
                if self._idle >= self._keep_idle:
                    return
                self._idle += 1


def _nothing() -> None:
    return None
