"""Cost: a million one-time webhook tasks on AWS with this design, against its anchors.

The anchors: EventBridge Scheduler alone, Scheduler calling an EventBridge API destination,
and QStash.

One task's life is run over moto through the three Lambda handlers as Lambda calls them:
the token authorizer, POST /schedule-task (the API function), then execute_task, which
signs and posts the webhook to a loopback receiver in a process of its own. Measured: the
AWS calls each handler makes, each handler's CPU time with moto's own time taken out, the
log and EMF bytes each writes, and every DynamoDB write's item before and after (so its
write units, those of each index it touches, and what stays stored). Assumed, and said so
in the output: what each AWS call and the receiver take on AWS, the cold-start share, the
platform's log lines, the number of API tokens. Prices: bench/prices.py, dated.

The formula (per task; times a million for the table):
    Lambda duration   sum over functions f of n_f * ceil(d_f) / 1000 * mem_f / 1024 * P_GBs
                      d_f = cpu_f * max(1, 1769 / mem_f) + sum of calls_f * call_ms
                            + receiver_ms (execute_task only)
    Lambda INIT       sum of n_f * cold_share * init_ms / 1000 * mem_f / 1024 * P_GBs
    Lambda requests   sum of n_f * P_req;  n_authorizer = min(1, tokens * month_s / TTL / N)
    DynamoDB writes   (table WRU + index WRU) * P_WRU;  reads: RRU * P_RRU
    DynamoDB storage  (table bytes + index bytes) / 2^30 * retention months * P_storage
                      + table bytes / 2^30 * retention months * P_pitr
                      (retention months = TASK_RETENTION_DAYS / (365 / 12))
    Scheduler         1 invocation * P_sched;  API Gateway: 1 request * P_api
    CloudWatch Logs   sum of n_f * (bytes_f + 26 * lines_f + platform bytes) / 2^30 * P_logs

    python bench/cost.py [--tasks 30] [--receiver-ms 100] [--init-ms 235] [--json]
"""
import argparse
import contextlib
import io
import json
import math
import statistics
import sys
import threading
import time
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import markdown_table  # noqa: E402
from bench.prices import AS_OF, FREE_TIERS, PRICES, REGION  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parent.parent
TASKS_PER_MONTH = 1_000_000
MONTH_SECONDS = 30 * 86400
MONTH_DAYS = 365 / 12
GIB = 2 ** 30

# The three functions a one-time task goes through, by chalice's names.
FUNCTIONS = {"token_auth": "authorizer", "api_handler": "API (POST /schedule-task)",
             "execute_task": "executor"}

# Lambda gives a function CPU in proportion to its memory: 1,769 MB is one vCPU.
FULL_VCPU_MB = 1769
# API Gateway caches a TOKEN authorizer's answer this long when the authorizer names no
# TTL (chalice then writes none into the API definition).
API_GATEWAY_DEFAULT_TTL = 300

# Assumptions (each printed with the table). Change them here or on the command line.
ASSUMED = {
    # One AWS call from a Lambda in its region, round trip, by service.
    "call_ms": {"dynamodb": 6, "scheduler": 30, "other": 20},
    # The receiver's answer, with DNS, TCP and TLS to a host elsewhere on the internet.
    "receiver_ms": 100,
    # AWS: cold starts are under 1% of invocations in production. A cold start is billed
    # (since August 2025) for its INIT, taken as `import app` at this machine's speed: INIT
    # is not held to the memory's share of a vCPU.
    "cold_start_share": 0.01,
    # START, END and REPORT: about 260 bytes an invocation.
    "platform_log_bytes": 260,
    "platform_log_lines": 3,
    # CloudWatch Logs counts 26 bytes of metadata with every event.
    "log_event_overhead": 26,
    # API tokens calling (the authorizer's cache is per token).
    "tokens": 1,
}


# ---------------------------------------------------------------- DynamoDB arithmetic

def value_bytes(value: dict) -> int:
    """The size DynamoDB counts for one attribute value (low-level form: {"S": ...}),
    without its name: the developer guide's item-size rules."""
    (kind, content), = value.items()
    if kind == "S":
        return len(content.encode())
    if kind == "N":  # 1 byte a 2 significant digits, and 1
        digits = Decimal(content).normalize().as_tuple().digits
        return (len(digits) + 1) // 2 + 1
    if kind == "B":
        return len(content)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind in ("SS", "NS", "BS"):
        return sum(value_bytes({kind[0]: element}) for element in content)
    if kind == "L":  # 3 bytes, and 1 a element
        return 3 + sum(1 + value_bytes(element) for element in content)
    if kind == "M":
        return 3 + sum(1 + len(name.encode()) + value_bytes(element)
                       for name, element in content.items())
    raise ValueError(f"unknown attribute type {kind}")


