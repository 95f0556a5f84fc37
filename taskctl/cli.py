"""taskctl: schedule, inspect and follow tasks of the task scheduler from a terminal."""
import argparse
import json
import math
import os
import sys
import time
from datetime import datetime
from typing import Any, Callable, Dict, List, Optional, Sequence
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from taskctl.client import DEFAULT_URL, ApiError, Client, Unreachable

EPILOG = f"""\
exit codes:
  0    success (tail: the task completed or was cancelled)
  1    server error: a 5xx answer, a redirect (not followed), or the API could not
       be reached; tail: --timeout passed first
  2    user error: bad flags or arguments, or any 4xx answer (401/403 wrong token,
       404 unknown task, 409 not possible in the task's state)
  3    tail: the task finished failed (every attempt used up)
  130  interrupted (Ctrl-C)

environment:
  TASKCTL_URL    the API's base URL (default {DEFAULT_URL}); --url wins
  TASKCTL_TOKEN  the bearer token; --token wins. It is never printed.

examples:
  taskctl schedule --webhook https://example.com/hook --data '{{"msg": "hi"}}' \
      --at "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
  taskctl schedule --webhook https://example.com/hook --at 'cron(0 9 ? * MON-FRI *)' --timezone Europe/Berlin
  taskctl list --status failed
  taskctl tail 3f0c...
"""

# Statuses after which a task never runs again, and tail's exit code for each.
FINISHED = {"completed": 0, "cancelled": 0, "failed": 3}
# The longest pause between tail's polls: time.sleep overflows on much larger ones.
MAX_INTERVAL = 86400.0


class UsageError(Exception):
    """A mistake in the command line that the API never sees."""


