"""A deployment in processes, for fault tests and the soak benchmark: the simulator (in a
thread), the receiver, workers and beat (each its own process, on one Redis DB)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery
from kombu.exceptions import OperationalError

from nen_celery.settings import Settings
from nen_celery.simulator import SimulatorServer
from nen_celery.store.runs import RunStore
from nen_celery.store.sealer import Sealer
from nen_celery.worker import celery_config
from tests.callbacks import record
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET
from tests.helpers import (
    CHILD_PYTHONPATH,
    OTHER_PROCESS_HEADER,
    free_port,
    spawn_logged,
    stop_group,
    wait_for,
)

BIN = Path(sys.executable).parent
WF = "12345678-1234-1234-1234-123456789abc"
QUEUES = ("celery", "nen.submit", "nen.ingest", "nen.complete")

FAST_ENV = {
    "NEN_SUBMIT_DEADLINE": "1",
    "NEN_CONNECT_TIMEOUT": "1",
    "NEN_WRITE_TIMEOUT": "1",
    "NEN_READ_TIMEOUT": "2",
    "NEN_BACKOFF_INITIAL": "0.05",
    "NEN_BACKOFF_MAX": "0.2",
    "NEN_RESCHEDULE_DELAY": "0.2",
    "NEN_SUBMIT_RESCHEDULES": "1",
    "NEN_VISIBILITY_TIMEOUT": "16",
    "NEN_RESTORE_INTERVAL": "1",
    "NEN_COMPLETION_LEASE": "2",
    "NEN_RECONCILE_INTERVAL": "0.5",
    "NEN_QUEUED_GRACE": "3",
    "NEN_WEBHOOK_DEADLINE": "2",
    "NEN_REPOLL_INTERVAL": "1",
    "NEN_PARKED_GRACE": "0.5",
    "NEN_UNKNOWN_TIMEOUT": "4",
}


def db_url(url: str, offset: int) -> str:
    base, db = url.rsplit("/", 1)
    return f"{base}/{(int(db or 0) + offset) % 16}"


class Cluster:
    """Simulator (thread), receiver and workers (processes) sharing one Redis DB."""

    def __init__(
        self, tmp: Path, redis_url: str, sim: SimulatorServer, broker_url: str | None = None, **env: str
    ) -> None:
        """``broker_url``: an amqp:// URL runs the cluster on RabbitMQ (run state stays on Redis);
        ``env``: extra NEN_* settings for every process of the cluster."""
        self.tmp = tmp
        self.url = redis_url
        self.broker_url = broker_url or redis_url
        self.sim = sim
        self.prefix = f"nenfault{uuid.uuid4().hex[:6]}"
        self.receiver_port = free_port()
        self.env = {
            **os.environ,
            **FAST_ENV,
            "PYTHONPATH": CHILD_PYTHONPATH,
            "NEN_REDIS_URL": redis_url,
            "NEN_BROKER_URL": self.broker_url,
            "NEN_KEY_PREFIX": self.prefix,
            "NEN_API_URL": sim.url,
            "NEN_WEBHOOK_URL": f"http://127.0.0.1:{self.receiver_port}/webhooks/nen",
            "NEN_API_KEY": SIM_API_KEY,
            "NEN_SIGNING_KEY": SIM_SIGNING_KEY,
            "NEN_WEBHOOK_SECRET": SIM_WEBHOOK_SECRET,
            **env,
        }
        settings = Settings(
            **{
                k[4:].lower(): v
                for k, v in self.env.items()
                if k.startswith("NEN_") and k[4:].lower() in Settings.model_fields
            }
        )
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.store = RunStore(self.redis, settings, Sealer.from_settings(settings))
        self.sender = Celery("fault-sender", set_as_current=False)
        self.sender.conf.update(celery_config(settings))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers = 0

    # -- processes ----------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        proc = spawn_logged(argv, self.tmp / f"{name}.log", {**self.env, **env})
        self.procs.append(proc)
        return proc

    def receiver(self, target: str = "nen_celery.web.asgi:app", **env: str) -> subprocess.Popen[bytes]:
        """The standalone receiver on the cluster's port; ``target``: tests.receiver_app:app has
        the tests' callbacks registered (it dispatches them itself); ``env``: its own settings."""
        name = "receiver" if not (self.tmp / "receiver.log").exists() else f"receiver{len(self.procs)}"
        proc = self.spawn(
            name,
            [
                str(BIN / "uvicorn"),
                target,
                "--port",
                str(self.receiver_port),
                "--log-level",
                "warning",
            ],
            **env,
        )
        wait_for(lambda: healthy(f"http://127.0.0.1:{self.receiver_port}/healthz"), 30, "receiver")
        return proc

    def worker(
        self,
        failpoints: str = "",
        concurrency: int = 2,
        *,
        pool: str = "prefork",
        queues: str = "",
        loglevel: str = "INFO",
    ) -> tuple[subprocess.Popen[bytes], str]:
        """A `celery worker` process with its own node name; ``queues`` as for ``-Q`` (default all)."""
        self.workers += 1
        node = f"fault{self.workers}-{os.getpid()}@localhost"
        extra = ["-P", pool] + (["-Q", queues] if queues else [])
        proc = self.spawn(
            f"worker{self.workers}",
            [
                str(BIN / "celery"),
                "-A",
                "nen_celery.worker",
                "worker",
                "-I",
                "tests.callbacks",
                "-c",
                str(concurrency),
                "-n",
                node,
                "--loglevel",
                loglevel,
                *extra,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            NEN_FAILPOINTS=failpoints,
        )
        wait_for(lambda: self.answers(node), 60, f"worker {node}")
        return proc, node

    def answers(self, node: str) -> bool:
        """The worker answers a ping (False while the broker connection is being re-made)."""
        try:
            return bool(self.sender.control.ping(destination=[node], timeout=0.5))
        except (redis.RedisError, OSError, OperationalError):
            return False

    def beat(self) -> subprocess.Popen[bytes]:
        return self.spawn(
            "beat",
            [
                str(BIN / "celery"),
                "-A",
                "nen_celery.worker",
                "beat",
                "--loglevel",
                "INFO",
                "-s",
                str(self.tmp / f"beat-{uuid.uuid4().hex}"),
            ],
        )

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        stop_group(proc, sig)  # the worker and its pool children: all started by us

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}" for p in sorted(self.tmp.glob("*.log"))
        )

    # -- runs ---------------------------------------------------------------------------------
    def start(self, workflow: str = WF, callback: Any = record) -> str:
        run_id = f"f-{uuid.uuid4()}"
        assert self.store.create(
            run_id,
            workflow,
            {"PATIENT_NAME": "Jane"},
            None,
            dict(callback.s(tag="complete")),
            dict(callback.s(tag="failure")),
        )
        self.sender.send_task(
            "nen_celery.submit_run",
            args=(run_id,),
            kwargs={"reschedule": 0},
            queue="nen.submit",
            headers={OTHER_PROCESS_HEADER: "1"},  # run by the cluster's workers, not this process
        )
        return run_id

    def calls(self, run_id: str) -> list[dict[str, Any]]:
        key = f"{self.prefix}:test:callbacks:{run_id}"
        return [json.loads(x) for x in self.redis.lrange(key, 0, -1)]

    def posts(self, run_id: str) -> int:
        return int(self.sim.stats()["posts_by_idempotency_key"].get(run_id, 0))

    def arm(self, point: str) -> None:
        self.redis.set(f"{self.prefix}:failpoint:{point}:armed", 1)

    def frozen_pid(self, point: str) -> int:
        pid = wait_for(lambda: self.redis.get(f"{self.prefix}:failpoint:{point}"), 30, f"failpoint {point}")
        return int(pid)

    def quiet(self) -> bool:
        """No message waiting or held unacked anywhere on the broker."""
        if not self.broker_url.startswith("redis"):
            return amqp_ready_messages(self.broker_url) == 0  # RabbitMQ: waiting messages only
        pending = sum(self.redis.llen(q) for q in QUEUES)
        return pending == 0 and self.redis.hlen("unacked") == 0

    def settled(self, run_ids: list[str]) -> bool:
        """Every run's completion is sent, every callback ran (it recorded its call: tests.callbacks'
        record or record_dispatch), and the broker holds nothing."""
        runs = [self.store.raw(r) for r in run_ids]
        if not all(r.get("completion") == "sent" for r in runs):
            return False
        with_callback = [r["run_id"] for r in runs if r.get("callback_task_id")]
        return all(self.callback_ran(r) for r in with_callback) and self.quiet()

    def callback_ran(self, run_id: str) -> bool:
        keys = (f"{self.prefix}:test:callbacks:{run_id}", f"{self.prefix}:test:dispatches:{run_id}")
        return bool(self.redis.exists(*keys))

    def settle(self, run_ids: list[str], timeout: float = 60) -> None:
        wait_for(lambda: self.settled(run_ids), timeout, "every run completed and the broker drained")