def item_bytes(item: Optional[dict]) -> int:
    """An item's size: its attributes' names and values (0 for no item)."""
    return sum(len(name.encode()) + value_bytes(value) for name, value in (item or {}).items())


def write_units(size: int) -> int:
    """Write request units of one write: 1 a started KB, at least 1."""
    return max(1, math.ceil(size / 1024))


def read_units(size: int, consistent: bool) -> float:
    """Read request units of one read: 1 a started 4 KB (half when eventually consistent)."""
    return max(1, math.ceil(size / 4096)) * (1.0 if consistent else 0.5)


def projected(item: Optional[dict], index: dict, table_keys: List[str]) -> Optional[dict]:
    """The index's entry for `item`, or None when the item is not in the index (sparse)."""
    keys = [key["AttributeName"] for key in index["KeySchema"]]
    if item is None or any(key not in item for key in keys):
        return None
    projection = index.get("Projection", {"ProjectionType": "ALL"})
    if projection["ProjectionType"] == "ALL":
        return item
    kept = set(keys) | set(table_keys) | set(projection.get("NonKeyAttributes", ()))
    return {name: value for name, value in item.items() if name in kept}


def index_write_units(before: Optional[dict], after: Optional[dict], index: dict,
                      table_keys: List[str]) -> int:
    """What one table write costs in one global secondary index: nothing when the item is
    in it neither before nor after or its entry is unchanged; a delete, a put, or (when the
    index key changed) both; an entry's projected attributes changed in place is one write."""
    old, new = projected(before, index, table_keys), projected(after, index, table_keys)
    if (old is None and new is None) or old == new:
        return 0
    if old is None:
        return write_units(item_bytes(new))
    if new is None:
        return write_units(item_bytes(old))
    keys = [key["AttributeName"] for key in index["KeySchema"]]
    if any(old[key] != new[key] for key in keys):
        return write_units(item_bytes(old)) + write_units(item_bytes(new))
    return write_units(max(item_bytes(old), item_bytes(new)))


def stored_bytes(item: dict, indexes: List[dict], table_keys: List[str]) -> Dict[str, int]:
    """Billed storage of an item: in the table and each index holding it, 100 bytes of
    overhead each."""
    stored = {"table": item_bytes(item) + 100}
    for index in indexes:
        entry = projected(item, index, table_keys)
        if entry is not None:
            stored[index["IndexName"]] = item_bytes(entry) + 100
    return stored


# ---------------------------------------------------------------- the formula

def figure(value: float) -> str:
    """1,234.00, 3.50, 0.41, 0.0041: two decimals, or two significant digits below 1."""
    if value >= 1 or value == 0:
        return f"{value:,.2f}"
    return f"{value:.{max(2, 1 - math.floor(math.log10(value)))}f}"


def money(dollars: float) -> str:
    return "$" + figure(dollars)


def cpu_scale(memory_mb: int) -> float:
    """How much longer CPU work takes on a function of `memory_mb` than on one vCPU."""
    return max(1.0, FULL_VCPU_MB / memory_mb)


def billed_ms(function: dict, assumed: dict) -> int:
    """One invocation's billed duration: its CPU time slowed to its share of a vCPU, the
    AWS calls' round trips and the receiver's answer, rounded up to a millisecond."""
    call_ms = assumed["call_ms"]
    waits = sum(count * call_ms.get(service, call_ms["other"])
                for service, count in function["calls"].items())
    return math.ceil(function["cpu_ms"] * cpu_scale(function["memory_mb"]) + waits
                     + function.get("receiver_ms", 0))


def authorizer_share(ttl_s: Optional[int], tokens: int, tasks: int = TASKS_PER_MONTH) -> float:
    """Authorizer invocations per task: one per token per TTL while tasks keep arriving
    all month, at most one a request (no authorizer: 0)."""
    if ttl_s is None:
        return 0.0
    if ttl_s <= 0:
        return 1.0
    return min(1.0, tokens * MONTH_SECONDS / ttl_s / tasks)


