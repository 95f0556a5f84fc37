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
       404 unknown task or flow-control key, 409 not possible in the task's state,
       412 --if-match names an older version)
  3    tail: the task finished failed (every attempt used up)
  130  interrupted (Ctrl-C)

environment:
  TASKCTL_URL    the API's base URL (default {DEFAULT_URL}); --url wins
  TASKCTL_TOKEN  the bearer token; --token wins. It is never printed.

examples:
  taskctl schedule --webhook https://example.com/hook --data '{{"msg": "hi"}}' \\
      --at "$(date -u -d '+1 hour' +%Y-%m-%dT%H:%M:%SZ)"
  taskctl schedule --webhook https://example.com/hook --at 'cron(0 9 ? * MON-FRI *)' \\
      --timezone Europe/Berlin
  taskctl schedule --action log --payload '{{"message": "tick"}}' --at 'rate(1 hour)' \\
      --max-runs 24 --catch-up none --window 5 --tag team=ops
  taskctl schedule --webhook https://example.com/hook --at 'rate(1 minute)' \\
      --flow-key billing-api --flow-rate 10 --flow-period minute --flow-parallelism 2
  taskctl flow billing-api
  taskctl list --status failed
  taskctl list --tag team:ops
  taskctl list --tenant billing     (an admin token: one tenant's tasks)
  taskctl update 3f0c... --at 'cron(30 8 ? * MON-FRI *)' --if-match 2
  taskctl pause 3f0c... --until "$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)"
  taskctl tail 3f0c...
"""

# Statuses after which a task never runs again, and tail's exit code for each.
FINISHED = {"completed": 0, "cancelled": 0, "failed": 3}
# The longest pause between tail's polls: time.sleep overflows on much larger ones.
MAX_INTERVAL = 86400.0


# The value of a --no-... flag: the field is sent as null (not set).
CLEAR = object()


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
    add_task_flags(schedule, update=False)
    schedule.add_argument("--idempotency-key", metavar="KEY",
                          help="repeating a request with the same key returns the first task")
    schedule.add_argument("--action", default="webhook",
                          help="webhook (default), log, sqs, sns, lambda, eventbridge")
    webhook = add_payload_flags(schedule, " (instead of the webhook flags)")
    # Before --webhook, `schedule --url` named the webhook while `taskctl --url` names the
    # API: still accepted after the subcommand, with a warning.
    webhook.add_argument("--url", dest="hook_url", action=DeprecatedWebhookUrl,
                         help=argparse.SUPPRESS)

    listing = command("list", list_command, "list tasks, newest first")
    listing.add_argument("--status", help="only tasks in this status")
    listing.add_argument("--name", help="only tasks whose name contains this (any case)")
    listing.add_argument("--tag", metavar="KEY:VALUE", help="only tasks with this tag")
    listing.add_argument("--tenant", metavar="NAME",
                         help="only this tenant's tasks (an admin token only; any other "
                              "token lists its own tenant's)")
    listing.add_argument("--limit", type=positive_int,
                         help="tasks per request, 1-100 (default 50)")
    listing.add_argument("--all", action="store_true", help="follow every page")

    show = command("show", show_command, "a task, its upcoming firings and its runs")
    show.add_argument("task_id", metavar="ID")

    update = command("update", update_command,
                     "change a waiting or paused task: only the fields given (a new time "
                     "re-arms it)")
    update.add_argument("task_id", metavar="ID")
    add_task_flags(update, update=True)
    add_payload_flags(update, ": replaces the whole payload",
                      "a new webhook payload, replacing the whole old one: --webhook is "
                      "required with any of these")
    add_if_match(update)

    pause = command("pause", pause_command,
                    "pause a scheduled or retrying task: it does not fire until resumed")
    pause.add_argument("task_id", metavar="ID")
    pause.add_argument("--until", metavar="ISO",
                       help="resume by itself then, an ISO date-time (default: until resumed)")
    add_if_match(pause)

    resume = command("resume", resume_command,
                     "resume a paused task (firings it missed follow its catch_up)")
    resume.add_argument("task_id", metavar="ID")
    add_if_match(resume)

    run_now = command("run", run_command,
                      "run a waiting or paused task once now, outside its schedule")
    run_now.add_argument("task_id", metavar="ID")
    add_if_match(run_now)

    cancel = command("cancel", cancel_command, "cancel a waiting or paused task")
    cancel.add_argument("task_id", metavar="ID")
    add_if_match(cancel)

    retry = command("retry", retry_command, "run a failed task again")
    retry.add_argument("task_id", metavar="ID")
    retry.add_argument("--at", dest="run_at", metavar="ISO",
                       help="when, an ISO date-time (default: now)")
    add_if_match(retry)

    preview = command("preview", preview_command,
                      "the next firings of a run_at, nothing scheduled")
    preview.add_argument("run_at", metavar="RUN_AT")
    preview.add_argument("--timezone", help="IANA zone for cron and HH:MM (default UTC)")
    preview.add_argument("--count", type=positive_int, help="how many firings, 1-50 (default 5)")

    flow = command("flow", flow_command,
                   "a flow-control key's limits, its runs holding a slot and its tasks "
                   "waiting for room")
    flow.add_argument("key", metavar="KEY")

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


def add_task_flags(parser: argparse.ArgumentParser, update: bool) -> None:
    """The fields schedule sets and update changes; update may also clear the optional ones
    (--no-...)."""
    parser.add_argument("--at", dest="run_at", required=not update, metavar="RUN_AT",
                        help="ISO date-time (2026-05-19T17:56:00Z), cron(...), rate(...) "
                        "or HH:MM (every day)")
    parser.add_argument("--timezone", help="IANA zone for cron and HH:MM (default UTC)")
    clearable(parser, update, "--name", help="a label for the task")
    parser.add_argument("--priority", type=int, help="0-9, higher runs first (default 5)")
    parser.add_argument("--max-attempts", type=positive_int, help="1-10 (default 3)")
    parser.add_argument("--notify", choices=["failure", "always"],
                        help="when to notify (default failure)")
    lifecycle = parser.add_argument_group(
        "lifecycle", "--start, --end, --max-runs and --overlap apply to recurring tasks only")
    clearable(lifecycle, update, "--start", dest="start_at", metavar="ISO",
              help="no firing before this date-time")
    clearable(lifecycle, update, "--end", dest="end_at", metavar="ISO",
              help="no firing after this date-time; the task is completed then")
    clearable(lifecycle, update, "--max-runs", type=positive_int, metavar="N",
              help="completed after this many runs, 1-1000000")
    lifecycle.add_argument("--catch-up", choices=["latest", "none", "all"],
                           help="firings missed while it could not run: run the latest "
                           "once (default), none, or all")
    lifecycle.add_argument("--overlap", choices=["skip", "buffer_one"],
                           help="a firing due while the last run still runs: skip it "
                           "(default) or run it right after")
    lifecycle.add_argument("--window", dest="window_minutes", type=int, metavar="MINUTES",
                           help="each firing runs at a stable moment within this many "
                           "minutes after its time, 0-1440 (default 0)")
    tags = lifecycle.add_mutually_exclusive_group() if update else lifecycle
    tags.add_argument("--tag", action="append", metavar="KEY=VALUE",
                      help="a tag (repeatable, at most 10)"
                      + ("; replaces every tag the task has" if update else ""))
    if update:
        tags.add_argument("--no-tags", dest="tag", action="store_const", const=[],
                          help="remove every tag")
    flow = parser.add_argument_group(
        "flow control", "limits shared by every task with the same key (the latest task "
        "that sets them wins); a task over them waits, using no attempt. A key needs a "
        "rate, a parallelism or both" + (
            "; the flags replace the task's flow control whole" if update else ""))
    flow.add_argument("--flow-key", metavar="KEY", help="the key, 1-128 characters")
    flow.add_argument("--flow-rate", type=positive_int, metavar="N",
                      help="at most N starts per --flow-period, 1-10000")
    flow.add_argument("--flow-period", choices=["second", "minute", "hour"],
                      help="the rate's period (default second)")
    flow.add_argument("--flow-parallelism", type=positive_int, metavar="N",
                      help="at most N runs at once, 1-1000")
    if update:
        flow.add_argument("--no-flow-control", action="store_true",
                          help="remove the task's flow control")


def clearable(parser, update: bool, flag: str, **kwargs) -> None:
    """`flag`, and for update also `--no-...` to clear the field (send null)."""
    if not update:
        parser.add_argument(flag, **kwargs)
        return
    pair = parser.add_mutually_exclusive_group()
    action = pair.add_argument(flag, **kwargs)
    pair.add_argument(f"--no-{flag[2:]}", dest=action.dest, action="store_const", const=CLEAR,
                      help=f"unset {flag}")


def add_payload_flags(parser: argparse.ArgumentParser, payload_help: str,
                      webhook_help: Optional[str] = None):
    """--payload and the webhook flags; returns the webhook group."""
    parser.add_argument("--payload", metavar="JSON",
                        help=f"the action's input, JSON or @file{payload_help}")
    webhook = parser.add_argument_group("webhook", webhook_help)
    webhook.add_argument("--webhook", dest="hook_url", metavar="URL", help="where to send it")
    webhook.add_argument("--data", metavar="JSON", help="the JSON body, JSON or @file")
    webhook.add_argument("--method", help="POST (default), PUT, PATCH, DELETE or GET")
    webhook.add_argument("--header", action="append", metavar="K:V",
                         help="a header to send (repeatable)")
    webhook.add_argument("--timeout", type=positive_int, metavar="SECONDS",
                         help="how long to wait for the receiver, 1-60 (default 10)")
    return webhook


def add_if_match(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--if-match", type=version, metavar="VERSION",
                        help="change the task only while it is at this version (show prints "
                        "it); otherwise HTTP 412 and nothing changes")


def version(text: str) -> int:
    """An argparse type: a task's version, as show prints it or as its ETag ("3", W/"3")."""
    bare = text.strip()
    bare = bare[2:] if bare.startswith("W/") else bare
    try:
        return positive_int(bare.strip('"'))
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"must be a task's version, a whole number greater than 0, not {text!r}") from None


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
    webhook_flags = given_webhook_flags(args)
    if args.payload is not None:
        if webhook_flags:
            raise UsageError(f"{webhook_flags[0]} cannot be combined with --payload")
        payload = parse_json(args.payload, "--payload")
    elif args.action != "webhook":
        raise UsageError(f"--payload is required for action {args.action}")
    elif not args.hook_url:
        raise UsageError("--webhook is required for a webhook (or give --action and --payload)")
    else:
        payload = webhook_payload(args)
    return {"action": args.action, "payload": payload, **task_fields(args)}


