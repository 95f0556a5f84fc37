"""Footprint: the deployment zip `chalice package` builds, and the time `import app` takes from
it in a fresh interpreter (what a Lambda cold start pays before the first handler runs).

    python bench/footprint.py [--imports 15]
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

IMPORT_PROBE = ("import time; started = time.perf_counter(); import app; "
                "print((time.perf_counter() - started) * 1000)")


def build_package(folder: Path) -> Path:
    """`chalice package --stage dev` on a copy of the project; the deployment.zip."""
    project = folder / "project"
    project.mkdir()
    shutil.copy(PROJECT_DIR / "app.py", project)
    shutil.copy(PROJECT_DIR / "requirements.txt", project)
    shutil.copytree(PROJECT_DIR / "chalicelib", project / "chalicelib",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(PROJECT_DIR / ".chalice", project / ".chalice",
                    ignore=shutil.ignore_patterns("local-data", "deployments", "*.sqlite3"))
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    env.pop("AWS_ENDPOINT_URL", None)
    subprocess.run([str(Path(sys.executable).parent / "chalice"), "package", "--stage", "dev",
                    str(project / "out")], cwd=project, env=env, check=True,
                   capture_output=True, timeout=600)
    return project / "out" / "deployment.zip"


def import_app_ms(task_dir: Path, times: int) -> list:
    """`import app` in `times` fresh interpreters from the unzipped package, as Lambda does
    it: no bytecode cache for the package (its /var/task is read-only), boto3 from here."""
    env = {"PATH": os.environ["PATH"], "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_LAMBDA_FUNCTION_NAME": "task-scheduler-dev", "PYTHONDONTWRITEBYTECODE": "1"}
    return [float(subprocess.run([sys.executable, "-c", IMPORT_PROBE], cwd=task_dir, env=env,
                                 check=True, capture_output=True, text=True).stdout)
            for _ in range(times)]


def measure(imports: int = 15) -> dict:
    """Zip size and import time (median, min, max)."""
    with tempfile.TemporaryDirectory() as folder:
        archive = build_package(Path(folder))
        with zipfile.ZipFile(archive) as unpacked:
            unpacked.extractall(Path(folder) / "task")
        times = import_app_ms(Path(folder) / "task", imports)
        size = archive.stat().st_size
    return {"zip_bytes": size, "import_ms_median": round(statistics.median(times), 1),
            "import_ms_min": round(min(times), 1), "import_ms_max": round(max(times), 1),
            "imports": imports}


def table(result: dict) -> str:
    """A Markdown table of one result."""
    return markdown_table(["measure", "value"], [
        ["deployment.zip (`chalice package`)", f"{result['zip_bytes'] / 1024 / 1024:.2f} MB"],
        [f"`import app` from the unzipped package, fresh interpreter, no bytecode cache for "
         f"the package (as on Lambda), median of {result['imports']}",
         f"{result['import_ms_median']:.0f} ms (min {result['import_ms_min']:.0f}, max "
         f"{result['import_ms_max']:.0f})"]])


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imports", type=int, default=15)
    args = parser.parse_args()
    result = measure(args.imports)
    print(table(result))
    print(json.dumps(result))
