"""The task scheduler: HTTP API, executor and daily sweeper. Wiring only; see chalicelib."""
import functools
import json
import logging

from chalice import AuthResponse, IAMAuthorizer, Response

from chalicelib import (
    auth, config, dashboard, observability, openapi, service, sweeper, wiring,
)
from chalicelib.application import ConcurrentChalice
from chalicelib.errors import SchedulerError, normalize_framework_error
from chalicelib.executor import execute_task as run_task
from chalicelib.local import server as local_server
from chalicelib.validation import check_query, parse_json_body

app = ConcurrentChalice(app_name="task-scheduler")
app.log.setLevel(logging.INFO)
logging.getLogger("task_scheduler").setLevel(logging.INFO)
observability.configure_for_lambda()


@app.authorizer()
def token_auth(auth_request):
    """Allow every route to a valid bearer token, nothing to anyone else."""
    if auth.is_authorized(auth_request.token):
        return AuthResponse(routes=["*"], principal_id="api-client")
    return AuthResponse(routes=[], principal_id="anonymous")


# Read at import on purpose: the authorizer is part of the API definition chalice builds
# when it deploys or packages, with the stage's environment applied.
DEFAULT_AUTHORIZER = IAMAuthorizer() if config.auth_mode() == "iam" else token_auth


def api_route(path, methods=("GET",), authorizer=DEFAULT_AUTHORIZER, query=()):
    """app.route plus the single mapping of domain errors to HTTP answers; query
    parameters other than `query` are refused, as unknown body fields are."""
    def decorate(handler):
        @functools.wraps(handler)
        def wrapped(*args, **kwargs):
            try:
                check_query(app.current_request.query_params, query)
                body = handler(*args, **kwargs)
            except SchedulerError as error:
                return Response(body=error.body(), status_code=error.status)
            response = body if isinstance(body, Response) else Response(body=body)
            if isinstance(response.body, dict) and "version" in response.body:
                # A task's answer: its version is the ETag an If-Match may name.
                response.headers = {**(response.headers or {}),
                                    "ETag": f'"{response.body["version"]}"'}
            if app.current_request.method == "HEAD":  # the GET's status and headers only
                headers = {"Content-Type": "application/json", **(response.headers or {})}
                response = Response(body="", headers=headers,
                                    status_code=response.status_code)
            return response
        return app.route(path, methods=list(methods), authorizer=authorizer)(wrapped)
    return decorate


@app.middleware("http")
def uniform_client_errors(event, get_response):
    """Give Chalice's own 4xx answers (405, 415, ...) the API's error body."""
    response = get_response(event)
    if 400 <= response.status_code < 500:
        response.body = normalize_framework_error(response.body) or response.body
    return response


@api_route("/schedule-task", methods=["POST"])
def schedule_task():
    request = app.current_request
    body, created = service.schedule_task(wiring.runtime(), parse_json_body(request.raw_body),
                                          request.headers.get("idempotency-key"))
    return Response(body=body, status_code=201 if created else 200)


@api_route("/tasks", query=("status", "name", "tag", "limit", "next_token"))
def list_tasks():
    return service.list_tasks(wiring.runtime(), app.current_request.query_params)


@api_route("/tasks/{task_id}")
def get_task(task_id):
    return service.get_task(wiring.runtime(), task_id)


@api_route("/tasks/{task_id}", methods=["PATCH"])
def update_task(task_id):
    request = app.current_request
    return service.update_task(wiring.runtime(), task_id, request.raw_body,
                               request.headers.get("if-match"))


@api_route("/tasks/{task_id}", methods=["DELETE"])
def cancel_task(task_id):
    return service.cancel_task(wiring.runtime(), task_id,
                               app.current_request.headers.get("if-match"))


@api_route("/tasks/{task_id}/retry", methods=["POST"])
def retry_task(task_id):
    request = app.current_request
    return service.retry_task(wiring.runtime(), task_id, request.raw_body,
                              request.headers.get("if-match"))


@api_route("/tasks/{task_id}/pause", methods=["POST"])
def pause_task(task_id):
    request = app.current_request
    return service.pause_task(wiring.runtime(), task_id, request.raw_body,
                              request.headers.get("if-match"))


@api_route("/tasks/{task_id}/resume", methods=["POST"])
def resume_task(task_id):
    return service.resume_task(wiring.runtime(), task_id,
                               app.current_request.headers.get("if-match"))


@api_route("/tasks/{task_id}/run", methods=["POST"])
def run_task_now(task_id):
    body = service.run_task_now(wiring.runtime(), task_id,
                                app.current_request.headers.get("if-match"))
    return Response(body=body, status_code=202)


@api_route("/preview", query=("run_at", "timezone", "count"))
def preview():
    return service.preview(wiring.runtime(), app.current_request.query_params)


@api_route("/", methods=["GET", "HEAD"], authorizer=None)
def dashboard_page():
    return Response(body=dashboard.page(), headers=dashboard.headers(), status_code=200)


@api_route("/health", methods=["GET", "HEAD"], authorizer=None)
def health():
    return service.health(wiring.runtime())


@api_route("/openapi.json", methods=["GET", "HEAD"], authorizer=None)
def openapi_document():
    request = app.current_request
    return openapi.document(openapi.server_url(request.headers.get("host"),
                                               request.context.get("stage")))


@app.lambda_function(name="execute_task")
def execute_task(event, context):
    """Invoked by the task's trigger with {"task_id": ...}."""
    observability.request_id.set(getattr(context, "aws_request_id", None))
    if isinstance(event, str):
        event = json.loads(event)
    return run_task(wiring.runtime(), event["task_id"]).to_dict()


@app.schedule(sweeper.SWEEP_EXPRESSION, name="daily_sweeper")
def daily_sweeper(event):
    """Run what the triggers missed, highest priority first; re-arm what is missing."""
    context = event.context
    observability.request_id.set(getattr(context, "aws_request_id", None))
    return sweeper.run_daily(wiring.runtime(),
                             getattr(context, "get_remaining_time_in_millis", None),
                             getattr(context, "invoked_function_arn", None),
                             sweeper.continuation_depth(event.to_dict().get("detail")))


# The local stage (make dev / chalice local) runs the in-process trigger; elsewhere a no-op.
local_server.start_if_local()