def update_body(args: argparse.Namespace) -> Dict[str, Any]:
    """The PATCH /tasks/{id} body: only the fields the flags name."""
    body = task_fields(args)
    webhook_flags = given_webhook_flags(args)
    if args.payload is not None:
        if webhook_flags:
            raise UsageError(f"{webhook_flags[0]} cannot be combined with --payload")
        body["payload"] = parse_json(args.payload, "--payload")
    elif webhook_flags:
        if not args.hook_url:
            # PATCH replaces the payload whole: a lone --data would drop the URL.
            raise UsageError(f"{webhook_flags[0]} needs --webhook: the new payload replaces "
                             "the whole old one")
        body["payload"] = webhook_payload(args)
    if not body:
        raise UsageError("nothing to change: give at least one field's flag "
                         "(taskctl update --help)")
    return body


def given_webhook_flags(args: argparse.Namespace) -> List[str]:
    """The webhook flags on the command line, in order."""
    return [flag for flag, value in (
        ("--webhook", args.hook_url), ("--data", args.data), ("--method", args.method),
        ("--header", args.header), ("--timeout", args.timeout)) if value is not None]


def webhook_payload(args: argparse.Namespace) -> Dict[str, Any]:
    """The webhook payload of --webhook, --data, --method, --header and --timeout."""
    payload = {"url": args.hook_url}
    if args.data is not None:
        payload["data"] = parse_json(args.data, "--data")
    if args.method:
        payload["method"] = args.method.upper()
    if args.header:
        payload["headers"] = dict(parse_header(header) for header in args.header)
    if args.timeout is not None:
        payload["timeout"] = args.timeout
    return payload


