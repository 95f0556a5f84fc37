"""Compiled bytecode in the deployment zip, built by the package step:

    python -m chalicelib.bytecode build/dev/deployment.zip

`make package`, the emulator (`make dev-aws`), the package tests and bench/footprint.py run
it on the zip `chalice package` wrote. Lambda unzips the package into a read-only
/var/task, so without bytecode in it Python compiles every module it imports from there
(ours, chalice's, requests', urllib3's...) at every cold start and can keep none of it.

For every .py file in the zip it writes `__pycache__/<name>.<tag>.pyc` beside it, compiled
by this interpreter: the one `chalice package` ran with, which it named as the functions'
runtime (python3.X; the template is checked). Another Python ignores the file (its tag
differs) and compiles the source as before.

- Checked hash-based .pyc (PEP 552): Python loads one only while its source still hashes
  to what it was compiled from, whatever the files' times say (a zip keeps them to 2 s in
  no time zone, and unzipping may not restore them: the usual timestamp-based .pyc could
  not be relied on to match its source).
- Reproducible: compiled from the zip's own bytes, with no time or path of this machine,
  and written in marshal's format 2, which shares no objects. Format 4 (Python's own) marks
  an object as shared when anything else in the compiling process holds it too, so its
  bytes depend on what that process had imported; format 2's on the source and the Python
  version alone. It loads as fast, and the zip is 11 KB larger.
- Only this: any __pycache__ that `chalice package` copied from the project folder goes
  first. It belongs to whatever Python wrote it, and one written while it was zipped is
  corrupt ("bad magic number" at every import).

Nothing here runs in Lambda.
"""
import argparse
import importlib.util
import json
import marshal
import sys
import zipfile
from pathlib import Path, PurePosixPath
from typing import Optional

TAG = sys.implementation.cache_tag  # cpython-311: the part of the .pyc name Python looks for
# PEP 552's flags: hash-based (bit 0), and checked against the source at import (bit 1).
CHECKED_HASH = 0b11
MARSHAL_FORMAT = 2  # no shared references: the bytes depend on the source alone


def runtime() -> str:
    """The Lambda runtime this interpreter's bytecode is for (as chalice names it)."""
    return f"python{sys.version_info[0]}.{sys.version_info[1]}"


def is_bytecode(name: str) -> bool:
    """Whether a zip entry is compiled bytecode (or a folder of it)."""
    return "__pycache__/" in name or name.endswith((".pyc", ".pyo"))


def pyc_name(source: str) -> str:
    """Where Python looks for the bytecode of the zip entry `source` (a .py file)."""
    path = PurePosixPath(source)
    return str(path.parent / "__pycache__" / f"{path.stem}.{TAG}.pyc")


def compiled(source: bytes, name: str) -> Optional[bytes]:
    """The checked hash-based .pyc of `source`; None for a file this Python cannot compile
    (a library's file for another version: Python never imports it here either)."""
    try:
        code = compile(source, name, "exec", dont_inherit=True, optimize=0)
    except (SyntaxError, ValueError):
        return None
    return (importlib.util.MAGIC_NUMBER + CHECKED_HASH.to_bytes(4, "little")
            + importlib.util.source_hash(source) + marshal.dumps(code, MARSHAL_FORMAT))


def add_bytecode(archive: Path, template: Optional[Path] = None) -> int:
    """Rewrite `archive` with the .pyc of each of its .py files (and no other bytecode);
    the number written. `template` (sam.json): refuse if its functions run another
    Python than this one, whose bytecode Lambda would ignore."""
    if template is not None:
        check_runtime(template)
    written = 0
    rewritten = archive.with_suffix(".tmp")
    with zipfile.ZipFile(archive) as source, zipfile.ZipFile(
            rewritten, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            if is_bytecode(entry.filename):
                continue
            data = source.read(entry)
            target.writestr(entry, data)
            if not entry.filename.endswith(".py"):
                continue
            pyc = compiled(data, entry.filename)
            if pyc is None:
                continue
            info = zipfile.ZipInfo(pyc_name(entry.filename), entry.date_time)
            info.external_attr = entry.external_attr
            info.create_system = entry.create_system
            info.compress_type = zipfile.ZIP_DEFLATED
            target.writestr(info, pyc)
            written += 1
    rewritten.replace(archive)
    return written


def check_runtime(template: Path) -> None:
    """ValueError if a function of the template (sam.json) runs another Python than this."""
    resources = json.loads(template.read_text()).get("Resources", {})
    runtimes = {r["Properties"].get("Runtime") for r in resources.values()
                if r.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function")}
    others = sorted(str(r) for r in runtimes - {runtime()})
    if others:
        raise ValueError(f"{template} runs {', '.join(others)}, this is {runtime()}: its "
                         "bytecode would be ignored; package and compile with that Python")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chalicelib.bytecode",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("archive", type=Path, help="the deployment.zip `chalice package` "
                                                   "wrote (its sam.json beside it is checked)")
    args = parser.parse_args(argv)
    template = args.archive.parent / "sam.json"
    try:
        written = add_bytecode(args.archive, template if template.exists() else None)
    except ValueError as error:
        print(f"chalicelib.bytecode: {error}", file=sys.stderr)
        return 2
    print(f"{args.archive}: {written} modules compiled for {runtime()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