@contextmanager
def logs_on_failure(cluster: Cluster) -> Iterator[Cluster]:
    """Print the processes' logs when the block fails; stop every process after it."""
    try:
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop_all()


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


# -- RabbitMQ ---------------------------------------------------------------------------------
RABBITMQ_HOST, RABBITMQ_PORT = "127.0.0.1", 5672
# the queues Celery's native delayed delivery declares (countdowns on quorum queues wait there)
DELAY_QUEUES = tuple(f"celery_delayed_{level}" for level in range(28))


def rabbitmq_unavailable() -> str | None:
    """Why RabbitMQ tests cannot run here, or None."""
    try:
        socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout=2).close()
    except OSError as exc:
        return f"RabbitMQ does not answer on {RABBITMQ_HOST}:{RABBITMQ_PORT} ({exc})"
    if shutil.which("rabbitmqctl") is None:
        return "rabbitmqctl is not on PATH (needed to create a private vhost)"
    return None


def _rabbitmqctl(*args: str) -> None:
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed: {done.stderr.strip() or done.stdout}")


def rabbitmq_restart() -> None:
    """``rabbitmqctl stop_app`` then ``start_app``: the whole local broker restarts, every vhost
    with it (only for tests marked ``faults``); returns once it is up again, and always starts it."""
    try:
        _rabbitmqctl("stop_app")
    finally:
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")