def task_fields(args: argparse.Namespace) -> Dict[str, Any]:
    """The when and option fields the flags give (a --no-... flag as null)."""
    fields = {"run_at": args.run_at, "timezone": args.timezone, "name": args.name,
              "priority": args.priority, "max_attempts": args.max_attempts,
              "notify": args.notify, "start_at": args.start_at, "end_at": args.end_at,
              "max_runs": args.max_runs, "catch_up": args.catch_up, "overlap": args.overlap,
              "window_minutes": args.window_minutes,
              "tags": None if args.tag is None else parse_tags(args.tag),
              "flow_control": flow_control(args)}
    return {key: None if value is CLEAR else value
            for key, value in fields.items() if value is not None}


def flow_control(args: argparse.Namespace) -> Any:
    """The flow_control field of the --flow-... flags: None without any, CLEAR to remove it."""
    given = [flag for flag, value in (
        ("--flow-key", args.flow_key), ("--flow-rate", args.flow_rate),
        ("--flow-period", args.flow_period), ("--flow-parallelism", args.flow_parallelism))
        if value is not None]
    if getattr(args, "no_flow_control", False):  # update only
        if given:
            raise UsageError(f"--no-flow-control cannot be combined with {given[0]}")
        return CLEAR
    if not given:
        return None
    # The field is set whole: limits without their key (or a key without limits) would be
    # a different flow control than the one meant, so they are refused here.
    if args.flow_key is None:
        raise UsageError(f"{given[0]} needs --flow-key: limits belong to a key")
    if args.flow_rate is None and args.flow_parallelism is None:
        raise UsageError("--flow-key needs --flow-rate, --flow-parallelism or both")
    limits = {"rate": args.flow_rate, "period": args.flow_period,
              "parallelism": args.flow_parallelism}
    return {"key": args.flow_key, **{k: v for k, v in limits.items() if v is not None}}


