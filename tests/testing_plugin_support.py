"""Building a throwaway user project from docs/testing.md, and running its pytest in a subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "testing.md"
PYTHON = str(Path(sys.executable))
_BLOCK = re.compile(r"^```(?:python|ini)\n# (?P<path>[\w./]+)\n(?P<body>.*?)^```$", re.M | re.S)


def doc_files(doc: Path = DOC) -> dict[str, str]:
    """Every code block of the doc that starts with ``# <path>``, joined per path in doc order."""
    files: dict[str, str] = {}
    for match in _BLOCK.finditer(doc.read_text()):
        path, body = match["path"], match["body"]
        files[path] = files[path] + "\n\n" + body if path in files else body
    return files


def write_project(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if path.suffix == ".py" and path.parent not in (root, root / "tests"):
            (path.parent / "__init__.py").touch()  # a package of the app (tests/ stays rootdir-relative)


def scratch_redis_url(db: int) -> str:
    """DB ``db`` of the suite's Redis server: the user's tests flush theirs."""
    base = os.environ.get("NEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    return re.sub(r"/\d+$", f"/{db}", base)


def user_env(redis_db: int = 14) -> dict[str, str]:
    """A user's shell: none of the suite's NEN_* settings, the tests' Redis on a DB of its own."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("NEN_", "PYTEST_"))}
    env["NEN_TESTING_REDIS_URL"] = scratch_redis_url(redis_db)
    return env


def run_pytest(
    root: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PYTHON, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *args],
        cwd=root,
        env=env if env is not None else user_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def outcomes(output: str) -> dict[str, str]:
    """``{test name: PASSED/FAILED/ERROR}`` from pytest's -rA short summary."""
    found = re.findall(r"^(PASSED|FAILED|ERROR) \S+::(\w+)", output, re.M)
    return {name: outcome for outcome, name in found}


def break_callbacks(tasks_py: str) -> str:
    """The doc's callbacks, each made to raise where it returned: a user's broken callback."""
    broken, count = re.subn(
        r"^(\s+)return .*$", r'\1raise RuntimeError("broken callback")', tasks_py, flags=re.M
    )
    assert count == 2, f"expected the doc's two callbacks to each return one value, found {count}"
    return broken


MODULES_TEST = """
import json
import os
import sys


def test_nothing():
    with open(os.environ["MODULES_OUT"], "w") as out:
        json.dump(sorted(sys.modules), out)
"""


def main(argv: list[str]) -> int:
    """``python -m tests.testing_plugin_support DIR``: write docs/testing.md's project into DIR."""
    target = Path(argv[0])
    target.mkdir(parents=True, exist_ok=True)
    write_project(target, doc_files())
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
