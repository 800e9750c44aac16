"""The README's quick start, run as written: its first snippet saved as `quickstart.py`, then its
one copy-paste block in bash (the simulator, the app's environment, worker, beat and receiver,
the curl, `config check`, a run). Both are read from README.md, so the doc cannot drift.

Three literals are swapped, and only these (each must be in the block): the simulator's port,
the receiver's port and the Redis URL, for free ports and a Redis DB of this test's own (the
suite's DB + 6, flushed before and after). The `pip install` line is skipped (the suite runs in
an installed environment). Every process runs in one session of its own, ended by its id.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from tests.conftest import TEST_REDIS_URL
from tests.helpers import ROOT, free_port, wait_for

pytestmark = pytest.mark.integration

README = (ROOT / "README.md").read_text()
BIN = Path(sys.executable).parent
SIM_PORT, RECEIVER_PORT, REDIS_URL = "8700", "8000", "redis://127.0.0.1:6379/0"


def first_snippet() -> str:
    code = re.search(r"```python\n(.*?)```", README, flags=re.S)
    assert code is not None and code.group(1).startswith("# quickstart.py")
    return code.group(1)


def quick_start_block() -> str:
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S)
    assert block is not None
    return block.group(1)


def own_db() -> str:
    base, db = TEST_REDIS_URL.rsplit("/", 1)
    return f"{base}/{(int(db or 0) + 6) % 16}"


def end_session(pgid: int, timeout: float = 30.0) -> None:
    """SIGTERM the session's process group (the block's shell and what it left in the
    background), wait until it is gone, SIGKILL past ``timeout``."""

    def gone() -> bool:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        return False

    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        wait_for(gone, timeout, "the quick start's processes to end")
    except AssertionError:
        os.killpg(pgid, signal.SIGKILL)
        wait_for(gone, 10, "the quick start's processes to be killed")


def test_the_readme_quick_start_runs_as_written(tmp_path: Path) -> None:
    block = quick_start_block()
    for literal in (f":{SIM_PORT}", f":{RECEIVER_PORT}", f"--port {RECEIVER_PORT}", REDIS_URL):
        assert literal in block, literal
    url = own_db()
    sim_port, receiver_port = str(free_port()), str(free_port())
    script = block.replace(f":{SIM_PORT}", f":{sim_port}").replace(f"--port {SIM_PORT}", f"--port {sim_port}")
    script = script.replace(f":{RECEIVER_PORT}", f":{receiver_port}")
    script = script.replace(f"--port {RECEIVER_PORT}", f"--port {receiver_port}").replace(REDIS_URL, url)
    lines = script.splitlines()
    assert lines[0].startswith("pip install ")
    script = "\n".join(lines[1:]) + "\n"
    (tmp_path / "quickstart.py").write_text(first_snippet())
    (tmp_path / "quickstart.sh").write_text(script)

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("NEN_", "CELERY_", "DJANGO_"))}
    environ.update(PATH=f"{BIN}{os.pathsep}{environ.get('PATH', '')}", PYTHONPATH=str(ROOT / "src"))
    environ["PYTHONDONTWRITEBYTECODE"] = "1"
    broker = redis.Redis.from_url(url)
    broker.flushdb()
    log = tmp_path / "quickstart.log"
    with log.open("ab") as out:
        shell = subprocess.Popen(
            ["bash", str(tmp_path / "quickstart.sh")],
            cwd=tmp_path,
            env=environ,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: shell.poll() is not None, 180, "the quick start's last command")
        text = log.read_text(errors="replace")
        # the last command printed the run id, then its end; the worker ran the callback once
        run_ids = re.findall(r"^([0-9a-f]{8}-[0-9a-f-]{27})$", text, flags=re.M)
        assert len(run_ids) == 1 and re.search(r"^success$", text, flags=re.M), text[-6000:]
        called = f"store_result: {run_ids[0]} success (Nen said success)"
        wait_for(lambda: called in log.read_text(errors="replace"), 30, "the worker's store_result line")
        text = log.read_text(errors="replace")
        assert f"export NEN_API_URL=http://127.0.0.1:{sim_port}" in text  # the simulator printed it
        assert '{"status":"ok"}' in text  # the curl
        assert re.search(r"webhook\s+│\s+ok", text), text[-6000:]  # config check's signed test delivery
        assert text.count(f"store_result: {run_ids[0]}") == 1
    except BaseException:
        print(log.read_text(errors="replace")[-8000:])
        raise
    finally:
        end_session(shell.pid)
        broker.flushdb()
