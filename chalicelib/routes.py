"""The HTTP API as a blueprint: each route parses its input, calls one use case, returns.

`api_route` is the one place domain errors become HTTP answers and a task's version
becomes its ETag; `app.py` registers the blueprint.

Every Lambda imports this module (app.py registers the routes at import), so the modules a
route runs are imported by the route, when a request first needs them: the executor's and
the sweeper's Lambdas never load the use cases, validation, the dashboard or OpenAPI, and
the API's loads the dashboard or the OpenAPI document only when they are asked for.
"""
import functools
from dataclasses import replace

from chalice import AuthResponse, Blueprint, IAMAuthorizer, Response

from chalicelib import config
from chalicelib.errors import SchedulerError
from chalicelib.models import DEFAULT_TENANT

api = Blueprint(__name__)


@api.authorizer()
def token_auth(auth_request):
    """Allow every route to a valid bearer token, nothing to anyone else; the principal is
    the token's tenant ("*" for an admin)."""
    from chalicelib import auth

    tenant = auth.tenant_of(auth_request.token)
    if tenant is not None:
        return AuthResponse(routes=["*"], principal_id=tenant)
    return AuthResponse(routes=[], principal_id="anonymous")


# Read at import on purpose: the authorizer is part of the API definition chalice builds
# when it deploys or packages, with the stage's environment applied.
DEFAULT_AUTHORIZER = IAMAuthorizer() if config.auth_mode() == "iam" else token_auth


def _runtime():
    """The process's runtime, scoped to the request's caller: the tenant of its token (the
    authorizer's principal), or with AUTH_MODE=iam the caller's IAM principal."""
    from chalicelib import auth, wiring

    context = api.current_request.context or {}
    if config.auth_mode() == "iam":
        caller = auth.iam_tenant(context.get("identity") or {}) or DEFAULT_TENANT
    else:
        caller = (context.get("authorizer") or {}).get("principalId") or DEFAULT_TENANT
    return replace(wiring.runtime(), caller=caller)


def api_route(path, methods=("GET",), authorizer=DEFAULT_AUTHORIZER, query=()):
    """app.route plus the single mapping of domain errors to HTTP answers; query
    parameters other than `query` are refused, as unknown body fields are."""
    def decorate(handler):
        @functools.wraps(handler)
        def wrapped(*args, **kwargs):
            from chalicelib.validation import check_query

            try:
                check_query(api.current_request.query_params, query)
                body = handler(*args, **kwargs)
            except SchedulerError as error:
                return Response(body=error.body(), status_code=error.status)
            response = body if isinstance(body, Response) else Response(body=body)
            if isinstance(response.body, dict) and "version" in response.body:
                # A task's answer: its version is the ETag an If-Match may name.
                response.headers = {**(response.headers or {}),
                                    "ETag": f'"{response.body["version"]}"'}
            if api.current_request.method == "HEAD":  # the GET's status and headers only
                headers = {"Content-Type": "application/json", **(response.headers or {})}
                response = Response(body="", headers=headers,
                                    status_code=response.status_code)
            return response
        return api.route(path, methods=list(methods), authorizer=authorizer)(wrapped)
    return decorate


@api_route("/schedule-task", methods=["POST"])
def schedule_task():
    from chalicelib import service
    from chalicelib.validation import parse_json_body

    request = api.current_request
    body, created = service.schedule_task(_runtime(), parse_json_body(request.raw_body),
                                          request.headers.get("idempotency-key"))
    return Response(body=body, status_code=201 if created else 200)


@api_route("/tasks", query=("status", "name", "tag", "limit", "next_token", "tenant"))
def list_tasks():
    from chalicelib import service

    return service.list_tasks(_runtime(), api.current_request.query_params)


@api_route("/tasks/bulk", methods=["POST"])
def bulk_change():
    from chalicelib import bulk

    return bulk.bulk_change(_runtime(), _body())


@api_route("/tasks/{task_id}")
def get_task(task_id):
    from chalicelib import service

    return service.get_task(_runtime(), task_id)


def _body():
    return api.current_request.raw_body


def _if_match():
    return api.current_request.headers.get("if-match")


@api_route("/tasks/{task_id}", methods=["PATCH"])
def update_task(task_id):
    from chalicelib import service

    return service.update_task(_runtime(), task_id, _body(), _if_match())


@api_route("/tasks/{task_id}", methods=["DELETE"])
def cancel_task(task_id):
    from chalicelib import service

    return service.cancel_task(_runtime(), task_id, _if_match())


@api_route("/tasks/{task_id}/retry", methods=["POST"])
def retry_task(task_id):
    from chalicelib import service

    return service.retry_task(_runtime(), task_id, _body(), _if_match())


@api_route("/tasks/{task_id}/pause", methods=["POST"])
def pause_task(task_id):
    from chalicelib import service

    return service.pause_task(_runtime(), task_id, _body(), _if_match())


@api_route("/tasks/{task_id}/resume", methods=["POST"])
def resume_task(task_id):
    from chalicelib import service

    return service.resume_task(_runtime(), task_id, _if_match())


@api_route("/tasks/{task_id}/run", methods=["POST"])
def run_task_now(task_id):
    from chalicelib import service

    body = service.run_task_now(_runtime(), task_id, _if_match())
    return Response(body=body, status_code=202)


@api_route("/flow-control/{key}")
def flow_control_status(key):
    from chalicelib import service

    return service.flow_control_status(_runtime(), key)


@api_route("/preview", query=("run_at", "timezone", "count"))
def preview():
    from chalicelib import service, wiring

    return service.preview(wiring.runtime(), api.current_request.query_params)


@api_route("/", methods=["GET", "HEAD"], authorizer=None)
def dashboard_page():
    from chalicelib import dashboard

    return Response(body=dashboard.page(), headers=dashboard.headers(), status_code=200)


@api_route("/health", methods=["GET", "HEAD"], authorizer=None)
def health():
    from chalicelib import service, wiring

    return service.health(wiring.runtime())


@api_route("/openapi.json", methods=["GET", "HEAD"], authorizer=None)
def openapi_document():
    from chalicelib import openapi

    request = api.current_request
    return openapi.document(openapi.server_url(request.headers.get("host"),
                                               request.context.get("stage")))
