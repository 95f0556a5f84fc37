"""`chalice package` builds, offline, a template with the API, the executor and the sweeper;
the package step then compiles the zip's bytecode (chalicelib/bytecode.py)."""
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from chalicelib import bytecode
from tests.conftest import PROJECT_DIR, bytecode_problems

pytestmark = pytest.mark.e2e  # `chalice package` and the unzipped package, in subprocesses


def package(project, config_change=None, merge=False):
    """Copy the project, optionally change the dev stage's settings, run chalice package
    (with `--merge-template infra/resources.json` when `merge`) and compile the zip's
    bytecode, as `make package` does."""
    shutil.copy(PROJECT_DIR / "app.py", project)
    shutil.copy(PROJECT_DIR / "requirements.txt", project)
    shutil.copytree(PROJECT_DIR / "chalicelib", project / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (project / ".chalice").mkdir()
    for path in [PROJECT_DIR / ".chalice" / "config.json",
                 *(PROJECT_DIR / ".chalice").glob("policy-*.json")]:
        shutil.copy(path, project / ".chalice")
    if config_change:
        path = project / ".chalice" / "config.json"
        document = json.loads(path.read_text())
        document["stages"]["dev"]["environment_variables"].update(config_change)
        path.write_text(json.dumps(document))
    chalice = Path(sys.executable).parent / "chalice"
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("AWS_ENDPOINT_URL", None)
    command = [str(chalice), "package", "--stage", "dev"]
    if merge:
        shutil.copytree(PROJECT_DIR / "infra", project / "infra")
        command += ["--merge-template", "infra/resources.json"]
    result = subprocess.run(command + [str(project / "out")], cwd=project, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    bytecode.add_bytecode(project / "out" / "deployment.zip", project / "out" / "sam.json")
    return json.loads((project / "out" / "sam.json").read_text())


# Measured 2.0 MB: 1.2 MB of chalice, requests, tzdata and our code (boto3 comes with the
# runtime) and 0.8 MB of their bytecode, which spares every cold start compiling them
# (bench/footprint.py measures both).
ZIP_BUDGET_BYTES = int(2.5 * 1024 * 1024)


@pytest.fixture(scope="module")
def packaged(tmp_path_factory):
    project = tmp_path_factory.mktemp("project")
    return project, package(project)


@pytest.fixture(scope="module")
def template(packaged):
    return packaged[1]


def test_deployment_zip_stays_under_budget(packaged):
    size = (packaged[0] / "out" / "deployment.zip").stat().st_size
    print(f"\ndeployment.zip: {size / 1024 / 1024:.2f} MB (budget "
          f"{ZIP_BUDGET_BYTES / 1024 / 1024:.1f} MB)")
    assert size < ZIP_BUDGET_BYTES


def test_the_packaged_app_imports_as_lambda_imports_it(packaged, tmp_path):
    # Only what the zip holds (chalice's runtime part, requests, tzdata, our code), with
    # boto3 from this environment as the Lambda runtime provides it; the zip's own `chalice`
    # shadows the full one installed here.
    import zipfile

    with zipfile.ZipFile(packaged[0] / "out" / "deployment.zip") as archive:
        archive.extractall(tmp_path / "task")
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_LAMBDA_FUNCTION_NAME": "task-scheduler-dev"}
    result = subprocess.run(
        [sys.executable, "-c", "import app, chalice; print(app.app.app_name, chalice.__file__)"],
        cwd=tmp_path / "task", env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    name, chalice_file = result.stdout.split()
    assert name == "task-scheduler" and chalice_file.startswith(str(tmp_path / "task"))


def test_the_package_carries_the_bytecode_it_built(packaged):
    archive = packaged[0] / "out" / "deployment.zip"
    assert bytecode_problems(archive) == []
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
    assert {bytecode.pyc_name("app.py"), bytecode.pyc_name("chalicelib/executor.py"),
            bytecode.pyc_name("requests/sessions.py")} <= names


def test_the_package_step_is_reproducible(packaged, tmp_path):
    # Compiled again from the finished zip, in a fresh interpreter (this process holds
    # other objects: marshal's own format would write other bytes): the same zip.
    archive = packaged[0] / "out" / "deployment.zip"
    again = tmp_path / "deployment.zip"
    shutil.copy(archive, again)
    result = subprocess.run([sys.executable, "-m", "chalicelib.bytecode", str(again)],
                            cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert again.read_bytes() == archive.read_bytes()


# Every function's modules (the API's, the executor's), and the source file of each module.
FROM_BYTECODE = """
import sys
import app, chalicelib.executor, chalicelib.service, chalicelib.store.dynamodb, requests
for module in list(sys.modules.values()):
    if (getattr(module, "__file__", None) or "").endswith(".py"):
        print(module.__file__)
"""


def test_the_packaged_app_runs_from_its_bytecode(packaged, tmp_path):
    # Every module imported from the unzipped, read-only package is loaded from the .pyc
    # the package step built (python -v names each one it loads), none compiled anew.
    with zipfile.ZipFile(packaged[0] / "out" / "deployment.zip") as archive:
        archive.extractall(tmp_path / "task")
    task = tmp_path / "task"
    for path in [task, *task.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o222)
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_LAMBDA_FUNCTION_NAME": "task-scheduler-dev"}
    try:
        result = subprocess.run([sys.executable, "-v", "-c", FROM_BYTECODE], cwd=task, env=env,
                                capture_output=True, text=True, timeout=60)
    finally:
        for path in [task, *task.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
    assert result.returncode == 0, result.stderr[-3000:]
    ours = {line for line in result.stdout.split() if line.startswith(str(task))}
    assert len(ours) > 50
    loaded = set(re.findall(r"^# code object from '([^']+)'$", result.stderr, re.M))
    not_from_pyc = [path for path in ours if str(
        Path(path).parent / bytecode.pyc_name(Path(path).name)) not in loaded]
    assert not_from_pyc == []


# An environment with botocore and no boto3 (a plain MiniStack install has just that).
WITHOUT_BOTO3 = """
import sys


class NoBoto3:
    def find_spec(self, name, path=None, target=None):
        if name == "boto3" or name.startswith("boto3."):
            raise ImportError("boto3 is not in this environment")


sys.meta_path.insert(0, NoBoto3())
import app
from chalicelib import aws
from chalicelib.models import Task
from chalicelib.store import dynamodb

aws.client("dynamodb")
print(dynamodb.from_item(dynamodb._deserialize(dynamodb._serialize(dynamodb.to_item(
    Task("t", "log", {}, "rate(1 hour)", "rate", None, tags={"k": "v"}))))).task_id)
"""


def test_the_packaged_app_needs_botocore_only(packaged, tmp_path):
    import zipfile

    with zipfile.ZipFile(packaged[0] / "out" / "deployment.zip") as archive:
        archive.extractall(tmp_path / "task")
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_LAMBDA_FUNCTION_NAME": "task-scheduler-dev"}
    result = subprocess.run([sys.executable, "-c", WITHOUT_BOTO3], cwd=tmp_path / "task",
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["t"]


def _function(template, handler):
    matches = [r for r in template["Resources"].values()
               if r["Type"] == "AWS::Serverless::Function"
               and r["Properties"]["Handler"] == handler]
    assert len(matches) == 1, handler
    return matches[0]["Properties"]


def test_template_holds_the_three_lambdas(template):
    api = _function(template, "app.app")
    executor = _function(template, "app.execute_task")
    sweeper = _function(template, "app.daily_sweeper")
    assert [e["Properties"]["Schedule"] for e in sweeper["Events"].values()] == [
        "cron(0 9 * * ? *)"]
    # the webhook's whole exchange (65 s) + PRECISION=second's early wait (130 s)
    assert executor["Timeout"] >= 200
    assert sweeper["Timeout"] == 900
    assert (executor["MemorySize"], sweeper["MemorySize"]) == (256, 512)
    for function in (api, executor, sweeper):
        assert function["Environment"]["Variables"]["TASKS_TABLE"] == "ScheduledTasks-dev"


def test_each_role_uses_its_functions_committed_policy(template):
    roles = {"ApiHandlerRole": "api", "ExecuteTaskRole": "executor",
             "DailySweeperRole": "sweeper", "TokenAuthRole": "authorizer"}
    assert {name for name, r in template["Resources"].items()
            if r["Type"] == "AWS::IAM::Role"} == set(roles)
    for role, function in roles.items():
        policy = json.loads(
            (PROJECT_DIR / ".chalice" / f"policy-dev-{function}.json").read_text())
        documents = [p["PolicyDocument"]
                     for p in template["Resources"][role]["Properties"]["Policies"]]
        assert documents == [policy]


def _security(template):
    swagger = template["Resources"]["RestAPI"]["Properties"]["DefinitionBody"]
    return swagger["securityDefinitions"], swagger["paths"]


def test_token_mode_protects_every_route_but_health(template):
    definitions, paths = _security(template)
    assert definitions["token_auth"]["x-amazon-apigateway-authtype"] == "custom"
    for path, methods in paths.items():
        for method, operation in methods.items():
            if method == "options":
                continue
            expected = [] if path in ("/health", "/openapi.json", "/") else [{"token_auth": []}]
            assert operation.get("security", []) == expected, (path, method)


def test_iam_mode_uses_sigv4(tmp_path):
    iam = package(tmp_path, {"AUTH_MODE": "iam"})
    definitions, paths = _security(iam)
    assert definitions["sigv4"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    assert "token_auth" not in definitions
    assert paths["/schedule-task"]["post"]["security"] == [{"sigv4": []}]
    assert "security" not in paths["/health"]["get"]


def test_make_package_needs_no_configured_region(tmp_path):
    """`make package` with no region in the environment or a profile packages anyway (for
    us-east-1, said so), and the template it writes names no region."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("app.py", "Makefile", "pyproject.toml", *[p.name for p in PROJECT_DIR.glob(
            "requirements*.txt")]):
        shutil.copy(PROJECT_DIR / name, project)
    for folder in ("chalicelib", "infra", ".chalice"):
        shutil.copytree(PROJECT_DIR / folder, project / folder,
                        ignore=shutil.ignore_patterns("__pycache__", "local-data", "deployed"))
    venv = Path(sys.executable).parent.parent
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("AWS_") and key != "HOME"}
    env["HOME"] = str(tmp_path)  # no ~/.aws/config either
    result = subprocess.run(
        ["make", "package", f"VENV={venv}", f"PYTHON={sys.executable}",
         "-o", f"{venv}/.dev-installed", "-o", f"{venv}/.local-installed"],
        cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no AWS region configured: packaging with us-east-1" in result.stdout
    template = (project / "build" / "dev" / "sam.json").read_text()
    assert "us-east-1" not in template and "AWS::Region" in template
