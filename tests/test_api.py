"""The HTTP API through chalice.test.Client against moto."""
import json
from datetime import datetime, timedelta, timezone

import boto3
import pytest

from chalicelib import config
from chalicelib.models import utcnow
from tests.conftest import runtime


def future(seconds=3600):
    moment = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def spec_example(url="https://example.com/hook", run_at=None):
    return {"action": "webhook",
            "payload": {"url": url, "data": {"msg": "Hello from Lambda"}},
            "run_at": run_at or future()}


def schedules_in_group():
    client = boto3.client("scheduler")
    found, token = [], None
    while True:
        kwargs = {"GroupName": config.scheduler_group()}
        if token:
            kwargs["NextToken"] = token
        page = client.list_schedules(**kwargs)
        found += page["Schedules"]
        token = page.get("NextToken")
        if not token:
            return found


def rule_names():
    client = boto3.client("events")
    names, token = [], None
    while True:
        kwargs = {"NamePrefix": config.rule_prefix()}
        if token:
            kwargs["NextToken"] = token
        page = client.list_rules(**kwargs)
        names += [rule["Name"] for rule in page["Rules"]]
        token = page.get("NextToken")
        if not token:
            return names


def task_count():
    table = boto3.client("dynamodb")
    return table.scan(TableName=config.tasks_table(), Select="COUNT")["Count"]


