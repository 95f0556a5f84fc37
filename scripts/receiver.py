"""A webhook receiver for trying the local server: prints every request it gets.

    python3 scripts/receiver.py [PORT]      (default 9000)
"""
import json
import sys
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def _receive(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", errors="replace") if length else ""
        received = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        print(f"{received} {self.command} {self.path} "
              f"attempt={self.headers.get('X-Task-Attempt')} "
              f"task={self.headers.get('X-Task-Id')} body={body}", flush=True)
        reply = json.dumps({"received": True}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET = _receive

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 9000
    print(f"receiver listening on http://127.0.0.1:{port}/", flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
