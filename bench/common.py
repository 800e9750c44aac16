"""Shared by the benchmarks: one private Redis, settings for this process and its children,
processes started (and stopped by pid) per benchmark, and the result rows.

Every benchmark runs our path and a bare baseline in the same run on the same Redis and
reports a ratio: absolute numbers move with the machine's load, ratios much less.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.helpers import CHILD_PYTHONPATH, spawn_logged
from tests.helpers import ROOT as ROOT  # shared by tests and benchmarks
from tests.helpers import wait_for as wait_for

BIN = Path(sys.executable).parent
# the standalone receiver with the bench's callback task registered (as NEN_CELERY_APP loads a
# project's tasks), so it publishes the callback itself
RECEIVER = "bench.receiver_app:app"

_BASE = os.environ.get("NEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13").rsplit("/", 1)[0]
RUN_DB, BROKER_DB, BOOK_DB = 11, 12, 10
REDIS_URL = f"{_BASE}/{RUN_DB}"  # run state
BROKER_URL = f"{_BASE}/{BROKER_DB}"  # Celery broker: a separate DB, so round trips can be told apart
BOOK_URL = f"{_BASE}/{BOOK_DB}"  # the benchmarks' own bookkeeping (callback timestamps)
PROFILE = os.environ.get("BENCH_PROFILE") == "1"
WF = "12345678-1234-1234-1234-123456789abc"

API_KEY = "bench-api-key-" + secrets.token_hex(4)
SIGNING_KEY = "bench-signing-key-" + secrets.token_hex(4)
WEBHOOK_SECRET = "bench-webhook-secret-" + secrets.token_hex(4)


def env_int(name: str, default: int) -> int:
    return int(os.environ.get(name, str(default)))


# The table's two columns (bench/run.py runs each in processes of its own): the settings of the
# opt-in fast paths, all false ("defaults": stock Celery publish, transport and task events) or
# all true ("fast"). Set explicitly either way, so a column never depends on the package's defaults.
FAST_PATHS = (
    "NEN_DIRECT_PUBLISH",
    "NEN_WEBHOOK_DIRECT_PUBLISH",
    "NEN_PATCH_KOMBU_REDIS",
    "NEN_EVENT_BATCHES",
)
COLUMNS = {"defaults": "false", "fast": "true"}
COLUMN_LABELS = {"defaults": "defaults", "fast": "fast paths"}


def current_column() -> str:
    """The column this process measures (BENCH_COLUMN), or "": the settings as the env has them."""
    return os.environ.get("BENCH_COLUMN", "")


def measured_in_defaults() -> bool:
    """Rows the fast-path settings cannot change (Result.same_in_both) are measured once: true
    in the fast column of a run that measures the defaults column too (BENCH_WITH_DEFAULTS)."""
    return current_column() == "fast" and os.environ.get("BENCH_WITH_DEFAULTS") == "1"


def column_env(column: str) -> dict[str, str]:
    """The environment of one column: BENCH_COLUMN and the four settings."""
    return {"BENCH_COLUMN": column, **{name: COLUMNS[column] for name in FAST_PATHS}}


def configure(**extra: str | None) -> dict[str, str]:
    """Set NEN_* for this process (settings and context rebuilt); return the env for children."""
    from cryptography.fernet import Fernet

    values: dict[str, str | None] = {
        "NEN_REDIS_URL": REDIS_URL,
        "NEN_BROKER_URL": BROKER_URL,
        "NEN_KEY_PREFIX": os.environ.get("NEN_KEY_PREFIX") or f"nenbench{uuid.uuid4().hex[:6]}",
        "NEN_SECRETS_KEY": os.environ.get("NEN_SECRETS_KEY") or Fernet.generate_key().decode(),
        "NEN_API_KEY": API_KEY,
        "NEN_SIGNING_KEY": SIGNING_KEY,
        "NEN_WEBHOOK_SECRET": WEBHOOK_SECRET,
        "NEN_API_URL": None,
        "NEN_WEBHOOK_URL": None,
        # the column's fast-path settings, inherited by every worker and receiver started here
        **(column_env(current_column()) if current_column() else {}),
        **extra,
    }
    for key, value in values.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    from nen_celery.runtime.context import reset_context
    from nen_celery.settings import reset_settings

    reset_settings()
    reset_context()
    return {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH}


def flush() -> None:
    import redis

    for url in (REDIS_URL, BROKER_URL, BOOK_URL):
        redis.Redis.from_url(url).flushdb()


def sim_config(**overrides: Any) -> Any:
    from nen_celery.simulator import SimulatorConfig

    values: dict[str, Any] = {"processing_delay": 0.0, "terminal_delay": 0.0, **overrides}
    return SimulatorConfig(api_key=API_KEY, signing_key=SIGNING_KEY, webhook_secret=WEBHOOK_SECRET, **values)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = True) -> float:
    """CPU time of ``pid`` (all its threads) and, with ``children``, its live descendants (/proc)."""
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / _TICKS
            if children:
                for task in Path(f"/proc/{current}/task").iterdir():
                    todo += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def redis_pid() -> int:
    """The benchmarks' Redis server's pid (it runs on this machine)."""
    import redis

    return int(redis.Redis.from_url(BOOK_URL).info("server")["process_id"])


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Procs:
    """Processes one benchmark started; each in its own session, stopped by its own pid."""

    def __init__(self, env: dict[str, str], name: str) -> None:
        self.env = env
        self.logs = Path(tempfile.mkdtemp(prefix=f"nen-bench-{name}-"))
        self.procs: list[subprocess.Popen[bytes]] = []

    def spawn(self, name: str, argv: list[str], **env: str | None) -> subprocess.Popen[bytes]:
        """``env``: more variables for this process; None removes one (an unset setting)."""
        if PROFILE:  # BENCH_PROFILE=1: py-spy samples the process tree (collapsed stacks, logs dir)
            out_file = str(self.logs / f"{name}.folded")
            argv = [
                str(BIN / "py-spy"),
                "record",
                "-r",
                "200",
                "-f",
                "raw",
                "-o",
                out_file,
                "-s",
                "--",
                *argv,
            ]
        merged = {**self.env, **env}
        proc = spawn_logged(
            argv, self.logs / f"{name}.log", {k: v for k, v in merged.items() if v is not None}
        )
        self.procs.append(proc)
        return proc

    def worker(self, name: str, concurrency: int, pool: str = "prefork", queues: str | None = None) -> str:
        """A real `celery worker` of the project's app, with the benchmark tasks loaded;
        ``queues``: its ``-Q`` (default: every queue)."""
        node = f"{name}-{os.getpid()}@localhost"
        argv = [str(BIN / "celery"), "-A", "nen_celery.worker", "worker", "-I", "bench.tasks,bench.hand"]
        argv += ["-P", pool, "-c", str(concurrency), "-n", node, "--loglevel", "WARNING"]
        argv += ["-Q", queues] if queues else []
        argv += ["--without-gossip", "--without-mingle", "--without-heartbeat"]
        self.spawn(name, argv)
        from nen_celery.worker import app

        wait_for(lambda: bool(app.control.ping(destination=[node], timeout=0.5)), 90, f"worker {node}")
        return node

    def uvicorn(
        self,
        name: str,
        target: str,
        port: int,
        workers: int = 1,
        server: tuple[str, ...] = (),
        **env: str | None,
    ) -> str:
        """``server``: more uvicorn options (``--http h11 --loop asyncio``, ...)."""
        argv = [str(BIN / "uvicorn"), target, "--port", str(port), "--workers", str(workers)]
        argv += ["--log-level", "warning", "--no-access-log", *server]
        self.spawn(name, argv, **env)
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: _healthy(url + "/healthz"), 60, f"{name} on {url}")
        return url

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                # py-spy writes its profile on SIGINT; celery and uvicorn shut down warm on either
                os.killpg(proc.pid, signal.SIGINT if PROFILE else signal.SIGTERM)
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(10)
        self.procs.clear()


@contextmanager
def processes(env: dict[str, str], name: str) -> Iterator[Procs]:
    procs = Procs(env, name)
    try:
        yield procs
    except BaseException:
        print(f"  ({name}: process logs kept in {procs.logs})", file=sys.stderr)
        raise
    finally:
        procs.stop_all()
        if PROFILE:
            print(f"  ({name}: profiles in {procs.logs}; summarise with bench/profile_top.py)")


def _healthy(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def broker_quiet() -> bool:
    """No message waiting or unacked on the broker."""
    import redis

    r = redis.Redis.from_url(BROKER_URL)
    queues = ("celery", "nen.submit", "nen.ingest", "nen.complete")  # the hand-written tasks: celery
    return sum(int(r.llen(q)) for q in queues) == 0 and int(r.hlen("unacked")) == 0


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


@dataclass(frozen=True)
class Result:
    """One row of the table: our figure, the baseline (bare code or a bound), and the target."""

    name: str
    ours: str
    baseline: str
    ratio: float | None
    target: str
    met: bool
    notes: str = ""
    # the fast-path settings cannot change this figure: measured in the defaults column only
    same_in_both: bool = False

    def row(self) -> str:
        ratio = "" if self.ratio is None else f"{self.ratio:.2f}x"
        met = "yes" if self.met else "**no**"
        cells = [self.name, self.ours, self.baseline, ratio, self.target, met, self.notes]
        return "| " + " | ".join(cells) + " |"


HEADER = "| benchmark | ours | baseline | ratio | target | met | notes |\n|---|---|---|---|---|---|---|"
