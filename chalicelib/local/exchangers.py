"""Exchange processes: `make dev`'s server sends its webhooks from processes of its own.

The server is bound by one core (the GIL): the store's claims and commits and the HTTP
client's work took turns on it, the client being about a third of each delivery. The
server hands each exchange, already built, signed and pinned, to a child process over a
local socket and waits for the run's result; the store stays in the server, so nothing
about claims, commits or crash recovery changes.

- Each child keeps `channels` connections to the server, one thread each; a run takes an
  idle one. With none idle (the children still starting, or every channel busy), the run
  sends its exchange from the server itself, as it did before.
- A child enforces the exchange's deadline (exchange.send). The server waits that long and
  a little more; a child that does not answer by then loses the channel.
- A child that ends mid-exchange (killed) leaves the run a retryable failure: the request
  may have gone out, and its retry carries the same Idempotency-Key.
- Each child watches its stdin, a pipe from the server: when the server ends, even by
  kill -9, the pipe closes and the child exits. Ctrl-C reaches the whole process group;
  the children ignore it and end when the server does, after its runs in flight.

    python -m chalicelib.local.exchangers ADDRESS   (started by the server; key on stdin)
"""
import contextlib
import logging
import os
import queue
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from multiprocessing import AuthenticationError
from multiprocessing.connection import Client, Connection, Listener
from pathlib import Path
from typing import List, Optional

from chalicelib import config
from chalicelib.actions import exchange
from chalicelib.actions.base import ActionResult

logger = logging.getLogger(__name__)

# Beyond the exchange's own deadline, how long the server waits for a child's answer.
REPLY_MARGIN_SECONDS = 2.0


class ExchangeProcessError(RuntimeError):
    """An exchange raised inside its child process (a defect): recorded as the run's error."""


class ExchangeProcesses:
    """`count` child processes sending webhooks for this process (exchange.hand_over_to)."""

    def __init__(self, count: int, channels: int):
        self._count, self._channels = count, channels
        self._idle: "queue.SimpleQueue[Connection]" = queue.SimpleQueue()
        self._children: List[subprocess.Popen] = []
        self._listener: Optional[Listener] = None
        self._folder: Optional[tempfile.TemporaryDirectory] = None
        self._closing = False
        self.address = ""

    def start(self) -> None:
        """Listen, start the children and hand this process's exchanges over to them."""
        key = secrets.token_bytes(32)
        # A socket file in a folder only this user can enter; the key keeps anyone else
        # who reaches it from taking a channel.
        # A child removes it when the server ends without closing (kill -9).
        self._folder = tempfile.TemporaryDirectory(prefix="task-scheduler-",
                                                   ignore_cleanup_errors=True)
        self.address = str(Path(self._folder.name) / "exchange.sock")
        self._listener = Listener(self.address, family="AF_UNIX", authkey=key)
        threading.Thread(target=self._accept, name="exchange-accept", daemon=True).start()
        for _ in range(self._count):
            child = subprocess.Popen(  # nosec B603 - our own module, no shell
                [sys.executable, "-m", "chalicelib.local.exchangers", self.address,
                 str(self._channels)], stdin=subprocess.PIPE, cwd=config.PROJECT_DIR)
            child.stdin.write(key.hex().encode() + b"\n")
            child.stdin.flush()  # left open: the child ends when it closes
            self._children.append(child)
        exchange.hand_over_to(self.deliver)

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
                # A refused or broken handshake ends that connection only.
                logger.warning("exchange channel refused: %s", exc.__class__.__name__)
                continue
            self._idle.put(channel)

    def deliver(self, request: exchange.Outgoing, timeout: float) -> Optional[ActionResult]:
        """The run's result from a child; None when no channel is idle (send it here)."""
        while True:
            try:
                channel = self._idle.get(block=False)
            except queue.Empty:
                return None
            try:
                channel.send((request, timeout))
                break
            except OSError:  # that child has ended; nothing was sent: try another
                channel.close()
        wait = exchange.deadline(timeout) + REPLY_MARGIN_SECONDS
        try:
            if not channel.poll(wait):
                channel.close()
                return ActionResult(False, error=f"timeout: no complete response within "
                                                 f"{exchange.deadline(timeout):g} s",
                                    retryable=True)
            outcome, value = channel.recv()
        except (EOFError, OSError):
            channel.close()
            return ActionResult(False, error="connection failed: the exchange process ended",
                                retryable=True)
        self._idle.put(channel)
        if outcome == "raised":
            raise ExchangeProcessError(value)
        return value

    def close(self) -> None:
        """Take exchanges back into this process and end the children."""
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
            child.stdin.close()
        for child in self._children:
            try:
                child.wait(5)
            except subprocess.TimeoutExpired:
                child.kill()
        if self._folder is not None:
            self._folder.cleanup()


def _serve_channel(address: str, key: bytes) -> None:
    while True:
        try:
            channel = Client(address, family="AF_UNIX", authkey=key)
        except OSError:  # the server is gone or shutting down
            os._exit(0)
        with channel:
            try:
                while True:
                    request, timeout = channel.recv()
                    channel.send(_delivered(request, timeout))
            except (EOFError, OSError):
                continue  # the server dropped this channel (it waited too long): reconnect


def _delivered(request: exchange.Outgoing, timeout: float) -> tuple:
    try:
        return "result", exchange.deliver_here(request, timeout)
    except Exception as exc:  # noqa: BLE001 - handed to the server, raised there
        traceback.print_exc()
        return "raised", f"{exc.__class__.__name__}: {str(exc)[:200]}"


def main(argv: List[str]) -> None:
    """A child: serve `channels` channels to the server at `address` until stdin closes."""
    address, channels = argv[0], int(argv[1])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    key = bytes.fromhex(sys.stdin.buffer.readline().decode().strip())
    for _ in range(channels):
        threading.Thread(target=_serve_channel, args=(address, key), daemon=True).start()
    sys.stdin.buffer.read()  # returns when the server closes the pipe or ends
    # The socket's folder is the server's; a server killed outright leaves it to us.
    with contextlib.suppress(OSError):
        os.unlink(address)
        os.rmdir(os.path.dirname(address))
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1:])