class DeprecatedWebhookUrl(argparse.Action):
    """`schedule --url`: the webhook, as --webhook, with a warning on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print("taskctl: warning: `schedule --url` is now `schedule --webhook` (a --url "
              "before the command is the API's URL)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one taskctl command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        client = Client(api_url(args), token(args))
        return args.run(client, args) or 0
    except UsageError as error:
        return fail(str(error), 2)
    except ApiError as error:
        return fail(describe_api_error(error), 2 if 400 <= error.status < 500 else 1)
    except Unreachable as error:
        return fail(str(error), 1)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # `taskctl list | head`: the reader left; stop without a traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    """The command line: global flags, then one subcommand."""
    parser = argparse.ArgumentParser(
        prog="taskctl", description="Schedule, inspect and follow tasks of the task "
        "scheduler's HTTP API.", epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", dest="api_url", metavar="URL",
                        help=f"the API's base URL (default: $TASKCTL_URL or {DEFAULT_URL})")
    parser.add_argument("--token", help="bearer token (default: $TASKCTL_TOKEN)")
    parser.add_argument("--json", action="store_true", help="print the API's JSON")
    # --json is also accepted after the subcommand; SUPPRESS keeps the global value otherwise.
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the API's JSON")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, run: Callable, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text,
                                  parents=[output])
        sub.set_defaults(run=run)
        return sub

    schedule = command("schedule", schedule_command,
                       "schedule a task: a webhook by default, or any action with "
                       "--action and --payload")
    schedule.add_argument("--at", dest="run_at", required=True, metavar="RUN_AT",
                          help="ISO date-time (2026-05-19T17:56:00Z), cron(...), rate(...) "
                          "or HH:MM (every day)")
    schedule.add_argument("--timezone", help="IANA zone for cron and HH:MM (default UTC)")
    schedule.add_argument("--name", help="a label for the task")
    schedule.add_argument("--priority", type=int, help="0-9, higher runs first (default 5)")
    schedule.add_argument("--max-attempts", type=positive_int, help="1-10 (default 3)")
    schedule.add_argument("--notify", choices=["failure", "always"],
                          help="when to notify (default failure)")
    schedule.add_argument("--idempotency-key", metavar="KEY",
                          help="repeating a request with the same key returns the first task")
    schedule.add_argument("--action", default="webhook",
                          help="webhook (default), log, sqs, sns, lambda, eventbridge")
    schedule.add_argument("--payload", metavar="JSON",
                          help="the action's input, JSON or @file (instead of the webhook flags)")
    webhook = schedule.add_argument_group("webhook")
    webhook.add_argument("--webhook", dest="hook_url", metavar="URL", help="where to send it")
    # Before --webhook, `schedule --url` named the webhook while `taskctl --url` names the
    # API: still accepted after the subcommand, with a warning.
    webhook.add_argument("--url", dest="hook_url", action=DeprecatedWebhookUrl,
                         help=argparse.SUPPRESS)
    webhook.add_argument("--data", metavar="JSON", help="the JSON body, JSON or @file")
    webhook.add_argument("--method", help="POST (default), PUT, PATCH, DELETE or GET")
    webhook.add_argument("--header", action="append", metavar="K:V",
                         help="a header to send (repeatable)")
    webhook.add_argument("--timeout", type=positive_int, metavar="SECONDS",
                         help="how long to wait for the receiver, 1-60 (default 10)")

    listing = command("list", list_command, "list tasks, newest first")
    listing.add_argument("--status", help="only tasks in this status")
    listing.add_argument("--name", help="only tasks whose name contains this (any case)")
    listing.add_argument("--limit", type=positive_int,
                         help="tasks per request, 1-100 (default 50)")
    listing.add_argument("--all", action="store_true", help="follow every page")

    show = command("show", show_command, "a task, its upcoming firings and its runs")
    show.add_argument("task_id", metavar="ID")

    cancel = command("cancel", cancel_command, "cancel a waiting task")
    cancel.add_argument("task_id", metavar="ID")

    retry = command("retry", retry_command, "run a failed task again")
    retry.add_argument("task_id", metavar="ID")
    retry.add_argument("--at", dest="run_at", metavar="ISO",
                       help="when, an ISO date-time (default: now)")

    preview = command("preview", preview_command,
                      "the next firings of a run_at, nothing scheduled")
    preview.add_argument("run_at", metavar="RUN_AT")
    preview.add_argument("--timezone", help="IANA zone for cron and HH:MM (default UTC)")
    preview.add_argument("--count", type=positive_int, help="how many firings, 1-50 (default 5)")

    tail = command("tail", tail_command,
                   "follow a task's runs until it finishes (exit 0 completed or "
                   "cancelled, 3 failed)")
    tail.add_argument("task_id", metavar="ID")
    tail.add_argument("--interval", type=positive_seconds(MAX_INTERVAL), default=1.0,
                      metavar="SECONDS", help="time between polls (default 1, at most "
                      f"{MAX_INTERVAL:g})")
    tail.add_argument("--timeout", type=positive_seconds(), metavar="SECONDS",
                      help="give up (exit 1) after this long")
    return parser


def positive_int(text: str) -> int:
    """An argparse type: a whole number above 0 (argparse makes a ValueError exit 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a whole number greater than 0, not {text!r}")
    return value


def positive_seconds(maximum: float = math.inf) -> Callable[[str], float]:
    """An argparse type: a finite number of seconds above 0, at most `maximum`."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not (0 < value <= maximum) or not math.isfinite(value):
            limit = f" and at most {maximum:g}" if math.isfinite(maximum) else ""
            raise argparse.ArgumentTypeError(
                f"must be a number of seconds greater than 0{limit}, not {text!r}")
        return value
    return parse


def api_url(args: argparse.Namespace) -> str:
    """--url, else $TASKCTL_URL, else the local server."""
    url = args.api_url or os.environ.get("TASKCTL_URL") or DEFAULT_URL
    if not url.startswith(("http://", "https://")):
        raise UsageError(f"the API URL must start with http:// or https://, not {url!r}")
    return url


def token(args: argparse.Namespace) -> Optional[str]:
    """--token, else $TASKCTL_TOKEN."""
    return args.token if args.token is not None else os.environ.get("TASKCTL_TOKEN")


# ---------------------------------------------------------------- commands

def schedule_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl schedule."""
    body = client.schedule(schedule_body(args), args.idempotency_key)
    if args.json:
        return print_json(body)
    print(body.get("message", "Task scheduled"))
    print_fields([("id", body["task_id"]), ("status", body.get("status")),
                  ("run_at", body.get("run_at")), ("next run", body.get("next_run_at"))])


def schedule_body(args: argparse.Namespace) -> Dict[str, Any]:
    """The POST /schedule-task body the flags describe."""
    webhook_flags = [flag for flag, value in (
        ("--webhook", args.hook_url), ("--data", args.data), ("--method", args.method),
        ("--header", args.header), ("--timeout", args.timeout)) if value is not None]
    if args.payload is not None:
        if webhook_flags:
            raise UsageError(f"{webhook_flags[0]} cannot be combined with --payload")
        payload = parse_json(args.payload, "--payload")
    elif args.action != "webhook":
        raise UsageError(f"--payload is required for action {args.action}")
    elif not args.hook_url:
        raise UsageError("--webhook is required for a webhook (or give --action and --payload)")
    else:
        payload = {"url": args.hook_url}
        if args.data is not None:
            payload["data"] = parse_json(args.data, "--data")
        if args.method:
            payload["method"] = args.method.upper()
        if args.header:
            payload["headers"] = dict(parse_header(header) for header in args.header)
        if args.timeout is not None:
            payload["timeout"] = args.timeout
    body = {"action": args.action, "payload": payload, "run_at": args.run_at,
            "timezone": args.timezone, "name": args.name, "priority": args.priority,
            "max_attempts": args.max_attempts, "notify": args.notify}
    return {key: value for key, value in body.items() if value is not None}


def list_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl list."""
    page = client.list_tasks(args.status, args.name, args.limit)
    tasks = list(page.get("tasks", []))
    while args.all and page.get("next_token"):
        page = client.list_tasks(args.status, args.name, args.limit, page["next_token"])
        tasks += page.get("tasks", [])
    if args.json:
        return print_json({"tasks": tasks, "next_token": page.get("next_token")})
    if not tasks:
        print("no tasks")
    else:
        print_table(["ID", "NAME", "STATUS", "ACTION", "NEXT RUN", "ATTEMPTS"],
                    [[task["task_id"], shorten(task.get("name"), 30), task.get("status"),
                      task.get("action"), next_run(task), attempts(task)] for task in tasks])
    if page.get("next_token"):
        print("more tasks: --all lists every page", file=sys.stderr)


def show_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl show ID."""
    task = client.get_task(args.task_id)
    if args.json:
        return print_json(task)
    zone = task.get("timezone")
    print_fields([
        ("id", task["task_id"]), ("name", task.get("name")), ("status", task.get("status")),
        ("action", task.get("action")), ("payload", json.dumps(task.get("payload"))),
        ("run_at", task.get("run_at") + (f" ({zone})" if zone and zone != "UTC" else "")),
        ("next run", next_run(task)), ("attempts", attempts(task)),
        ("priority", task.get("priority")), ("notify", task.get("notify")),
        ("created", task.get("created_at")), ("updated", task.get("updated_at"))])
    if task.get("upcoming"):
        print("\nupcoming")
        for moment in task["upcoming"]:
            print(f"  {moment}")
    runs = task.get("runs") or []
    print(f"\nruns ({len(runs)})" if runs else "\nno runs yet")
    if runs:
        print_table(["ATTEMPT", "STARTED", "OUTCOME", "HTTP", "DURATION", "ERROR"],
                    [[run.get("attempt"), run.get("started_at"), run.get("outcome") or "running",
                      run.get("http_status"), duration(run), run.get("error")]
                     for run in runs], indent="  ")


def cancel_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl cancel ID."""
    task = client.cancel(args.task_id)
    if args.json:
        return print_json(task)
    print(f"task {task['task_id']} {task.get('status')}")


def retry_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl retry ID [--at ISO]."""
    task = client.retry(args.task_id, args.run_at)
    if args.json:
        return print_json(task)
    print(f"task {task['task_id']} {task.get('status')}, next run {next_run(task)}")


def preview_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl preview RUN_AT."""
    body = client.preview(args.run_at, args.timezone, args.count)
    if args.json:
        return print_json(body)
    zone = body.get("timezone") or "UTC"
    kind = "recurring" if body.get("recurring") else "once"
    print(f"{body.get('run_at')} in {zone} ({kind})")
    moments = body.get("next") or []
    if zone == "UTC":
        print_table(["UTC"], [[moment] for moment in moments])
    else:
        print_table(["UTC", zone], [[moment, local_time(moment, zone)] for moment in moments])


def tail_command(client: Client, args: argparse.Namespace) -> int:
    """taskctl tail ID: print new runs and status changes until the task finishes."""
    deadline = time.monotonic() + args.timeout if args.timeout is not None else None
    printed_runs, status = set(), None
    while True:
        task = client.get_task(args.task_id)
        changed = False
        for run in reversed(task.get("runs") or []):  # the API lists newest first
            key = (run.get("run_id"), run.get("attempt"), run.get("started_at"))
            # A run is printed once, when it has ended; the status line covers "running".
            if run.get("outcome") and key not in printed_runs:
                printed_runs.add(key)
                changed = True
                if not args.json:
                    print(f"{run.get('ended_at') or run.get('started_at')}  run "
                          f"attempt {run.get('attempt')}: {run['outcome']}"
                          f"{run_details(run)}", flush=True)
        if task.get("status") != status:
            status = task.get("status")
            changed = True
            if not args.json:
                waiting = f", next run {next_run(task)}" if task.get("upcoming") else ""
                print(f"{task.get('updated_at')}  status {status}{waiting}", flush=True)
        if changed and args.json:
            print(json.dumps(task), flush=True)
        if status in FINISHED:
            return FINISHED[status]
        if deadline is not None and time.monotonic() >= deadline:
            fail(f"gave up after {args.timeout:g} s: task {args.task_id} is {status}", 1)
            return 1
        pause = args.interval
        if deadline is not None:
            pause = min(pause, max(0.0, deadline - time.monotonic()))
        time.sleep(pause)


# ---------------------------------------------------------------- input and output

def parse_json(text: str, flag: str) -> Any:
    """JSON given inline, as @file, or @- for standard input."""
    if text.startswith("@"):
        try:
            text = sys.stdin.read() if text == "@-" else open(text[1:], encoding="utf-8").read()
        except OSError as error:
            raise UsageError(f"{flag}: cannot read {text[1:]}: {error.strerror}") from None
    try:
        return json.loads(text)
    except ValueError as error:
        raise UsageError(f"{flag} is not valid JSON: {error}") from None


def parse_header(text: str):
    """K:V into (K, V)."""
    name, colon, value = text.partition(":")
    if not colon or not name.strip():
        raise UsageError(f"--header must look like Name:value, not {text!r}")
    return name.strip(), value.strip()


def describe_api_error(error: ApiError) -> str:
    """The API's message, its field and the HTTP status, with a hint for auth failures."""
    where = f"field {error.field}, " if error.field else ""
    text = f"{error.message} ({where}HTTP {error.status})"
    if error.status in (401, 403):
        text += ": check the token (--token or TASKCTL_TOKEN)"
    return text


def fail(message: str, code: int) -> int:
    """Say what went wrong on stderr; returns the exit code."""
    print(f"taskctl: error: {message}", file=sys.stderr)
    return code


def print_json(body: Any) -> None:
    """The API's JSON, indented."""
    print(json.dumps(body, indent=2))


def print_fields(pairs: List[tuple]) -> None:
    """label  value lines, values aligned."""
    width = max(len(label) for label, _ in pairs)
    for label, value in pairs:
        print(f"{label.ljust(width)}  {cell(value)}")


def print_table(headers: List[str], rows: List[list], indent: str = "") -> None:
    """Rows under headers, each column as wide as its widest cell."""
    lines = [headers] + [[cell(value) for value in row] for row in rows]
    widths = [max(len(line[column]) for line in lines) for column in range(len(headers))]
    for line in lines:
        print(indent + "  ".join(text.ljust(width)
                                 for text, width in zip(line, widths)).rstrip())


def cell(value: Any) -> str:
    """A value as shown in a table: '-' for nothing."""
    return "-" if value is None or value == "" else str(value)


def shorten(text: Optional[str], width: int) -> Optional[str]:
    """At most `width` characters, '...' marking a cut."""
    return text if text is None or len(text) <= width else text[:width - 3] + "..."


def next_run(task: Dict[str, Any]) -> Optional[str]:
    """When the task fires next, or None when it no longer waits."""
    # upcoming is empty once a task stops waiting, while next_run_at keeps its last value.
    upcoming = task.get("upcoming") or []
    return upcoming[0] if upcoming else None


def attempts(task: Dict[str, Any]) -> str:
    """attempts/max_attempts."""
    return f"{task.get('attempts', 0)}/{task.get('max_attempts', '?')}"


def duration(run: Dict[str, Any]) -> Optional[str]:
    """A run's duration in ms, if it has ended."""
    return None if run.get("duration_ms") is None else f"{run['duration_ms']} ms"


def run_details(run: Dict[str, Any]) -> str:
    """HTTP status, duration and error of a run, as far as it has them."""
    parts = [f"HTTP {run['http_status']}" if run.get("http_status") else None,
             duration(run), run.get("error")]
    return "".join(f"  {part}" for part in parts if part)


def local_time(moment: str, zone: str) -> str:
    """A UTC time as the wall clock in `zone` shows it (blank without the zone database)."""
    try:
        where = ZoneInfo(zone)
    except ZoneInfoNotFoundError:  # no tzdata on this machine: the UTC column still stands
        return ""
    utc = datetime.fromisoformat(moment.replace("Z", "+00:00"))
    return utc.astimezone(where).strftime("%a %Y-%m-%d %H:%M %Z")