def list_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl list."""
    def page_of(next_token: Optional[str] = None) -> dict:
        return client.list_tasks(args.status, args.name, args.limit, next_token, args.tag,
                                 args.tenant)

    page = page_of()
    tasks = list(page.get("tasks", []))
    while args.all and page.get("next_token"):
        page = page_of(page["next_token"])
        tasks += page.get("tasks", [])
    if args.json:
        return print_json({"tasks": tasks, "next_token": page.get("next_token")})
    if not tasks:
        print("no tasks")
    else:
        # A tenant's token lists one tenant: the column is there only when an admin's
        # listing spans several.
        tenanted = len({task.get("tenant") for task in tasks}) > 1
        print_table(["ID"] + ["TENANT"] * tenanted +
                    ["NAME", "STATUS", "ACTION", "NEXT RUN", "ATTEMPTS", "TAGS"],
                    [[task["task_id"]] + [task.get("tenant")] * tenanted +
                     [shorten(task.get("name"), 30), task.get("status"), task.get("action"),
                      next_run_cell(task), attempts(task),
                      shorten(tag_text(task.get("tags"), ","), 40)] for task in tasks])
    if page.get("next_token"):
        print("more tasks: --all lists every page", file=sys.stderr)


def show_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl show ID."""
    print_task(client.get_task(args.task_id), args.json)


def update_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl update ID [flags]."""
    print_task(client.update(args.task_id, update_body(args), args.if_match), args.json)


def pause_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl pause ID [--until ISO]."""
    print_task(client.pause(args.task_id, args.until, args.if_match), args.json)


def resume_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl resume ID."""
    print_task(client.resume(args.task_id, args.if_match), args.json)


def run_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl run ID."""
    print_task(client.run_now(args.task_id, args.if_match), args.json)


def flow_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl flow KEY."""
    state = client.flow_control(args.key)
    if args.json:
        return print_json(state)
    print_fields([("key", state.get("key")), ("rate", rate_text(state)),
                  ("parallelism", state.get("parallelism")), ("running", state.get("running")),
                  ("waiting", state.get("waiting"))])


def print_task(task: Dict[str, Any], as_json: bool = False) -> None:
    """A task as show prints it: its fields, upcoming firings and runs (or its JSON)."""
    if as_json:
        return print_json(task)
    zone = task.get("timezone")
    window = task.get("window_minutes")
    print_fields([
        ("id", task["task_id"]), ("tenant", task.get("tenant")), ("name", task.get("name")),
        ("status", task.get("status")),
        ("paused_until", task.get("paused_until")),
        ("action", task.get("action")), ("payload", json.dumps(task.get("payload"))),
        ("run_at", task.get("run_at") + (f" ({zone})" if zone and zone != "UTC" else "")),
        ("next run", next_run(task)), ("attempts", attempts(task)),
        ("runs_done", runs_done(task)),
        ("priority", task.get("priority")), ("notify", task.get("notify")),
        ("start_at", task.get("start_at")), ("end_at", task.get("end_at")),
        ("catch_up", task.get("catch_up")), ("overlap", task.get("overlap")),
        ("window", None if window is None else f"{window} min"),
        ("tags", tag_text(task.get("tags"), ", ")),
        ("flow_control", flow_text(task.get("flow_control"))), ("delayed", delayed(task)),
        ("version", task.get("version")),
        ("created", task.get("created_at")), ("updated", task.get("updated_at"))])
    if task.get("upcoming"):
        print("\nupcoming")
        for moment in task["upcoming"]:
            print(f"  {moment}")
    runs = task.get("runs") or []
    skipped = sum(run.get("outcome") == "skipped" for run in runs)
    if not runs:
        print("\nno runs yet")
    else:
        print(f"\nruns ({len(runs)}, {skipped} skipped)" if skipped else f"\nruns ({len(runs)})")
        print_table(["ATTEMPT", "STARTED", "OUTCOME", "HTTP", "DURATION", "ERROR"],
                    [[None if skipped_run(run) else run.get("attempt"), run.get("started_at"),
                      run.get("outcome") or "running", run.get("http_status"), duration(run),
                      run.get("error")] for run in runs], indent="  ")


def cancel_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl cancel ID."""
    task = client.cancel(args.task_id, args.if_match)
    if args.json:
        return print_json(task)
    print(f"task {task['task_id']} {task.get('status')}")


