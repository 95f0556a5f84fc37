"""API load: POST /schedule-task against `make dev`'s server (chalice's local server, SQLite
store, in-process trigger) from a bounded multi-threaded client with keep-alive connections.

Each of `--clients` threads sends requests back to back for `--seconds`; the client runs in
this process, the server in its own. Tasks are due in an hour, so nothing fires during the
run. Prints requests/s and latency p50/p99/max over several rounds (medians).

    python bench/api_load.py [--clients 8] [--seconds 10] [--rounds 3]
"""
import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import TOKEN, percentile, start_server, stop_server  # noqa: E402


def load(url: str, clients: int, seconds: float) -> dict:
    """`clients` threads posting for `seconds`: requests/s and latency percentiles."""
    host, port = url.split("//")[1].split(":")
    run_at = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = json.dumps({"action": "webhook", "run_at": run_at, "payload": {
        "url": "http://127.0.0.1:9/hook", "data": {"n": 1}}})
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
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
    return {"requests": len(latencies), "errors": errors[0],
            "requests_per_s": round(len(latencies) / elapsed, 1),
            "p50_ms": round(percentile(latencies, 0.50), 1),
            "p99_ms": round(percentile(latencies, 0.99), 1),
            "max_ms": round(max(latencies), 1)}


def measure(clients: int = 8, seconds: float = 10, rounds: int = 3) -> dict:
    """Medians over rounds, each on a fresh server and data folder."""
    runs = []
    for _ in range(rounds):
        with tempfile.TemporaryDirectory() as data:
            process, url = start_server(Path(data))
            try:
                load(url, clients, 1)  # warm-up: imports, first connections
                runs.append(load(url, clients, seconds))
            finally:
                stop_server(process)
        print(json.dumps(runs[-1]), file=sys.stderr, flush=True)
    return {"clients": clients, "seconds": seconds, "rounds": rounds,
            "errors": sum(run["errors"] for run in runs),
            **{key: statistics.median(run[key] for run in runs)
               for key in ("requests_per_s", "p50_ms", "p99_ms", "max_ms")}}


def table(result: dict) -> str:
    """A Markdown table of one result."""
    return "\n".join([
        "| endpoint | client | requests/s | p50 | p99 | max | errors |",
        "|---|---|---|---|---|---|---|",
        f"| POST /schedule-task (local server) | {result['clients']} keep-alive threads, "
        f"{result['seconds']} s x {result['rounds']} | {result['requests_per_s']:.0f} | "
        f"{result['p50_ms']:.1f} ms | {result['p99_ms']:.1f} ms | {result['max_ms']:.1f} ms | "
        f"{result['errors']} |"])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(table(measure(args.clients, args.seconds, args.rounds)))
