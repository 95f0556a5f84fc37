"""Cold start: each Lambda imports what its own path needs and nothing else.

Every function of the app is one process that imports app.py (the authorizer imports
chalicelib.routes) and then runs one handler. Here each handler runs for real, once, in a
fresh interpreter as Lambda starts one (AWS is a moto server in this process: the
interpreter under test imports nothing of moto or boto3), and the modules it loaded are
checked, and compared with the imports bench/footprint.py times for that function.
"""
import json
import os
import subprocess
import sys
import urllib.request

import pytest
from moto.server import ThreadedMotoServer

from bench import footprint
from chalicelib.models import DEFAULT_TENANT
from tests.conftest import PROJECT_DIR, REGION, STAGE, TOKEN

pytestmark = pytest.mark.integration

# What no function's `import app` loads: each is some handler's path, imported when it runs.
NOT_AT_IMPORT = {
    "botocore.session", "boto3", "requests", "urllib3", "chalicelib.aws",
    "chalicelib.executor", "chalicelib.sweeper", "chalicelib.service", "chalicelib.bulk",
    "chalicelib.validation", "chalicelib.dashboard", "chalicelib.openapi",
    "chalicelib.wiring", "chalicelib.store", "chalicelib.store.dynamodb",
    "chalicelib.actions", "chalicelib.local.server", "chalicelib.local.dispatcher",
    "chalicelib.store.sqlite",
}
# The API's own modules: the executor, the sweeper and the authorizer never load them.
API_ONLY = {"chalicelib.dashboard", "chalicelib.openapi", "chalicelib.validation",
            "chalicelib.service", "chalicelib.bulk"}
# Neither the local stage's server parts nor boto3 (botocore is enough) reach any Lambda.
NEVER = {"boto3", "chalicelib.local.server", "chalicelib.local.dispatcher",
         "chalicelib.store.sqlite", "chalicelib.store.memory", "chalicelib.emulator",
         "chalicelib.bootstrap", "chalicelib.bytecode", "sqlite3"}

# Runs in the fresh interpreter: imports the function's module, runs its handler once, and
# prints what the handler answered and which modules were loaded after each step.
PROBE = """
import importlib, json, sys, types
module = importlib.import_module(sys.argv[1])
after_import = sorted(sys.modules)
event = json.loads(sys.argv[3])
context = types.SimpleNamespace(
    aws_request_id="cold-start-test", invoked_function_arn=None,
    get_remaining_time_in_millis=lambda: 800_000)
answer = getattr(module, sys.argv[2])(event, context)
print(json.dumps({"answer": answer, "after_import": after_import,
                  "after_run": sorted(sys.modules)}, default=str))
"""


@pytest.fixture
def deployed(monkeypatch):
    """The dev stage's resources on a moto server (bootstrapped from this process); the
    environment a deployed function of it has."""
    from chalicelib import aws, bootstrap

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    # The server keeps moto's backends of this process: emptied before and after.
    reset = urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")
    urllib.request.urlopen(reset, timeout=10).close()
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://{host}:{port}")
    aws.reset()
    bootstrap.bootstrap(STAGE)
    env = {"PATH": os.environ["PATH"], "AWS_ENDPOINT_URL": f"http://{host}:{port}",
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_REGION": REGION, "API_TOKENS": TOKEN,
           "ALLOW_PRIVATE_TARGETS": "true", "PYTHONDONTWRITEBYTECODE": "1",
           **bootstrap.stage_environment(STAGE)}
    env.pop("API_TOKENS_PARAM", None)
    yield env
    aws.reset()
    urllib.request.urlopen(reset, timeout=10).close()
    server.stop()


def run_function(env, function, module, handler, event):
    result = subprocess.run(
        [sys.executable, "-c", PROBE, module, handler, json.dumps(event)], cwd=PROJECT_DIR,
        env={**env, "AWS_LAMBDA_FUNCTION_NAME": f"task-scheduler-{STAGE}-{function}"},
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout.splitlines()[-1])
    return found["answer"], set(found["after_import"]), set(found["after_run"])


def footprint_modules(env, function):
    """The modules bench/footprint.py's imports for `function` load (in a fresh interpreter)."""
    module, path = footprint.FUNCTIONS[function]
    statement = "; ".join(f"import {name}" for name in (module,) + path)
    result = subprocess.run(
        [sys.executable, "-c", f"{statement}; import json, sys; print(json.dumps(sorted("
                               "sys.modules)))"],
        cwd=PROJECT_DIR, env={**env, "AWS_LAMBDA_FUNCTION_NAME": "task-scheduler-dev"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return set(json.loads(result.stdout))


def assert_footprint_times_these(env, function, loaded):
    """bench/footprint.py times the import of what the function's run loaded: the same
    modules of ours, botocore's client and requests (or not)."""
    def ours(modules):
        return {name for name in modules
                if name.startswith(("chalicelib", "botocore.client", "requests"))}

    assert ours(footprint_modules(env, function)) == ours(loaded)


def test_import_app_loads_no_handlers_path():
    result = subprocess.run(
        [sys.executable, "-c", "import app, json, sys; print(json.dumps(sorted(sys.modules)))"],
        cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60,
        env={"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": REGION, "STAGE": STAGE,
             "AWS_LAMBDA_FUNCTION_NAME": f"task-scheduler-{STAGE}"})
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)) & NOT_AT_IMPORT == set()


