"""Exchange processes: `make dev`'s server sends its webhooks from processes of its own.

The server is bound by one core (the GIL): the store's claims and commits and the HTTP
client's work took turns on it, the client being about a third of each delivery. The
server hands each exchange, already built, signed and pinned, to a child process over a
local socket and waits for the run's result; the store stays in the server, so nothing
about claims, commits or crash recovery changes.

- The hop costs a lone exchange about half a millisecond, and what the server saves by it
  counts only when it is busy: with fewer than BUSY_RUNS runs in flight (a few tasks due
  together) the server sends its exchanges itself; from then on, the children take them.
- Each child keeps `channels` connections to the server, one thread each; a run takes an
  idle one. With none idle (the children still starting, or every channel busy), the run
  sends its exchange from the server itself, as it did before.
- A request carries the moment its exchange must be over (its deadline from when the
  server sent it): a child that gets to it later does not send it. The server waits that
  long and a little more; a channel that has not answered by then is dropped, so a late
  answer can never be taken for another run's, and the child opens a new channel in its
  place (an exchange runs on its channel's thread, without a thread of its own: that
  saved the child a fifth of its CPU).
- A child that ends mid-exchange (killed) leaves the run a retryable failure: the request
  may have gone out, and its retry carries the same Idempotency-Key.
- Each child watches its stdin, a pipe from the server: when the server ends, even by
  kill -9, the pipe closes and the child removes the socket's folder and exits. Children
  run in a session of their own, so a Ctrl-C or a signal to the server's process group
  does not cut their exchanges short; a server stopping with runs still in flight leaves
  the children to end with it, and those runs to be recovered at the next start.

    python -m chalicelib.local.exchangers ADDRESS CHANNELS   (the server starts it; the
                                                             key comes on stdin)
"""
import contextlib
import dataclasses
import logging
import marshal
import os
import queue
import secrets
import select
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import Callable, Dict, List, Optional

from urllib3.util import Url

from chalicelib import config
from chalicelib.actions import exchange
from chalicelib.actions.base import ActionResult

logger = logging.getLogger(__name__)

# Beyond the exchange's own deadline, how long the server waits for a child's answer (an
# exchange that ended after its deadline answers a timeout; this covers handing the
# answer back).
REPLY_MARGIN_SECONDS = 0.5
# From this many runs in flight on, the server hands its exchanges over. Any exchange
# the server sends during a 1,000-task burst costs it throughput: with its two in-process
# exchanges at a time, 735/s against 861/s (bench/dispatch.py's burst, measured once).
BUSY_RUNS = 8
# How often a child looks for exchanges that outlived the server's wait.
OVERDUE_CHECK_SECONDS = 0.5


class ExchangeProcessError(RuntimeError):
    """An exchange raised inside its child process (a defect): recorded as the run's error."""


