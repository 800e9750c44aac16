"""Running the examples as users do: their own processes (web server, `celery -A <their app>
worker`, beat, a script in the web app's setting) from the example's folder, on the user's broker.

Nothing of an example is imported into the test process: ``init_celery`` is once per process and
the suite's own worker publishes through the ready-made app. Each process is started by
``ExampleProcs`` and stopped by its own pid (with the children of its session) at the end.

Every process gets ``NEN_BROKER_URL`` pointing at a closed port: a publish of nen's that went
through the ready-made app instead of the user's would fail (or never reach a worker), so a run
that completes proves start_run, the webhook receiver and the workers used the user's app.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, TEST_REDIS_URL
from tests.helpers import ROOT, stop_group, wait_for

BIN = Path(sys.executable).parent
EXAMPLES = ROOT / "examples"
# Where nen's ready-made app would publish: nothing listens there.
UNREACHABLE_BROKER = "redis://127.0.0.1:9/0"
NEN_QUEUES = ("nen.submit", "nen.ingest", "nen.complete")
MARK = "EXAMPLE-RESULT "  # the line a script prints its JSON result on

# A script's preamble: the Celery apps alive in the process, and whether the ready-made app's
# module was imported (it must not be, once init_celery gave the user's app).
DIAGNOSE = """
import json as _json, sys as _sys
import celery as _celery
from celery._state import _get_active_apps

def _diagnose():
    # the apps first: reading celery.current_app creates Celery's fallback app ("default") in a
    # process where no app called set_default()
    apps = sorted(a.main for a in _get_active_apps())
    return {
        "apps": apps,
        "current_app": _celery.current_app.main,
        "ready_made_imported": "nen_celery.worker" in _sys.modules,
    }

def _result(value):
    print("MARK" + _json.dumps(value), flush=True)
""".replace("MARK", MARK)


def example_env(folder: Path, sim_url: str, prefix: str, **extra: str) -> dict[str, str]:
    """The environment of every process of one example run: the suite's fast NEN_* timings
    (tests.conftest.BASE_ENV), the run state on the suite's Redis DB under ``prefix``, the
    simulator as Nen, nen's own broker unreachable, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "FLASK_", "CELERY_"))}
    env.pop("NEN_WEBHOOK_URL", None)  # each example gives its own
    env.update(
        {
            "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT / "src")]),
            "PYTHONDONTWRITEBYTECODE": "1",
            "NEN_REDIS_URL": TEST_REDIS_URL,
            "NEN_KEY_PREFIX": prefix,
            "NEN_BROKER_URL": UNREACHABLE_BROKER,
            "NEN_API_URL": sim_url,
            "NEN_API_KEY": SIM_API_KEY,
            "NEN_SIGNING_KEY": SIM_SIGNING_KEY,
            "NEN_WEBHOOK_SECRET": SIM_WEBHOOK_SECRET,
            "NEN_RECONCILE_INTERVAL": "1",
            **extra,
        }
    )
    return env


class ExampleProcs:
    """Processes of one example, each in a session of its own, logs in ``tmp``."""

    def __init__(self, tmp: Path, folder: Path, env: dict[str, str]) -> None:
        self.tmp = tmp
        self.folder = folder
        self.env = env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env=self.env,
                cwd=self.folder,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        return proc

    def celery(self, name: str, app: str, *args: str) -> subprocess.Popen[bytes]:
        """``celery -A <app> <args>`` as the example's README says to run it."""
        return self.spawn(name, [str(BIN / "celery"), "-A", app, *args])

    def worker(self, app: str, node: str) -> subprocess.Popen[bytes]:
        """A plain worker (no -Q): it must consume the user's queue and nen's alike."""
        options = ["-l", "INFO", "-c", "2", "-n", node, "--without-mingle", "--without-gossip"]
        proc = self.celery("worker", app, "worker", *options)
        self.wait_log("worker", " ready.", 60)
        return proc

    def run(self, argv: list[str], timeout: float = 60) -> str:
        """Run a command to its end (a script, a management command); its output."""
        done = subprocess.run(
            argv, env=self.env, cwd=self.folder, capture_output=True, text=True, timeout=timeout, check=False
        )
        output = done.stdout + done.stderr
        (self.tmp / "commands.log").open("a").write(f"$ {' '.join(argv)}\n{output}\n")
        assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{output[-4000:]}"
        return done.stdout

    def script(self, code: str, argv: list[str] | None = None, args: list[str] | None = None) -> Any:
        """Run ``code`` (after DIAGNOSE) in a Python process of the example (``python -c``, with
        ``args`` as sys.argv[1:]); the value it passed to ``_result``. ``argv`` runs it another
        way (``manage.py shell -c``)."""
        source = DIAGNOSE + code
        out = self.run((argv or [str(BIN / "python"), "-c"]) + [source] + (args or []))
        lines = [line for line in out.splitlines() if line.startswith(MARK)]
        assert len(lines) == 1, out[-4000:]
        return json.loads(lines[0][len(MARK) :])

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, timeout: float = 30) -> None:
        proc = self.procs[name]

        def seen() -> bool:
            assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{self.log(name)[-4000:]}"
            return text in self.log(name)

        wait_for(seen, timeout, f"{text!r} in the {name} log")

    def wait_http(self, name: str, url: str, timeout: float = 30) -> None:
        proc = self.procs[name]

        def answers() -> bool:
            assert proc.poll() is None, f"{name} exited {proc.returncode}:\n{self.log(name)[-4000:]}"
            try:
                return httpx.get(url, timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(answers, timeout, f"{name} to answer {url}")

    def stop(self, name: str) -> None:
        stop_group(self.procs[name], timeout=20)  # the process and its pool children: all ours

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            self.stop(name)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-6000:]}" for p in sorted(self.tmp.glob("*.log"))
        )


