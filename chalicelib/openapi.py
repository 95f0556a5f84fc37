"""The OpenAPI 3 document of the HTTP API, served at GET /openapi.json.

Kept true to the code by tests: every route of the app is documented, and schemathesis
runs the running local server against this document.
"""
from chalicelib import actions, models, validation
from chalicelib.actions.webhook import MAX_DATA_BYTES

STRING_OR_NULL = {"type": "string", "nullable": True}
TIME = {"type": "string", "format": "date-time", "example": "2030-05-19T17:56:00Z"}
TIME_OR_NULL = {**TIME, "nullable": True}

ERROR = {
    "type": "object",
    "required": ["code", "message", "field"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "field": STRING_OR_NULL},
}
# API Gateway's own body for a missing or refused token (chalice local answers the same).
GATEWAY_ERROR = {"type": "object", "properties": {"message": {"type": "string"},
                                                   "Message": {"type": "string"}}}

RUN = {
    "type": "object",
    "required": ["run_id", "attempt", "started_at", "outcome"],
    "properties": {
        "run_id": {"type": "string"}, "attempt": {"type": "integer"},
        "started_at": {"type": "string"}, "ended_at": STRING_OR_NULL,
        "outcome": {"type": "string", "nullable": True,
                    "enum": ["succeeded", "failed", "skipped", None]},
        "http_status": {"type": "integer", "nullable": True},
        "error": STRING_OR_NULL, "duration_ms": {"type": "integer", "nullable": True},
        "callback": {**STRING_OR_NULL, "description": (
            "what became of the run's callbacks: delivered (HTTP status) or failed, why")},
    },
}

def _openapi(schema: dict) -> dict:
    """A declared option's schema in OpenAPI 3.0's words (which has no propertyNames: the
    key rule is said in the description)."""
    return {key: value for key, value in schema.items() if key != "propertyNames"}


TASK_FIELDS = {
    "action": {"type": "string", "enum": sorted(actions.REGISTRY),
               "description": "registered action"},
    "payload": {"type": "object", "description": (
        "the action's input. webhook: url (required), data (any JSON, at most "
        f"{MAX_DATA_BYTES // 1024} KiB), method, headers, timeout (1-60 s)")},
    "run_at": {"type": "string", "description": (
        "ISO 8601 date-time (future, within MAX_HORIZON_DAYS), cron(...), rate(...) or HH:MM"),
        "example": "2030-05-19T17:56:00Z"},
    "timezone": {"type": "string", "description": "IANA zone for cron and HH:MM",
                 "example": "Europe/Berlin"},
    **{declared.name: {**_openapi(declared.schema), "description": declared.help,
                       **({"default": declared.default} if declared.default is not None
                          else {})}
       for declared in models.OPTIONS},
}

TASK_REQUEST = {"type": "object", "required": ["action", "payload", "run_at"],
                "additionalProperties": False, "properties": TASK_FIELDS}
# PATCH: any field but the action, at least one.
TASK_UPDATE = {"type": "object", "minProperties": 1, "additionalProperties": False,
               "properties": {name: schema for name, schema in TASK_FIELDS.items()
                              if name != "action"}}

CREATED = {
    "type": "object",
    "required": ["message", "task_id", "status", "run_at", "next_run_at"],
    "properties": {"message": {"type": "string"}, "task_id": {"type": "string"},
                   "status": {"type": "string", "enum": list(models.STATUSES)},
                   "run_at": {"type": "string"}, "next_run_at": TIME_OR_NULL,
                   "version": {"type": "integer", "description": "the ETag If-Match may name"}},
}

