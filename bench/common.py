"""Helpers shared by the benchmarks: a keep-alive receiver, a dev server process, posting."""
import json
import os
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


class Receiver:
    """Keep-alive HTTP receiver noting the arrival time of each task id."""

    def __init__(self):
        self.arrivals = []
        lock = threading.Lock()
        arrivals = self.arrivals

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # else each request waits ~40 ms on delayed ACK

            def do_POST(self):
                now = datetime.now(timezone.utc)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    arrivals.append((self.headers.get("X-Task-Id"), now,
                                     self.headers.get("Idempotency-Key")))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


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
    process = subprocess.Popen([sys.executable, "-m", "chalicelib.local_server"],
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


def stop_server(process, timeout: float = 30) -> float:
    """SIGTERM, then wait; returns how long the shutdown took."""
    import signal

    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout)
    return time.monotonic() - started


def schedule(url, receiver_url, run_at, timeout=10):
    """POST one webhook task; its id."""
    body = json.dumps({"action": "webhook", "payload": {"url": receiver_url, "data": {"n": 1},
                                                        "timeout": timeout},
                       "run_at": run_at}).encode()
    request = urllib.request.Request(url + "/schedule-task", data=body, method="POST", headers={
        "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["task_id"]


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


