"""README stands alone and its examples keep working: no example time that can expire."""
import re
import subprocess
import sys

from tests.conftest import PROJECT_DIR

# A literal date-time handed to the API (run_at, until, start/end; --at, --until, --start,
# --end) expires once it is past, or beyond
# MAX_HORIZON_DAYS ahead; examples compute theirs with `date -u -d ...`.
LITERAL_RUN_AT = re.compile(r"""(?:"(?:run_at|until|start_at|end_at)"\s*:\s*"|"""
                            r"""--(?:at|until|start|end)[ =]+['"]?)\d{4}-\d\d-\d\dT""")


def _taskctl_help() -> str:
    return subprocess.run([sys.executable, "-m", "taskctl", "--help"], cwd=PROJECT_DIR,
                          capture_output=True, text=True, check=True).stdout


def test_no_example_hands_the_api_a_literal_date():
    for where, text in (("README.md", (PROJECT_DIR / "README.md").read_text()),
                        ("taskctl --help", _taskctl_help())):
        found = [match.group(0) for match in LITERAL_RUN_AT.finditer(text)]
        assert not found, f"{where}: {found}"


def test_readme_does_not_point_outside_the_repository():
    text = (PROJECT_DIR / "README.md").read_text()
    assert "../shared" not in text and "SPEC.md" not in text