TASK = {
    "type": "object",
    "required": ["task_id", "action", "payload", "run_at", "status", "attempts", "next_run_at",
                 "upcoming", "created_at", "updated_at", "runs", "version", "runs_done"],
    "properties": {
        "task_id": {"type": "string"},
        "action": {"type": "string"}, "payload": {"type": "object"},
        "run_at": {"type": "string"}, "timezone": {"type": "string"},
        **{declared.name: _openapi(declared.schema) for declared in models.OPTIONS},
        "status": {"type": "string", "enum": list(models.STATUSES)},
        "attempts": {"type": "integer"}, "next_run_at": TIME_OR_NULL,
        "runs_done": {"type": "integer", "description": "runs ended (max_runs counts them)"},
        "version": {"type": "integer", "description": (
            "raised by every change; the ETag, and what If-Match names")},
        "paused_until": {**TIME_OR_NULL, "description": "a paused task resumes by itself then"},
        "flow_delayed_since": {**TIME_OR_NULL, "description": (
            "set while the task waits for room under its flow_control key: since when")},
        "tenant": {"type": "string", "description": (
            "whose task it is: the tenant of the token that made it")},
        "upcoming": {"type": "array", "items": TIME, "maxItems": 5},
        "created_at": TIME, "updated_at": TIME,
        "runs": {"type": "array", "items": {"$ref": "#/components/schemas/Run"}},
    },
}


BULK_REQUEST = {
    "type": "object", "required": ["operation", "filter"], "additionalProperties": False,
    "properties": {
        "operation": {"type": "string", "enum": ["cancel", "pause", "resume"]},
        "filter": {"type": "object", "minProperties": 1, "additionalProperties": False,
                   "properties": {"tag": {"type": "string", "minLength": 1,
                                          "description": "key:value"},
                                  "status": {"type": "string",
                                             "enum": list(models.STATUSES)},
                                  "name": {"type": "string", "minLength": 1},
                                  "tenant": {"type": "string", "minLength": 1,
                                             "description": "an admin token's only"}}},
        "next_token": {"type": "string", "description": "a bulk answer's, to go on"}},
}
BULK_RESULT = {
    "type": "object", "required": ["matched", "changed", "skipped", "next_token"],
    "properties": {"matched": {"type": "integer"}, "changed": {"type": "integer"},
                   "skipped": {"type": "integer", "description": (
                       "matched, but their status did not allow the change")},
                   "next_token": {**STRING_OR_NULL, "description": (
                       "send it back to go on; null: every match is done")},
                   "stopped": {"type": "string", "description": (
                       "present when an AWS error stopped the request after some changes: "
                       "where and why")}},
}

FLOW_STATUS = {
    "type": "object",
    "required": ["key", "rate", "period", "parallelism", "running", "waiting"],
    "properties": {
        "key": {"type": "string"},
        "rate": {"type": "integer", "nullable": True, "description": "starts per period"},
        "period": {"type": "string", "enum": ["second", "minute", "hour"]},
        "parallelism": {"type": "integer", "nullable": True,
                        "description": "runs at once"},
        "running": {"type": "integer", "description": "runs holding a slot now"},
        "waiting": {"type": "integer", "description": "tasks queued for room"}},
}

PREVIEW = {
    "type": "object", "required": ["run_at", "timezone", "recurring", "next"],
    "properties": {"run_at": {"type": "string"}, "timezone": {"type": "string"},
                   "recurring": {"type": "boolean"},
                   "next": {"type": "array", "items": TIME, "minItems": 0,
                            "maxItems": validation.PREVIEW_COUNT_MAX}},
}