@contextmanager
def rabbitmq_vhost() -> Iterator[str]:
    """A private vhost for this test run (deleted after), so parallel runs never share queues
    (Celery's delay queues have fixed names); yields its amqp:// URL. Each rabbitmqctl call takes
    seconds, so create one per module, not per test."""
    vhost = f"nen-test-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    _rabbitmqctl("add_vhost", vhost)
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{vhost}"
    finally:
        _rabbitmqctl("delete_vhost", vhost)


def rabbitmq_vhost_or_skip() -> Iterator[str]:
    """A module fixture's body: a private vhost's URL, or the module skipped naming why."""
    import pytest

    reason = rabbitmq_unavailable()
    if reason is not None:
        pytest.skip(reason)
    with rabbitmq_vhost() as url:
        yield url


def amqp_ready_messages(url: str, names: tuple[str, ...] = QUEUES + DELAY_QUEUES) -> int:
    """Messages waiting in the named queues (passive declares; a missing queue counts 0).
    AMQP does not show unacked messages: callers first wait for the runs themselves."""
    from kombu import Connection

    total = 0
    with Connection(url, connect_timeout=5) as conn:
        for name in names:
            channel = conn.channel()
            try:
                total += int(channel.queue_declare(queue=name, passive=True).message_count)
            except conn.channel_errors:
                pass  # NOT_FOUND closes the channel
            finally:
                with contextlib.suppress(Exception):  # already closed by the broker
                    channel.close()
    return total


def rabbitmq_queue_types(url: str) -> dict[str, str]:
    """Queue name -> type ("quorum"/"classic") in the URL's vhost, as the broker reports them.
    rabbitmqctl failed once (exit 64) in a loaded run right after another test restarted the
    broker's app: it is asked again until it answers, and its own words end up in the failure."""
    vhost = url.rsplit("/", 1)[1]
    command = ["rabbitmqctl", "-q", "list_queues", "-p", vhost, "--no-table-headers", "name", "type"]
    tries: list[subprocess.CompletedProcess[str]] = []

    def listed() -> bool:
        tries.append(subprocess.run(command, capture_output=True, text=True, timeout=120))
        return tries[-1].returncode == 0

    try:
        wait_for(listed, 60, "rabbitmqctl list_queues to answer")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: exit {tries[-1].returncode}: {tries[-1].stderr}") from None
    done = tries[-1]
    return dict(line.split()[:2] for line in done.stdout.splitlines() if len(line.split()) >= 2)
