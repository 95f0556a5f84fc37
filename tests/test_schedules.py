"""Time expressions: parsing by AWS's rules and next firings from fixed instants."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chalicelib import schedules
from chalicelib.errors import ValidationError

UTC = timezone.utc
START = datetime(2025, 5, 19, 17, 0, tzinfo=UTC)  # a Monday


def at(text):
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


NEXT = [
    # expression, zone, start, first three firings (UTC)
    ("cron(0 9 * * ? *)", "UTC", START,
     ["2025-05-20T09:00", "2025-05-21T09:00", "2025-05-22T09:00"]),
    ("cron(0/15 * * * ? *)", "UTC", START,
     ["2025-05-19T17:15", "2025-05-19T17:30", "2025-05-19T17:45"]),
    ("cron(*/20 9-10 * * ? *)", "UTC", START,
     ["2025-05-20T09:00", "2025-05-20T09:20", "2025-05-20T09:40"]),
    ("cron(0 18 ? * MON-FRI *)", "UTC", START,
     ["2025-05-19T18:00", "2025-05-20T18:00", "2025-05-21T18:00"]),
    ("cron(0 12 ? * 1 *)", "UTC", START,  # 1 = SUN
     ["2025-05-25T12:00", "2025-06-01T12:00", "2025-06-08T12:00"]),
    ("cron(0 12 ? * SUN,SAT *)", "UTC", START,
     ["2025-05-24T12:00", "2025-05-25T12:00", "2025-05-31T12:00"]),
    ("cron(0 10 ? * 6L *)", "UTC", START,  # last Friday
     ["2025-05-30T10:00", "2025-06-27T10:00", "2025-07-25T10:00"]),
    ("cron(0 0 L * ? *)", "UTC", START,
     ["2025-05-31T00:00", "2025-06-30T00:00", "2025-07-31T00:00"]),
    ("cron(0 8 15W * ? *)", "UTC", START,  # 2025-06-15 is a Sunday
     ["2025-06-16T08:00", "2025-07-15T08:00", "2025-08-15T08:00"]),
    ("cron(0 8 1W * ? *)", "UTC", START,  # 2025-06-01 is a Sunday; 2025-11-01 a Saturday
     ["2025-06-02T08:00", "2025-07-01T08:00", "2025-08-01T08:00"]),
    ("cron(0 9 ? * 2#1 *)", "UTC", START,  # first Monday
     ["2025-06-02T09:00", "2025-07-07T09:00", "2025-08-04T09:00"]),
    ("cron(0 0 29 2 ? *)", "UTC", START,
     ["2028-02-29T00:00", "2032-02-29T00:00", "2036-02-29T00:00"]),
    ("cron(30 6 1 JAN,JUL ? 2026-2027)", "UTC", START,
     ["2026-01-01T06:30", "2026-07-01T06:30", "2027-01-01T06:30"]),
    ("cron(0 9 * * ? *)", "America/New_York", START,
     ["2025-05-20T13:00", "2025-05-21T13:00", "2025-05-22T13:00"]),
    ("cron(30 2 * * ? *)", "America/New_York", at("2025-03-08T00:00"),  # 9 Mar: no 02:30
     ["2025-03-08T07:30", "2025-03-10T06:30", "2025-03-11T06:30"]),
    ("cron(30 1 * * ? *)", "America/New_York", at("2025-11-01T12:00"),  # 2 Nov: 01:30 twice
     ["2025-11-02T05:30", "2025-11-03T06:30", "2025-11-04T06:30"]),
    ("09:30", "Europe/Berlin", START,
     ["2025-05-20T07:30", "2025-05-21T07:30", "2025-05-22T07:30"]),
    ("rate(5 minutes)", "UTC", START,
     ["2025-05-19T17:05", "2025-05-19T17:10", "2025-05-19T17:15"]),
    ("rate(1 hour)", "UTC", START,
     ["2025-05-19T18:00", "2025-05-19T19:00", "2025-05-19T20:00"]),
    ("rate(2 days)", "UTC", START,
     ["2025-05-21T17:00", "2025-05-23T17:00", "2025-05-25T17:00"]),
    # AWS documentation examples
    ("cron(15 10 * * ? *)", "UTC", START,  # 10:15 every day
     ["2025-05-20T10:15", "2025-05-21T10:15", "2025-05-22T10:15"]),
    ("cron(0/10 * ? * MON-FRI *)", "UTC", at("2025-05-23T23:55"),  # every 10 min weekdays
     ["2025-05-26T00:00", "2025-05-26T00:10", "2025-05-26T00:20"]),
    ("cron(0/5 8-17 ? * MON-FRI *)", "UTC", at("2025-05-19T17:56"),
     ["2025-05-20T08:00", "2025-05-20T08:05", "2025-05-20T08:10"]),
    ("cron(0 9 ? * 2#1 *)", "UTC", at("2025-09-01T09:00"),  # 1 Sep 2025 was that Monday
     ["2025-10-06T09:00", "2025-11-03T09:00", "2025-12-01T09:00"]),
    ("cron(0 12 * * ? *)", "UTC", START,
     ["2025-05-20T12:00", "2025-05-21T12:00", "2025-05-22T12:00"]),
    ("cron(0 18 ? * MON-FRI *)", "UTC", at("2025-05-23T18:00"),  # Friday after 18:00
     ["2025-05-26T18:00", "2025-05-27T18:00", "2025-05-28T18:00"]),
    ("cron(0 8 1 * ? *)", "UTC", START,
     ["2025-06-01T08:00", "2025-07-01T08:00", "2025-08-01T08:00"]),
    # names, lists, ranges, steps
    ("cron(0 6 ? JAN,JUN-JUL MON *)", "UTC", START,
     ["2025-06-02T06:00", "2025-06-09T06:00", "2025-06-16T06:00"]),
    ("cron(0 0 1 */4 ? *)", "UTC", START,  # months 1, 5, 9
     ["2025-09-01T00:00", "2026-01-01T00:00", "2026-05-01T00:00"]),
    ("cron(5,35 14 * * ? *)", "UTC", START,
     ["2025-05-20T14:05", "2025-05-20T14:35", "2025-05-21T14:05"]),
    ("cron(0 3 ? * sat,SUN *)", "UTC", START,  # names are case-insensitive
     ["2025-05-24T03:00", "2025-05-25T03:00", "2025-05-31T03:00"]),
    ("cron(0 0 10-12 * ? *)", "UTC", at("2025-05-11T12:00"),
     ["2025-05-12T00:00", "2025-06-10T00:00", "2025-06-11T00:00"]),
    ("cron(59 23 31 DEC ? *)", "UTC", START,
     ["2025-12-31T23:59", "2026-12-31T23:59", "2027-12-31T23:59"]),
    # L, W, # at month edges
    ("cron(0 0 L 2 ? *)", "UTC", START,  # last day of February, leap years included
     ["2026-02-28T00:00", "2027-02-28T00:00", "2028-02-29T00:00"]),
    ("cron(0 0 31 * ? *)", "UTC", START,  # only months that have a 31st
     ["2025-05-31T00:00", "2025-07-31T00:00", "2025-08-31T00:00"]),
    ("cron(0 9 1W * ? 2025)", "UTC", at("2025-02-15T00:00"),  # 1 Mar 2025 is a Saturday
     ["2025-03-03T09:00", "2025-04-01T09:00", "2025-05-01T09:00"]),
    ("cron(0 9 31W * ? *)", "UTC", at("2025-08-01T00:00"),  # 31 Aug 2025 is a Sunday
     ["2025-08-29T09:00", "2025-10-31T09:00", "2025-12-31T09:00"]),
    ("cron(0 9 LW * ? *)", "UTC", at("2025-05-01T00:00"),  # last weekday of the month
     ["2025-05-30T09:00", "2025-06-30T09:00", "2025-07-31T09:00"]),
    ("cron(0 9 ? * 1L *)", "UTC", START,  # last Sunday
     ["2025-05-25T09:00", "2025-06-29T09:00", "2025-07-27T09:00"]),
    ("cron(0 9 ? * 6#5 *)", "UTC", START,  # fifth Friday: only some months have one
     ["2025-05-30T09:00", "2025-08-29T09:00", "2025-10-31T09:00"]),
    ("cron(0 9 ? * FRI#3 *)", "UTC", START,
     ["2025-06-20T09:00", "2025-07-18T09:00", "2025-08-15T09:00"]),
    # the year field and its bounds
    ("cron(0 0 1 1 ? 2027,2030)", "UTC", START,
     ["2027-01-01T00:00", "2030-01-01T00:00"]),
    ("cron(0 0 1 1 ? 2199)", "UTC", START, ["2199-01-01T00:00"]),
    ("cron(0 12 29 2 ? 2025-2028)", "UTC", START, ["2028-02-29T12:00"]),
    # DST: the AWS rule - a local time that does not exist is skipped, one that happens
    # twice runs once
    ("cron(30 2 * * ? *)", "Europe/Berlin", at("2025-03-29T00:00"),  # 30 Mar: no 02:30
     ["2025-03-29T01:30", "2025-03-31T00:30", "2025-04-01T00:30"]),
    ("cron(30 2 * * ? *)", "Europe/Berlin", at("2025-10-25T00:00"),  # 26 Oct: 02:30 twice
     ["2025-10-25T00:30", "2025-10-26T00:30", "2025-10-27T01:30"]),
    ("09:00", "America/New_York", at("2025-03-08T00:00"),  # 9 Mar: EST -> EDT
     ["2025-03-08T14:00", "2025-03-09T13:00", "2025-03-10T13:00"]),
    ("09:00", "America/New_York", at("2025-11-01T00:00"),  # 2 Nov: EDT -> EST
     ["2025-11-01T13:00", "2025-11-02T14:00", "2025-11-03T14:00"]),
    ("cron(0 * * * ? *)", "Europe/Berlin", at("2025-10-25T23:30"),  # hourly through fall back
     ["2025-10-26T00:00", "2025-10-26T02:00", "2025-10-26T03:00"]),
    ("cron(0 0 * * ? *)", "Asia/Kolkata", START,  # a half-hour offset
     ["2025-05-19T18:30", "2025-05-20T18:30", "2025-05-21T18:30"]),
    # Ranges that wrap around the end of their field (documented for hours; the other
    # fields as in Quartz, whose cron EventBridge's is: only the year refuses to wrap)
    ("cron(0/30 20-2 ? * MON-FRI *)", "UTC", at("2025-05-19T23:00"),  # AWS's own example
     ["2025-05-19T23:30", "2025-05-20T00:00", "2025-05-20T00:30"]),
    ("cron(0/30 20-2 ? * MON-FRI *)", "UTC", at("2025-05-20T02:00"),  # 02:30 is in hour 2
     ["2025-05-20T02:30", "2025-05-20T20:00", "2025-05-20T20:30"]),
    ("cron(0/30 20-2 ? * MON-FRI *)", "UTC", at("2025-05-23T23:45"),  # fields, not spans:
     ["2025-05-26T00:00", "2025-05-26T00:30", "2025-05-26T01:00"]),  # no Saturday 00:00
    ("cron(0 9 ? * FRI-MON *)", "UTC", START,  # FRI, SAT, SUN, MON
     ["2025-05-23T09:00", "2025-05-24T09:00", "2025-05-25T09:00"]),
    ("cron(0 9 ? * 7-1 *)", "UTC", START,  # SAT-SUN
     ["2025-05-24T09:00", "2025-05-25T09:00", "2025-05-31T09:00"]),
    ("cron(0 0 1 NOV-FEB ? *)", "UTC", START,
     ["2025-11-01T00:00", "2025-12-01T00:00", "2026-01-01T00:00"]),
    ("cron(50-10/10 9 * * ? *)", "UTC", START,  # 50, 0, 10: the step runs across the wrap
     ["2025-05-20T09:00", "2025-05-20T09:10", "2025-05-20T09:50"]),
    ("cron(0 0 30-2 * ? *)", "UTC", START,  # 30, 31, 1, 2 (modulo 31, as Quartz)
     ["2025-05-30T00:00", "2025-05-31T00:00", "2025-06-01T00:00"]),
    ("cron(0 22-1/2 * * ? *)", "UTC", START,  # 22, 0
     ["2025-05-19T22:00", "2025-05-20T00:00", "2025-05-20T22:00"]),
    # rates count from creation, whatever the start
    ("rate(1 minute)", "UTC", at("2025-05-19T17:00:30"),
     ["2025-05-19T17:01", "2025-05-19T17:02", "2025-05-19T17:03"]),
    ("rate(90 minutes)", "UTC", at("2025-05-20T00:00"),  # 18:30, 20:00, ... from 17:00
     ["2025-05-20T00:30", "2025-05-20T02:00", "2025-05-20T03:30"]),
    ("rate(12 hours)", "UTC", at("2025-05-19T16:59"),  # creation itself is no firing
     ["2025-05-20T05:00", "2025-05-20T17:00", "2025-05-21T05:00"]),
]


@pytest.mark.parametrize("expression,zone,start,expected", NEXT,
                         ids=[f"{c[0]} {c[1]}" for c in NEXT])
def test_next_firings(expression, zone, start, expected):
    schedule = schedules.parse(expression, ZoneInfo(zone), anchor=START)
    assert schedule.upcoming(start, len(expected) + 1)[:3] == [at(text) for text in expected]
    if len(expected) < 3:
        assert schedule.upcoming(start, 3) == [at(text) for text in expected]  # no more


def test_cron_with_no_future_firing_ends():
    schedule = schedules.parse("cron(0 9 * * ? 2025)", ZoneInfo("UTC"), anchor=START)
    assert schedule.next_after(at("2025-12-31T09:00")) is None
    with pytest.raises(ValidationError, match="no future firing"):
        schedules.validate_new(schedule, at("2026-01-01T00:00"), 365)


@pytest.mark.parametrize("expression,fragment", [
    ("cron(0 9 * * * *)", "exactly one of day-of-month and day-of-week"),
    ("cron(0 9 ? * ? *)", "exactly one of day-of-month and day-of-week"),
    ("cron(0 9 * *)", "six fields"),
    ("cron(0 24 * * ? *)", "out of range in hours"),
    ("cron(0 9 32 * ? *)", "out of range in day-of-month"),
    ("cron(0 9 ? 13 MON *)", "out of range in month"),
    ("cron(0 9 ? * 8 *)", "1 = SUN ... 7 = SAT"),
    ("cron(0 9 * * ? 1969)", "out of range in year"),
    ("cron(0 9 ? * MON/2 *)", "not allowed in day-of-week"),
    ("cron(0 9 ? * 2#0 *)", "after # must be 1-5"),
    # AWS: "If you use a '#' character, you can define only one expression in the
    # day-of-week field. For example, "3#1,6#3" is not valid"
    ("cron(0 0 ? * 3#1,6#3 *)", "with '#' day-of-week holds one expression only"),
    ("cron(0 0 ? * 2#1,3 *)", "with '#' day-of-week holds one expression only"),
    ("cron(0 0 ? * MON,FRI#2 *)", "with '#' day-of-week holds one expression only"),
    ("cron(0 0 ? * 2#1#2 *)", "after # must be 1-5"),
    ("cron(0 9 LW5 * ? *)", "day-of-month"),
    ("cron(0 9 * * ? 2030-2025)", "the range '2030-2025' in year runs backwards"),
    ("cron(0/0 9 * * ? *)", "step"),
    ("cron(0 ? * * ? *)", "'?' is allowed only"),
    ("cron(0 9 * FOO ? *)", "'FOO' is not a valid value in month"),
    # the first bad field is named before the day fields' '?' rule is checked
    ("cron(a b c d e f)", "'a' is not a valid value in minutes"),
    ("cron(0 b c d e f)", "'b' is not a valid value in hours"),
    ("cron(0 9 c * * *)", "'c' is not a valid value in day-of-month"),
    ("cron(0 9 * JANUARY * *)", "'JANUARY' is not a valid value in month"),
    ("cron(0 9 * * MONDAY *)", "'MONDAY' is not a valid value in day-of-week"),
    ("cron(0 9 * * * 20x5)", "'20x5' is not a valid value in year"),
    ("cron(0 9 * * * 2200)", "out of range in year"),
    ("cron(0 ? * * * *)", "'?' is allowed only in day-of-month or day-of-week, not in hours"),
    ("cron(0 9 ?,1 * ? *)", "'?' in day-of-month stands alone"),
    ("cron(0 9 ? * monday *)", "'monday' is not a valid value in day-of-week"),  # as typed
    ("rate(30 seconds)", "under one minute"),
    ("rate(5)", "rate(value unit)"),
    ("rate(-5 minutes)", "positive whole number"),
    ("rate(1 minutes)", "singular"),
    ("rate(5 minute)", "plural"),
    ("rate(3 weeks)", "minute(s), hour(s) or day(s)"),
    ("24:30", "HH:MM"),
    ("2025-05-19", "ISO 8601"),
    ("2025-05-19T17:56:00+25:00", "offset"),
])
def test_invalid_expressions_say_what_is_wrong(expression, fragment):
    with pytest.raises(ValidationError) as error:
        schedules.parse(expression, ZoneInfo("UTC"), anchor=START)
    assert fragment in error.value.message
    assert error.value.field == "run_at"


@pytest.mark.parametrize("text,expected", [
    ("2025-05-19T17:56:00Z", "2025-05-19T17:56:00"),
    ("2025-05-19T17:56:00", "2025-05-19T17:56:00"),  # no offset means UTC
    ("2025-05-19T19:56:00+02:00", "2025-05-19T17:56:00"),
    ("2025-05-19T12:56:00-0500", "2025-05-19T17:56:00"),
    ("2025-05-19T17:56Z", "2025-05-19T17:56:00"),
    ("2025-05-19 17:56:00Z", "2025-05-19T17:56:00"),
    ("2025-05-19T17:56:00.000Z", "2025-05-19T17:56:00"),
    ("2025-05-19T17:56:00.001Z", "2025-05-19T17:56:01"),  # never early
    ("2025-05-19T17:56:59.999999999Z", "2025-05-19T17:57:00"),
])
def test_iso_forms(text, expected):
    assert schedules.parse(text, ZoneInfo("UTC"), anchor=START).at == at(expected)


def test_one_time_must_be_future_and_within_horizon():
    now = at("2025-05-19T17:56:00")
    for text in ("2025-05-19T17:56:00Z", "2025-05-19T17:55:59Z"):
        with pytest.raises(ValidationError, match="not in the future"):
            schedules.validate_new(schedules.parse_iso(text), now, 365)
    assert schedules.validate_new(schedules.parse_iso("2025-05-19T17:56:01Z"), now, 365) == \
        at("2025-05-19T17:56:01")
    limit = now + timedelta(days=365)
    assert schedules.validate_new(schedules.OneTime(at=limit), now, 365) == limit
    with pytest.raises(ValidationError, match="MAX_HORIZON_DAYS"):
        schedules.validate_new(schedules.OneTime(at=limit + timedelta(seconds=1)), now, 365)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../../etc/passwd", 5])
def test_bad_time_zone(name):
    with pytest.raises(ValidationError) as error:
        schedules.parse_timezone(name)
    assert error.value.field == "timezone"


@pytest.mark.parametrize("expression,zone,aws", [
    ("2025-05-19T17:56:00Z", "UTC", ("at(2025-05-19T17:56:00)", "UTC")),
    ("cron(0 9 ? * 2-6 *)", "Asia/Tokyo", ("cron(0 9 ? * 2-6 *)", "Asia/Tokyo")),
    ("rate(1 day)", "UTC", ("rate(1 day)", "UTC")),
    ("7:05", "Europe/Paris", ("cron(5 7 * * ? *)", "Europe/Paris")),
])
def test_aws_expressions(expression, zone, aws):
    assert schedules.parse(expression, ZoneInfo(zone), anchor=START).aws_expression() == aws


LONG_CRON = "cron({} 9 * * ? {})".format(",".join(str(m) for m in range(60)),
                                         ",".join(str(y) for y in range(2030, 2050)))


@pytest.mark.parametrize("typed,stored", [
    ("CRON(0 9 ? * MON-FRI *)", "cron(0 9 ? * MON-FRI *)"),
    ("cron(0  9 ? *   MON-FRI *)", "cron(0 9 ? * MON-FRI *)"),
    ("Cron( 0 9 ? * mon-fri * )", "cron(0 9 ? * MON-FRI *)"),
    ("cron(0\t9 ? * 2#1 *)", "cron(0 9 ? * 2#1 *)"),
    ("cron(0 9\n* * ? *)", "cron(0 9 * * ? *)"),
    ("cron(0 9 lw jan,jul ? *)", "cron(0 9 LW JAN,JUL ? *)"),
    ("cron(0 3 ? * sat,SUN *)", "cron(0 3 ? * SAT,SUN *)"),
    ("RATE(5 MINUTES)", "rate(5 minutes)"),
    ("rate(5  minutes)", "rate(5 minutes)"),
    ("Rate( 1 Hour )", "rate(1 hour)"),
    ("rate(05 minutes)", "rate(5 minutes)"),
    ("rate(2\ndays)", "rate(2 days)"),
])
def test_expressions_are_kept_in_the_form_sent_to_aws(typed, stored):
    # EventBridge documents cron(fields) and rate(value unit), lower case, fields separated
    # by white space; what is stored and echoed is exactly what is sent.
    schedule = schedules.parse(typed, ZoneInfo("UTC"), anchor=START)
    assert schedule.text == stored
    assert schedule.aws_expression()[0] == stored
    again = schedules.parse(stored, ZoneInfo("UTC"), anchor=START)
    assert again.text == stored and again.upcoming(START, 3) == schedule.upcoming(START, 3)


def test_daily_time_is_kept_as_typed():
    schedule = schedules.parse("9:30", ZoneInfo("UTC"), anchor=START)
    assert schedule.text == "9:30" and schedule.aws_expression()[0] == "cron(30 9 * * ? *)"


def test_expression_longer_than_eventbridge_accepts():
    assert len(LONG_CRON) > 256
    with pytest.raises(ValidationError, match="at most 256 characters"):
        schedules.parse(LONG_CRON, ZoneInfo("UTC"), anchor=START)


@pytest.mark.parametrize("typed", ["cron(0 9 ? * ſun *)", "cron(0 9 ? * 5ﬂ *)",
                                   "cron(0 9 ? * frı *)"])
def test_non_ascii_look_alikes_are_refused(typed):
    # 'ſ'.upper() == 'S', 'ﬂ'.upper() == 'FL', 'ı'.upper() == 'I'
    with pytest.raises(ValidationError, match="not a valid value in day-of-week"):
        schedules.parse(typed, ZoneInfo("UTC"), anchor=START)


HUGE = 100_000


@pytest.mark.parametrize("typed", [
    "cron(" + "a" * HUGE + " * * * ? *)",
    "cron(0 " + "9" * HUGE + " * * ? *)",
    "cron(0 9 " + "1," * HUGE + "2 * ? *)",
    "cron(0 9 " + "1-2/" * HUGE + " * ? *)",
    "cron(0 9 ? * " + "2#1," * HUGE + " *)",
    "cron(0 9 ? * " + "é" * HUGE + " *)",
    "cron(0 9 ? * MON *" + " *" * HUGE + ")",
    "cron(0 9 * * ? *" + "x" * HUGE,
    "cron({} 9 * * ? *)".format(",".join(str(m % 60) for m in range(HUGE))),
    "rate(" + "5" * HUGE + " minutes)",
    "rate(5 " + "minute" * HUGE + ")",
    "x" * HUGE,
    "2025-13-01T00:00:00Z" + " " * HUGE + "!",
])
def test_messages_quote_long_input_briefly(typed):
    with pytest.raises(ValidationError) as error:
        schedules.parse(typed, ZoneInfo("UTC"), anchor=START)
    assert len(error.value.message) < 300, error.value.message[:400]
    assert error.value.field == "run_at"


def test_time_zone_message_quotes_long_input_briefly():
    with pytest.raises(ValidationError) as error:
        schedules.parse_timezone("Mars/" + "x" * HUGE)
    assert len(error.value.message) < 300 and "Mars/x" in error.value.message


JUNK = ["0", "9", "60", "*", "?", "L", "W", "#", "/", "-", ",", "MON", "jan", "\u00b2",
        "\u017fun", "\ufb02", "(", ")", "\u0661"]
VALUES = [  # per field: values in range (names in any case), and a few just outside it
    (["0", "7", "30", "59"], ["60"]),
    (["0", "2", "20", "23"], ["24"]),
    (["1", "15", "28", "30", "31"], ["0", "32"]),
    (["1", "2", "11", "12", "JAN", "nov", "Feb"], ["0", "13"]),
    (["1", "2", "6", "7", "MON", "fri", "SUN"], ["0", "8"]),
    (["2025", "2026", "2030", "2199"], ["1969", "2200"]),
]
SPECIALS = [[], [], ["L", "LW", "lw", "15W", "1W", "31W", "32W", "L-3"], [],
            ["L", "6L", "1l", "2#1", "6#5", "2#6", "MON#2"], []]


def cron_field(index):
    """Mostly well-formed values of one field, some out of range, now and then junk."""
    valid, wrong = VALUES[index]
    atom = st.sampled_from(valid * 6 + wrong)
    step = st.sampled_from(["1", "2", "5", "15", "30", "0"] if index != 4 else ["2"])
    span = st.tuples(atom, atom).map("-".join)
    item = st.one_of(atom, st.sampled_from(["*"] + SPECIALS[index]), span,
                     st.tuples(st.one_of(atom, st.just("*"), span), step).map("/".join))
    field = st.lists(item, min_size=1, max_size=2).map(",".join)
    junk = st.lists(st.sampled_from(JUNK), min_size=1, max_size=4).map("".join)
    return st.one_of(*[field] * 19, junk)


FIELDS = [cron_field(index) for index in range(6)]
SEPARATOR = st.sampled_from([" ", " ", " ", "  ", "\t", " \n ", "\u00a0"])


@st.composite
def cron_bodies(draw):
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(max_size=40))  # anything at all
    count = draw(st.sampled_from([6] * 18 + [5, 7]))
    question = draw(st.sampled_from([(2,), (4,)] * 9 + [(), (2, 4)]))  # day fields that are ?
    fields = ["?" if index in question else draw(FIELDS[index % 6]) for index in range(count)]
    return "".join(draw(SEPARATOR) + field for field in fields)


@settings(max_examples=300, deadline=None, database=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(body=cron_bodies(), prefix=st.sampled_from(["cron", "CRON", "Cron"]))
def test_any_cron_text_parses_or_is_a_validation_error(body, prefix):
    typed = f"{prefix}({body})"
    try:
        schedule = schedules.parse(typed, ZoneInfo("Europe/Berlin"), anchor=START)
    except ValidationError as error:
        assert error.field == "run_at" and len(error.message) < 300
        return
    # It parsed: what is stored is what AWS gets, within its limit, and reads back the same.
    expression = schedule.aws_expression()[0]
    assert schedule.text == expression and len(expression) <= 256 and expression.isascii()
    assert schedules.parse(expression, ZoneInfo("Europe/Berlin"), anchor=START).text == \
        expression
    schedule.upcoming(START, 2)

