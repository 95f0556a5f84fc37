"""Turn an untrusted request into a validated task, or a ValidationError naming the field."""
import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Dict, Optional, Tuple
from zoneinfo import ZoneInfo

from chalicelib import actions, config, schedules
from chalicelib.actions.webhook import validate_url
from chalicelib.errors import PayloadTooLarge, ValidationError
from chalicelib.models import OPTIONS, STATUSES, Option, iso, parse_iso

MAX_BODY_BYTES = 256 * 1024
# What and when are checked by their own rules below; every option by its declaration.
RULE_FIELDS = ("action", "payload", "run_at", "timezone")
TASK_FIELDS = set(RULE_FIELDS) | {declared.name for declared in OPTIONS}
MAX_NAME_LENGTH = next(o for o in OPTIONS if o.name == "name").schema["maxLength"]
DEFAULTS = {declared.name: declared.default for declared in OPTIONS}
RECURRING_ONLY = ("start_at", "end_at", "max_runs", "overlap")
TAGS_SCHEMA = next(o for o in OPTIONS if o.name == "tags").schema


@dataclass
class NewTask:
    """A validated POST /schedule-task request."""

    action: str
    payload: Dict[str, Any]
    run_at: str
    schedule: schedules.Schedule
    next_run_at: datetime
    timezone: str
    options: Dict[str, Any]  # every declared option, given or defaulted


def parse_json_body(raw: Optional[bytes]) -> Any:
    """The request body as JSON, or a 4xx."""
    if raw is not None and len(raw) > MAX_BODY_BYTES:
        raise PayloadTooLarge(f"the request body is larger than {MAX_BODY_BYTES // 1024} KiB")
    if not raw:
        raise ValidationError("the request body must be a JSON object", code="invalid_json")
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
        # A lone surrogate ("\ud800") parses but cannot be stored or sent as UTF-8.
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ValidationError("the request body has a lone UTF-16 surrogate escape, "
                              "which is not text", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValidationError(f"the request body is not valid JSON: {exc}",
                              code="invalid_json") from None
    except RecursionError:
        raise ValidationError("the request body is nested too deeply",
                              code="invalid_json") from None
    return body


def check_query(params: Optional[Dict[str, str]], allowed) -> None:
    """Refuse a query parameter the route does not take (a typo must not pass silently)."""
    unknown = sorted(set(params or {}) - set(allowed))
    if unknown:
        takes = f"it takes {', '.join(allowed)}" if allowed else "it takes none"
        raise ValidationError(f"'{unknown[0][:60]}' is not a query parameter of this route "
                              f"({takes})", field=unknown[0][:60], code="unknown_parameter")


def _refuse_constant(name: str):
    # NaN and Infinity are not JSON; a receiver could not parse what we would send.
    raise ValueError(f"{name} is not a JSON value")


def parse_option(declared: Option, body: Dict[str, Any]) -> Any:
    """The option's value in `body` (its default when absent), checked against its
    declared schema, or a ValidationError on it."""
    if declared.name not in body:
        return declared.default
    value = body[declared.name]
    if value is None and declared.nullable:
        return None
    if not _conforms(value, declared.schema):
        raise ValidationError(f"{declared.name} must be {describe_schema(declared.schema)}",
                              field=declared.name)
    if declared.schema.get("format") == "date-time":
        return _normalized_time(declared.name, value)
    if declared.schema.get("format") == "uri":  # a URL we will call: checked as a webhook's
        return validate_url(value, declared.name)
    if "properties" in declared.schema:  # stored with its defaults filled in
        return {**{name: rule["default"] for name, rule in declared.schema["properties"].items()
                   if "default" in rule}, **value}
    return value


def _normalized_time(name: str, text: str) -> str:
    # Stored and shown as the API's one time format, UTC.
    return iso(_parse_time(name, text))


def _parse_time(name: str, text: str) -> datetime:
    try:
        return schedules.parse_iso(text.strip()).at
    except ValidationError as error:
        raise ValidationError(error.message.replace("run_at", name, 1), field=name) from None


def _conforms(value: Any, schema: Dict[str, Any]) -> bool:
    kind = schema["type"]
    if kind == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)
                and schema.get("minimum", value) <= value <= schema.get("maximum", value))
    if kind == "string":
        return (isinstance(value, str)
                and schema.get("minLength", 0) <= len(value) <= schema.get("maxLength",
                                                                           len(value))
                and ("enum" not in schema or value in schema["enum"])
                and ("pattern" not in schema or re.search(schema["pattern"], value)
                     is not None))
    if kind == "object" and "properties" in schema:
        return (isinstance(value, dict) and set(schema["required"]) <= set(value)
                and all(name in schema["properties"]
                        and _conforms(item, schema["properties"][name])
                        for name, item in value.items())
                and any(set(choice["required"]) <= set(value) for choice in schema["anyOf"]))
    if kind == "object":
        return (isinstance(value, dict) and len(value) <= schema["maxProperties"]
                and all(_conforms(key, schema["propertyNames"])
                        and _conforms(item, schema["additionalProperties"])
                        for key, item in value.items()))
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "array":
        return (isinstance(value, list) and len(value) <= schema.get("maxItems", len(value))
                and all(_conforms(item, schema["items"]) for item in value)
                and (not schema.get("uniqueItems") or len(set(map(repr, value))) == len(value)))
    raise ValueError(f"an option of type {kind!r} needs a rule of its own")


