"""Helpers shared by the benchmarks: receivers (keep-alive, hung, dripping), a dev server process,
posting."""
import contextlib
import functools
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
TOKEN = "bench-token"


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    # socketserver's default backlog of 5 drops SYNs when 16 workers connect at once: the
    # kernel's retransmits then show up as deliveries exactly 1 s or 3 s late.
    request_queue_size = 1024

    def handle_error(self, request, client_address):
        # A client that went away (a server killed mid-request) is expected, not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Receiver:
    """Keep-alive HTTP receiver noting the arrival time of each task id; it answers after
    `delay` seconds and counts the most requests it was answering at once."""

    def __init__(self, delay: float = 0.0):
        self.arrivals = []
        self.most_in_flight = 0
        lock = threading.Lock()
        arrivals = self.arrivals
        in_flight = [0]
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each request waits ~40 ms on delayed ACK

            def do_POST(self):
                now = datetime.now(timezone.utc)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    arrivals.append((self.headers.get("X-Task-Id"), now,
                                     self.headers.get("Idempotency-Key")))
                    in_flight[0] += 1
                    receiver.most_in_flight = max(receiver.most_in_flight, in_flight[0])
                if delay:
                    time.sleep(delay)
                with lock:
                    in_flight[0] -= 1
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self):
                # The arrivals so far, for a benchmark running this receiver in a process
                # of its own (ReceiverProcess).
                with lock:
                    body = json.dumps([(task_id, moment.timestamp(), key)
                                       for task_id, moment, key in arrivals]).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


