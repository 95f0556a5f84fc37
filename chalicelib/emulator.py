"""The deployed shape on a local AWS emulator, MiniStack: `make dev-aws`.

    python -m chalicelib.emulator [--stage dev] [--port 4566]

Starts MiniStack (from its own virtualenv, .venv-emulator: it pins a botocore of its own),
packages the app as users package it (`chalice package` with infra/resources.json merged
in) and deploys that template as `sam deploy` does: the zip uploaded to S3, the template
given to CloudFormation, which expands the SAM transform and makes every resource (the
functions from the zip, API Gateway with the token authorizer, the table, the schedule
group and role, the queue, the topic, the sweeper's rule). Then it seeds the API token and
the signing secret in SSM and prints the API's URL and a ready curl. Tasks fire for real:
MiniStack's EventBridge Scheduler invokes execute_task, which runs from the zip.

Nothing here runs in Lambda.
"""
import argparse
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

from chalicelib import bytecode, config
from chalicelib.signing import new_secret

EMULATOR_BIN = config.PROJECT_DIR / ".venv-emulator" / "bin"
BUCKET = "task-scheduler-deployments"
API_STAGE = "api"  # config.json's api_gateway_stage
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "emulator", "AWS_SECRET_ACCESS_KEY": "emulator",
               "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
STACK_TIMEOUT_SECONDS = 120


class EmulatorError(Exception):
    """The emulator did not start, or the stack did not deploy: the message says why."""


@dataclass
class Emulator:
    """A MiniStack process on 127.0.0.1:port."""

    port: int
    process: subprocess.Popen
    log: Path

    @property
    def endpoint(self) -> str:
        """Where every AWS call goes (AWS_ENDPOINT_URL)."""
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the emulator (its state is in memory and goes with it)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)


@dataclass
class Deployment:
    """What a deployed stack offers: its API and the outputs of its template."""

    endpoint: str
    stage: str
    outputs: Dict[str, str]
    token: str = ""
    signing_secret: str = ""
    parameters: Dict[str, str] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        """The API's base URL through the emulator's API Gateway."""
        return f"{self.endpoint}/_aws/execute-api/{self.outputs['RestAPIId']}/{API_STAGE}"


