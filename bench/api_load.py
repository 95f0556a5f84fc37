"""API load: POST /schedule-task against `make dev`'s server (chalice's local server, SQLite
store, in-process trigger), driven by wrk (Debian's package; `make bench` installs it) with
`--clients` keep-alive connections, or, where wrk is missing, by as many threads of a Python
client in this process. Requests go back to back for `--seconds`; tasks are due in an hour,
so nothing fires during the run. Prints requests/s and latency p50/p99/max over several
rounds (medians), each on a fresh server and data folder.

    python bench/api_load.py [--clients 8] [--seconds 10] [--rounds 3]
"""
import argparse
import http.client
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import (  # noqa: E402
    TOKEN, markdown_table, percentile, start_server, stop_server,
)


def _request() -> tuple:
    run_at = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.dumps({"action": "webhook", "run_at": run_at, "payload": {
        "url": "http://127.0.0.1:9/hook", "data": {"n": 1}}})
    return body, {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def load_with_wrk(url: str, clients: int, seconds: float) -> dict:
    """wrk with `clients` connections on 2 threads for `seconds`."""
    body, headers = _request()
    script = "wrk.method = 'POST'\n" + f"wrk.body = {json.dumps(body)}\n" + "".join(
        f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}\n"
        for name, value in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as lua:
        lua.write(script)
        lua.flush()
        output = subprocess.run(
            ["wrk", "-t2", f"-c{clients}", f"-d{max(1, round(seconds))}s", "--latency",
             "-s", lua.name, url + "/schedule-task"],
            capture_output=True, text=True, check=True, timeout=seconds + 60).stdout

    def ms(pattern):
        value, unit = re.search(pattern, output, re.M).groups()
        return round(float(value) * _UNITS_MS[unit], 2)

    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)  # connect, read, write, timeout
    return {"tool": f"wrk, 2 threads, {clients} connections",
            "requests": int(re.search(r"(\d+) requests in", output).group(1)),
            "errors": (int(errors.group(1)) if errors else 0) + (sum(
                int(n) for n in re.findall(r"\d+", socket_errors.group(1)))
                if socket_errors else 0),
            "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),
            "p50_ms": ms(r"^\s+50%\s+([\d.]+)(us|ms|s)\s*$"),
            "p99_ms": ms(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$"),
            # The thread statistics line: Latency avg stdev max +/-stdev.
            "max_ms": ms(r"^\s+Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)")}


def load(url: str, clients: int, seconds: float) -> dict:
    """`clients` Python threads posting for `seconds`: requests/s and latency percentiles."""
    host, port = url.split("//")[1].split(":")
    body, headers = _request()
    latencies, errors, lock = [], [0], threading.Lock()
    stop_at = time.monotonic() + seconds

    def client():
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        connection.connect()
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no delayed-ACK stall
        mine = []
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            connection.request("POST", "/schedule-task", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            mine.append((time.perf_counter() - started) * 1000)
            if response.status != 201:
                with lock:
                    errors[0] += 1
        connection.close()
        with lock:
            latencies.extend(mine)

    started = time.monotonic()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    return {"tool": f"Python http.client, {clients} keep-alive threads",
            "requests": len(latencies), "errors": errors[0],
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 0.50), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "max_ms": round(max(latencies), 1)}


def measure(clients: int = 8, seconds: float = 10, rounds: int = 3) -> dict:
    """Medians over rounds, each on a fresh server and data folder."""
    runner = load_with_wrk if shutil.which("wrk") else load
    runs = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as data:
            process, url = start_server(Path(data))
            try:
                runner(url, clients, 1)  # warm-up: imports, first connections
                runs.append(runner(url, clients, seconds))
            finally:
                stop_server(process)
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    return {"tool": runs[0]["tool"], "clients": clients, "seconds": seconds, "rounds": rounds,
            "errors": sum(run["errors"] for run in runs),
            **{key: statistics.median(run[key] for run in runs)
               for key in ("requests_per_s", "p50_ms", "p99_ms", "max_ms")}}


def table(result: dict) -> str:
    """A Markdown table of one result."""
    return markdown_table(
        ["endpoint", "client", "requests/s", "p50", "p99", "max", "errors"],
        [["POST /schedule-task (local server)",
          f"{result['tool']}, {result['seconds']} s x {result['rounds']}",
          f"{result['requests_per_s']:.0f}", f"{result['p50_ms']:.1f} ms",
          f"{result['p99_ms']:.1f} ms", f"{result['max_ms']:.1f} ms", result["errors"]]])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(table(measure(args.clients, args.seconds, args.rounds)))
