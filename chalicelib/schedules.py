"""Time expressions: one-time ISO date-times, AWS cron() and rate(), and daily HH:MM.

Parsing follows EventBridge's own rules (six cron fields, day-of-week 1-7 = SUN-SAT,
exactly one of day-of-month / day-of-week is `?`, L, W, #, years 1970-2199, rates of at
least one minute). A range may wrap around its field's end (hours 20-2, FRI-MON), as
AWS's example cron(0/30 20-2 ? * MON-FRI *) and Quartz do; a year range may not. Next
firings are computed here, not by AWS, because moto never fires schedules, the local
trigger needs them, and GET shows the upcoming ones.
"""
import calendar
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import FrozenSet, Iterator, List, Optional, Tuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from chalicelib.errors import ValidationError, shown

UTC = timezone.utc
FIELD = "run_at"

ONCE, CRON, RATE, DAILY = "once", "cron", "rate", "daily"

MONTH_NAMES = {name: i for i, name in enumerate(
    ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"], 1)}
DAY_NAMES = {name: i for i, name in enumerate(
    ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"], 1)}

_ISO = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?"
    r"(Z|[+-]\d{2}:?\d{2})?$",
    re.IGNORECASE | re.ASCII,
)
_HHMM = re.compile(r"^(\d{1,2}):(\d{2})$", re.ASCII)
# Any case and any white space are accepted; what is stored, echoed and sent to AWS is the
# form AWS documents: cron(f1 f2 f3 f4 f5 f6) and rate(value unit), in lower case, one
# space between fields, names and L/W upper case.
_RATE = re.compile(r"^rate\((.*)\)$", re.IGNORECASE | re.DOTALL)
_CRON = re.compile(r"^cron\((.*)\)$", re.IGNORECASE | re.DOTALL)
_RATE_UNITS = {"minute": 60, "hour": 3600, "day": 86400}
MAX_RATE_SECONDS = 3650 * 86400  # ten years: anything longer is a typo, not a schedule
MAX_EXPRESSION = 256  # ScheduleExpression's length limit in EventBridge Scheduler and rules


def is_number(text: str) -> bool:
    """At most 18 ASCII digits (str.isdigit also accepts '²' and other digits int() refuses,
    and int() refuses more than 4,300 digits; no field here needs more than 18)."""
    return len(text) <= 18 and text.isascii() and text.isdigit()


def invalid(message: str) -> ValidationError:
    """A run_at validation error."""
    return ValidationError(message, field=FIELD, code="invalid_run_at")


class Schedule:
    """When a task fires. Subclasses answer next_after and the AWS expression."""

    kind: str = ""
    text: str = ""
    tz: ZoneInfo = ZoneInfo("UTC")

    def next_after(self, moment: datetime) -> Optional[datetime]:
        """First firing strictly after moment (UTC), or None when there is none."""
        raise NotImplementedError

    def aws_expression(self) -> Tuple[str, str]:
        """(ScheduleExpression, ScheduleExpressionTimezone) for EventBridge Scheduler."""
        raise NotImplementedError

    @property
    def recurring(self) -> bool:
        """Whether the schedule fires more than once."""
        return self.kind != ONCE

    def upcoming(self, after: datetime, count: int) -> List[datetime]:
        """The next count firings strictly after `after`."""
        found: List[datetime] = []
        moment = after
        while len(found) < count:
            nxt = self.next_after(moment)
            if nxt is None:
                break
            found.append(nxt)
            moment = nxt
        return found


@dataclass
class OneTime(Schedule):
    """A single firing at a UTC instant (whole seconds)."""

    at: datetime
    text: str = ""
    kind: str = ONCE

    def next_after(self, moment: datetime) -> Optional[datetime]:
        return self.at if self.at > moment else None

    def aws_expression(self) -> Tuple[str, str]:
        return f"at({self.at.strftime('%Y-%m-%dT%H:%M:%S')})", "UTC"


@dataclass
class Rate(Schedule):
    """Every `seconds`, counted from `anchor` (the task's creation)."""

    value: int
    unit: str
    anchor: datetime
    text: str = ""
    kind: str = RATE
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))

    @property
    def period(self) -> timedelta:
        """Interval between firings."""
        return timedelta(seconds=self.value * _RATE_UNITS[self.unit])

    def next_after(self, moment: datetime) -> Optional[datetime]:
        if moment < self.anchor:
            return self.anchor + self.period
        elapsed = (moment - self.anchor) // self.period
        return self.anchor + (elapsed + 1) * self.period

    def aws_expression(self) -> Tuple[str, str]:
        unit = self.unit if self.value == 1 else self.unit + "s"
        return f"rate({self.value} {unit})", "UTC"


@dataclass
class DayOfMonth:
    """The day-of-month field: plain days, L (last day), LW, and nW (nearest weekday)."""

    days: FrozenSet[int] = frozenset()
    last: bool = False
    last_weekday: bool = False
    nearest_weekday: FrozenSet[int] = frozenset()

    def matches(self, year: int, month: int, day: int) -> bool:
        """Whether the date is selected by this field."""
        length = calendar.monthrange(year, month)[1]
        if day in self.days:
            return True
        if self.last and day == length:
            return True
        if self.last_weekday and day == _nearest_weekday(year, month, length, length):
            return True
        return any(n <= length and day == _nearest_weekday(year, month, n, length)
                   for n in self.nearest_weekday)


@dataclass
class DayOfWeek:
    """The day-of-week field (1-7 = SUN-SAT): plain days, nL (last in month), n#k (k-th)."""

    days: FrozenSet[int] = frozenset()
    last: FrozenSet[int] = frozenset()
    nth: FrozenSet[Tuple[int, int]] = frozenset()

    def matches(self, year: int, month: int, day: int) -> bool:
        """Whether the date is selected by this field."""
        weekday = aws_weekday(datetime(year, month, day))
        if weekday in self.days:
            return True
        length = calendar.monthrange(year, month)[1]
        if weekday in self.last and day + 7 > length:
            return True
        return (weekday, (day - 1) // 7 + 1) in self.nth


@dataclass
class Cron(Schedule):
    """An AWS cron expression read in a time zone."""

    minutes: Tuple[int, ...]
    hours: Tuple[int, ...]
    day_of_month: Optional[DayOfMonth]
    months: FrozenSet[int]
    day_of_week: Optional[DayOfWeek]
    years: Tuple[int, ...]
    text: str = ""
    kind: str = CRON
    tz: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    expression: str = ""

    def _day_matches(self, year: int, month: int, day: int) -> bool:
        if self.day_of_month is not None:
            return self.day_of_month.matches(year, month, day)
        return self.day_of_week.matches(year, month, day)

    def _local_days(self, start: datetime) -> Iterator[Tuple[int, int, int]]:
        for year in self.years:
            if year < start.year:
                continue
            for month in sorted(self.months):
                if (year, month) < (start.year, start.month):
                    continue
                first = start.day if (year, month) == (start.year, start.month) else 1
                for day in range(first, calendar.monthrange(year, month)[1] + 1):
                    if self._day_matches(year, month, day):
                        yield year, month, day

    def next_after(self, moment: datetime) -> Optional[datetime]:
        # Walk local wall-clock candidates in order. A local time that does not exist
        # (spring forward) is skipped; one that happens twice (fall back) is taken once,
        # at its first occurrence, as EventBridge Scheduler documents.
        local_start = moment.astimezone(self.tz)
        for year, month, day in self._local_days(local_start):
            for hour in self.hours:
                for minute in self.minutes:
                    wall = datetime(year, month, day, hour, minute)
                    candidate = _to_utc(wall, self.tz)
                    if candidate is not None and candidate > moment:
                        return candidate
        return None

    def aws_expression(self) -> Tuple[str, str]:
        return self.expression, self.tz.key


def aws_weekday(moment: datetime) -> int:
    """AWS day-of-week number: 1 = SUN ... 7 = SAT."""
    return (moment.weekday() + 1) % 7 + 1


def _nearest_weekday(year: int, month: int, day: int, length: int) -> int:
    # Quartz/AWS `W`: the weekday nearest the given day, never leaving the month.
    weekday = calendar.weekday(year, month, day)  # Mon=0 .. Sun=6
    if weekday == 5:  # Saturday
        return day - 1 if day > 1 else day + 2
    if weekday == 6:  # Sunday
        return day + 1 if day < length else day - 2
    return day


def _to_utc(wall: datetime, tz: ZoneInfo) -> Optional[datetime]:
    aware = wall.replace(tzinfo=tz, fold=0)
    utc = aware.astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != wall:
        return None  # the wall time does not exist in this zone (a DST gap)
    return utc


# ---------------------------------------------------------------- parsing

def parse_timezone(name: Optional[str]) -> ZoneInfo:
    """An IANA time zone, or a validation error on `timezone`."""
    if name is None:
        return ZoneInfo("UTC")
    if not isinstance(name, str) or not name.strip():
        raise ValidationError("timezone must be an IANA time zone name such as "
                              "'Europe/Berlin'", field="timezone")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(f"timezone '{shown(name)}' is not a known IANA time zone "
                              "(for example 'UTC' or 'America/New_York')",
                              field="timezone") from None


def parse(text: str, tz: ZoneInfo, anchor: datetime) -> Schedule:
    """Parse any run_at form. `anchor` is the creation time (rates count from it)."""
    if not isinstance(text, str) or not text.strip():
        raise invalid("run_at is required: an ISO 8601 date-time, cron(...), rate(...) "
                      "or HH:MM")
    text = text.strip()
    cron = _CRON.fullmatch(text)
    if cron:
        return parse_cron(cron.group(1), tz, shown(text))
    rate = _RATE.fullmatch(text)
    if rate:
        return parse_rate(rate.group(1), anchor, shown(text))
    hhmm = _HHMM.fullmatch(text)
    if hhmm:
        return parse_daily(int(hhmm.group(1)), int(hhmm.group(2)), tz, text)
    return parse_iso(text)


def parse_iso(text: str) -> OneTime:
    """An ISO 8601 date-time; no offset means UTC; a fraction of a second rounds up."""
    match = _ISO.fullmatch(text)
    text = shown(text)  # from here on, only quoted in messages
    if not match:
        raise invalid(f"run_at '{text}' is not an ISO 8601 date-time "
                      "(e.g. 2025-05-19T17:56:00Z), cron(...), rate(...) or HH:MM")
    year, month, day, hour, minute = (int(match.group(i)) for i in range(1, 6))
    second = int(match.group(6) or 0)
    fraction = match.group(7) or ""
    offset = match.group(8)
    try:
        moment = datetime(year, month, day, hour, minute, second)
    except ValueError as exc:
        raise invalid(f"run_at '{text}' is not a valid date-time: {exc}") from None
    tzinfo = UTC
    if offset and offset.upper() != "Z":
        sign = 1 if offset[0] == "+" else -1
        digits = offset[1:].replace(":", "")
        hours, minutes = int(digits[:2]), int(digits[2:])
        if hours > 23 or minutes > 59:
            raise invalid(f"run_at '{text}' has an invalid UTC offset '{offset}'")
        tzinfo = timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        moment = moment.replace(tzinfo=tzinfo).astimezone(UTC)
        if fraction.strip("0"):
            moment += timedelta(seconds=1)  # never early: round a fraction up
    except OverflowError:
        raise invalid(f"run_at '{text}' is outside the range of dates") from None
    return OneTime(at=moment, text=text)


def parse_rate(body: str, anchor: datetime, text: str) -> Rate:
    """rate(N unit): N a positive integer, unit minute(s), hour(s) or day(s). `text` is
    quoted in errors; the schedule's text is the form sent to AWS."""
    parts = body.split()
    if len(parts) != 2:
        raise invalid(f"{text}: a rate is 'rate(value unit)', e.g. rate(5 minutes)")
    value_text, unit = parts[0], parts[1].lower()
    if not is_number(value_text) or int(value_text) < 1:
        raise invalid(f"{text}: the rate value must be a positive whole number")
    value = int(value_text)
    singular = unit[:-1] if unit.endswith("s") else unit
    if singular in ("second", "sec", "secs"):
        raise invalid(f"{text}: rates under one minute are not supported; the smallest "
                      "is rate(1 minute)")
    if singular not in _RATE_UNITS:
        raise invalid(f"{text}: the rate unit must be minute(s), hour(s) or day(s)")
    if value == 1 and unit != singular:
        raise invalid(f"{text}: with a value of 1 the unit is singular, e.g. rate(1 {singular})")
    if value > 1 and unit == singular:
        raise invalid(f"{text}: with a value above 1 the unit is plural, e.g. "
                      f"rate({value} {singular}s)")
    if value * _RATE_UNITS[singular] > MAX_RATE_SECONDS:
        raise invalid(f"{text}: a rate may be at most ten years")
    schedule = Rate(value=value, unit=singular, anchor=anchor)
    schedule.text = schedule.aws_expression()[0]
    return schedule


def parse_daily(hour: int, minute: int, tz: ZoneInfo, text: str) -> Cron:
    """HH:MM: every day at that local time."""
    if hour > 23 or minute > 59:
        raise invalid(f"run_at '{text}': HH:MM needs an hour 00-23 and a minute 00-59")
    schedule = parse_cron(f"{minute} {hour} * * ? *", tz, text)
    schedule.kind = DAILY
    schedule.text = text
    return schedule


# cron field table: name, low, high, names, allowed specials
_FIELDS = (
    ("minutes", 0, 59, None),
    ("hours", 0, 23, None),
    ("day-of-month", 1, 31, None),
    ("month", 1, 12, MONTH_NAMES),
    ("day-of-week", 1, 7, DAY_NAMES),
    ("year", 1970, 2199, None),
)


def parse_cron(body: str, tz: ZoneInfo, text: str) -> Cron:
    """An AWS cron expression: minutes hours day-of-month month day-of-week year. `text`
    (as typed) is quoted in errors; the schedule's text is the form sent to AWS."""
    fields = body.split()
    if len(fields) != 6:
        raise invalid(f"{text}: an AWS cron expression has six fields (minutes hours "
                      f"day-of-month month day-of-week year), this one has {len(fields)}")
    minute_f, hour_f, dom_f, month_f, dow_f, year_f = fields
    # Field by field, left to right, so an error names the first bad field; the rule on
    # the two day fields' '?' comes after, once every field is known to be well formed.
    minutes = _parse_plain(minute_f, _FIELDS[0], text)
    hours = _parse_plain(hour_f, _FIELDS[1], text)
    day_of_month = None if dom_f == "?" else _parse_day_of_month(dom_f, text)
    months = _parse_plain(month_f, _FIELDS[3], text)
    day_of_week = None if dow_f == "?" else _parse_day_of_week(dow_f, text)
    years = _parse_plain(year_f, _FIELDS[5], text)
    if (day_of_month is None) == (day_of_week is None):
        raise invalid(f"{text}: exactly one of day-of-month and day-of-week must be '?' "
                      "(e.g. cron(0 9 * * ? *) or cron(0 9 ? * MON-FRI *))")
    expression = f"cron({' '.join(value.upper() for value in fields)})"
    if len(expression) > MAX_EXPRESSION:
        raise invalid(f"{text}: EventBridge accepts expressions of at most {MAX_EXPRESSION} "
                      f"characters; this one has {len(expression)}")
    schedule = Cron(
        minutes=tuple(sorted(minutes)),
        hours=tuple(sorted(hours)),
        day_of_month=day_of_month,
        months=frozenset(months),
        day_of_week=day_of_week,
        years=tuple(sorted(years)),
        text=expression,
        tz=tz,
        expression=expression,
    )
    return schedule


def _number(token: str, spec, text: str) -> int:
    name, low, high, names = spec
    upper = token.upper()
    if names and upper in names:
        return names[upper]
    if not is_number(token):
        hint = f" or {next(iter(names))}-style names" if names else ""
        raise invalid(f"{text}: '{shown(token, 20)}' is not a valid value in {name} "
                      f"(numbers {low}-{high}{hint})")
    value = int(token)
    if not low <= value <= high:
        extra = " (1 = SUN ... 7 = SAT)" if name == "day-of-week" else ""
        raise invalid(f"{text}: {value} is out of range in {name}: {low}-{high}{extra}")
    return value


def _parse_plain(value: str, spec, text: str) -> set:
    """A field of numbers: lists, ranges, steps and *."""
    name, low, high, _ = spec
    _ascii(value, name, text)
    if "?" in value:
        if name in ("day-of-month", "day-of-week"):
            raise invalid(f"{text}: '?' in {name} stands alone, as the whole field")
        raise invalid(f"{text}: '?' is allowed only in day-of-month or day-of-week, "
                      f"not in {name}")
    result: set = set()
    for item in value.split(","):
        if not item:
            raise invalid(f"{text}: empty list item in {name}")
        base, _, step_text = item.partition("/")
        step = 1
        if step_text != "" or "/" in item:
            if not is_number(step_text) or int(step_text) < 1:
                raise invalid(f"{text}: the step in {name} '{shown(item, 20)}' must be a "
                              "positive number")
            step = int(step_text)
        if base == "*":
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _number(first, spec, text), _number(last, spec, text)
            if start > end:
                if name == "year":
                    raise invalid(f"{text}: the range '{base}' in {name} runs backwards")
                # A range past the field's end wraps around (hours 20-2 = 20..23, 0..2),
                # as AWS documents for hours and Quartz does in every field but the year;
                # a step counts on across the wrap (minutes 50-10/10 = 50, 0, 10).
                end += high - low + 1
        else:
            start = _number(base, spec, text)
            end = high if "/" in item else start
        size = high - low + 1
        result.update(low + (number - low) % size for number in range(start, end + 1, step))
    return result


def _ascii(value: str, name: str, text: str) -> None:
    # Only ASCII is valid: 'ſun'.upper() would be 'SUN' and '5ﬂ'.upper() '5FL'.
    if not value.isascii():
        raise invalid(f"{text}: '{shown(value, 20)}' is not a valid value in {name} "
                      "(ASCII only)")


def _parse_day_of_month(value: str, text: str) -> DayOfMonth:
    spec = _FIELDS[2]
    _ascii(value, spec[0], text)
    days: set = set()
    nearest: set = set()
    last = last_weekday = False
    for item in value.split(","):
        upper = item.upper()
        if upper == "L":
            last = True
        elif upper == "LW":
            last_weekday = True
        elif upper.endswith("W"):
            day = upper[:-1]
            if not is_number(day):
                raise invalid(f"{text}: 'W' in day-of-month follows one day number, e.g. 15W")
            nearest.add(_number(day, spec, text))
        elif "L" in upper or "W" in upper or "#" in upper:
            raise invalid(f"{text}: '{shown(item, 20)}' is not a valid value in day-of-month "
                          "(use L, LW or nW)")
        else:
            days |= _parse_plain(item, spec, text)
    return DayOfMonth(frozenset(days), last, last_weekday, frozenset(nearest))


def _parse_day_of_week(value: str, text: str) -> DayOfWeek:
    spec = _FIELDS[4]
    _ascii(value, spec[0], text)
    days: set = set()
    last: set = set()
    nth: set = set()
    if "#" in value and "," in value:
        # AWS: with '#' the day-of-week field holds one expression only; "3#1,6#3" is two.
        raise invalid(f"{text}: with '#' day-of-week holds one expression only (e.g. 6#3), "
                      f"not a list like '{shown(value, 20)}'")
    for item in value.split(","):
        upper = item.upper()
        if "/" in upper:
            raise invalid(f"{text}: steps ('/') are not allowed in day-of-week")
        if upper == "L":
            days.add(7)  # a lone L in day-of-week means its last day, SAT
        elif upper.endswith("L"):
            last.add(_number(item[:-1], spec, text))
        elif "#" in upper:
            day, _, occurrence = item.partition("#")
            if not is_number(occurrence) or not 1 <= int(occurrence) <= 5:
                raise invalid(f"{text}: in '{shown(item, 20)}' the number after # must be 1-5 "
                              "(the n-th such weekday of the month)")
            nth.add((_number(day, spec, text), int(occurrence)))
        elif upper.endswith("W") and is_number(upper[:-1]):
            raise invalid(f"{text}: 'W' is allowed only in day-of-month")
        else:
            days |= _parse_plain(item, spec, text)
    return DayOfWeek(frozenset(days), frozenset(last), frozenset(nth))


# ---------------------------------------------------------------- creation rules

def validate_new(schedule: Schedule, now: datetime, horizon_days: int) -> datetime:
    """Check a schedule for a new task and return its first firing."""
    if isinstance(schedule, OneTime):
        if schedule.at <= now:
            raise invalid(f"run_at {schedule.at.strftime('%Y-%m-%dT%H:%M:%SZ')} is not in "
                          "the future")
        if schedule.at > now + timedelta(days=horizon_days):
            raise invalid(f"run_at is more than {horizon_days} days ahead "
                          "(MAX_HORIZON_DAYS)")
        return schedule.at
    first = schedule.next_after(now)
    if first is None:
        raise invalid(f"{shown(schedule.text)} has no future firing")
    return first


def ceil_second(moment: datetime) -> datetime:
    """Round up to a whole second (firings are whole seconds; never early)."""
    if moment.microsecond:
        return moment.replace(microsecond=0) + timedelta(seconds=1)
    return moment


def from_task(task) -> Schedule:
    """The schedule of a stored task (run_at was validated when it was created)."""
    return parse(task.run_at, ZoneInfo(task.timezone), anchor=ceil_second(task.created_at))
