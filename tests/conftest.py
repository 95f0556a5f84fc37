"""Shared fixtures: fake AWS credentials, moto resources, the in-memory runtime, the Chalice
client, a receiver, dev server processes; and the test tiers.

Tiers: a test that uses moto (the `aws` fixture, or a fixture built on it) is marked
`integration`; one that starts server processes or a browser is `e2e` (its module says so
with `pytestmark`, or it uses `servers`). `make test-fast` runs the rest; `make test` runs
everything, in parallel workers (each test has its own ports, data folder and moto).
"""
import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import boto3
import pytest
from chalice.test import Client
from moto import mock_aws

PROJECT_DIR = Path(__file__).resolve().parent.parent
# Imported once here, with no stage set: importing app.py under the local stage's settings
# (as the memory fixture has them) would start a local dispatcher in the test process.
os.environ.pop("STAGE", None)
from app import app as APP  # noqa: E402
TOKEN = "test-token-0123456789"
ACCOUNT = "123456789012"
REGION = "us-east-1"
STAGE = "dev"


# Fixtures that bring moto in, directly or through another fixture; and those that start
# processes (servers, `chalice package`).
MOTO_FIXTURES = {"aws", "client", "api", "executor_function", "rules_mode", "moto_server"}
PROCESS_FIXTURES = {"servers", "merged"}


def pytest_configure(config):
    config.addinivalue_line("markers", "integration: uses moto (in-process AWS)")
    config.addinivalue_line("markers", "e2e: starts server processes, a browser or an "
                                       "external tool (chalice package, cfn-lint, bandit)")


# Modules whose tests mostly wait (minutes, on an emulator's schedules): they start first,
# so that parallel workers run the rest of the suite meanwhile.
WAIT_FIRST = ("test_emulator.py",)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name not in WAIT_FIRST)  # stable: order kept
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & PROCESS_FIXTURES and not item.get_closest_marker("e2e"):
            item.add_marker(pytest.mark.e2e)
        if (used & MOTO_FIXTURES or _starts_moto(item)) and not item.get_closest_marker(
                "integration"):
            item.add_marker(pytest.mark.integration)


def _starts_moto(item) -> bool:
    """Whether the test's own code starts moto (rather than asking a fixture for it)."""
    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function else ""
    except (OSError, TypeError):
        return False
    return any(name in source for name in ("mock_aws(", "ThreadedMotoServer", "use_moto_stage"))


@pytest.fixture(autouse=True)
def aws_env(monkeypatch):
    """Fake credentials, the dev stage's settings, and no endpoint override."""
    from chalicelib import bootstrap

    for key in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "API_TOKENS_PARAM", "EXECUTOR_ARN",
                "SCHEDULER_ROLE_ARN", "TRIGGER_BACKEND", "TASK_STORE", "WEBHOOK_SIGNING_SECRET",
                "ALLOWED_TARGETS", "AUTH_MODE", "IAM_TENANTS", "DLQ_URL", "NOTIFY_TOPIC_ARN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_REGION", REGION)
    for key, value in bootstrap.stage_environment(STAGE).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("API_TOKENS_PARAM", raising=False)
    monkeypatch.setenv("API_TOKENS", TOKEN)
    monkeypatch.setenv("ALLOW_PRIVATE_TARGETS", "true")
    _reset_caches()
    yield
    _reset_caches()


@pytest.fixture
def local_env(monkeypatch, tmp_path):
    """The local stage's settings (as `make dev` has them), data in a temporary folder."""
    from chalicelib import bootstrap

    for key in bootstrap.stage_environment(STAGE):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("STAGE", "local")
    monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "tasks.sqlite3"))
    return tmp_path


class FakeDNS:
    """A resolver answering from a table (a list answers differently each time) and
    counting lookups; other hosts go to the real resolver."""

    def __init__(self, answers):
        self.answers = answers
        self.lookups = []
        self._real = socket.getaddrinfo

    def __call__(self, host, port, family=0, kind=0, *rest):
        if host not in self.answers:
            return self._real(host, port, family, kind, *rest)
        self.lookups.append(host)
        address = self.answers[host]
        if isinstance(address, list):
            address = address.pop(0)
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        return [(family, socket.SOCK_STREAM, 6, "", (address, port))]


@pytest.fixture
def private_refused(monkeypatch):
    """ALLOW_PRIVATE_TARGETS off, as deployed stages have it."""
    monkeypatch.setenv("ALLOW_PRIVATE_TARGETS", "false")