def describe_schema(schema: Dict[str, Any]) -> str:
    """What a schema allows, in words (the end of "x must be ...")."""
    kind = schema["type"]
    if kind == "integer":
        return f"a whole number from {schema['minimum']} to {schema['maximum']}"
    if kind == "string" and "enum" in schema:
        return " or ".join(f"'{choice}'" for choice in schema["enum"])
    if kind == "string" and schema.get("format") == "date-time":
        return "an ISO 8601 date-time (e.g. 2030-05-19T17:56:00Z) or null"
    if kind == "string" and "pattern" in schema:  # the one pattern: no control characters
        return (f"a string of {schema.get('minLength', 0)}-{schema['maxLength']} characters, "
                "none of them a control character")
    if kind == "string":
        return (f"a string of {schema.get('minLength', 0)}-{schema['maxLength']} characters"
                if schema.get("minLength") else
                f"a string of at most {schema['maxLength']} characters")
    if kind == "object" and "properties" in schema:
        fields = "; ".join(f"{name}: {describe_schema(rule)}"
                           for name, rule in schema["properties"].items())
        needed = " or ".join(choice["required"][0] for choice in schema["anyOf"])
        return (f"an object with {', '.join(schema['required'])} and at least {needed} "
                f"({fields})")
    if kind == "object":
        return (f"an object of at most {schema['maxProperties']} entries, each key "
                f"{describe_schema(schema['propertyNames'])} and each value "
                f"{describe_schema(schema['additionalProperties'])}")
    if kind == "boolean":
        return "true or false"
    return (f"a list of at most {schema['maxItems']} items, each "
            f"{describe_schema(schema['items'])}")


def parse_new_task(body: Any, now: datetime) -> NewTask:
    """Validate every field of a new task; nothing is stored or armed here."""
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", code="invalid_json")
    unknown = sorted(set(body) - TASK_FIELDS)
    if unknown:
        raise ValidationError(f"'{unknown[0]}' is not a field of a task (allowed: "
                              f"{', '.join(sorted(TASK_FIELDS))})", field=unknown[0],
                              code="unknown_field")
    action_name = body.get("action")
    if not isinstance(action_name, str) or not action_name:
        raise ValidationError("action is required: the name of a registered action "
                              f"({', '.join(sorted(actions.REGISTRY))})", field="action")
    action = actions.REGISTRY.get(action_name)
    if action is None:
        raise ValidationError(f"unknown action '{action_name}' (registered: "
                              f"{', '.join(sorted(actions.REGISTRY))})", field="action",
                              code="unknown_action")
    if "payload" not in body:
        raise ValidationError("payload is required: the action's input", field="payload")
    payload = action.validate(body["payload"])

    schedule, tz, next_run_at = parse_when(body.get("run_at"), body.get("timezone"), now)
    options = {declared.name: parse_option(declared, body) for declared in OPTIONS}
    check_between_fields(schedule.kind != schedules.ONCE, options, now)
    return NewTask(
        action=action_name,
        payload=payload,
        run_at=echo(schedule),
        schedule=schedule,
        next_run_at=next_run_at,
        timezone=tz.key,
        options=options,
    )


