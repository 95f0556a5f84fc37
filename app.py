"""The task scheduler: HTTP API (chalicelib.routes), executor and daily sweeper. Wiring only;
see chalicelib."""
import json
import logging

from chalicelib import observability, routes, sweeper, wiring
from chalicelib.application import ConcurrentChalice
from chalicelib.errors import normalize_framework_error
from chalicelib.executor import execute_task as run_task
from chalicelib.local import server as local_server

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