def test_spec_example_is_stored_and_armed_once(api):
    run_at = future()
    response = api.post("/schedule-task", spec_example(run_at=run_at))
    assert response.status_code == 201
    body = response.json
    assert body == {"message": "Task scheduled successfully", "task_id": body["task_id"],
                    "status": "scheduled", "run_at": run_at, "next_run_at": run_at,
                    "version": 1}
    assert response.headers["ETag"] == '"1"'
    assert len(body["task_id"]) == 36 and body["task_id"][14] == "4"  # uuid4

    shown = api.get(f"/tasks/{body['task_id']}")
    assert shown.status_code == 200
    assert shown.json["status"] == "scheduled"
    assert shown.json["payload"]["data"] == {"msg": "Hello from Lambda"}
    assert shown.json["upcoming"] == [run_at]
    assert shown.json["runs"] == [] and shown.json["attempts"] == 0

    schedules = schedules_in_group()
    assert len(schedules) == 1
    detail = boto3.client("scheduler").get_schedule(
        Name=schedules[0]["Name"], GroupName=config.scheduler_group())
    assert json.loads(detail["Target"]["Input"]) == {"task_id": body["task_id"]}
    assert detail["ScheduleExpression"] == f"at({run_at[:-1]})"
    assert detail["ActionAfterCompletion"] == "DELETE"
    assert detail["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert detail["Target"]["Arn"].endswith(":function:task-scheduler-dev-execute_task")
    assert detail["Target"]["RoleArn"].endswith(":role/task-scheduler-dev-scheduler")


def test_offset_is_normalised_to_utc(memory_api):
    local = (datetime.now(timezone(timedelta(hours=2))) + timedelta(hours=1)).replace(
        microsecond=0)
    response = memory_api.post("/schedule-task", spec_example(run_at=local.isoformat()))
    assert response.status_code == 201
    expected = local.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert response.json["run_at"] == expected == response.json["next_run_at"]


def test_fraction_of_second_rounds_up(memory_api):
    base = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    response = memory_api.post("/schedule-task", spec_example(
        run_at=base.strftime("%Y-%m-%dT%H:%M:%S") + ".250Z"))
    assert response.json["run_at"] == (base + timedelta(seconds=1)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


@pytest.mark.parametrize("run_at,timezone_name,expression,tz_expected,stored", [
    ("cron(0 9 ? * MON-FRI *)", "America/New_York", "cron(0 9 ? * MON-FRI *)",
     "America/New_York", "cron(0 9 ? * MON-FRI *)"),
    ("rate(5 minutes)", None, "rate(5 minutes)", "UTC", "rate(5 minutes)"),
    ("09:30", "Europe/Berlin", "cron(30 9 * * ? *)", "Europe/Berlin", "09:30"),
    # any case and spacing: stored and echoed in the form sent to EventBridge
    ("CRON(0  9 ? * mon-fri *)", "America/New_York", "cron(0 9 ? * MON-FRI *)",
     "America/New_York", "cron(0 9 ? * MON-FRI *)"),
    ("RATE( 5  Minutes )", None, "rate(5 minutes)", "UTC", "rate(5 minutes)"),
])
def test_recurring_task_is_armed_with_its_expression(api, run_at, timezone_name, expression,
                                                     tz_expected, stored):
    body = {**spec_example(run_at=run_at)}
    if timezone_name:
        body["timezone"] = timezone_name
    response = api.post("/schedule-task", body)
    assert response.status_code == 201, response.json
    assert response.json["run_at"] == stored
    assert api.get(f"/tasks/{response.json['task_id']}").json["run_at"] == stored
    next_run = datetime.fromisoformat(response.json["next_run_at"].replace("Z", "+00:00"))
    assert datetime.now(timezone.utc) < next_run < datetime.now(timezone.utc) + timedelta(days=4)
    detail = boto3.client("scheduler").get_schedule(
        Name=f"task-{response.json['task_id']}", GroupName=config.scheduler_group())
    assert detail["ScheduleExpression"] == expression
    assert detail["ScheduleExpressionTimezone"] == tz_expected
    assert "ActionAfterCompletion" not in detail or detail["ActionAfterCompletion"] != "DELETE"
    shown = api.get(f"/tasks/{response.json['task_id']}").json
    assert len(shown["upcoming"]) == 5
    assert shown["upcoming"][0] == response.json["next_run_at"]
    assert shown["upcoming"] == sorted(shown["upcoming"])


def test_rules_mode_arms_one_rule_and_removes_it_after_the_run(rules_mode, api, receiver):
    response = api.post("/schedule-task", spec_example(url=receiver.url, run_at=future(2)))
    assert response.status_code == 201
    task_id = response.json["task_id"]
    events = boto3.client("events")
    assert rule_names() == [f"{config.rule_prefix()}{task_id}"]
    targets = events.list_targets_by_rule(Rule=rule_names()[0])["Targets"]
    assert len(targets) == 1 and json.loads(targets[0]["Input"]) == {"task_id": task_id}
    policy = json.loads(boto3.client("lambda").get_policy(
        FunctionName=config.executor_function_name())["Policy"])
    assert len(policy["Statement"]) == 1
    assert policy["Statement"][0]["Condition"]["ArnLike"]["AWS:SourceArn"].endswith(
        f"rule/{config.rule_prefix()}*")

    result = api.invoke(task_id)  # about two seconds early: the executor waits
    assert result["status"] == "completed"
    assert len(receiver.requests) == 1
    assert rule_names() == []


def test_rules_mode_cancel_removes_the_rule(rules_mode, api):
    task_id = api.post("/schedule-task", spec_example()).json["task_id"]
    assert len(rule_names()) == 1
    assert api.delete(f"/tasks/{task_id}").status_code == 200
    assert rule_names() == []


# ---------------------------------------------------------------- rejected requests

def _with(**changes):
    body = spec_example()
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


def _payload(**changes):
    payload = {"url": "https://example.com/hook", "data": {"a": 1}}
    payload.update(changes)
    return _with(payload=payload)


_DROP = object()

INVALID = [
    ("not json", b"{not json", 400, None),
    ("array body", b"[1, 2]", 400, None),
    ("empty body", b"", 400, None),
    ("unknown field", _with(colour="red"), 400, "colour"),
    ("no action", _with(action=_DROP), 400, "action"),
    ("unknown action", _with(action="teleport"), 400, "action"),
    ("action not a string", _with(action=7), 400, "action"),
    ("no payload", _with(payload=_DROP), 400, "payload"),
    ("payload not an object", _with(payload="https://example.com"), 400, "payload"),
    ("no url", _with(payload={"data": 1}), 400, "payload.url"),
    ("ftp url", _payload(url="ftp://example.com/file"), 400, "payload.url"),
    ("url without host", _payload(url="http:///path"), 400, "payload.url"),
    ("url too long", _payload(url="https://example.com/" + "a" * 2100), 400, "payload.url"),
    ("bad method", _payload(method="TRACE"), 400, "payload.method"),
    ("headers not strings", _payload(headers={"X-N": 5}), 400, "payload.headers"),
    ("timeout too long", _payload(timeout=120), 400, "payload.timeout"),
    ("timeout not a number", _payload(timeout="10"), 400, "payload.timeout"),
    ("unknown payload field", _payload(body="x"), 400, "payload.body"),
    ("no run_at", _with(run_at=_DROP), 400, "run_at"),
    ("run_at a number", _with(run_at=1716141360), 400, "run_at"),
    ("run_at garbage", _with(run_at="tomorrow at noon"), 400, "run_at"),
    ("run_at date only", _with(run_at="2031-05-19"), 400, "run_at"),
    ("run_at past", _with(run_at="2020-05-19T17:56:00Z"), 400, "run_at"),
    ("run_at now-ish past", _with(run_at=future(-5)), 400, "run_at"),
    ("run_at beyond horizon", _with(run_at=future(400 * 86400)), 400, "run_at"),
    ("invalid calendar date", _with(run_at="2031-02-30T10:00:00Z"), 400, "run_at"),
    ("cron both days", _with(run_at="cron(0 9 * * * *)"), 400, "run_at"),
    ("cron dow without ?", _with(run_at="cron(0 12 * * 1 *)"), 400, "run_at"),
    ("cron five fields", _with(run_at="cron(0 9 * * ?)"), 400, "run_at"),
    ("cron minute range", _with(run_at="cron(60 9 * * ? *)"), 400, "run_at"),
    ("cron day-of-week 0", _with(run_at="cron(0 9 ? * 0 *)"), 400, "run_at"),
    ("cron year past", _with(run_at="cron(0 9 * * ? 2020)"), 400, "run_at"),
    ("cron year out of range", _with(run_at="cron(0 9 * * ? 2200)"), 400, "run_at"),
    ("cron bad #", _with(run_at="cron(0 9 ? * 2#6 *)"), 400, "run_at"),
    ("rate seconds", _with(run_at="rate(30 seconds)"), 400, "run_at"),
    ("rate zero", _with(run_at="rate(0 minutes)"), 400, "run_at"),
    ("rate plural mismatch", _with(run_at="rate(1 hours)"), 400, "run_at"),
    ("rate unit", _with(run_at="rate(2 weeks)"), 400, "run_at"),
    ("HH:MM out of range", _with(run_at="24:00"), 400, "run_at"),
    ("unknown timezone", _with(run_at="cron(0 9 * * ? *)", timezone="Mars/Olympus"), 400,
     "timezone"),
    ("timezone with an ISO time", _with(timezone="Europe/Berlin"), 400, "timezone"),
    ("priority 42", _with(priority=42), 400, "priority"),
    ("priority negative", _with(priority=-1), 400, "priority"),
    ("priority string", _with(priority="9"), 400, "priority"),
    ("priority bool", _with(priority=True), 400, "priority"),
    ("max_attempts 0", _with(max_attempts=0), 400, "max_attempts"),
    ("max_attempts 11", _with(max_attempts=11), 400, "max_attempts"),
    ("notify unknown", _with(notify="sometimes"), 400, "notify"),
    ("name too long", _with(name="n" * 201), 400, "name"),
    ("log without message", _with(action="log", payload={}), 400, "payload.message"),
    ("body too large", json.dumps(_payload(data="x" * (300 * 1024))).encode(), 413, None),
    ("data over 64 KiB", _payload(data="é" * 40_000), 400, "payload.data"),
    ("NaN in data", b'{"action": "webhook", "payload": {"url": "https://e.com", "data": NaN},'
                    b' "run_at": "2031-01-01T00:00:00Z"}', 400, None),
    ("deeply nested body", b"[" * 100_000 + b"]" * 100_000, 400, None),
    ("lone surrogate in data", b'{"action": "webhook", "payload": {"url": "https://e.com", '
                               b'"data": "\\ud800"}, "run_at": "2031-01-01T00:00:00Z"}', 400, None),
    ("lone surrogate in a key", b'{"action": "log", "payload": {"message": "m", "data": '
                                b'{"\\udfff": 1}}, "run_at": "2031-01-01T00:00:00Z"}', 400, None),
    ("ISO with a trailing newline", _with(run_at="2031-01-01T00:00:00Z\n"), 400, "run_at"),
    ("HH:MM in other digits", _with(run_at="\u0661\u0662:00"), 400, "run_at"),
    ("header name not a token", _payload(headers={"X Bad": "1"}), 400, "payload.headers"),
    ("header value not latin-1", _payload(headers={"X-Euro": "€"}), 400, "payload.headers"),
    ("header value two lines", _payload(headers={"X-A": "a\r\nB: b"}), 400,
     "payload.headers"),
    ("year 9999 with offset", _with(run_at="9999-12-31T23:59:59-01:00"), 400, "run_at"),
    ("unicode digit in rate", _with(run_at="rate(² minutes)"), 400, "run_at"),
    ("unicode digit in cron", _with(run_at="cron(² 9 * * ? *)"), 400, "run_at"),
    ("rate of centuries", _with(run_at="rate(99999999999999999999 minutes)"), 400, "run_at"),
]


@pytest.mark.parametrize("body,status,field", [case[1:] for case in INVALID],
                         ids=[case[0] for case in INVALID])
def test_invalid_request_is_refused_and_stores_nothing(api, body, status, field):
    raw = body if isinstance(body, bytes) else None
    response = api.post("/schedule-task", None if raw is not None else body, raw=raw)
    assert response.status_code == status, response.json
    assert set(response.json) == {"code", "message", "field"}
    assert response.json["field"] == field
    assert len(response.json["message"]) > 10
    assert task_count() == 0
    assert schedules_in_group() == []


def test_private_literal_target_refused_unless_allowed(api, monkeypatch):
    monkeypatch.setenv("ALLOW_PRIVATE_TARGETS", "false")
    for url in ("http://127.0.0.1:9/x", "http://localhost/x", "http://169.254.169.254/",
                "http://[::1]/x", "http://10.1.2.3/x", "http://[::ffff:192.168.0.1]/",
                "http://127.1/", "http://2130706433/", "http://0x7f.1/", "http://0/",
                "http://100.64.0.1/", "http://[fd00::1]/"):
        response = api.post("/schedule-task", spec_example(url=url))
        assert response.status_code == 400, url
        assert response.json["field"] == "payload.url"
    assert task_count() == 0


def test_arming_failure_leaves_no_task(api):
    from botocore.exceptions import ClientError

    from chalicelib import aws

    def refuse(**_):
        raise ClientError({"Error": {"Code": "ServiceUnavailable", "Message": "down"}},
                          "CreateSchedule")

    aws.client("scheduler").meta.events.register("before-call.scheduler.CreateSchedule",
                                                 refuse)
    response = api.post("/schedule-task", spec_example())
    assert response.status_code == 500
    assert task_count() == 0


# ---------------------------------------------------------------- other routes

def test_get_unknown_task_is_404(memory_api):
    response = memory_api.get("/tasks/00000000-0000-4000-8000-000000000000")
    assert response.status_code == 404
    assert response.json["code"] == "task_not_found"


def test_cancel_removes_trigger_and_second_cancel_conflicts(api):
    task_id = api.post("/schedule-task", spec_example()).json["task_id"]
    assert len(schedules_in_group()) == 1
    response = api.delete(f"/tasks/{task_id}")
    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    assert response.json["upcoming"] == []
    assert schedules_in_group() == []
    assert api.delete(f"/tasks/{task_id}").status_code == 409
    assert api.delete("/tasks/00000000-0000-4000-8000-000000000000").status_code == 404
    assert api.get(f"/tasks/{task_id}").json["status"] == "cancelled"


def test_list_pages_through_every_task_and_filters_by_status(memory_api):
    created = {memory_api.post("/schedule-task", spec_example()).json["task_id"] for _ in range(7)}
    cancelled = sorted(created)[:2]
    for task_id in cancelled:
        memory_api.delete(f"/tasks/{task_id}")
    seen, token, pages = [], None, 0
    while True:
        query = "/tasks?limit=3" + (f"&next_token={token}" if token else "")
        page = memory_api.get(query)
        assert page.status_code == 200
        assert len(page.json["tasks"]) <= 3
        seen += [task["task_id"] for task in page.json["tasks"]]
        token = page.json["next_token"]
        pages += 1
        if not token:
            break
    assert sorted(seen) == sorted(created) and pages >= 3
    only = memory_api.get("/tasks?status=cancelled").json
    assert sorted(task["task_id"] for task in only["tasks"]) == cancelled
    assert memory_api.get("/tasks?status=scheduled&limit=100").json["next_token"] is None
    assert len(memory_api.get("/tasks?status=scheduled").json["tasks"]) == 5


def _token(data):
    import base64

    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize("query,field", [
    ("status=sleeping", "status"), ("limit=0", "limit"), ("limit=101", "limit"),
    ("limit=ten", "limit"), ("limit=%C2%B2", "limit"), ("limit=" + "9" * 5000, "limit"), ("next_token=%21%21garbage", "next_token"),
    (f"next_token={_token({'k': {'TaskID': 1}, 's': None})}", "next_token"),
    (f"next_token={_token({'k': {'TaskID': {'N': '1'}}, 's': None})}", "next_token"),
    (f"next_token={_token({'TaskID': {'S': 'x'}})}", "next_token"),
    (f"status=failed&next_token={_token({'k': {'TaskID': {'S': 'x'}}, 's': None})}",
     "next_token"),
])
def test_list_rejects_bad_query(memory_api, query, field):
    response = memory_api.get(f"/tasks?{query}")
    assert response.status_code == 400
    assert response.json["field"] == field


def test_health_needs_no_token(client):
    response = client.http.get("/health")
    assert response.status_code == 200
    assert json.loads(response.body) == {"status": "ok"}


@pytest.mark.parametrize("method,path", [
    ("POST", "/schedule-task"), ("GET", "/tasks"),
    ("GET", "/tasks/00000000-0000-4000-8000-000000000000"),
    ("DELETE", "/tasks/00000000-0000-4000-8000-000000000000"),
    ("GET", "/preview?run_at=rate(5%20minutes)"),
])
def test_routes_require_a_token(client, method, path):
    body = json.dumps(spec_example()).encode()
    missing = client.http.request(method, path, body=body,
                                  headers={"Content-Type": "application/json"})
    assert missing.status_code == 401
    wrong = client.http.request(method, path, body=body, headers={
        "Content-Type": "application/json", "Authorization": "Bearer not-the-token"})
    assert wrong.status_code in (401, 403)
    assert task_count() == 0


def test_unsupported_media_type_has_the_error_body(memory_api):
    response = memory_api.post("/schedule-task", spec_example(),
                        headers={"Content-Type": "text/csv"})
    assert response.status_code == 415
    assert set(response.json) == {"code", "message", "field"}


@pytest.mark.parametrize("task_id", ["not-a-uuid", "x" * 3000, "00000000-0000-4000-8000-00000000000Z"])
def test_ids_that_cannot_be_tasks_are_404(memory_api, task_id):
    assert memory_api.get(f"/tasks/{task_id}").status_code == 404
    assert memory_api.delete(f"/tasks/{task_id}").status_code == 404
    assert memory_api.post(f"/tasks/{task_id}/retry").status_code == 404


def test_day_names_with_w_are_not_mistaken_for_the_w_wildcard(memory_api):
    response = memory_api.post("/schedule-task", _with(run_at="cron(0 9 ? * MON-WED *)"))
    assert response.status_code == 201, response.json


def test_idempotency_key_returns_the_first_task(api):
    body = spec_example()
    first = api.post("/schedule-task", body, headers={"Idempotency-Key": "order-42"})
    assert first.status_code == 201
    again = api.post("/schedule-task", body, headers={"Idempotency-Key": "order-42"})
    assert again.status_code == 200 and again.json == first.json
    assert task_count() == 1 and len(schedules_in_group()) == 1
    other = api.post("/schedule-task", body, headers={"Idempotency-Key": "order-43"})
    assert other.status_code == 201 and other.json["task_id"] != first.json["task_id"]
    changed = api.post("/schedule-task", spec_example(url="https://example.com/other"),
                       headers={"Idempotency-Key": "order-42"})
    assert changed.status_code == 409 and changed.json["code"] == "idempotency_key_reused"
    too_long = api.post("/schedule-task", body, headers={"Idempotency-Key": "k" * 300})
    assert too_long.status_code == 400 and too_long.json["field"] == "Idempotency-Key"
    assert task_count() == 2


def test_idempotency_key_repeat_after_run_at_has_passed(memory_api):
    # A client retrying late must get its task back, not "run_at is in the past".
    from chalicelib import wiring
    from chalicelib.models import Clock

    body = {**spec_example(), "run_at": (utcnow() + timedelta(minutes=5)).strftime(
        "%Y-%m-%dT%H:%M:%SZ")}
    first = memory_api.post("/schedule-task", body, headers={"Idempotency-Key": "late-1"})
    with wiring.overridden(clock=Clock(now=lambda: utcnow() + timedelta(hours=1))):
        again = memory_api.post("/schedule-task", body, headers={"Idempotency-Key": "late-1"})
        assert again.status_code == 200 and again.json == first.json
        fresh = memory_api.post("/schedule-task", body, headers={"Idempotency-Key": "late-2"})
    assert fresh.status_code == 400 and fresh.json["field"] == "run_at"


def test_aws_throttling_is_retried(api):
    from botocore.awsrequest import AWSResponse

    from chalicelib import aws

    calls = []

    def throttle_first(**_):
        calls.append(1)
        if len(calls) == 1:
            body = b'{"__type": "ThrottlingException", "message": "Rate exceeded"}'
            raw = type("Raw", (), {"stream": lambda self, **k: iter([body])})()
            return AWSResponse("https://scheduler", 429, {"x-amzn-ErrorType":
                                                          "ThrottlingException"}, raw)
        return None

    aws.client("scheduler").meta.events.register("before-send.scheduler.CreateSchedule",
                                                  throttle_first)
    response = api.post("/schedule-task", spec_example())
    assert response.status_code == 201
    assert len(calls) == 2 and len(schedules_in_group()) == 1


def test_rules_arming_failure_leaves_no_rule_and_no_task(rules_mode, api):
    from botocore.exceptions import ClientError

    from chalicelib import aws

    def refuse(**_):
        raise ClientError({"Error": {"Code": "InternalException", "Message": "down"}},
                          "PutTargets")

    aws.client("events").meta.events.register("before-call.events.PutTargets", refuse)
    response = api.post("/schedule-task", spec_example())
    assert response.status_code == 500
    assert task_count() == 0 and rule_names() == []


def test_rules_mode_rearms_a_recurring_task_for_its_next_firing(rules_mode, api, receiver,
                                                                make_task):
    from chalicelib.executor import execute_task

    task = make_task(payload={"url": receiver.url}, run_at="cron(0/5 * * * ? *)",
                     schedule_kind="cron")
    runtime().trigger.arm(task)
    assert execute_task(runtime(), task.task_id).status == "scheduled"
    following = runtime().store.get(task.task_id).next_run_at
    rule = boto3.client("events").describe_rule(Name=f"{config.rule_prefix()}{task.task_id}")
    assert rule["ScheduleExpression"] == (
        f"cron({following.minute} {following.hour} {following.day} {following.month} ? "
        f"{following.year})")
    api.delete(f"/tasks/{task.task_id}")
    assert rule_names() == []


def test_list_searches_names_in_any_case(memory_api):
    named = [memory_api.post("/schedule-task", {**spec_example(), "name": name}).json["task_id"]
             for name in ("Invoice run", "nightly INVOICES", "cleanup")]
    found = memory_api.get("/tasks?name=invoice").json
    assert sorted(task["task_id"] for task in found["tasks"]) == sorted(named[:2])
    assert memory_api.get("/tasks?name=invoice&status=cancelled").json["tasks"] == []
    assert memory_api.get("/tasks?name=" + "x" * 201).json["field"] == "name"


def _preview(api, **query):
    from urllib.parse import urlencode

    return api.get("/preview?" + urlencode(query))


def test_preview_lists_the_next_firings_and_stores_nothing(api):
    body = _preview(api, run_at="cron(0 9 ? * MON-FRI *)", timezone="Europe/Berlin",
                    count=7).json
    assert body["run_at"] == "cron(0 9 ? * MON-FRI *)" and body["recurring"] is True
    assert body["timezone"] == "Europe/Berlin" and len(body["next"]) == 7
    for text in body["next"]:
        moment = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
        from zoneinfo import ZoneInfo
        local = moment.astimezone(ZoneInfo("Europe/Berlin"))
        assert (local.hour, local.minute) == (9, 0) and local.weekday() < 5
    assert body["next"] == sorted(body["next"])
    assert task_count() == 0 and schedules_in_group() == []


def test_preview_of_a_rate_and_of_a_date_time(api):
    rate = _preview(api, run_at="rate(5 minutes)", count=3).json["next"]
    times = [datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ") for t in rate]
    assert [b - a for a, b in zip(times, times[1:])] == [timedelta(minutes=5)] * 2
    once = _preview(api, run_at="2999-01-01T10:00:00+02:00")
    assert once.status_code == 400 and once.json["field"] == "run_at"  # past the horizon
    soon = future(120)
    body = _preview(api, run_at=soon, count=5).json
    assert body == {"run_at": soon, "timezone": "UTC", "recurring": False, "next": [soon]}
    assert _preview(api, run_at="07:30").json["next"][0].endswith("T07:30:00Z")


@pytest.mark.parametrize("query,field", [
    ({}, "run_at"), ({"run_at": ""}, "run_at"), ({"run_at": "tomorrow"}, "run_at"),
    ({"run_at": "2001-01-01T00:00:00Z"}, "run_at"), ({"run_at": "cron(0 9 * * * *)"}, "run_at"),
    ({"run_at": "rate(0 minutes)"}, "run_at"),
    ({"run_at": "rate(5 minutes)", "count": "0"}, "count"),
    ({"run_at": "rate(5 minutes)", "count": "51"}, "count"),
    ({"run_at": "rate(5 minutes)", "count": "five"}, "count"),
    ({"run_at": "rate(5 minutes)", "count": "9" * 5000}, "count"),
    ({"run_at": "rate(" + "9" * 5000 + " minutes)"}, "run_at"),
    ({"run_at": "09:00", "timezone": "Mars/Olympus"}, "timezone"),
    ({"run_at": "2999-01-01T00:00:00Z", "timezone": "Europe/Berlin"}, "timezone"),
])
def test_preview_refuses_what_post_refuses(api, query, field):
    response = _preview(api, **query)
    assert response.status_code == 400, response.json
    assert response.json["field"] == field


@pytest.mark.parametrize("path,param", [
    ("/tasks?stauts=failed", "stauts"), ("/tasks?limit=5&page=2", "page"),
    ("/preview?run_at=09:00&tz=Europe/Berlin", "tz"),
    ("/tasks/00000000-0000-4000-8000-000000000000?verbose=1", "verbose"),
])
def test_unknown_query_parameters_are_refused_naming_them(memory_api, path, param):
    response = memory_api.get(path)
    assert response.status_code == 400, response.json
    assert response.json == {"code": "unknown_parameter", "field": param,
                             "message": response.json["message"]}
    assert param in response.json["message"]


def test_a_finished_task_shows_no_next_run(memory_api):
    task_id = memory_api.post("/schedule-task", spec_example()).json["task_id"]
    assert memory_api.get(f"/tasks/{task_id}").json["next_run_at"] is not None
    assert memory_api.delete(f"/tasks/{task_id}").json["next_run_at"] is None
    assert memory_api.get(f"/tasks/{task_id}").json["next_run_at"] is None
    [listed] = memory_api.get("/tasks?status=cancelled").json["tasks"]
    assert listed["next_run_at"] is None


# ---------------------------------------------------------------- managing tasks: refusals

def _recurring(**extra):
    return {**spec_example(), "run_at": "cron(0 9 * * ? *)", **extra}


def _in_days(days):
    return (utcnow() + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%SZ")


NEW_FIELD_REFUSALS = [
    ("start_at", "tomorrow"), ("start_at", 5), ("end_at", "2001-01-01T00:00:00Z"),
    ("end_at", "2030-02-30T00:00:00Z"), ("max_runs", 0), ("max_runs", 1_000_001),
    ("max_runs", "3"), ("catch_up", "some"), ("catch_up", None), ("overlap", "queue"),
    ("window_minutes", -1), ("window_minutes", 1441), ("window_minutes", 1.5),
    ("tags", ["a"]), ("tags", {"": "x"}), ("tags", {"k" * 129: "x"}),
    ("tags", {"k": "v" * 257}), ("tags", {"k": 1}),
    ("tags", {f"k{i}": "v" for i in range(11)}),
]


@pytest.mark.parametrize("field, value", NEW_FIELD_REFUSALS)
def test_every_bad_value_of_a_new_field_is_a_400_naming_it_and_stores_nothing(
        memory_api, field, value):
    response = memory_api.post("/schedule-task", _recurring(**{field: value}))
    assert response.status_code == 400, response.json
    assert response.json["field"] == field and response.json["message"]
    assert memory_api.get("/tasks").json["tasks"] == []


def test_start_and_end_are_checked_together_and_against_a_one_time_task(memory_api):
    crossed = memory_api.post("/schedule-task", _recurring(start_at=_in_days(3),
                                                           end_at=_in_days(2)))
    assert (crossed.status_code, crossed.json["field"]) == (400, "end_at")
    one_time = memory_api.post("/schedule-task", {**spec_example(), "end_at": _in_days(2)})
    assert (one_time.status_code, one_time.json["field"]) == (400, "end_at")
    assert memory_api.get("/tasks").json["tasks"] == []


@pytest.mark.parametrize("route, body, field", [
    ("pause", {"until": "yesterday"}, "until"), ("pause", {"until": 3}, "until"),
    ("pause", {"until": "2001-01-01T00:00:00Z"}, "until"),
    ("pause", {"until": _in_days(4000)}, "until"), ("pause", {"for": "1h"}, None),
])
def test_bad_bodies_of_the_new_routes_are_a_400_and_change_nothing(memory_api, route, body,
                                                                    field):
    task_id = memory_api.post("/schedule-task", _recurring()).json["task_id"]
    response = memory_api.post(f"/tasks/{task_id}/{route}", body)
    assert response.status_code == 400 and response.json["field"] == field, response.json
    assert memory_api.get(f"/tasks/{task_id}").json["version"] == 1


@pytest.mark.parametrize("method, route", [("PATCH", ""), ("POST", "/pause"),
                                           ("POST", "/resume"), ("POST", "/run"),
                                           ("DELETE", ""), ("POST", "/retry")])
def test_a_bad_if_match_is_a_400_and_an_old_one_a_412_on_every_change(memory_api, method,
                                                                       route):
    task_id = memory_api.post("/schedule-task", _recurring()).json["task_id"]
    memory_api.patch(f"/tasks/{task_id}", {"name": "v2"})
    body = {"name": "x"} if method == "PATCH" else None
    bad = memory_api.request(method, f"/tasks/{task_id}{route}", body,
                             headers={"If-Match": "newest"})
    assert (bad.status_code, bad.json["field"]) == (400, "If-Match")
    old = memory_api.request(method, f"/tasks/{task_id}{route}", body,
                             headers={"If-Match": '"1"'})
    assert (old.status_code, old.json["code"]) == (412, "precondition_failed")
    shown = memory_api.get(f"/tasks/{task_id}")
    assert shown.json["version"] == 2 and shown.headers["ETag"] == '"2"'


@pytest.mark.parametrize("tag", ["team", ":x", "k" * 129 + ":v", "k:" + "v" * 257])
def test_a_bad_tag_filter_is_a_400_on_tag(memory_api, tag):
    response = memory_api.get("/tasks?tag=" + tag)
    assert (response.status_code, response.json["field"]) == (400, "tag")


def test_patch_of_an_unknown_task_is_404_and_of_a_finished_one_409(memory_api):
    missing = memory_api.patch("/tasks/3f0c0000-0000-4000-8000-000000000000", {"name": "x"})
    assert missing.status_code == 404
    task_id = memory_api.post("/schedule-task", _recurring()).json["task_id"]
    memory_api.delete(f"/tasks/{task_id}")
    finished = memory_api.patch(f"/tasks/{task_id}", {"name": "x"})
    assert (finished.status_code, finished.json["code"]) == (409, "not_updated")