def check_between_fields(recurring: bool, options: Dict[str, Any], now: datetime,
                         end_must_be_ahead: bool = True) -> None:
    """The rules that tie a task's fields together, once each passed its own."""
    if not recurring:
        for name in RECURRING_ONLY:
            if options.get(name, DEFAULTS[name]) != DEFAULTS[name]:
                raise ValidationError(f"{name} applies to recurring tasks only (cron, rate or "
                                      "HH:MM), not to a one-time run_at", field=name)
    start, end = parse_iso(options.get("start_at")), parse_iso(options.get("end_at"))
    if end is not None and end <= now and end_must_be_ahead:
        raise ValidationError(f"end_at {iso(end)} is not in the future", field="end_at")
    if end is not None and start is not None and end <= start:
        raise ValidationError("end_at must be after start_at", field="end_at")


def parse_update(body: Any, action_name: str, now: datetime) -> Dict[str, Any]:
    """The fields a PATCH changes, each validated as POST validates it (the rules between
    fields are checked on the task they make): payload, run_at with timezone (as
    "schedule": (schedule, zone)), and options."""
    if not isinstance(body, dict):
        raise ValidationError("the request body must be a JSON object", code="invalid_json")
    if "action" in body:
        raise ValidationError("action cannot be changed: schedule a new task instead",
                              field="action")
    unknown = sorted(set(body) - TASK_FIELDS)
    if unknown:
        raise ValidationError(f"'{unknown[0]}' is not a field of a task (allowed: "
                              f"{', '.join(sorted(TASK_FIELDS - {'action'}))})",
                              field=unknown[0], code="unknown_field")
    if not body:
        raise ValidationError("the body names no field to change", code="invalid_json")
    changes: Dict[str, Any] = {}
    if "payload" in body:
        changes["payload"] = actions.REGISTRY[action_name].validate(body["payload"])
    if "run_at" in body or "timezone" in body:
        changes["when"] = (body.get("run_at"), body.get("timezone"))
    for declared in OPTIONS:
        if declared.name in body:
            changes[declared.name] = parse_option(declared, body)
    return changes


def parse_pause(raw: Optional[bytes], now: datetime) -> Optional[datetime]:
    """The optional body of POST /tasks/{id}/pause: {"until": ISO date-time} or nothing."""
    if not raw or not raw.strip():
        return None
    body = parse_json_body(raw)
    if not isinstance(body, dict) or set(body) - {"until"}:
        raise ValidationError("the body may hold only until, an ISO 8601 date-time",
                              field=None, code="invalid_json")
    until = body.get("until")
    if until is None:
        return None
    if not isinstance(until, str):
        raise ValidationError("until must be an ISO 8601 date-time", field="until")
    moment = _parse_time("until", until)
    if moment <= now:
        raise ValidationError(f"until {iso(moment)} is not in the future", field="until")
    if moment > now + timedelta(days=config.max_horizon_days()):
        raise ValidationError(f"until is more than {config.max_horizon_days()} days ahead "
                              "(MAX_HORIZON_DAYS)", field="until")
    return moment


def parse_when(run_at: Any, timezone_name: Any,
               now: datetime) -> Tuple[schedules.Schedule, ZoneInfo, datetime]:
    """(schedule, zone, first firing) of a run_at and optional timezone, validated as a
    new task's are."""
    tz = schedules.parse_timezone(timezone_name)
    if run_at is not None and not isinstance(run_at, str):
        raise schedules.invalid("run_at must be a string: an ISO 8601 date-time, "
                                "cron(...), rate(...) or HH:MM")
    schedule = schedules.parse(run_at, tz, anchor=schedules.ceil_second(now))
    if schedule.kind == schedules.ONCE and timezone_name is not None:
        raise ValidationError("timezone applies to cron and HH:MM only; give the offset in "
                              "run_at instead", field="timezone")
    return schedule, tz, schedules.validate_new(schedule, now, config.max_horizon_days())