@pytest.fixture
def public_receiver(monkeypatch, private_refused, receiver):
    """The receiver reached through the SSRF guard's pinned path: `hooks.example.test`
    resolves (everywhere, so an unpinned second lookup would see it) first to the receiver's
    loopback, treated as public here, then to a private address."""
    from chalicelib import ssrf

    dns = FakeDNS({"hooks.example.test": ["127.0.0.1", "10.9.9.9"]})
    monkeypatch.setattr(ssrf, "resolver", dns)
    monkeypatch.setattr(socket, "getaddrinfo", dns)
    real_is_blocked = ssrf.is_blocked
    monkeypatch.setattr(ssrf, "is_blocked", lambda address: False if str(address) == "127.0.0.1"
                        else real_is_blocked(address))
    port = receiver.url.split(":")[2].split("/")[0]
    receiver.public_url = f"http://hooks.example.test:{port}/hook"
    receiver.dns = dns
    return receiver


def _reset_caches():
    from chalicelib import aws, wiring

    aws.reset()
    wiring.reset()


class MovingClock:
    """A fixed clock a test moves on: its sleep (an executor waiting) and a test's own
    steps (a receiver's hook, say) advance it."""

    def __init__(self, start):
        self.moment = start

    def now(self):
        return self.moment

    def sleep(self, seconds):
        self.moment += timedelta(seconds=seconds)


def seconds_from_now(seconds):
    """A whole second at least `seconds` from now (run_at takes whole seconds)."""
    return datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=seconds + 1)