def cost(inputs: dict, prices: dict = PRICES) -> dict:
    """Every part of a task's cost, per million tasks, and the anchors: `inputs` holds the
    measured and assumed figures (see measure()); nothing here is measured."""
    assumed, dynamo = inputs["assumed"], inputs["dynamodb"]
    functions = inputs["functions"]
    rows = []

    def row(part, per_task, price, quantity, source):
        rows.append({"part": part, "per_task": per_task, "price": str(price),
                     "dollars": quantity * price.each * TASKS_PER_MONTH, "source": source})

    row("API Gateway REST requests", "1 request", prices["api_gateway_rest"], 1, "design")
    invocations = sum(f["invocations"] for f in functions.values())
    row("Lambda requests", f"{figure(invocations)} invocations", prices["lambda_request"],
        invocations, "design; the authorizer's share from its TTL (assumed traffic)")
    for name, f in functions.items():
        ms = billed_ms(f, assumed)
        gb_s = f["invocations"] * ms / 1000 * f["memory_mb"] / 1024
        calls = ", ".join(f"{n:g} {service}" for service, n in sorted(f["calls"].items()))
        receiver = f" + receiver {f['receiver_ms']:g} ms" if f.get("receiver_ms") else ""
        row(f"Lambda duration: {FUNCTIONS[name]}, {f['memory_mb']} MB",
            f"{figure(f['invocations'])} x {ms} ms = {figure(gb_s)} GB-s",
            prices["lambda_gb_second"], gb_s,
            f"measured CPU {f['cpu_ms']:.2f} ms x {cpu_scale(f['memory_mb']):.2f}"
            f" + calls ({calls or 'none'}){receiver}")
    init_gb_s = sum(f["invocations"] * assumed["cold_start_share"] * inputs["init_ms"] / 1000
                    * f["memory_mb"] / 1024 for f in functions.values())
    row("Lambda INIT (cold starts)", f"{figure(init_gb_s)} GB-s", prices["lambda_gb_second"],
        init_gb_s, f"{assumed['cold_start_share']:.0%} of invocations (assumed) x "
        f"`import app` {inputs['init_ms']:.0f} ms ({inputs['init_source']})")
    units = dynamo["table_write_units"] + dynamo["index_write_units"]
    row("DynamoDB writes", f"{units:g} WRU ({dynamo['table_write_units']:g} table, "
        f"{dynamo['index_write_units']:g} indexes)", prices["dynamodb_write_unit"], units,
        "measured: " + "; ".join(dynamo["writes"]))
    row("DynamoDB reads", f"{dynamo['read_units']:g} RRU", prices["dynamodb_read_unit"],
        dynamo["read_units"], "measured")
    months = inputs["retention_days"] / MONTH_DAYS
    stored = sum(dynamo["stored_bytes"].values())
    row(f"DynamoDB storage, {inputs['retention_days']} days",
        f"{stored:,} B x {months:.2f} months", prices["dynamodb_storage"],
        stored / GIB * months, "measured item; kept in "
        + ", ".join(dynamo["stored_bytes"]) + " (TASK_RETENTION_DAYS)")
    table_bytes = dynamo["stored_bytes"]["table"]
    row("DynamoDB point-in-time recovery", f"{table_bytes:,} B x {months:.2f} months",
        prices["dynamodb_pitr"], table_bytes / GIB * months, "measured item (the table only)")
    row("EventBridge Scheduler", "1 invocation", prices["scheduler_invocation"], 1,
        "design (CreateSchedule itself is not charged)")
    platform = assumed["platform_log_bytes"] + (
        assumed["platform_log_lines"] * assumed["log_event_overhead"])
    logged = sum(f["invocations"] * (f["log_bytes"] + f["log_lines"]
                                     * assumed["log_event_overhead"] + platform)
                 for f in functions.values())
    ours = sum(f["invocations"] * f["log_bytes"] for f in functions.values())
    row("CloudWatch Logs", f"{logged:,.0f} B", prices["logs_ingested"], logged / GIB,
        f"measured {ours:,.0f} B of our lines and EMF; Lambda's own lines assumed")
    total = sum(r["dollars"] for r in rows)
    anchors = [
        {"system": "EventBridge Scheduler alone (invokes a target, sends no webhook)",
         "dollars": prices["scheduler_invocation"].each * TASKS_PER_MONTH},
        {"system": "Scheduler -> event bus -> API destination (an unsigned HTTP call)",
         "dollars": (prices["scheduler_invocation"].each
                     + prices["eventbridge_custom_event"].each
                     + prices["eventbridge_api_destination"].each) * TASKS_PER_MONTH},
        {"system": "QStash pay-as-you-go (one message a task)",
         "dollars": prices["qstash_message"].each * TASKS_PER_MONTH},
    ]
    executor = functions["execute_task"]
    per_100ms = (executor["invocations"] * 0.1 * executor["memory_mb"] / 1024
                 * prices["lambda_gb_second"].each * TASKS_PER_MONTH)
    return {"rows": rows, "total": total, "anchors": anchors,
            "receiver_per_100ms": per_100ms}


