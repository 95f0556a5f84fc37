"""Structured logs and CloudWatch metrics: one JSON line per event, metrics as Embedded
Metric Format (EMF) lines that CloudWatch Logs turns into metrics, no API calls.

Written here rather than taken from Powertools for AWS Lambda: Logger + Metrics would
add about 1.0 MB to a 1.2 MB deployment zip and about 45 ms to every cold start, for the
sixty lines below.
"""
import atexit
import contextvars
import json
import logging
import logging.handlers
import queue
import sys
import time
from datetime import datetime, timezone
from typing import Any, Dict, Iterable, Optional

from chalicelib import config

NAMESPACE = "TaskScheduler"
MILLISECONDS = "Milliseconds"
COUNT = "Count"

logger = logging.getLogger("task_scheduler")

# The Lambda request being served, added to every line of it.
request_id: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "request_id", default=None)


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: a dict message is merged in, text becomes `message`."""

    def format(self, record: logging.LogRecord) -> str:
        line: Dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, timezone.utc)
            .isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
        }
        if isinstance(record.msg, dict):
            line.update(record.msg)
        else:
            line["message"] = record.getMessage()
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        current = request_id.get()
        if current:
            line["request_id"] = current
        return json.dumps(line, default=str, ensure_ascii=False, separators=(",", ":"))


def _json_lines_on(target: logging.Logger, stream=None) -> bool:
    """Give `target` one handler writing JSON lines to stdout; False if it had one."""
    if any(isinstance(h.formatter, JsonFormatter) for h in target.handlers):
        return False
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(JsonFormatter())
    target.handlers = [*target.handlers, handler] if target is logger else [handler]
    target.setLevel(logging.INFO)
    logger.setLevel(logging.INFO)
    return True


def configure_logging(stream=None) -> None:
    """Send the scheduler's records to stdout as JSON lines (once per process)."""
    if _json_lines_on(logger, stream):
        # Lambda's runtime puts its own (plain-text) handler on the root logger.
        logger.propagate = False


class _HandedOver(logging.handlers.QueueHandler):
    """Puts each record on the writer thread's queue as it is: formatted and written
    there, so the threads that log (every run logs twice) never queue for the stream's
    lock and its write (in a burst that queue cost a sixth of the throughput:
    bench/dispatch.py)."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        if not isinstance(record.msg, dict):  # its arguments as they are now
            record.msg, record.args = record.getMessage(), None
        return record


_writer: Optional[logging.handlers.QueueListener] = None


def configure_local_logging(stream=None) -> None:
    """Every record of the process (ours, chalice's, the HTTP server's) as a JSON line on
    stdout, as on Lambda, so `make dev | jq` works: written by one thread of its own,
    flushed line by line, and drained at exit (a kill -9 loses the lines not yet
    written, a few milliseconds' worth)."""
    global _writer
    root = logging.getLogger()
    if _writer is not None or any(isinstance(h, _HandedOver) for h in root.handlers):
        return
    writer = logging.StreamHandler(stream or sys.stdout)
    writer.setFormatter(JsonFormatter())
    records: "queue.SimpleQueue[logging.LogRecord]" = queue.SimpleQueue()
    root.handlers = [_HandedOver(records)]
    root.setLevel(logging.INFO)
    logger.setLevel(logging.INFO)
    _writer = logging.handlers.QueueListener(records, writer)
    _writer.start()
    atexit.register(stop_local_logging)


def stop_local_logging() -> None:
    """Write every record still queued, then stop the writer thread."""
    global _writer
    writer, _writer = _writer, None
    if writer is not None:
        writer.stop()


def configure_for_lambda() -> None:
    """JSON lines when running in Lambda; elsewhere logging is left to the host (tests,
    the local server)."""
    if config.in_lambda():
        configure_logging()


def event(name: str, level: int = logging.INFO, **fields: Any) -> None:
    """Log one event line; callers pass ids, counts and outcomes, never payloads."""
    logger.log(level, {"event": name, **fields})


def emit_metrics(values: Dict[str, float], units: Dict[str, str],
                 dimensions: Dict[str, str], dimension_sets: Iterable[Iterable[str]],
                 properties: Optional[Dict[str, Any]] = None) -> None:
    """Write one EMF line: `values` become metrics in NAMESPACE under each dimension set;
    `properties` ride along as searchable fields. Off unless METRICS is `emf`."""
    if not config.metrics_enabled():
        return
    blob: Dict[str, Any] = {
        "_aws": {
            "Timestamp": int(time.time() * 1000),
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [list(names) for names in dimension_sets],
                "Metrics": [{"Name": name, "Unit": units.get(name, COUNT)}
                            for name in values],
            }],
        },
        **dimensions, **(properties or {}), **values,
    }
    # Printed as is: EMF must be the whole log line, with no prefix.
    print(json.dumps(blob, default=str, separators=(",", ":")), flush=True)
