"""The package step's bytecode (chalicelib/bytecode.py) on small zips; tests/test_package.py
checks it on the zip `chalice package` builds."""
import json
import os
import subprocess
import sys
import zipfile

from chalicelib import bytecode
from tests.conftest import PROJECT_DIR, bytecode_problems

FAILING = b'''def fail():
    raise RuntimeError("from the zip")
'''


def _zip(path, files):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, (2025, 1, 2, 3, 4, 6)), data)
    return path


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "chalicelib.bytecode", *map(str, args)],
                          cwd=PROJECT_DIR, capture_output=True, text=True, timeout=60)


def test_each_module_gets_its_bytecode_and_nothing_else_stays(tmp_path):
    archive = _zip(tmp_path / "deployment.zip", {
        "app.py": b"import lib.helper\n",
        "lib/__init__.py": b"",
        "lib/helper.py": FAILING,
        "lib/data.json": b"{}",
        # What chalice may copy from a project folder: another Python's, a stale one.
        "lib/__pycache__/helper.cpython-39.pyc": b"junk",
        bytecode.pyc_name("lib/helper.py"): b"stale",
        "legacy.pyc": b"junk",
        "py2only.py": b"print 'no'\n",
    })
    assert bytecode.add_bytecode(archive) == 3
    assert bytecode_problems(archive) == []
    with zipfile.ZipFile(archive) as zipped:
        names = set(zipped.namelist())
        assert zipped.read("lib/data.json") == b"{}"
        assert zipped.getinfo(bytecode.pyc_name("lib/helper.py")).date_time == (
            2025, 1, 2, 3, 4, 6)
    assert names == {"app.py", "lib/__init__.py", "lib/helper.py", "lib/data.json",
                     "py2only.py", bytecode.pyc_name("app.py"),
                     bytecode.pyc_name("lib/__init__.py"), bytecode.pyc_name("lib/helper.py")}


def test_the_problems_check_sees_wrong_bytecode(tmp_path):
    archive = _zip(tmp_path / "deployment.zip", {
        "a.py": b"x = 1\n", bytecode.pyc_name("a.py"): bytecode.compiled(b"x = 2\n", "a.py"),
        "b.py": b"y = 1\n", "c.py": b"z = 1\n",
        bytecode.pyc_name("c.py"): bytecode.compiled(b"z = 1\n", "c.py")[:4] + b"\0" * 12,
        "__pycache__/d.cpython-39.pyc": b"junk"})
    assert bytecode_problems(archive) == [
        f"{bytecode.pyc_name('a.py')}: compiled from another source",
        f"b.py: no {bytecode.pyc_name('b.py')}",
        f"{bytecode.pyc_name('c.py')}: not a checked hash-based .pyc",
        "__pycache__/d.cpython-39.pyc: bytecode the package step did not build"]


def test_the_bytecode_is_the_same_whoever_compiles_it(tmp_path):
    files = {"app.py": (PROJECT_DIR / "app.py").read_bytes(),
             "routes.py": (PROJECT_DIR / "chalicelib" / "routes.py").read_bytes()}
    here = _zip(tmp_path / "here.zip", files)
    fresh = _zip(tmp_path / "fresh.zip", files)
    bytecode.add_bytecode(here)  # this process, which holds many of the same names
    assert _cli(fresh).returncode == 0
    assert here.read_bytes() == fresh.read_bytes()


def test_a_module_run_from_its_bytecode_shows_its_source_in_tracebacks(tmp_path):
    archive = _zip(tmp_path / "deployment.zip", {"helper.py": FAILING})
    bytecode.add_bytecode(archive)
    with zipfile.ZipFile(archive) as zipped:
        zipped.extractall(tmp_path / "task")
    result = subprocess.run(
        [sys.executable, "-v", "-c", "import helper; helper.fail()"], cwd=tmp_path / "task",
        env={"PATH": os.environ["PATH"], "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True, text=True, timeout=60)
    assert f"code object from '{tmp_path / 'task' / bytecode.pyc_name('helper.py')}'" in (
        result.stderr)
    assert f'File "{tmp_path / "task" / "helper.py"}", line 2, in fail' in result.stderr
    assert 'raise RuntimeError("from the zip")' in result.stderr


def test_a_template_for_another_python_is_refused(tmp_path):
    archive = _zip(tmp_path / "deployment.zip", {"app.py": b"x = 1\n"})
    before = archive.read_bytes()
    (tmp_path / "sam.json").write_text(json.dumps({"Resources": {"F": {
        "Type": "AWS::Serverless::Function", "Properties": {"Runtime": "python3.99"}}}}))
    result = _cli(archive)
    assert result.returncode == 2
    assert "runs python3.99" in result.stderr and bytecode.runtime() in result.stderr
    assert archive.read_bytes() == before

    (tmp_path / "sam.json").write_text(json.dumps({"Resources": {"F": {
        "Type": "AWS::Serverless::Function", "Properties": {"Runtime": bytecode.runtime()}}}}))
    result = _cli(archive)
    assert result.returncode == 0, result.stderr
    assert f"compiled for {bytecode.runtime()}" in result.stdout
    assert bytecode_problems(archive) == []