# ---------------------------------------------------------------- measuring over moto

TOKEN = "bench-token-0123456789"
# A typical webhook's JSON body (about 120 bytes); no name, tags or headers of its own.
WEBHOOK_DATA = {"event": "invoice.reminder", "invoice_id": "inv_000123",
                "customer_id": "cus_000456", "amount_cents": 4200, "currency": "eur"}
API_ID = "abcdef1234"


class Excluded:
    """Process CPU time that is not our handlers': inside moto (AWS's side of a call) and
    in this benchmark's own hooks. Nested spans count once."""

    def __init__(self):
        self.seconds = 0.0
        self._local = threading.local()

    @contextlib.contextmanager
    def span(self):
        depth = getattr(self._local, "depth", 0)
        self._local.depth = depth + 1
        started = time.process_time()
        try:
            yield
        finally:
            self._local.depth = depth
            if depth == 0:
                self.seconds += time.process_time() - started


class DynamoMeter:
    """The request units of every DynamoDB call one client makes, from the item before and
    after each write (read by a client of the meter's own, outside the counts and the
    timing). Calls it cannot price are counted in `unmetered`."""

    WRITES = ("PutItem", "UpdateItem", "DeleteItem")
    FREE = ("DescribeTable", "ListTables", "DescribeTimeToLive")

    def __init__(self, client, excluded: Excluded):
        import botocore.session

        self.raw = botocore.session.get_session().create_client("dynamodb")
        self.excluded = excluded
        self.schemas: Dict[str, tuple] = {}
        self.pending = threading.local()
        self.writes: List[tuple] = []  # (operation, table units, index units)
        self.reads = 0.0
        self.unmetered: Counter = Counter()
        client.meta.events.register("before-parameter-build.dynamodb", self.before)
        client.meta.events.register("after-call.dynamodb", self.after)

    def schema(self, table: str) -> tuple:
        if table not in self.schemas:
            description = self.raw.describe_table(TableName=table)["Table"]
            self.schemas[table] = ([key["AttributeName"] for key in description["KeySchema"]],
                                   description.get("GlobalSecondaryIndexes", []))
        return self.schemas[table]

    def get(self, table: str, key: dict) -> Optional[dict]:
        return self.raw.get_item(TableName=table, Key=key, ConsistentRead=True).get("Item")

    def before(self, params, model, **_):
        with self.excluded.span():
            operation, table = model.name, params.get("TableName")
            self.pending.call = None
            if operation in self.WRITES:
                keys, _ = self.schema(table)
                key = ({name: params["Item"][name] for name in keys}
                       if operation == "PutItem" else params["Key"])
                self.pending.call = (operation, table, key, self.get(table, key))
            elif operation in ("GetItem", "Query", "Scan"):
                consistent = bool(params.get("ConsistentRead")) and "IndexName" not in params
                self.pending.call = (operation, table, params.get("Key"), consistent)
            elif operation not in self.FREE:
                self.unmetered[operation] += 1

    def after(self, parsed, model, **_):
        with self.excluded.span():
            call, self.pending.call = getattr(self.pending, "call", None), None
            if call is None:
                return
            operation, table, key, extra = call
            keys, indexes = self.schema(table)
            if operation in self.WRITES:
                before, after = extra, self.get(table, key)
                self.writes.append((operation, write_units(max(item_bytes(before),
                                                               item_bytes(after))),
                                    sum(index_write_units(before, after, index, keys)
                                        for index in indexes)))
            elif operation == "GetItem":
                self.reads += read_units(item_bytes(self.get(table, key)), extra)
            else:  # Query, Scan: the whole items read, whatever the projection
                items = parsed.get("Items", [])
                size = sum(item_bytes(self.get(table, {name: item[name] for name in keys}))
                           for item in items)
                scanned = parsed.get("ScannedCount", len(items))
                if items and scanned > len(items):  # filtered out after the read
                    size = size * scanned // len(items)
                self.reads += read_units(size, extra)

    def take(self) -> tuple:
        """(writes, read units) since the last take."""
        taken = (self.writes, self.reads)
        self.writes, self.reads = [], 0.0
        return taken