@contextlib.contextmanager
def running(procs: ExampleProcs) -> Iterator[ExampleProcs]:
    """Print every log when the block fails; stop every process after it."""
    try:
        yield procs
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop_all()


# -- the worker's own account ------------------------------------------------------------------
_RECEIVED = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] received")
_ENDED = re.compile(r"Task ([\w.]+)\[([0-9a-f-]+)\] (?:succeeded|raised|retry|failed|ignored)")


def tasks_received(log: str) -> list[str]:
    """Names of the tasks the worker received, in order (one per message)."""
    return [m.group(1) for m in _RECEIVED.finditer(log)]


def worker_idle(log: str) -> bool:
    """Every task the worker received has ended (as its log says)."""
    received = {m.group(2) for m in _RECEIVED.finditer(log)}
    ended = {m.group(2) for m in _ENDED.finditer(log)}
    return bool(received) and received <= ended


def worker_queues(log: str) -> set[str]:
    """The queues the worker's start-up banner lists (``.> name  exchange=...``)."""
    return set(re.findall(r"\.> (\S+)\s+exchange=", log))


# -- the simulator's account -------------------------------------------------------------------
def sim_run(stats: dict[str, Any], run_id: str) -> tuple[str, list[str]] | None:
    """(message_id, webhook statuses delivered with a 2xx) of the run nen sent with this run id."""
    for message_id, run in stats["runs"].items():
        if run["idempotency_key"] == run_id:
            return message_id, sorted(stats["deliveries"].get(message_id, []))
    return None


# -- what waits in the user's broker -----------------------------------------------------------
def amqp_messages(url: str, queue: str) -> list[dict[str, Any]]:
    """Headers of the messages waiting in a RabbitMQ queue (read, then given back)."""
    from kombu import Connection

    found: list[dict[str, Any]] = []
    with Connection(url, connect_timeout=5) as conn:
        channel = conn.channel()
        try:
            tags = []
            while (message := channel.basic_get(queue, no_ack=False)) is not None:
                found.append(dict(message.headers or {}))
                tags.append(message.delivery_tag)
            for tag in tags:
                channel.basic_reject(tag, requeue=True)
        except conn.channel_errors:  # no such queue: nothing was published to it
            return []
        finally:
            with contextlib.suppress(Exception):
                channel.close()
    return found


def redis_messages(client: redis.Redis, key: str) -> list[dict[str, Any]]:
    """Headers of the messages waiting in a Redis broker's queue (a list)."""
    return [json.loads(raw)["headers"] for raw in client.lrange(key, 0, -1)]


def unique(name: str) -> str:
    return f"{name}{uuid.uuid4().hex[:8]}"


@pytest.fixture
def namespace(redis_client: redis.Redis) -> Iterator[Any]:
    """``namespace(name)``: a unique key prefix on the suite's Redis DB (an example's run state,
    its data, its broker queues); every key under the prefixes it gave is deleted afterwards."""
    given: list[str] = []

    def make(name: str) -> str:
        given.append(unique(name))
        return given[-1]

    yield make
    for prefix in given:
        for key in redis_client.scan_iter(match=prefix + "*", count=1000):
            redis_client.delete(key)