PREVIEW_COUNT_MAX = 50


def parse_preview(params: Optional[Dict[str, str]], now: datetime) -> Dict[str, Any]:
    """GET /preview: run_at (required), timezone and count (1-50, default 5), checked as
    POST /schedule-task checks them; the next `count` firings."""
    params = params or {}
    count_text = params.get("count", "5")
    if not schedules.is_number(count_text) or not 1 <= int(count_text) <= PREVIEW_COUNT_MAX:
        raise ValidationError(f"count must be a whole number from 1 to {PREVIEW_COUNT_MAX}",
                              field="count")
    schedule, tz, first = parse_when(params.get("run_at"), params.get("timezone"), now)
    firings = [first]
    if schedule.kind != schedules.ONCE:
        firings += schedule.upcoming(first, int(count_text) - 1)
    return {"run_at": echo(schedule), "timezone": tz.key,
            "recurring": schedule.kind != schedules.ONCE,
            "next": [iso(moment) for moment in firings]}


def echo(schedule: schedules.Schedule) -> str:
    # An ISO time is echoed normalised to UTC; cron() and rate() in the form sent to AWS
    # (schedules.parse normalises case and spacing); HH:MM as given.
    if isinstance(schedule, schedules.OneTime):
        return schedule.at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return schedule.text


# An IAM principal's ARN is a tenant too: room for the longest.
MAX_TENANT_LENGTH = 2048


def parse_list_query(params: Optional[Dict[str, str]]) -> Dict[str, Any]:
    """status, name (a part of the task's name, any case), tag (key:value), limit (1-100,
    default 50) and next_token of GET /tasks."""
    params = params or {}
    status = params.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}", field="status")
    limit_text = params.get("limit", "50")
    if not schedules.is_number(limit_text) or not 1 <= int(limit_text) <= 100:
        raise ValidationError("limit must be a whole number from 1 to 100", field="limit")
    name = params.get("name") or None
    if name is not None and len(name) > MAX_NAME_LENGTH:
        raise ValidationError(f"name must be at most {MAX_NAME_LENGTH} characters",
                              field="name")
    tenant = params.get("tenant") or None
    if tenant is not None and len(tenant) > MAX_TENANT_LENGTH:
        raise ValidationError(f"tenant must be at most {MAX_TENANT_LENGTH} characters",
                              field="tenant")
    return {"status": status, "limit": int(limit_text),
            "next_token": params.get("next_token") or None, "name": name,
            "tag": _parse_tag(params.get("tag")), "tenant": tenant}


def _parse_tag(text: Optional[str]) -> Optional[Tuple[str, str]]:
    """tag=key:value (the value may be empty; the key may not hold a colon)."""
    if text is None or text == "":
        return None
    key, colon, value = text.partition(":")
    if not colon or not _conforms(key, TAGS_SCHEMA["propertyNames"]) or not _conforms(
            value, TAGS_SCHEMA["additionalProperties"]):
        raise ValidationError("tag must be key:value, a key of 1-128 characters and a value "
                              "of at most 256", field="tag")
    return key, value


def parse_replay(raw: Optional[bytes], now: datetime) -> datetime:
    """The optional body of POST /tasks/{id}/retry: {"run_at": ISO date-time} or nothing
    (now, rounded up to the next whole second)."""
    if not raw or not raw.strip():
        return schedules.ceil_second(now)
    body = parse_json_body(raw)
    if not isinstance(body, dict) or set(body) - {"run_at"}:
        raise ValidationError("the body may hold only run_at, an ISO 8601 date-time",
                              field=None, code="invalid_json")
    if body.get("run_at") is None:
        return schedules.ceil_second(now)
    if not isinstance(body["run_at"], str):
        raise schedules.invalid("run_at must be an ISO 8601 date-time")
    return schedules.validate_new(schedules.parse_iso(body["run_at"].strip()), now,
                                  config.max_horizon_days())