class Context:
    """What Lambda passes a handler as its context."""

    def __init__(self, function: str, memory_mb: int):
        self.aws_request_id = str(uuid.uuid4())
        self.function_name = f"task-scheduler-dev-{function}"
        self.memory_limit_in_mb = memory_mb
        self.invoked_function_arn = (f"arn:aws:lambda:us-east-1:123456789012:function:"
                                     f"{self.function_name}")

    @staticmethod
    def get_remaining_time_in_millis():
        return 30_000


def memory_sizes(stage: str = "dev") -> Dict[str, int]:
    """Each function's memory in the stage's .chalice/config.json (chalice's default 128)."""
    settings = json.loads((PROJECT_DIR / ".chalice" / "config.json").read_text())
    staged = settings["stages"][stage]
    default = staged.get("lambda_memory_size", settings.get("lambda_memory_size", 128))
    functions = staged.get("lambda_functions", {})
    return {name: functions.get(name, {}).get("lambda_memory_size", default)
            for name in FUNCTIONS}


def api_event(body: str) -> dict:
    """POST /schedule-task as API Gateway's proxy integration hands it to the function,
    the authorizer's principal included."""
    return {"resource": "/schedule-task", "path": "/schedule-task", "httpMethod": "POST",
            "headers": {"Authorization": f"Bearer {TOKEN}",
                        "Content-Type": "application/json", "Host": "api.example.com"},
            "multiValueHeaders": {}, "queryStringParameters": None,
            "multiValueQueryStringParameters": None, "pathParameters": None,
            "stageVariables": None, "body": body, "isBase64Encoded": False,
            "requestContext": {"resourcePath": "/schedule-task", "httpMethod": "POST",
                               "stage": "api", "path": "/api/schedule-task",
                               "requestId": "bench", "apiId": API_ID,
                               "authorizer": {"principalId": "default"},
                               "identity": {"sourceIp": "203.0.113.7"}}}


class Harness:
    """The three handlers called as Lambda calls them, each invocation measured: its CPU
    time without moto's or the meters' (Excluded), its AWS calls, its DynamoDB units and
    the bytes it logs (our logger's JSON lines and the EMF lines it prints)."""

    def __init__(self, handlers: dict, memory: dict, meter: DynamoMeter, counter,
                 excluded: Excluded, log: list):
        self.handlers, self.memory, self.meter = handlers, memory, meter
        self.counter, self.excluded, self.log = counter, excluded, log

    def invoke(self, name: str, event: dict) -> tuple:
        """The handler's answer, and what its invocation cost us."""
        self.counter.take()
        self.meter.take()
        stream = self.log[0] = io.StringIO()
        cpu, outside = time.process_time(), self.excluded.seconds
        with contextlib.redirect_stdout(stream):
            answer = self.handlers[name](event, Context(name, self.memory[name]))
        cpu_ms = (time.process_time() - cpu - (self.excluded.seconds - outside)) * 1000
        text = stream.getvalue()
        writes, reads = self.meter.take()
        calls = Counter(op.split(":")[0] for op in self.counter.take().elements())
        return answer, {"cpu_ms": cpu_ms, "calls": calls, "writes": writes, "reads": reads,
                        "log_bytes": len(text.encode()), "log_lines": text.count("\n")}

    def run(self, count: int, receiver_url: str) -> List[dict]:
        """`count` one-time webhook tasks, each through the authorizer, the API and, once
        due (a few seconds on), the executor."""
        due = math.ceil(time.time() + 3)
        body = json.dumps({"action": "webhook",
                           "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(due)),
                           "payload": {"url": receiver_url, "data": WEBHOOK_DATA}})
        auth_event = {"type": "TOKEN", "authorizationToken": f"Bearer {TOKEN}",
                      "methodArn": f"arn:aws:execute-api:us-east-1:123456789012:{API_ID}"
                                   f"/api/POST/schedule-task"}
        tasks = []
        for _ in range(count):
            allowed, auth = self.invoke("token_auth", auth_event)
            if allowed["principalId"] == "anonymous":
                raise SystemExit("the authorizer refused the benchmark's token")
            answer, api = self.invoke("api_handler", api_event(body))
            if answer["statusCode"] != 201:
                raise SystemExit(f"POST /schedule-task answered {answer}")
            tasks.append({"task_id": json.loads(answer["body"])["task_id"],
                          "token_auth": auth, "api_handler": api})
        time.sleep(max(0.0, due + 0.2 - time.time()))
        for task in tasks:
            result, task["execute_task"] = self.invoke("execute_task",
                                                       {"task_id": task["task_id"]})
            if result["outcome"] != "ran" or result["status"] != "completed":
                raise SystemExit(f"the executor did not complete the task: {result}")
        return tasks