class SlowReceivers:
    """Two receivers that never complete a response, served by one thread: `hang_url`
    accepts and never answers; `drip_url` answers one byte a second, so no single read
    times out, and closes after `drip_bytes` bytes. `close()` drops every connection."""

    DRIP = b"HTTP/1.1 200 OK\r\nX-Drip: " + b"." * 4096

    def __init__(self, drip_bytes: int = 20):
        self._drip_bytes = min(drip_bytes, len(self.DRIP))
        self._selector = selectors.DefaultSelector()
        self._dripping = {}  # socket -> bytes sent so far
        self._held = []  # the hanging connections, kept open
        self._closed = threading.Event()
        urls = []
        for mode in ("hang", "drip"):
            listener = socket.socket()
            listener.bind(("127.0.0.1", 0))
            listener.listen(1024)
            listener.setblocking(False)
            self._selector.register(listener, selectors.EVENT_READ, mode)
            urls.append(f"http://127.0.0.1:{listener.getsockname()[1]}/{mode}")
        self.hang_url, self.drip_url = urls
        self._thread = threading.Thread(target=self._serve, name="slow-receivers", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        next_drip = time.monotonic()
        while not self._closed.is_set():
            for key, _ in self._selector.select(timeout=max(next_drip - time.monotonic(), 0)):
                try:
                    connection, _ = key.fileobj.accept()
                except BlockingIOError:
                    continue
                if key.data == "hang":
                    self._held.append(connection)
                else:
                    self._dripping[connection] = 0
            if time.monotonic() >= next_drip:
                next_drip += 1.0
                for connection, sent in list(self._dripping.items()):
                    try:
                        connection.send(self.DRIP[sent:sent + 1])
                    except OSError:
                        sent = self._drip_bytes  # the client gave up: stop dripping
                    if sent + 1 >= self._drip_bytes:
                        del self._dripping[connection]
                        connection.close()
                    else:
                        self._dripping[connection] = sent + 1
        for connection in self._held + list(self._dripping):
            connection.close()
        for key in list(self._selector.get_map().values()):
            key.fileobj.close()
        self._selector.close()

    @property
    def dripping(self) -> int:
        """How many connections are still being answered a byte at a time."""
        return len(self._dripping)

    def close(self) -> None:
        self._closed.set()
        self._thread.join(5)


class ReceiverProcess:
    """The Receiver in a process of its own, so that it takes no CPU time from whichever
    scheduler the benchmark runs in its own process."""

    def __init__(self):
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import sys, time; sys.path.insert(0, 'bench'); "
             "from common import Receiver; r = Receiver(); print(r.url, flush=True); "
             "time.sleep(86400)"], cwd=PROJECT_DIR, stdout=subprocess.PIPE, text=True)
        self.url = self.process.stdout.readline().strip()
        self.count_url = self.url.rsplit("/", 1)[0] + "/arrivals"

    def arrivals(self) -> list:
        """(task id, arrival time, Idempotency-Key) of every request so far."""
        with urllib.request.urlopen(self.count_url, timeout=30) as response:
            return [(task_id, datetime.fromtimestamp(moment, timezone.utc), key)
                    for task_id, moment, key in json.loads(response.read())]

    def wait_for(self, count: int, deadline: float) -> list:
        """The arrivals once there are `count` (or at the monotonic `deadline`)."""
        while True:
            arrived = self.arrivals()
            if len(arrived) >= count or time.monotonic() > deadline:
                return arrived
            time.sleep(0.1)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(data_dir: Path, workers: int = 16, port: int = 0):
    port = port or free_port()
    env = {**os.environ, "PORT": str(port), "API_TOKENS": TOKEN, "LOCAL_WORKERS": str(workers),
           "SQLITE_PATH": str(data_dir / "tasks.sqlite3")}
    for key in ("AWS_ENDPOINT_URL", "TASK_STORE", "TRIGGER_BACKEND", "STAGE"):
        env.pop(key, None)
    process = subprocess.Popen([sys.executable, "-m", "chalicelib.local"],
                               cwd=PROJECT_DIR, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/health", timeout=1).read()
            return process, url
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def stop_server(process, timeout: float = 30, sig=None) -> float:
    """SIGTERM (or `sig`), then wait; returns how long the shutdown took."""
    import signal

    started = time.monotonic()
    process.send_signal(signal.SIGTERM if sig is None else sig)
    process.wait(timeout)
    return time.monotonic() - started


def schedule(url, receiver_url, run_at, timeout=10, **fields):
    """POST one webhook task (with any other task `fields`); its id."""
    body = json.dumps({"action": "webhook", "payload": {"url": receiver_url, "data": {"n": 1},
                                                        "timeout": timeout},
                       "run_at": run_at, **fields}).encode()
    request = urllib.request.Request(url + "/schedule-task", data=body, method="POST", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["task_id"]


def markdown_table(columns, rows) -> str:
    """A Markdown table: a header of `columns`, then one line per row of cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]




# ---------------------------------------------------------------- moto-based benchmarks

@contextlib.contextmanager
def moto_dynamodb_atomic():
    """Within the block, moto answers one DynamoDB request at a time (tests and benchmarks
    that race writers on it).

    DynamoDB applies a conditional write atomically; moto's in-process backend does not
    lock. The lock covers each request's answer too: moto changes a stored item in place,
    and a read answered while another thread's UpdateItem added attributes failed with
    "dictionary changed size during iteration" (a PATCH racing a claim, under load)."""
    from unittest import mock

    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()

    def atomic(method):
        @functools.wraps(method)
        def locked(*args, **kwargs):
            with lock:
                return method(*args, **kwargs)
        return locked

    with contextlib.ExitStack() as patches:
        for owner, names in ((DynamoDBBackend, ("put_item", "update_item", "delete_item",
                                                "get_item")),
                             (DynamoHandler, ("get_item", "put_item", "update_item",
                                              "delete_item", "query", "scan"))):
            for name in names:
                patches.enter_context(mock.patch.object(owner, name,
                                                        atomic(getattr(owner, name))))
        yield

MOTO_STAGE = "dev"


def use_moto_stage(**settings) -> None:
    """This process as the dev stage against in-process moto: fake credentials, no
    endpoint override, the stage's settings plus `settings`, and fresh clients, store and
    trigger (call it before mock_aws starts a new account)."""
    from chalicelib import aws, bootstrap, wiring

    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "API_TOKENS_PARAM", "EXECUTOR_ARN",
                "SCHEDULER_ROLE_ARN", "TRIGGER_BACKEND", "TASK_STORE", "METRICS", "PRECISION"):
        os.environ.pop(key, None)
    os.environ.update({"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                       **bootstrap.stage_environment(MOTO_STAGE), **settings})
    aws.reset()
    wiring.reset()


def create_executor_function() -> None:
    """The execute_task function in moto, to invoke and grant on (moto does not run it)."""
    import boto3

    from chalicelib import config

    role = boto3.client("iam").create_role(RoleName="bench-executor",
                                           AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    boto3.client("lambda").create_function(
        FunctionName=config.executor_function_name(), Runtime="python3.11", Role=role,
        Handler="app.execute_task", Code={"ZipFile": b"not run"})
