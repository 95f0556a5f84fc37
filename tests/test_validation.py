"""Every parse of user input ends in a task or a 4xx naming the field: generated bodies.

Hypothesis builds request bodies near the valid shape (right field names, wrong or odd
values: malformed URLs, broken cron, wrong types, unknown keys) and the parsers must answer
each with a SchedulerError of a 4xx status, never another exception. Examples are
derandomized, so CI runs the same thousands every time; set HYPOTHESIS_RANDOM=1 to explore.
"""
import json
import os
from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import validation
from chalicelib.errors import SchedulerError
from tests.test_api import spec_example

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)
FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "1500")), deadline=None,
                database=None, derandomize=not os.environ.get("HYPOTHESIS_RANDOM"),
                suppress_health_check=[HealthCheck.too_slow])

json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20),
                         st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8)
URL_PIECES = st.sampled_from(["http://", "https://", "ftp://", "//", "[", "]", "[::1", "::",
                              "zz", "example.com", "127.0.0.1", ":", ":99999", "@", "/x", "?",
                              "#", "%", "%zz", "\u3002", "\uff11", "xn--", ".", " ", "\\",
                              "\x00", "a[b]", "localhost", "\u00fc", "user:pw@"])
urls = st.one_of(st.lists(URL_PIECES, min_size=1, max_size=7).map("".join),
                 st.text(max_size=40), json_values)
CRON_PIECES = st.sampled_from(["*", "?", "0", "59", "60", "1-5", "20-2", "0/15", "*/5", "L",
                               "LW", "15W", "6L", "2#1", "3#1,6#3", "MON-FRI", "JAN", "FRI-MON",
                               "a", ",", "-", "/", "#", "", "2199", "1969", "9" * 30])
crons = st.lists(CRON_PIECES, min_size=0, max_size=8).map(
    lambda parts: f"cron({' '.join(parts)})")
rates = st.tuples(st.sampled_from(["0", "1", "5", "-1", "x", "1.5", "9" * 25, ""]),
                  st.sampled_from(["minute", "minutes", "hour", "hours", "day", "days", "week",
                                   ""])).map(lambda pair: f"rate({pair[0]} {pair[1]})")
ISO = st.sampled_from(["2026-11-26T13:00:00Z", "2026-11-26T13:00:00+01:00", "2026-02-30T00:00:00Z",
                       "2026-11-26T25:00:00Z", "2026-11-26T13:00:00.123456789Z", "9999-12-31T23:59:59Z",
                       "0001-01-01T00:00:00Z", "2026-11-26", "13:00", "24:00", "7:5", "T", ""])
run_ats = st.one_of(crons, rates, ISO, st.text(max_size=30), json_scalars)
headers = st.one_of(st.dictionaries(st.text(max_size=12), st.text(max_size=12), max_size=3),
                    json_values)
webhook_payloads = st.fixed_dictionaries({"url": urls}, optional={
    "data": json_values, "method": st.one_of(st.sampled_from(["POST", "get", "TRACE", ""]),
                                             json_scalars),
    "headers": headers, "timeout": json_scalars, "extra": json_values})
AWS_FIELDS = ["queue_url", "message", "delay_seconds", "group_id", "topic_arn", "subject",
              "attributes", "function_name", "payload", "event_bus", "source", "detail_type",
              "detail"]
other_payloads = st.dictionaries(st.sampled_from(AWS_FIELDS + ["message", "data"]),
                                 st.one_of(json_values, urls), max_size=4)
TAG_TEXT = st.one_of(st.text(max_size=5), st.just("k" * 129), st.just("v" * 257), st.just(""))
LIFECYCLE_FIELDS = {
    "start_at": st.one_of(ISO, json_scalars), "end_at": st.one_of(ISO, json_scalars),
    "max_runs": st.one_of(st.sampled_from([0, 1, 1_000_000, 1_000_001, -1]), json_scalars),
    "catch_up": st.one_of(st.sampled_from(["latest", "none", "all", "ALL"]), json_scalars),
    "overlap": st.one_of(st.sampled_from(["skip", "buffer_one", "queue"]), json_scalars),
    "window_minutes": st.one_of(st.sampled_from([0, 1, 1440, 1441]), json_scalars),
    "tags": st.one_of(st.dictionaries(TAG_TEXT, st.one_of(TAG_TEXT, json_scalars),
                                      max_size=12), json_values),
}
bodies = st.fixed_dictionaries(
    {"action": st.one_of(st.sampled_from(["webhook", "log", "sqs", "sns", "lambda",
                                          "eventbridge", "nope", ""]), json_scalars),
     "payload": st.one_of(webhook_payloads, other_payloads, json_values),
     "run_at": run_ats},
    optional={"timezone": st.one_of(st.sampled_from(["UTC", "Europe/Berlin", "Mars/Base",
                                                     "../etc", ""]), json_scalars),
              "name": json_scalars, "priority": json_scalars, "max_attempts": json_scalars,
              "notify": json_scalars, "unknown": json_values, **LIFECYCLE_FIELDS})


