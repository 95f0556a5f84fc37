"""The task scheduler: HTTP API (chalicelib.routes), executor and daily sweeper. Wiring only;
see chalicelib.

Every Lambda of the app imports this file, but each runs one handler: what a handler's path
needs (the executor, the sweeper, the store and botocore, the API's use cases) is imported by
that handler when it first runs, so the executor's Lambda never loads the dashboard, the
OpenAPI document or the request validation, and `import app` stays a small part of a cold
start. chalice.test.Client and `chalice local` still find every route registered here.
"""
import json
import logging

from chalicelib import config, observability, routes
from chalicelib.application import ConcurrentChalice
from chalicelib.errors import normalize_framework_error

app = ConcurrentChalice(app_name="task-scheduler")
app.log.setLevel(logging.INFO)
logging.getLogger("task_scheduler").setLevel(logging.INFO)
observability.configure_for_lambda()


@app.middleware("http")
def uniform_client_errors(event, get_response):
    """Give Chalice's own 4xx answers (405, 415, ...) the API's error body."""
    response = get_response(event)
    if 400 <= response.status_code < 500:
        response.body = normalize_framework_error(response.body) or response.body
    return response


app.register_blueprint(routes.api)


@app.lambda_function(name="execute_task")
def execute_task(event, context):
    """Invoked by the task's trigger with {"task_id": ...}."""
    from chalicelib import wiring
    from chalicelib.executor import execute_task as run_task

    observability.request_id.set(getattr(context, "aws_request_id", None))
    if isinstance(event, str):
        event = json.loads(event)
    return run_task(wiring.runtime(), event["task_id"]).to_dict()


@app.schedule(config.SWEEP_EXPRESSION, name="daily_sweeper")
def daily_sweeper(event):
    """Run what the triggers missed, highest priority first; re-arm what is missing."""
    from chalicelib import sweeper, wiring

    context = event.context
    observability.request_id.set(getattr(context, "aws_request_id", None))
    return sweeper.run_daily(wiring.runtime(),
                             getattr(context, "get_remaining_time_in_millis", None),
                             getattr(context, "invoked_function_arn", None),
                             sweeper.continuation_depth(event.to_dict().get("detail")))


# The local stage (make dev / chalice local) runs the in-process trigger; elsewhere a no-op,
# which no Lambda imports.
if not config.in_lambda():
    from chalicelib.local import server as local_server

    local_server.start_if_local()