def retry_command(client: Client, args: argparse.Namespace) -> None:
    """taskctl retry ID [--at ISO]."""
    task = client.retry(args.task_id, args.run_at, args.if_match)
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
                if not args.json and skipped_run(run):
                    print(f"{run.get('started_at')}  firing skipped"
                          f"{run_details(run)}", flush=True)
                elif not args.json:
                    print(f"{run.get('ended_at') or run.get('started_at')}  run "
                          f"attempt {run.get('attempt')}: {run['outcome']}"
                          f"{run_details(run)}", flush=True)
        if task.get("status") != status:
            status = task.get("status")
            changed = True
            if not args.json:
                waiting = f", next run {next_run(task)}" if task.get("upcoming") else ""
                until = f" until {task['paused_until']}" if task.get("paused_until") else ""
                print(f"{task.get('updated_at')}  status {status}{until}{waiting}", flush=True)
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


def parse_tags(pairs: List[str]) -> Dict[str, str]:
    """KEY=VALUE flags into the tags object (the value may be empty, a key given once)."""
    tags: Dict[str, str] = {}
    for pair in pairs:
        key, equals, value = pair.partition("=")
        if not equals or not key:
            raise UsageError(f"--tag must look like key=value, not {pair!r}")
        if key in tags:
            raise UsageError(f"--tag {key} is given twice")
        tags[key] = value
    return tags


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


def next_run_cell(task: Dict[str, Any]) -> Optional[str]:
    """list's NEXT RUN: the next firing, until when a paused task is paused, or the key a
    delayed task waits for."""
    if task.get("status") == "paused" and task.get("paused_until"):
        return f"until {task['paused_until']}"
    if task.get("flow_delayed_since"):
        # Its next_run_at is only a late recheck: it starts when the key has room.
        return f"waiting for {flow_key(task)}"
    return next_run(task)


def flow_key(task: Dict[str, Any]) -> Optional[str]:
    """The task's flow-control key, if it has one."""
    return (task.get("flow_control") or {}).get("key")


def rate_text(limits: Dict[str, Any]) -> Optional[str]:
    """A rate and its period ("5 per minute"), or None without a rate."""
    rate = limits.get("rate")
    return f"{rate} per {limits.get('period') or 'second'}" if rate else None


def flow_text(flow: Optional[Dict[str, Any]]) -> Optional[str]:
    """A flow_control field as show prints it: key (5 per minute, 2 at once)."""
    if not flow:
        return None
    most = flow.get("parallelism")
    limits = [rate_text(flow), f"{most} at once" if most else None]
    return f"{flow.get('key')} ({', '.join(part for part in limits if part)})"


def delayed(task: Dict[str, Any]) -> Optional[str]:
    """Since when and for which key the task waits for room, while it does."""
    since = task.get("flow_delayed_since")
    return f"waiting for {flow_key(task)} since {since}" if since else None


def tag_text(tags: Optional[Dict[str, str]], separator: str) -> Optional[str]:
    """key=value pairs, in key order."""
    return separator.join(f"{key}={tags[key]}" for key in sorted(tags)) if tags else None


def runs_done(task: Dict[str, Any]) -> Optional[str]:
    """runs_done, out of max_runs when it has one."""
    if task.get("runs_done") is None:
        return None
    limit = task.get("max_runs")
    return f"{task['runs_done']}/{limit}" if limit else str(task["runs_done"])


def skipped_run(run: Dict[str, Any]) -> bool:
    """Whether the run is a firing that did not run (catch_up, overlap)."""
    return run.get("outcome") == "skipped"


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
