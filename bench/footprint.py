"""Footprint: the deployment zip the package step builds (`chalice package`, then the
bytecode compiled in: chalicelib/bytecode.py), and what a Lambda cold start spends importing
from it in a fresh interpreter, with and without that bytecode.

    python bench/footprint.py [--imports 15] [--project DIR]

Each function's process imports its handler's module (app.py; chalicelib.routes for the
authorizer), then its first invocation imports what its path needs. Both are measured, per
function: `import app` alone no longer tells a function's cold start, as app.py imports
no handler's path. Creating a client (its service model read from botocore's data) comes
on top for any function calling AWS, the same with or without our bytecode; the last rows
measure it, and what boto3's client and resource layers would add. Each measure is a fresh
interpreter in the unzipped package, as Lambda runs it: /var/task is read-only, so nothing
is compiled there for the next start (PYTHONDONTWRITEBYTECODE); botocore (and boto3)
come from this environment, as the Lambda runtime provides them. The measures alternate,
one interpreter each per round, so a busy moment of the machine falls on all of them.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from bench.common import markdown_table  # noqa: E402
from chalicelib import bytecode  # noqa: E402

TIMED = ("import time; started = time.perf_counter(); {}; "
         "print((time.perf_counter() - started) * 1000)")
STORE_PATH = ("chalicelib.wiring", "chalicelib.store.dynamodb",
              "chalicelib.triggers.scheduler", "botocore.session")
# Function: (the module Lambda imports for its handler, what the handler's first
# invocation imports after it). tests/test_cold_start.py checks these against the modules
# each handler really loads when it runs.
FUNCTIONS = {
    "api": ("app", ("chalicelib.auth", "chalicelib.service", "chalicelib.validation")
            + STORE_PATH),
    "execute_task": ("app", ("chalicelib.executor",) + STORE_PATH),
    "daily_sweeper": ("app", ("chalicelib.sweeper",) + STORE_PATH),
    "token_auth": ("chalicelib.routes", ("chalicelib.auth", "botocore.session")),
}
REGION = "us-east-1"
EXPLAINED = """A function's process imports its handler's module, then its first invocation
imports what its path needs: `import app` is the part the API, the executor and the sweeper
share, and each function's row is everything it imports before its first AWS call
(tests/test_cold_start.py checks these against the modules each handler really loads).
Lambda's /var/task is read-only: a package without bytecode is compiled again at every cold
start, so `make package` compiles it in (chalicelib/bytecode.py). Most of what remains is
botocore, with the runtime (compiled there, as here), and creating a client comes after it:
we use botocore's client, and the second table shows what boto3's would cost instead."""
# A DynamoDB client as we make it (botocore's own), and as boto3 would.
SDK_IMPORT = "botocore's import alone"
SDK = {
    SDK_IMPORT: "import botocore.session",
    "botocore client (ours)": "import botocore.session; botocore.session.get_session()"
                              f".create_client('dynamodb', region_name='{REGION}')",
    "boto3 client": f"import boto3; boto3.client('dynamodb', region_name='{REGION}')",
    "boto3 resource": f"import boto3; boto3.resource('dynamodb', region_name='{REGION}')",
}


def build_package(folder: Path, project: Path = PROJECT_DIR) -> Path:
    """`chalice package --stage dev` on a copy of the project; the deployment.zip as chalice
    wrote it (no bytecode: the copy has none)."""
    copy = folder / "project"
    copy.mkdir()
    shutil.copy(project / "app.py", copy)
    shutil.copy(project / "requirements.txt", copy)
    shutil.copytree(project / "chalicelib", copy / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(project / ".chalice", copy / ".chalice",
                    ignore=shutil.ignore_patterns("local-data", "deployments", "*.sqlite3"))
    env = {**os.environ, "AWS_DEFAULT_REGION": REGION}
    env.pop("AWS_ENDPOINT_URL", None)
    subprocess.run([str(Path(sys.executable).parent / "chalice"), "package", "--stage", "dev",
                    str(copy / "out")], cwd=copy, env=env, check=True,
                   capture_output=True, timeout=600)
    return copy / "out" / "deployment.zip"


def probes() -> dict:
    """Name -> the statement to time."""
    found = {"import app": "import app"}
    for function, (module, path) in FUNCTIONS.items():
        found[function] = "; ".join(f"import {name}" for name in (module,) + path)
    found.update(SDK)
    return found


def _time_once(task_dir: Path, statement: str) -> float:
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": REGION,
           "AWS_LAMBDA_FUNCTION_NAME": "task-scheduler-dev", "PYTHONDONTWRITEBYTECODE": "1"}
    return float(subprocess.run([sys.executable, "-c", TIMED.format(statement)],
                                cwd=task_dir, env=env, check=True, capture_output=True,
                                text=True).stdout)


def _summary(times: list) -> dict:
    return {"median": round(statistics.median(times), 1), "min": round(min(times), 1),
            "max": round(max(times), 1)}


def measure(imports: int = 15, project: Path = PROJECT_DIR) -> dict:
    """Zip sizes and import times (median, min, max of `imports` fresh interpreters) of
    the package as shipped (with bytecode) and as `chalice package` alone builds it."""
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        plain = build_package(folder, project)
        shipped = folder / "shipped.zip"
        shutil.copy(plain, shipped)
        # In a fresh interpreter, as `make package` runs it.
        subprocess.run([sys.executable, "-m", "chalicelib.bytecode", str(shipped)],
                       cwd=PROJECT_DIR, check=True, capture_output=True, timeout=300)
        variants = {"bytecode": shipped, "source_only": plain}
        dirs = {}
        for variant, archive in variants.items():
            dirs[variant] = folder / variant
            with zipfile.ZipFile(archive) as unpacked:
                unpacked.extractall(dirs[variant])
        statements = probes()
        times = {variant: {probe: [] for probe in statements} for variant in variants}
        for _ in range(imports):
            for variant, task_dir in dirs.items():
                for probe, statement in statements.items():
                    if probe in SDK and variant != "bytecode":
                        continue  # the SDK is the runtime's: our bytecode changes nothing
                    times[variant][probe].append(_time_once(task_dir, statement))
        result = {"imports": imports, "runtime": bytecode.runtime()}
        for variant, archive in variants.items():
            result[variant] = {"zip_bytes": archive.stat().st_size, **{
                probe: _summary(values) for probe, values in times[variant].items() if values}}
    # The shipped package's `import app`, under the names report.py has always read.
    app = result["bytecode"]["import app"]
    result.update(zip_bytes=result["bytecode"]["zip_bytes"], import_ms_median=app["median"],
                  import_ms_min=app["min"], import_ms_max=app["max"])
    return result


def _ms(summary: dict) -> str:
    return f"{summary['median']:.0f} ms ({summary['min']:.0f}-{summary['max']:.0f})"


def table(result: dict) -> str:
    """Markdown tables of one result: the package, then the SDK."""
    shipped, plain = result["bytecode"], result["source_only"]
    rows = [["deployment.zip", f"{shipped['zip_bytes'] / 1024 / 1024:.2f} MB",
             f"{plain['zip_bytes'] / 1024 / 1024:.2f} MB", ""]]
    for probe, label in [("import app", "`import app`")] + [
            (function, f"{function}: {module} + its first invocation's imports")
            for function, (module, _) in FUNCTIONS.items()]:
        saved = plain[probe]["median"] - shipped[probe]["median"]
        rows.append([label, _ms(shipped[probe]), _ms(plain[probe]), f"{saved:.0f} ms"])
    package = markdown_table(
        ["package (`make package`)", "as shipped, with bytecode",
         "source only (`chalice package` alone)", "bytecode saves"], rows)
    sdk = markdown_table(
        ["the runtime's SDK: its import, a DynamoDB client (import + create)", "time"],
        [[name, _ms(shipped[name])] for name in SDK])
    return (f"{package}\n\n{sdk}\n\nMedian (min-max) of {result['imports']} fresh "
            f"interpreters each, in the unzipped package ({result['runtime']}), alternating.")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imports", type=int, default=15)
    parser.add_argument("--project", type=Path, default=PROJECT_DIR,
                        help="the project to package (another checkout, e.g. an older "
                             "commit's `git archive`, to compare)")
    args = parser.parse_args()
    result = measure(args.imports, args.project)
    print(table(result))
    print(json.dumps(result))