def test_the_executor_runs_a_task_without_the_apis_modules(deployed, make_task):
    task = make_task(action="log", payload={"message": "cold"})
    answer, at_import, after_run = run_function(
        deployed, "execute_task", "app", "execute_task", {"task_id": task.task_id})
    assert answer["status"] == "completed"  # the run happened, through the store on moto
    assert at_import & NOT_AT_IMPORT == set()
    assert {"chalicelib.executor", "chalicelib.store.dynamodb", "botocore.session"} <= after_run
    assert after_run & (API_ONLY | NEVER) == set()
    assert_footprint_times_these(deployed, "execute_task", after_run)


def test_the_sweeper_sweeps_without_the_apis_modules(deployed, make_task):
    make_task(action="log", payload={"message": "missed"}, due_in=-600)
    event = {"version": "0", "id": "sweep", "detail-type": "Scheduled Event",
             "source": "aws.events", "account": "123456789012", "time": "2025-01-01T09:00:00Z",
             "region": REGION, "resources": [], "detail": {}}
    answer, at_import, after_run = run_function(
        deployed, "daily_sweeper", "app", "daily_sweeper", event)
    assert answer["completed"] == 1
    assert at_import & NOT_AT_IMPORT == set()
    assert {"chalicelib.sweeper", "chalicelib.executor"} <= after_run
    assert after_run & (API_ONLY | NEVER) == set()
    assert_footprint_times_these(deployed, "daily_sweeper", after_run)


def _api_event(path, token=TOKEN):
    return {"resource": path, "path": path, "httpMethod": "GET",
            "headers": {"Authorization": f"Bearer {token}", "Host": "example.test"},
            "multiValueHeaders": None, "queryStringParameters": None,
            "multiValueQueryStringParameters": None, "pathParameters": None,
            "stageVariables": None, "body": None, "isBase64Encoded": False,
            "requestContext": {"resourcePath": path, "httpMethod": "GET", "stage": "api",
                               "authorizer": {"principalId": "*"}}}


def test_the_api_loads_the_dashboard_and_openapi_only_for_their_pages(deployed, make_task):
    make_task(action="log", payload={"message": "listed"}, due_in=3600)
    answer, at_import, after_run = run_function(
        deployed, "", "app", "app", _api_event("/tasks"))
    assert answer["statusCode"] == 200 and len(json.loads(answer["body"])["tasks"]) == 1
    assert at_import & NOT_AT_IMPORT == set()
    assert {"chalicelib.service", "chalicelib.validation"} <= after_run
    assert after_run & ({"chalicelib.dashboard", "chalicelib.openapi"} | NEVER) == set()
    assert_footprint_times_these(deployed, "api", after_run)

    answer, _, after_run = run_function(deployed, "", "app", "app", _api_event("/"))
    assert answer["statusCode"] == 200 and "chalicelib.dashboard" in after_run
    assert "chalicelib.openapi" not in after_run


def test_the_authorizer_loads_neither_the_app_nor_the_apis_modules(deployed):
    event = {"type": "TOKEN", "authorizationToken": f"Bearer {TOKEN}",
             "methodArn": "arn:aws:execute-api:us-east-1:123456789012:abc/api/GET/tasks"}
    answer, at_import, after_run = run_function(
        deployed, "token_auth", "chalicelib.routes", "token_auth", event)
    assert answer["principalId"] == DEFAULT_TENANT  # API_TOKENS holds a bare token
    assert at_import & NOT_AT_IMPORT == set()
    assert "app" not in after_run
    assert after_run & (API_ONLY | NEVER | {"chalicelib.executor", "requests"}) == set()
    # Deployed, the tokens are read from SSM (API_TOKENS_PARAM): a botocore client.
    from chalicelib import aws

    aws.client("ssm").put_parameter(Name="/cold-start/api-tokens", Value=TOKEN,
                                    Type="SecureString")
    answer, _, from_ssm = run_function(
        {**deployed, "API_TOKENS": "", "API_TOKENS_PARAM": "/cold-start/api-tokens"},
        "token_auth", "chalicelib.routes", "token_auth", event)
    assert answer["principalId"] == DEFAULT_TENANT and "botocore.client" in from_ssm
    assert from_ssm & (API_ONLY | NEVER | {"chalicelib.executor", "requests"}) == set()
    assert_footprint_times_these(deployed, "token_auth", from_ssm)