@contextlib.contextmanager
def instrumented():
    """moto's time set apart (Excluded), and our logger writing JSON lines as on Lambda
    into the stream the current invocation names (log[0])."""
    import logging
    from unittest import mock

    from moto.core.botocore_stubber import BotocoreStubber

    from chalicelib import observability

    excluded = Excluded()
    stubbed = BotocoreStubber.__call__

    def timed(stub, *args, **kwargs):
        with excluded.span():
            return stubbed(stub, *args, **kwargs)

    log = [io.StringIO()]

    class Current(io.TextIOBase):
        def write(self, text):
            return log[0].write(text)

    logger = logging.getLogger("task_scheduler")
    saved = logger.handlers, logger.propagate, logger.level
    handler = logging.StreamHandler(Current())
    handler.setFormatter(observability.JsonFormatter())
    logger.handlers, logger.propagate = [handler], False
    logger.setLevel(logging.INFO)
    try:
        with mock.patch.object(BotocoreStubber, "__call__", timed):
            yield excluded, log
    finally:
        logger.handlers, logger.propagate, level = saved
        logger.setLevel(level)


def measure(tasks: int = 30, init_ms: Optional[float] = None, assumed: Optional[dict] = None,
            warmup: int = 3, init_source: str = "bench/footprint.py, this run") -> dict:
    """Run `tasks` one-time webhook tasks over moto (after `warmup` that are not counted)
    and price them. `init_ms`: a cold start's `import app` (`init_source` says whence),
    measured by bench/footprint.py when not given."""
    from moto import mock_aws

    from bench.aws_calls import CallCounter
    from bench.common import (
        MOTO_STAGE, ReceiverProcess, create_executor_function, use_moto_stage,
    )

    assumed = {**ASSUMED, **(assumed or {})}
    if init_ms is None:
        from bench import footprint

        init_ms = footprint.measure(5)["import_ms_median"]
        init_source = "bench/footprint.py, median of 5"
    use_moto_stage(
        EXECUTOR_ARN="arn:aws:lambda:us-east-1:123456789012:function:"
                     "task-scheduler-dev-execute_task",
        SCHEDULER_ROLE_ARN="arn:aws:iam::123456789012:role/task-scheduler-dev-scheduler",
        WEBHOOK_SIGNING_SECRET="whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        API_TOKENS=TOKEN, ALLOW_PRIVATE_TARGETS="true", METRICS="emf")
    memory = memory_sizes()
    receiver = ReceiverProcess()
    try:
        with mock_aws(config={"lambda": {"use_docker": False}}), instrumented() as (
                excluded, log):
            from chalicelib import aws, bootstrap, config, routes

            bootstrap.bootstrap(MOTO_STAGE)
            create_executor_function()
            from app import app as api_handler, execute_task

            counter = CallCounter()
            for service in ("dynamodb", "scheduler", "ssm", "lambda", "sts", "sqs", "sns"):
                aws.client(service).meta.events.register("before-call", counter)
            meter = DynamoMeter(aws.client("dynamodb"), excluded)
            harness = Harness({"token_auth": routes.token_auth, "api_handler": api_handler,
                               "execute_task": execute_task}, memory, meter, counter,
                              excluded, log)
            harness.run(warmup, receiver.url)
            runs = harness.run(tasks, receiver.url)
            arrived = receiver.wait_for(warmup + tasks, time.monotonic() + 30)
            if len(arrived) != warmup + tasks:
                raise SystemExit(f"{len(arrived)} webhooks arrived of {warmup + tasks}")
            tasks_table = config.tasks_table()
            keys, indexes = meter.schema(tasks_table)
            stored = sorted((stored_bytes(meter.get(tasks_table, {"TaskID": {"S": run["task_id"]}}),
                                          indexes, keys) for run in runs),
                            key=lambda sizes: sum(sizes.values()))[len(runs) // 2]
            ttl = routes.token_auth.config.ttl_seconds
            ttl = API_GATEWAY_DEFAULT_TTL if ttl is None else ttl
            if config.auth_mode() == "iam":
                ttl = None
            retention = config.task_retention_days()
            unmetered = dict(meter.unmetered)
    finally:
        receiver.stop()
    return price(runs, memory, stored, [index["IndexName"] for index in indexes], ttl,
                 retention, init_ms, init_source, assumed, unmetered)


def price(runs: List[dict], memory: dict, stored: dict, indexes: List[str],
          ttl: Optional[int], retention: int, init_ms: float, init_source: str,
          assumed: dict, unmetered: dict) -> dict:
    """The measured runs as the formula's inputs (medians over the tasks), and the cost."""
    def median(values):
        return statistics.median(values) if values else 0.0

    functions = {}
    for name in FUNCTIONS:
        invocations = [run[name] for run in runs]
        services = sorted({s for invocation in invocations for s in invocation["calls"]})
        functions[name] = {
            "memory_mb": memory[name],
            "invocations": (authorizer_share(ttl, assumed["tokens"])
                            if name == "token_auth" else 1.0),
            "cpu_ms": round(median([i["cpu_ms"] for i in invocations]), 3),
            "calls": {s: median([i["calls"][s] for i in invocations]) for s in services},
            "log_bytes": median([i["log_bytes"] for i in invocations]),
            "log_lines": median([i["log_lines"] for i in invocations]),
        }
    functions["execute_task"]["receiver_ms"] = assumed["receiver_ms"]
    # The writes of the median task (by units), named by the handler that made them.
    writes = sorted(([(name, *write) for name in ("api_handler", "execute_task")
                      for write in run[name]["writes"]] for run in runs),
                    key=lambda w: sum(t + i for _, _, t, i in w))[len(runs) // 2]
    dynamodb = {
        "table_write_units": sum(t for _, _, t, _ in writes),
        "index_write_units": sum(i for _, _, _, i in writes),
        "read_units": median([sum(run[name]["reads"] for name in FUNCTIONS) for run in runs]),
        "writes": [f"{'POST' if name == 'api_handler' else 'run'}: {op} {t} + {i} in indexes"
                   for name, op, t, i in writes],
        "stored_bytes": stored,
        "indexes": indexes,
        "unmetered": unmetered,
    }
    inputs = {"tasks_measured": len(runs), "functions": functions, "dynamodb": dynamodb,
              "assumed": assumed, "init_ms": init_ms, "init_source": init_source,
              "retention_days": retention, "authorizer_ttl_s": ttl}
    return {"as_of": AS_OF, "region": REGION, "inputs": inputs, **cost(inputs)}


# ---------------------------------------------------------------- the tables

def ratio(ours: float, anchor: float) -> str:
    return f"{ours / anchor:.2f}"


def behind(result: dict) -> List[str]:
    """Where an anchor costs less than we do, said plainly."""
    return [f"Cost per million one-time webhook tasks: {anchor['system']} "
            f"{money(anchor['dollars'])}, ours {money(result['total'])} "
            f"({ratio(result['total'], anchor['dollars'])}x)."
            for anchor in result["anchors"] if anchor["dollars"] < result["total"]]


def why(result: dict) -> str:
    """Why ours costs more than the anchors: what a task does beyond firing, and its
    largest parts, from this run."""
    dynamo = result["inputs"]["dynamodb"]
    units = dynamo["table_write_units"] + dynamo["index_write_units"]
    parts = []
    for r in sorted(result["rows"], key=lambda r: r["dollars"], reverse=True)[:3]:
        detail = ""
        if r["part"] == "DynamoDB writes" and dynamo["index_write_units"]:
            detail = (f": {dynamo['index_write_units']:g} of a task's {units:g} write units "
                      f"are its copies in the table's {len(dynamo['indexes'])} indexes, each "
                      "written again whenever a write changes an item it holds")
        parts.append(f"{r['part']} ({money(r['dollars'])}{detail})")
    return ("Cost: EventBridge Scheduler alone only fires a target, and QStash charges one "
            "message. Each of our tasks is also an API Gateway request, two Lambda runs (one "
            "stores the task, one claims it, sends the webhook and records the run), "
            "DynamoDB writes, storage and logs. The largest parts: " + "; ".join(parts) + ".")


def table(result: dict) -> str:
    """The cost table, the anchors with our ratio to each, and the inputs: measured or
    assumed."""
    anchor = result["anchors"][0]["dollars"]
    inputs, assumed = result["inputs"], result["inputs"]["assumed"]
    rows = [[r["part"], r["per_task"], r["price"], money(r["dollars"]),
             ratio(r["dollars"], anchor), r["source"]] for r in result["rows"]]
    rows.append(["**total**", "", "", f"**{money(result['total'])}**",
                 f"**{ratio(result['total'], anchor)}**", ""])
    parts = markdown_table(["part", "per task", "price", "per 1M tasks",
                            "÷ Scheduler alone", "from"], rows)
    anchors = markdown_table(["system", "per 1M tasks", "ours ÷ it"], [
        ["ours (above)", money(result["total"]), "1.00"]] + [
        [a["system"], money(a["dollars"]), ratio(result["total"], a["dollars"])]
        for a in result["anchors"]])
    calls = ", ".join(f"{k} {v} ms" for k, v in assumed["call_ms"].items())
    unmetered = inputs["dynamodb"]["unmetered"]
    free = "; ".join(f"{k}: {v}" for k, v in FREE_TIERS.items())
    notes = [
        f"**Prices**: {result['region']} list prices as of {result['as_of']} "
        f"(`bench/prices.py`; check them against the providers' pages). No free tier is "
        f"subtracted ({free}). A million tasks a month, arriving evenly.",
        f"**Measured** in this run over moto ({inputs['tasks_measured']} tasks, medians): "
        "each handler's AWS calls and CPU time (moto's own time taken out), its log and "
        "EMF bytes, and each DynamoDB write's item before and after, which give the write "
        "units of the table and of each index, and what stays stored"
        + (f" (not priced: {unmetered})" if unmetered else "") + ". From the code: the "
        "functions' memory (`.chalice/config.json`), the authorizer's cache of "
        f"{inputs['authorizer_ttl_s']} s (API Gateway's default: it names none), "
        f"{inputs['retention_days']} days' retention.",
        "**Assumed**: a second of CPU here is one of a Lambda vCPU, and a function gets "
        "memory / 1,769 MB of one; an AWS call's round trip from Lambda "
        f"({calls}); the receiver answers in {assumed['receiver_ms']:g} ms (each further "
        f"100 ms adds {money(result['receiver_per_100ms'])} a million); "
        f"{assumed['cold_start_share']:.0%} of invocations are cold starts, each billed "
        "for `import app` at this machine's speed (INIT is not held to the memory's share "
        f"of a vCPU); Lambda's own log lines, {assumed['platform_log_bytes']} bytes an "
        f"invocation; {assumed['tokens']} API token.",
        "**Not counted**: data sent to receivers (100 GB a month free, then $0.09/GB), the "
        "daily sweeper and the alarms (a fixed cost, not a task's), EMF's custom metrics "
        "(per metric and month), SSM and KMS reads (once per 5 minutes per warm function), "
        "the task's wait before its run (storage; it is in the due index meanwhile), TTL's "
        "delete (free). The formula is written out at the top of `bench/cost.py`.",
    ]
    return f"{parts}\n\n{anchors}\n\n" + "\n".join(f"- {note}" for note in notes)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=30, help="tasks measured (30)")
    parser.add_argument("--receiver-ms", type=float, default=ASSUMED["receiver_ms"],
                        help="assumed webhook receiver latency, ms (%(default)s)")
    parser.add_argument("--cold-start-share", type=float,
                        default=ASSUMED["cold_start_share"],
                        help="assumed share of invocations that are cold (%(default)s)")
    parser.add_argument("--tokens", type=int, default=ASSUMED["tokens"],
                        help="API tokens calling (%(default)s)")
    parser.add_argument("--init-ms", type=float, default=None,
                        help="a cold start's `import app`, ms (default: measured by "
                             "bench/footprint.py)")
    parser.add_argument("--json", action="store_true", help="also print the result as JSON")
    args = parser.parse_args(argv)
    result = measure(args.tasks, args.init_ms, {
        "receiver_ms": args.receiver_ms, "cold_start_share": args.cold_start_share,
        "tokens": args.tokens}, init_source="--init-ms")
    print(table(result))
    if args.json:
        print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