def _parse_body(body) -> None:
    raw = json.dumps(body).encode()
    validation.parse_new_task(validation.parse_json_body(raw), NOW)


def _assert_client_error(call, *args) -> None:
    try:
        call(*args)
    except SchedulerError as error:
        assert 400 <= error.status < 500, error.body()
        assert error.message


@FUZZ
@given(bodies)
def test_generated_bodies_are_a_task_or_a_4xx(body):
    _assert_client_error(_parse_body, body)


@FUZZ
@given(urls)
def test_generated_webhook_urls_are_accepted_or_a_400_on_the_url(url):
    body = spec_example(url=url, run_at="2026-11-26T13:00:00Z")
    try:
        _parse_body(body)
    except SchedulerError as error:
        assert error.status == 400 and error.field == "payload.url", error.body()


@FUZZ
@given(st.dictionaries(st.sampled_from(["run_at", "timezone", "count"]),
                       st.one_of(run_ats.filter(lambda v: isinstance(v, str)),
                                 st.text(max_size=10)), max_size=3))
def test_generated_preview_queries_are_an_answer_or_a_4xx(params):
    _assert_client_error(validation.parse_preview, params, NOW)


@FUZZ
@given(st.dictionaries(st.sampled_from(["status", "name", "limit", "next_token", "tag"]),
                       st.text(max_size=30), max_size=4))
def test_generated_list_queries_are_an_answer_or_a_4xx(params):
    _assert_client_error(validation.parse_list_query, params)


changes = st.fixed_dictionaries({}, optional={
    "run_at": run_ats, "timezone": st.one_of(st.sampled_from(["UTC", "Asia/Tokyo", "Mars/X"]),
                                             json_scalars),
    "payload": st.one_of(st.fixed_dictionaries({"message": json_scalars}), json_values),
    "action": json_scalars, "name": json_scalars, "priority": json_scalars,
    "unknown": json_values, **LIFECYCLE_FIELDS})


@FUZZ
@given(changes, st.sampled_from(["scheduled", "paused", "retrying"]))
def test_generated_patches_are_a_changed_task_or_a_4xx_that_changes_nothing(change, status):
    from dataclasses import replace

    from chalicelib import service
    from chalicelib.models import Clock
    from chalicelib.store.memory import InMemoryTaskStore
    from chalicelib.wiring import Runtime
    from tests.conftest import RecordingTrigger

    rt = Runtime(InMemoryTaskStore(), RecordingTrigger(), Clock(now=lambda: NOW))
    created, _ = service.schedule_task(rt, {"action": "log", "payload": {"message": "x"},
                                            "run_at": "cron(0 * * * ? *)"})
    stored = rt.store.get(created["task_id"])
    stored = rt.store.update(replace(stored, status=status), stored.version)
    try:
        after = service.update_task(rt, stored.task_id, json.dumps(change).encode())
    except SchedulerError as error:
        assert 400 <= error.status < 500, error.body()
        assert rt.store.get(stored.task_id) == stored
        return
    assert after["version"] == stored.version + 1 and after["status"] in (status, "scheduled")


@FUZZ
@given(st.one_of(st.fixed_dictionaries({"until": st.one_of(ISO, json_values)}), json_values))
def test_generated_pause_bodies_are_a_time_or_a_4xx(body):
    _assert_client_error(validation.parse_pause, json.dumps(body).encode(), NOW)


@pytest.mark.parametrize("url", ["http://[zz]/x", "http://[::1/x", "http://]/x", "http://a[b]/x",
                                 "https://[]/", "http://[::1]]/x"])
def test_malformed_urls_are_a_400_on_the_url(memory_api, url):
    response = memory_api.post("/schedule-task", spec_example(url=url))
    assert response.status_code == 400, response.json
    assert response.json["field"] == "payload.url"


@settings(max_examples=150, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(bodies)
def test_generated_bodies_through_the_api_never_answer_5xx(memory_api, body):
    response = memory_api.post("/schedule-task", body)
    assert response.status_code < 500, (body, response.json)
    if response.status_code >= 400:
        assert set(response.json) == {"code", "message", "field"}