def wait_for(condition, timeout=60):
    """Poll `condition` until it holds; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def together(*calls):
    """Run the calls at once in threads: each one's result or exception."""
    results = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(index, call):
        barrier.wait()
        try:
            results[index] = call()
        except Exception as error:  # noqa: BLE001 - the outcome under test
            results[index] = error

    threads = [threading.Thread(target=run, args=pair) for pair in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def runtime(clock=None):
    """The runtime the app would use under the current settings, on `clock` if given."""
    from dataclasses import replace

    from chalicelib import wiring

    current = wiring.runtime()
    return replace(current, clock=clock) if clock is not None else current


class RecordingTrigger:
    """A trigger that records what it was asked: (method, task id[, time]) in `calls`."""

    def __init__(self, clock=None):
        from chalicelib.models import SYSTEM_CLOCK

        self.clock = clock or SYSTEM_CLOCK
        self.calls = []

    def arm(self, task):
        self.calls.append(("arm", task.task_id))

    def disarm(self, task):
        self.calls.append(("disarm", task.task_id))

    def rearm(self, previous, current):
        # As the port does it: what `previous` armed goes, what `current` needs comes.
        self.disarm(previous)
        if current.wake_at is not None:
            self.arm(current)

    def ensure_armed(self, task):
        self.calls.append(("ensure_armed", task.task_id))
        return False

    def arm_recheck(self, task, at):
        self.calls.append(("arm_recheck", task.task_id, at))

    def after_run(self, task):
        self.calls.append(("after_run", task.task_id, task.status))


MEMORY_SIGNING_SECRET = "whsec_" + "bWVtb3J5LXRpZXItdGVzdC1zZWNyZXQtMzItYnl0ZXM="


@pytest.fixture
def memory(local_env, monkeypatch):
    """The in-memory store and a recording trigger as the process's runtime (what the app,
    the executor and make_task then use), with the local stage's settings: no AWS at all
    (dead letters go to a file in the test's folder). Returns the Runtime."""
    from chalicelib import wiring
    from chalicelib.store.memory import InMemoryTaskStore

    monkeypatch.setenv("WEBHOOK_SIGNING_SECRET", MEMORY_SIGNING_SECRET)
    with wiring.overridden(store=InMemoryTaskStore(), trigger=RecordingTrigger()):
        yield wiring.runtime()


@pytest.fixture
def aws(monkeypatch):
    """moto with the stage bootstrapped: tables and indexes, schedule group, role; its
    DynamoDB requests one at a time, as DynamoDB applies each atomically (see
    bench.common.moto_dynamodb_atomic)."""
    from bench.common import moto_dynamodb_atomic
    from chalicelib import bootstrap

    # Lambda invocations answer without Docker (moto's "simple" Lambda backend).
    with moto_dynamodb_atomic(), mock_aws(config={"lambda": {"use_docker": False}}):
        bootstrap.bootstrap(STAGE)
        yield


@pytest.fixture
def executor_function(aws):
    """The execute_task function in moto (to grant on and invoke; moto does not run it).
    Returns the payloads of its invocations, in order."""
    from chalicelib import aws as clients, config

    iam = boto3.client("iam")
    role = iam.create_role(RoleName="executor-role", AssumeRolePolicyDocument=json.dumps({
        "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                               "Principal": {"Service": "lambda.amazonaws.com"}}]
    }))["Role"]["Arn"]
    boto3.client("lambda").create_function(
        FunctionName=config.executor_function_name(), Runtime="python3.11", Role=role,
        Handler="app.execute_task", Code={"ZipFile": b"not run by moto"})
    invocations = []
    clients.client("lambda").meta.events.register(
        "before-call.lambda.Invoke",
        lambda params, **_: invocations.append(json.loads(params["body"])) and None)
    return invocations


@pytest.fixture
def rules_mode(executor_function, monkeypatch):
    """TRIGGER_BACKEND=rules with an executor function to grant EventBridge on."""
    monkeypatch.setenv("TRIGGER_BACKEND", "rules")
    yield


def _chalice_client():
    return Client(APP, stage_name=STAGE, project_dir=str(PROJECT_DIR))


@pytest.fixture
def client(aws):
    """The Chalice test client on the dev stage, over moto."""
    with _chalice_client() as chalice_client:
        yield chalice_client


@pytest.fixture
def memory_client(memory):
    """The Chalice test client on the dev stage, over the in-memory runtime."""
    with _chalice_client() as chalice_client:
        yield chalice_client


@pytest.fixture
def auth_headers():
    return {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


class Api:
    """Small JSON helper over a Chalice test client, authenticated."""

    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def request(self, method, path, body=None, headers=None, raw=None):
        data = raw if raw is not None else (
            json.dumps(body).encode() if body is not None else b"")
        response = self.client.http.request(method, path,
                                            headers={**self.headers, **(headers or {})},
                                            body=data)
        response.json = json.loads(response.body) if response.body else None
        return response

    def post(self, path, body=None, **kwargs):
        return self.request("POST", path, body, **kwargs)

    def get(self, path, **kwargs):
        return self.request("GET", path, **kwargs)

    def delete(self, path, **kwargs):
        return self.request("DELETE", path, **kwargs)

    def patch(self, path, body=None, **kwargs):
        return self.request("PATCH", path, body, **kwargs)

    def invoke(self, task_id):
        return self.client.lambda_.invoke("execute_task", {"task_id": task_id}).payload


@pytest.fixture
def api(client, auth_headers):
    """The API over moto (DynamoDB, EventBridge Scheduler)."""
    return Api(client, auth_headers)


@pytest.fixture
def memory_api(memory_client, auth_headers):
    """The API over the in-memory runtime: what does not depend on AWS."""
    return Api(memory_client, auth_headers)


# ---------------------------------------------------------------- a real receiver

class _ReceiverServer(ThreadingHTTPServer):
    daemon_threads = True
    # The default backlog of 5 drops SYNs when many workers connect at once (a delivery
    # then arrives 1 s or 3 s late, after the kernel's retransmit).
    request_queue_size = 128


class Receiver:
    """An HTTP server on 127.0.0.1 that records requests and answers as told."""

    def __init__(self):
        self.requests = []
        self.status = 200
        self.script = []  # statuses to answer first, one per request, then `status`
        self.reply_headers = {}
        self.delay = 0.0
        self.on_request = None  # called with each request as it arrives (a test's hook)
        self.body = b'{"ok": true}'
        self.in_flight = 0  # requests being answered now, and the most there ever were
        self.most_in_flight = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _handle(self):
                received_at = datetime.now(timezone.utc)
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {"method": self.command, "path": self.path,
                          "received_at": received_at,
                          "headers": {k.lower(): v for k, v in self.headers.items()},
                          "body": body}
                with receiver._lock:
                    receiver.requests.append(record)
                    receiver.in_flight += 1
                    receiver.most_in_flight = max(receiver.most_in_flight,
                                                  receiver.in_flight)
                try:
                    self._answer(record)
                finally:
                    with receiver._lock:
                        receiver.in_flight -= 1

            def _answer(self, record):
                if receiver.on_request is not None:
                    receiver.on_request(record)
                if receiver.delay:
                    time.sleep(receiver.delay)
                with receiver._lock:
                    status = receiver.script.pop(0) if receiver.script else receiver.status
                self.send_response(status)
                for name, value in receiver.reply_headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(receiver.body)))
                self.end_headers()
                self.wfile.write(receiver.body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

            def log_message(self, *args):
                pass

        self.server = _ReceiverServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def hold(self, marker: bytes, timeout: float = 60):
        """Keep the request whose body holds `marker` unanswered until the returned
        `release` is set (at most `timeout`): (arrived, release) events. Set release and
        clear `on_request` when done."""
        arrived, release = threading.Event(), threading.Event()

        def hold(request):
            if marker in request["body"]:
                arrived.set()
                release.wait(timeout)

        self.on_request = hold
        return arrived, release

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def refused_url():
    """A loopback URL nothing listens on."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/nobody"


# ---------------------------------------------------------------- stored tasks

@pytest.fixture(params=["memory", pytest.param("dynamodb", marks=pytest.mark.integration),
                        "sqlite"])
def store(request, monkeypatch, tmp_path):
    """The adapter under test: DynamoDB and SQLite selected the way the app selects them
    (TASK_STORE), the in-memory one put into the runtime as a test does."""
    from chalicelib import wiring

    if request.param == "memory":
        from chalicelib.store.memory import InMemoryTaskStore

        with wiring.overridden(store=InMemoryTaskStore()):
            yield runtime().store
        return
    if request.param == "dynamodb":
        request.getfixturevalue("aws")
    else:
        monkeypatch.setenv("TASK_STORE", "sqlite")
        monkeypatch.setenv("SQLITE_PATH", str(tmp_path / "tasks.sqlite3"))
    yield runtime().store


@pytest.fixture
def make_task():
    """Store a task directly (for states the API cannot create, such as overdue ones)."""
    from chalicelib.models import Task, utcnow

    def make(due_in=-1.0, action="webhook", payload=None, priority=5, run_at=None,
             schedule_kind="once", **fields):
        now = utcnow()
        fields.setdefault("created_at", now - timedelta(hours=1))
        next_run_at = fields.pop("next_run_at", None) or (
            now + timedelta(seconds=due_in)).replace(microsecond=0)
        task = Task(
            task_id=str(uuid.uuid4()), action=action,
            payload=payload if payload is not None else {"message": "hi"},
            run_at=run_at or next_run_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            schedule_kind=schedule_kind, next_run_at=next_run_at, priority=priority, **fields)
        runtime().store.create(task)
        return task

    return make


# ---------------------------------------------------------------- live dev servers

LOCAL_TOKEN = "local-test-token"


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevServer:
    """`make dev`'s server: one process on a free port over a data folder that outlives restarts."""

    def __init__(self, data_dir: Path, command=None, extra_env=None):
        self.data_dir = data_dir
        self.command = command or [sys.executable, "-m", "chalicelib.local"]
        # Our server binds port 0 and says which port it got, so no other process (another
        # suite on a busy machine) can take it between a probe and the bind; `chalice local`
        # needs a number on its command line.
        self.fixed_port = any("{port}" in part for part in self.command)
        self.port = free_port() if self.fixed_port else None
        self.url = f"http://127.0.0.1:{self.port}" if self.port else None
        self.extra_env = extra_env or {}
        self.process = None
        self.log = data_dir / "server.log"  # stdout: JSON lines only
        self.err = data_dir / "server.err"  # stderr: the banner, anything unexpected

    def start(self, timeout=60):
        # A user's shell, not the test process's fixtures: no stage or AWS settings.
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "PYTHONDONTWRITEBYTECODE")}
        env.update({"PORT": str(self.port or 0), "API_TOKENS": LOCAL_TOKEN,
                    "SQLITE_PATH": str(self.data_dir / "tasks.sqlite3"), **self.extra_env})
        self.data_dir.mkdir(parents=True, exist_ok=True)
        logged_before = self.log.stat().st_size if self.log.exists() else 0
        self.process = subprocess.Popen(
            [part.replace("{port}", str(self.port)) for part in self.command],
            cwd=PROJECT_DIR, env=env, stdout=self.log.open("ab"), stderr=self.err.open("ab"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.output()
            if not self.fixed_port:
                self.url = self._announced_url(logged_before)
                if self.url is None:
                    time.sleep(0.05)
                    continue
                self.port = int(self.url.rsplit(":", 1)[1])
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=1) as response:
                    if response.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        raise AssertionError("server did not start:\n" + self.output())

    def _announced_url(self, offset: int):
        """The URL of the `serving` event this start wrote to stdout, once it has."""
        with self.log.open("rb") as log:
            log.seek(offset)
            for line in log.read().decode(errors="replace").splitlines():
                if '"event":"serving"' in line:
                    return json.loads(line)["url"]
        return None

    def output(self) -> str:
        """What the server wrote to stderr, then to stdout."""
        return "".join(path.read_text(errors="replace") for path in (self.err, self.log)
                       if path.exists())

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            started = time.monotonic()
            code = self.process.wait(timeout)
            return code, time.monotonic() - started
        return None, 0.0

    def request(self, method, path, body=None, token=LOCAL_TOKEN):
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"null")

    def schedule(self, url, run_at, run_at_text=None, **extra):
        status, body = self.request("POST", "/schedule-task", {
            "action": "webhook", "payload": {"url": url, "data": {"msg": "Hello from Lambda"}},
            "run_at": run_at_text or run_at.strftime("%Y-%m-%dT%H:%M:%SZ"), **extra})
        assert status == 201, body
        return body["task_id"]

    def wait_status(self, task_id, status, timeout=60):
        # Generous: returns as soon as the status is reached, and CI may be very busy.
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _, body = self.request("GET", f"/tasks/{task_id}")
            if body["status"] == status:
                return body
            time.sleep(0.1)
        raise AssertionError(f"task {task_id} is {body['status']}, not {status}")