class ExchangeProcesses:
    """`count` child processes sending webhooks for this process (exchange.hand_over_to)."""

    def __init__(self, count: int, channels: int):
        self._count, self._channels = count, channels
        self._busy: Callable[[], bool] = lambda: True
        self._idle: "queue.SimpleQueue[Connection]" = queue.SimpleQueue()
        self._children: List[subprocess.Popen] = []
        self._listener: Optional[Listener] = None
        self._folder: Optional[tempfile.TemporaryDirectory] = None
        self._closing = False
        self.address = ""

    def start(self) -> None:
        """Listen, start the children and hand this process's exchanges over to them;
        OSError (no socket, no child) with nothing left behind."""
        key = secrets.token_bytes(32)
        # A socket file in a folder only this user can enter; the key keeps anyone else
        # who reaches it from taking a channel. A child removes the folder when the
        # server ends without closing (kill -9).
        self._folder = tempfile.TemporaryDirectory(prefix="task-scheduler-",
                                                   ignore_cleanup_errors=True)
        self.address = str(Path(self._folder.name) / "exchange.sock")
        try:
            # Every channel may connect at once: a full backlog refuses a connection on
            # BSD and macOS rather than holding it.
            self._listener = Listener(self.address, family="AF_UNIX", authkey=key,
                                      backlog=self._count * self._channels)
            for _ in range(self._count):
                self._children.append(self._start_child(key))
        except OSError:
            self.close()
            raise
        threading.Thread(target=self._accept, name="exchange-accept", daemon=True).start()
        exchange.hand_over_to(self.deliver)

    def _start_child(self, key: bytes) -> subprocess.Popen:
        child = subprocess.Popen(  # nosec B603 - our own module, no shell
            [sys.executable, "-m", "chalicelib.local.exchangers", self.address,
             str(self._channels)], stdin=subprocess.PIPE, cwd=config.PROJECT_DIR,
            start_new_session=True)
        try:
            child.stdin.write(key.hex().encode() + b"\n")
            child.stdin.flush()  # left open: the child ends when it closes
        except OSError:
            child.kill()
            child.wait()
            raise
        threading.Thread(target=self._watch, args=(child,), name="exchange-watch",
                         daemon=True).start()
        return child

    def _watch(self, child: subprocess.Popen) -> None:
        code = child.wait()
        if not self._closing:
            # Its runs in flight fail as retryable; later ones are sent from the server.
            logger.warning("exchange process %s ended (exit code %s); webhooks are sent "
                           "from the server", child.pid, code)

    def idle_channels(self) -> int:
        """How many channels wait for an exchange."""
        return self._idle.qsize()

    def child_pids(self) -> List[int]:
        """The children's process ids."""
        return [child.pid for child in self._children]

    def _accept(self) -> None:
        while True:
            try:
                channel = self._listener.accept()
            except (AuthenticationError, EOFError, OSError) as exc:
                if self._closing:
                    return
                # A refused or broken handshake ends that connection only; the pause
                # keeps a lasting error (no file descriptors left) from spinning.
                logger.warning("exchange channel refused: %s", exc.__class__.__name__)
                time.sleep(0.1)
                continue
            self._idle.put(channel)

    def hand_over_from(self, runs_in_flight: Callable[[], int]) -> None:
        """Hand exchanges over only while runs_in_flight() >= BUSY_RUNS (default: always)."""
        self._busy = lambda: runs_in_flight() >= BUSY_RUNS

    def deliver(self, request: exchange.Outgoing, timeout: float) -> ActionResult:
        """The run's result: sent by a child while the server is busy and a channel is idle."""
        result = self._by_child(request, timeout) if self._busy() else None
        return result if result is not None else exchange.deliver_here(request, timeout)

    def _by_child(self, request: exchange.Outgoing, timeout: float) -> Optional[ActionResult]:
        """The run's result from a child; None when no channel is idle (nothing sent)."""
        over_at = time.monotonic() + exchange.deadline(timeout)
        try:
            data = _request_bytes(request, timeout, over_at)
        except ValueError:  # a value marshal cannot carry: send it from here
            return None
        while True:
            try:
                channel = self._idle.get(block=False)
            except queue.Empty:
                return None
            try:
                channel.send_bytes(data)
                break
            except OSError:  # that child has ended; nothing was sent: try another
                channel.close()
            except BaseException:
                channel.close()
                raise
        try:
            if not _readable(channel, over_at - time.monotonic() + REPLY_MARGIN_SECONDS):
                channel.close()  # never used again: its late answer is nobody's
                return exchange.timed_out(timeout)
            outcome, value, detail = _loads(channel.recv_bytes())
        except (EOFError, OSError):
            channel.close()
            return ActionResult(False, error="connection failed: the exchange process ended",
                                retryable=True)
        except BaseException:
            channel.close()
            raise
        self._idle.put(channel)
        if outcome == "raised":
            logger.error("an exchange raised in its process:\n%s", detail)
            raise ExchangeProcessError(value)
        return ActionResult(*value)

    def close(self) -> None:
        """Take exchanges back into this process and end the children (call it once no
        run waits on them: a run in flight would be cut off and recorded as failed)."""
        exchange.hand_over_to(None)
        self._closing = True
        if self._listener is not None:
            self._listener.close()
        while True:
            try:
                self._idle.get(block=False).close()
            except queue.Empty:
                break
        for child in self._children:
            with contextlib.suppress(OSError):
                child.stdin.close()
        for child in self._children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if self._folder is not None:
            self._folder.cleanup()


def _readable(channel: Connection, seconds: float) -> bool:
    # One poll(2) call: Connection.poll builds a selector each time, a few percent of the
    # server's CPU in a burst.
    waiting = select.poll()
    waiting.register(channel.fileno(), select.POLLIN)
    return bool(waiting.poll(max(seconds, 0.0) * 1000))


