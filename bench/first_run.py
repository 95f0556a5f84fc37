"""From a fresh clone to the first received webhook: what a new user waits for.

Clones the repository (HEAD, committed files only) into a temporary folder, runs
`make dev` there on a free port, and as soon as the server answers schedules a webhook for
the next whole second to a receiver in this process. Prints the time of each phase
(install, server start, delivery) and the total; pip's cache is whatever this machine has
(warm after any earlier install).

    python bench/first_run.py [--rounds N] [--keep]
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
TOKEN = "first-run-token"


class _Hook(BaseHTTPRequestHandler):
    received = threading.Event()

    def do_POST(self):  # noqa: N802 - http.server's naming
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        _Hook.received.set()

    def log_message(self, *args):
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def one_round(keep: bool) -> dict:
    """Clone, make dev, schedule, receive: the phases' seconds."""
    workdir = Path(tempfile.mkdtemp(prefix="first-run-"))
    receiver = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    _Hook.received.clear()
    port = _free_port()
    # The user's shell (installer settings, certificates, proxies), not a test's stage.
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("AWS_", "VIRTUAL_ENV")) and key not in (
               "STAGE", "TASK_STORE", "TRIGGER_BACKEND", "SQLITE_PATH", "PYTHONPATH")}
    env.update({"PORT": str(port), "API_TOKENS": TOKEN})
    server = None
    started = time.monotonic()
    try:
        subprocess.run(["git", "clone", "--quiet", str(PROJECT_DIR), str(workdir / "repo")],
                       check=True)
        cloned = time.monotonic()
        server = subprocess.Popen(["make", "dev"], cwd=workdir / "repo", env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        output = []
        threading.Thread(target=lambda: output.extend(server.stdout), daemon=True).start()
        installed_at = None
        while True:
            if server.poll() is not None:
                raise RuntimeError("make dev ended:\n" + "".join(output))
            if installed_at is None and (workdir / "repo/.venv/.local-installed").exists():
                installed_at = time.monotonic()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.02)
        ready = time.monotonic()
        run_at = (datetime.now(timezone.utc) + timedelta(seconds=1)).replace(microsecond=0)
        body = json.dumps({"action": "webhook", "run_at": run_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
                           "payload": {"url": f"http://127.0.0.1:{receiver.server_port}/hook"}})
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/schedule-task", data=body.encode(), method="POST",
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()
        if not _Hook.received.wait(30):
            raise RuntimeError("the webhook never arrived")
        done = time.monotonic()
        installed_at = installed_at or ready
        return {"clone_s": cloned - started, "install_s": installed_at - cloned,
                "start_s": ready - installed_at, "deliver_s": done - ready,
                "total_s": done - started}
    finally:
        if server and server.poll() is None:
            server.terminate()
            server.wait(15)
        receiver.shutdown()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keep", action="store_true", help="keep the clones")
    args = parser.parse_args(argv)
    rounds = [one_round(args.keep) for _ in range(args.rounds)]
    for index, result in enumerate(rounds, 1):
        print(f"round {index}: " + ", ".join(f"{k} {v:.1f}" for k, v in result.items()))
    medians = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
    print("median: " + ", ".join(f"{k} {v:.1f}" for k, v in medians.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