def _json(schema_name, description):
    return {"description": description, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{schema_name}"}}}}


def _errors(*statuses):
    texts = {400: "invalid request", 404: "no such task", 409: "state does not allow it",
             412: "If-Match names another version", 413: "request body over 256 KiB",
             415: "not JSON", 429: "the tenant has TENANT_MAX_WAITING tasks waiting"}
    responses = {str(status): _json("Error", texts[status]) for status in statuses}
    responses["401"] = _json("GatewayError", "missing or invalid token")
    responses["403"] = _json("GatewayError", "token refused")
    responses["503"] = _json("Error", "the store cannot answer now (DynamoDB throttled or "
                                      "unavailable, the local file unwritable): try again")
    return responses


TASK_ID = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
IF_MATCH = {"name": "If-Match", "in": "header", "required": False, "description": (
    'the task\'s ETag ("<version>"): the change is made only while the task is still at it'),
    "schema": {"type": "string"}, "example": '"3"'}
ETAG = {"ETag": {"description": 'the task\'s version, quoted ("3")',
                 "schema": {"type": "string"}}}


def _task(description: str, status: str = "200") -> dict:
    """A response with the task and its ETag."""
    return {status: {**_json("Task", description), "headers": ETAG}}


def _change(summary: str, answer: str, body=None, status: str = "200") -> dict:
    """A POST that changes a task (pause, resume, run)."""
    operation = {"summary": summary, "security": [{"bearer": []}],
                 "parameters": [TASK_ID, IF_MATCH],
                 "responses": {**_task(answer, status), **_errors(400, 404, 409, 412)}}
    if body is not None:
        operation["requestBody"] = {"required": False, "content": {"application/json": {
            "schema": body}}}
        operation["responses"].update(_errors(413, 415))
    return {"post": operation}


def document(server_url: str = "/") -> dict:
    """The whole OpenAPI 3.0 document."""
    secured = [{"bearer": []}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "task-scheduler", "version": "1.0.0",
                 "description": "Call this URL at that time: schedule, inspect, change, "
                                "pause, run, cancel and replay tasks."},
        "servers": [{"url": server_url}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": ERROR, "GatewayError": GATEWAY_ERROR, "Run": RUN,
                        "Preview": PREVIEW, "TaskRequest": TASK_REQUEST, "TaskUpdate": TASK_UPDATE,
                        "TaskCreated": CREATED, "Task": TASK, "FlowControl": FLOW_STATUS,
                        "BulkResult": BULK_RESULT,
                        "TaskPage": {"type": "object", "required": ["tasks", "next_token"],
                                     "properties": {
                                         "tasks": {"type": "array", "items": {
                                             "$ref": "#/components/schemas/Task"}},
                                         "next_token": STRING_OR_NULL}}},
        },
        "paths": {
            "/schedule-task": {"post": {
                "summary": "Schedule a task", "security": secured,
                "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                "schema": {"type": "string", "maxLength": 255}}],
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/TaskRequest"}}}},
                "responses": {"201": {**_json("TaskCreated", "scheduled"), "headers": ETAG},
                              "200": {**_json("TaskCreated", "a repeat of an Idempotency-Key"),
                                      "headers": ETAG},
                              **_errors(400, 409, 413, 415, 429)}}},
            "/tasks": {"get": {
                "summary": "List tasks", "security": secured,
                "parameters": [
                    {"name": "status", "in": "query", "schema": {
                        "type": "string", "enum": list(models.STATUSES)}},
                    {"name": "name", "in": "query", "description": (
                        "a part of the task's name, any case"), "schema": {
                        "type": "string", "maxLength": validation.MAX_NAME_LENGTH}},
                    {"name": "tag", "in": "query", "description": (
                        "key:value, one of the task's tags"), "schema": {"type": "string"},
                     "example": "team:billing"},
                    {"name": "tenant", "in": "query", "description": (
                        "an admin token's filter: one tenant's tasks (a tenant's token "
                        "lists its own, and names no other)"), "schema": {
                        "type": "string", "maxLength": validation.MAX_TENANT_LENGTH}},
                    {"name": "limit", "in": "query", "schema": {
                        "type": "integer", "minimum": 1, "maximum": 100, "default": 50}},
                    {"name": "next_token", "in": "query", "schema": {"type": "string"}}],
                "responses": {"200": _json("TaskPage", "one page"), **_errors(400)}}},
            "/tasks/{task_id}": {
                "parameters": [TASK_ID],
                "get": {"summary": "Show a task", "security": secured,
                        "responses": {**_task("the task"), **_errors(404)}},
                "patch": {"summary": "Change a task that waits or is paused (any field but "
                                     "the action); a new time re-arms it",
                          "security": secured, "parameters": [IF_MATCH],
                          "requestBody": {"required": True, "content": {"application/json": {
                              "schema": {"$ref": "#/components/schemas/TaskUpdate"}}}},
                          "responses": {**_task("the task after the change"),
                                        **_errors(400, 404, 409, 412, 413, 415)}},
                "delete": {"summary": "Cancel a task", "security": secured,
                           "parameters": [IF_MATCH],
                           "responses": {**_task("cancelled"), **_errors(404, 409, 412)}}},
            "/tasks/{task_id}/retry": {"post": {
                "summary": "Replay a failed task", "security": secured,
                "parameters": [TASK_ID, IF_MATCH],
                "requestBody": {"required": False, "content": {"application/json": {
                    "schema": {"type": "object", "additionalProperties": False,
                               "properties": {"run_at": TIME}}}}},
                "responses": {**_task("scheduled again"),
                              **_errors(400, 404, 409, 412, 413, 415, 429)}}},
            "/tasks/{task_id}/pause": _change(
                "Pause a scheduled or retrying task: its trigger is removed (until a time, "
                "or until resumed)", "paused",
                body={"type": "object", "additionalProperties": False,
                      "properties": {"until": TIME}}),
            "/tasks/{task_id}/resume": _change(
                "Resume a paused task; the firings it missed follow its catch_up", "scheduled"),
            "/tasks/{task_id}/run": _change(
                "Run a task once now, outside its schedule (its own Idempotency-Key)",
                "the run is on its way", status="202"),
            "/tasks/bulk": {"post": {
                "summary": "Cancel, pause or resume the caller's tasks a filter matches, "
                           "each as its own route would; at most 100 per request",
                "security": secured,
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": BULK_REQUEST}}},
                "responses": {"200": _json("BulkResult", "what the request changed"),
                              **_errors(400, 413, 415)}}},
            "/flow-control/{key}": {"get": {
                "summary": "A flow-control key's limits and its running and waiting runs",
                "security": secured,
                "parameters": [{"name": "key", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json("FlowControl", "the key"),
                              "404": _json("Error", "no task uses this key"),
                              **_errors()}}},
            "/preview": {"get": {
                "summary": "The next firings of a run_at, validated as POST /schedule-task "
                           "validates it; stores nothing", "security": secured,
                "parameters": [
                    {"name": "run_at", "in": "query", "required": True,
                     "schema": {"type": "string"}, "example": "cron(0 9 ? * MON-FRI *)"},
                    {"name": "timezone", "in": "query", "schema": {"type": "string"},
                     "example": "Europe/Berlin"},
                    {"name": "count", "in": "query", "schema": {
                        "type": "integer", "minimum": 1,
                        "maximum": validation.PREVIEW_COUNT_MAX, "default": 5}}],
                "responses": {"200": _json("Preview", "the next firings"), **_errors(400)}}},
            "/": _with_head({"get": {"summary": "The dashboard: a web page over this API (it "
                                            "asks for the token itself)", "security": [],
                                     "responses": {
                "200": {"description": "the page, script and style inlined", "content": {
                    "text/html": {"schema": {"type": "string"}}}}}}}),
            "/health": _with_head({"get": {"summary": "Liveness", "security": [], "responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["status"],
                    "properties": {"status": {"type": "string", "enum": ["ok"]}}}}}},
                "503": {"description": "the store cannot take a write now (the local "
                                       "store's file read-only, full or gone)", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}}}}),
            "/openapi.json": _with_head({"get": {"summary": "This document", "security": [],
                                                 "responses": {
                "200": {"description": "OpenAPI 3", "content": {"application/json": {
                    "schema": {"type": "object"}}}}}}}),
        },
    }


def _with_head(path_item: dict) -> dict:
    """The path's GET, and HEAD answering the same status and headers without a body."""
    get = path_item["get"]
    head = {"summary": f"{get['summary']} (headers only)", "security": get["security"],
            "responses": {status: {"description": answer["description"]}
                          for status, answer in get["responses"].items()}}
    return {**path_item, "head": head}


def server_url(host: str, stage: str) -> str:
    """Where the API is served from: API Gateway puts its stage in the path."""
    if stage and ".execute-api." in (host or ""):
        return f"/{stage}"
    return "/"