class _Channels:
    """A child's channels to the server, one thread each. An exchange runs on its channel's
    thread: no thread of its own per exchange. Its deadline is the server's to keep (it
    drops a channel that has not answered by then); a channel whose exchange outlives it
    is replaced, so that a hung receiver does not take the child's channels one by one."""

    def __init__(self, address: str, key: bytes):
        self._address, self._key = address, key
        self._over_at: Dict[int, Optional[float]] = {}  # thread -> its exchange's deadline
        self._owed = 0  # replacements not yet opened (no thread could be started)
        self._lock = threading.Lock()

    def open(self) -> None:
        """One more channel, served by a thread of its own."""
        threading.Thread(target=self._serve, name="exchange-channel", daemon=True).start()

    def _serve(self) -> None:
        me = threading.get_ident()
        while True:
            try:
                channel = Client(self._address, family="AF_UNIX", authkey=self._key)
            except (AuthenticationError, EOFError, OSError):
                # The server is busy accepting, or gone: then stdin closes, main() ends us.
                time.sleep(0.05)
                continue
            with channel:
                try:
                    while True:
                        reply = self._answer(me, channel.recv_bytes())
                        if reply is None:
                            return  # replaced: the server gave up on this channel
                        channel.send_bytes(reply)
                except (EOFError, OSError):
                    continue  # the server dropped this channel (it waited too long)

    def _answer(self, me: int, data: bytes) -> Optional[bytes]:
        """The answer to one request; None when this thread was replaced meanwhile."""
        try:
            request, timeout, over_at = _request_from(data)
        except (EOFError, ValueError, TypeError) as exc:  # not a request of ours: a defect
            return marshal.dumps(_raised(exc))
        with self._lock:
            self._over_at[me] = over_at
        reply = _delivered(request, timeout, over_at)
        with self._lock:
            if self._over_at.pop(me) is None:
                return None
        try:
            return marshal.dumps(reply)
        except ValueError as exc:  # a result marshal cannot carry: a defect
            return marshal.dumps(_raised(exc))

    def replace_overdue(self) -> None:
        """Open a channel in place of each one whose exchange is past the server's wait."""
        now = time.monotonic()
        with self._lock:
            overdue = [thread for thread, over_at in self._over_at.items()
                       if over_at is not None and over_at + REPLY_MARGIN_SECONDS < now]
            for thread in overdue:
                self._over_at[thread] = None  # it ends without answering
            self._owed += len(overdue)
            owed = self._owed
        for _ in range(owed):
            try:
                self.open()
            except RuntimeError:  # no thread can be started now: the next look tries again
                return
            with self._lock:
                self._owed -= 1


# Requests and results cross as marshal'd tuples of plain values: pickling the dataclasses
# (multiprocessing's way) cost the server about 5% of a burst's CPU. Each end reads only
# what the other wrote: the socket is the server's, and a peer without the key is refused.
_RESULT_FIELDS = tuple(field.name for field in dataclasses.fields(ActionResult))


def _loads(data: bytes):
    return marshal.loads(data)  # nosec B302 - written by our own peer (see above)


def _request_bytes(request: exchange.Outgoing, timeout: float, over_at: float) -> bytes:
    return marshal.dumps((request.method, tuple(request.target), request.headers,
                          request.body, request.address, timeout, over_at))


def _request_from(data: bytes) -> tuple:
    method, target, headers, body, address, timeout, over_at = _loads(data)
    return exchange.Outgoing(method, Url(*target), headers, body, address), timeout, over_at


def _delivered(request: exchange.Outgoing, timeout: float, over_at: float) -> tuple:
    # One clock for the machine's processes. A request that waited in the socket past its
    # deadline is not sent (the server has given up on it), and an exchange that ended
    # after it is a timeout, as the server's own deadline would make it.
    if time.monotonic() >= over_at:
        return _result(exchange.timed_out(timeout))
    try:
        result = exchange.deliver_here(request, timeout, guarded=False)
    except Exception as exc:  # noqa: BLE001 - handed to the server, raised and logged there
        return _raised(exc)
    return _result(exchange.timed_out(timeout) if time.monotonic() > over_at else result)


def _result(result: ActionResult) -> tuple:
    return "result", tuple(getattr(result, name) for name in _RESULT_FIELDS), None


def _raised(exc: BaseException) -> tuple:
    return "raised", f"{exc.__class__.__name__}: {str(exc)[:200]}", traceback.format_exc()


def _replace_overdue(served: _Channels) -> None:
    while True:
        time.sleep(OVERDUE_CHECK_SECONDS)
        served.replace_overdue()


def main(argv: List[str]) -> None:
    """A child: serve `channels` channels to the server at `address` until stdin closes."""
    address, channels = argv[0], int(argv[1])
    key = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    served = _Channels(address, key)
    for _ in range(channels):
        served.open()
    threading.Thread(target=_replace_overdue, args=(served,), name="exchange-overdue",
                     daemon=True).start()
    sys.stdin.buffer.read()  # returns when the server closes the pipe or ends
    # The socket's folder is the server's; a server killed outright leaves it to us (the
    # server, or another child, may have removed either already).
    with contextlib.suppress(OSError):
        os.unlink(address)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(address))
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
