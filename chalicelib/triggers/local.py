"""The local trigger: the store already holds every due time, so arming a task is only
telling the local dispatcher (chalicelib.local) to look at the store again."""
from typing import Callable, Optional

from chalicelib.models import Task
from chalicelib.triggers import Trigger


class LocalTrigger(Trigger):
    """Arming is waking the dispatcher that `connect` gave, if one runs in this process."""

    _wake: Optional[Callable[[], None]] = None

    def connect(self, wake: Optional[Callable[[], None]]) -> None:
        """Call `wake` whenever a task is armed (None: nothing listens any more)."""
        self._wake = wake

    def arm(self, task: Task) -> None:
        wake = self._wake
        if wake is not None:
            wake()

    def disarm(self, task: Task) -> None:
        # Nothing to remove: a cancelled task is no longer in the due index.
        return None

    def rearm(self, previous: Task, current: Task) -> None:
        self.arm(current)  # the dispatcher reads the new due time from the store

    def after_run(self, task: Task) -> None:
        if task.wake_at is not None:
            self.arm(task)