@pytest.fixture
def servers(tmp_path):
    """make(**kwargs) -> a DevServer (`make dev`'s server process) over tmp_path/data; every
    one started is killed at the end."""
    started = []

    def make(**kwargs):
        server = DevServer(tmp_path / "data", **kwargs)
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop(signal.SIGKILL)


TENANT_TOKENS = {"alpha": "alpha-token-0123", "beta": "beta-token-01234",
                 "*": "admin-token-0123"}


@pytest.fixture(scope="module")
def tenant_server(tmp_path_factory):
    """`make dev`'s server with API_TOKENS naming two tenants (alpha, beta) and an admin
    (TENANT_TOKENS), shared by a module's tests."""
    dev = DevServer(tmp_path_factory.mktemp("tenants") / "data", extra_env={
        "API_TOKENS": ",".join(f"{name}={token}" for name, token in TENANT_TOKENS.items())})
    dev.start()
    yield dev
    dev.stop(signal.SIGKILL)


# ---------------------------------------------------------------- the package's bytecode

def bytecode_problems(archive: Path) -> list:
    """What is wrong with the bytecode in a deployment zip, checked independently of how
    chalicelib.bytecode writes it: each .py has its checked hash-based .pyc for this Python
    (unless this Python cannot compile it), whose hash is the source's and whose code is
    what compiling the source gives; and there is no other bytecode (another Python's, a
    timestamp-based one, a leftover). An empty list when all is well."""
    import importlib.util
    import marshal
    import zipfile

    from chalicelib import bytecode

    problems = []
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        sources = sorted(name for name in names if name.endswith(".py"))
        expected = set()
        for name in sources:
            source = zipped.read(name)
            try:
                code = compile(source, name, "exec", dont_inherit=True, optimize=0)
            except (SyntaxError, ValueError):
                continue
            pyc = bytecode.pyc_name(name)
            expected.add(pyc)
            if pyc not in names:
                problems.append(f"{name}: no {pyc}")
                continue
            data = zipped.read(pyc)
            if data[:4] != importlib.util.MAGIC_NUMBER:
                problems.append(f"{pyc}: not this Python's magic number")
            elif int.from_bytes(data[4:8], "little") != 0b11:
                problems.append(f"{pyc}: not a checked hash-based .pyc")
            elif data[8:16] != importlib.util.source_hash(source):
                problems.append(f"{pyc}: compiled from another source")
            elif marshal.loads(data[16:]) != code:
                problems.append(f"{pyc}: its code is not its source's")
        problems += [f"{name}: bytecode the package step did not build"
                     for name in sorted(names - expected)
                     if bytecode.is_bytecode(name) and not name.endswith("/")]
    return problems