def start(port: int, log: Path, bin_dir: Path = EMULATOR_BIN,
          timeout: float = 60.0) -> Emulator:
    """Start MiniStack on 127.0.0.1:port, its output in `log`; return once it answers."""
    executable = bin_dir / "ministack"
    if not executable.exists():
        raise EmulatorError(f"{executable} is missing: `make dev-aws` installs it")
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
           **CREDENTIALS, "BIND_HOST": "127.0.0.1", "GATEWAY_PORT": str(port),
           # The address handlers are given in AWS_ENDPOINT_URL: the one it listens on.
           "MINISTACK_HOST": "127.0.0.1"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as output:
        process = subprocess.Popen([str(executable)], env=env, stdout=output,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    emulator = Emulator(port, process, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmulatorError(f"MiniStack exited with {process.returncode}: see {log}")
        if _answers(port):
            return emulator
        time.sleep(0.1)
    emulator.stop()
    raise EmulatorError(f"MiniStack did not answer within {timeout:.0f} s: see {log}")


def _answers(port: int) -> bool:
    """Whether MiniStack on the port answers its health check."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/_ministack/health")
        return connection.getresponse().status == 200
    except OSError:  # not listening yet, or reset while starting
        return False
    finally:
        connection.close()


# What `chalice package` reads: the app, its library, its requirements, the stage config and
# policies, and the resources merged into the template.
PACKAGED = ("app.py", "requirements.txt", "chalicelib", ".chalice/config.json", "infra")


def package(stage: str, out_dir: Path) -> Path:
    """`chalice package` of the stage with infra/resources.json merged in (as `make package`
    builds it); the folder holding sam.json and deployment.zip.

    It builds from a copy of the project beside out_dir: chalice keeps a zip cache in the
    project's .chalice/deployments, which a second build at the same time (parallel tests)
    could read half-written, and the copy carries no bytecode."""
    source = out_dir.parent / f"{out_dir.name}-source"
    shutil.rmtree(source, ignore_errors=True)
    for name in PACKAGED:
        origin = config.PROJECT_DIR / name
        if origin.is_dir():
            shutil.copytree(origin, source / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, source / name)
    for policy in (config.PROJECT_DIR / ".chalice").glob("policy-*.json"):
        shutil.copy2(policy, source / ".chalice" / policy.name)
    chalice = Path(sys.executable).parent / "chalice"
    env = {**os.environ, "AWS_DEFAULT_REGION": os.environ.get("AWS_DEFAULT_REGION",
                                                               "us-east-1")}
    result = subprocess.run(
        [str(chalice), "package", "--stage", stage, "--merge-template",
         str(source / "infra" / "resources.json"), str(out_dir)],
        cwd=source, env=env, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise EmulatorError(f"chalice package failed:\n{result.stdout}{result.stderr}")
    # As `make package` does: the bytecode compiled in the zip (and whatever __pycache__
    # chalice copied from the project folder gone).
    try:
        bytecode.add_bytecode(out_dir / "deployment.zip", out_dir / "sam.json")
    except ValueError as error:
        raise EmulatorError(str(error)) from None
    return out_dir


def clients(endpoint: str):
    """A function giving boto3 clients of the emulator (whatever the environment says)."""
    import boto3

    session = boto3.session.Session(
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_REGION"])
    return lambda service: session.client(service, endpoint_url=endpoint)


def deploy(endpoint: str, build_dir: Path, stage: str,
           parameters: Optional[Dict[str, str]] = None) -> Deployment:
    """Deploy the packaged template as `sam deploy` does: the zip to S3 (named by its
    content), the template to CloudFormation (created, or updated if it exists)."""
    client = clients(endpoint)
    template = json.loads((build_dir / "sam.json").read_text())
    code = (build_dir / "deployment.zip").read_bytes()
    key = f"{stage}/{hashlib.sha256(code).hexdigest()[:16]}.zip"
    s3 = client("s3")
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key=key, Body=code)
    for resource in template["Resources"].values():
        if resource["Type"] == "AWS::Serverless::Function":
            resource["Properties"]["CodeUri"] = f"s3://{BUCKET}/{key}"
    given = {"Stage": stage, **(parameters or {})}
    stack = f"{config.APP_NAME}-{stage}"
    request = {"StackName": stack, "TemplateBody": json.dumps(template),
               "Parameters": [{"ParameterKey": name, "ParameterValue": value}
                              for name, value in given.items()],
               "Capabilities": ["CAPABILITY_IAM", "CAPABILITY_AUTO_EXPAND"]}
    cloudformation = client("cloudformation")
    try:
        cloudformation.describe_stacks(StackName=stack)
        cloudformation.update_stack(**request)
    except cloudformation.exceptions.ClientError as error:
        message = str(error)
        if "does not exist" in message:
            cloudformation.create_stack(**request)
        elif "No updates are to be performed" not in message:
            raise
    return Deployment(endpoint, stage, _wait_for(cloudformation, stack), parameters=given)


def _wait_for(cloudformation, stack: str) -> Dict[str, str]:
    deadline = time.monotonic() + STACK_TIMEOUT_SECONDS
    while True:
        found = cloudformation.describe_stacks(StackName=stack)["Stacks"][0]
        status = found["StackStatus"]
        if not status.endswith("_IN_PROGRESS"):
            break
        if time.monotonic() > deadline:
            raise EmulatorError(f"stack {stack} still {status} after "
                                f"{STACK_TIMEOUT_SECONDS} s")
        time.sleep(0.2)
    if status not in ("CREATE_COMPLETE", "UPDATE_COMPLETE"):
        failures = [f"{event['LogicalResourceId']}: {event.get('ResourceStatusReason')}"
                    for event in cloudformation.describe_stack_events(
                        StackName=stack)["StackEvents"]
                    if event["ResourceStatus"].endswith("_FAILED")]
        raise EmulatorError(f"stack {stack} is {status}: " + "; ".join(failures[:5]))
    return {output["OutputKey"]: output["OutputValue"] for output in found.get("Outputs", [])}


def seed_secrets(deployment: Deployment, token: Optional[str] = None) -> Deployment:
    """The stage's SSM parameters, as an operator sets them after a deploy: the API token
    (given, or a new one) and a webhook signing secret (kept if one is there)."""
    ssm = clients(deployment.endpoint)("ssm")
    deployment.token = token or secrets.token_urlsafe(24)
    ssm.put_parameter(Name=deployment.outputs["ApiTokensParameter"], Value=deployment.token,
                      Type="SecureString", Overwrite=True)
    name = deployment.outputs["WebhookSecretParameter"]
    try:
        secret = ssm.get_parameter(Name=name, WithDecryption=True)["Parameter"]["Value"]
    except ssm.exceptions.ParameterNotFound:
        secret = new_secret()
        ssm.put_parameter(Name=name, Value=secret, Type="SecureString")
    deployment.signing_secret = secret
    return deployment


def wait_until_serving(deployment: Deployment, timeout: float = 180.0) -> Deployment:
    """Return once the API answers /health and an authorized GET /tasks: each function's
    first invocation starts a Python process that imports the app (seconds, more on a busy
    machine), which API Gateway may not wait for."""
    deadline = time.monotonic() + timeout
    for path, headers in (("/health", {}),
                          ("/tasks?limit=1", {"Authorization": f"Bearer {deployment.token}"})):
        while _status(deployment.api_url + path, headers) != 200:
            if time.monotonic() > deadline:
                raise EmulatorError(f"the API did not answer {path} within {timeout:.0f} s")
            time.sleep(0.5)
    return deployment


def _status(url: str, headers: Dict[str, str]) -> Optional[int]:
    parts = url.split("/", 3)  # http:, "", host:port, path
    host, port = parts[2].rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("GET", "/" + parts[3], headers=headers)
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def banner(deployment: Deployment, seconds: float) -> str:
    """What a person needs to try the deployed stack."""
    url = deployment.api_url
    return f"""
task-scheduler, stage {deployment.stage}, deployed on MiniStack at {deployment.endpoint} ({seconds:.1f} s)
  API  : {url}
  token: {deployment.token}
  webhook signing secret: {deployment.signing_secret}
  AWS_ENDPOINT_URL={deployment.endpoint} points the aws CLI and boto3 at it.

Try it: start a receiver in another terminal,
  python3 scripts/receiver.py 9000
then schedule a webhook ten seconds from now (the emulator's scheduler looks every 10 s):
  curl -s -X POST {url}/schedule-task \\
    -H "Authorization: Bearer {deployment.token}" -H "Content-Type: application/json" \\
    -d '{{"action": "webhook", "payload": {{"url": "http://127.0.0.1:9000/hook", "data": {{"msg": "Hello from Lambda"}}}}, "run_at": "'$(date -u -d '+10 seconds' +%Y-%m-%dT%H:%M:%SZ)'"}}'
"""


def main(argv=None) -> int:
    """Start MiniStack, deploy the stage onto it, serve until SIGINT / SIGTERM."""
    parser = argparse.ArgumentParser(prog="python -m chalicelib.emulator",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--stage", default="dev")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "4566")))
    args = parser.parse_args(argv)
    started = time.monotonic()
    data = config.PROJECT_DIR / "build" / "emulator"
    emulator = start(args.port, data / "ministack.log")
    try:
        built = package(args.stage, data / args.stage)
        deployment = wait_until_serving(seed_secrets(
            deploy(emulator.endpoint, built, args.stage, {"PrivateTargets": "on"}),
            os.environ.get(config.API_TOKENS)))
        print(banner(deployment, time.monotonic() - started), file=sys.stderr, flush=True)
        print(json.dumps({"event": "deployed", "api": deployment.api_url,
                          "endpoint": deployment.endpoint}), flush=True)
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
        signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
        while not stopping and emulator.process.poll() is None:
            time.sleep(0.2)
    except EmulatorError as error:
        print(f"task-scheduler: {error}", file=sys.stderr)
        return 2
    finally:
        emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
