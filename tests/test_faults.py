"""Faults injected for real: worker processes SIGKILLed at chosen points, racing workers,
duplicated webhooks, Redis restarted mid-flight. Each run must end with exactly one callback,
and Nen must be asked to start it once.

Workers are separate `celery -A nen_celery.worker worker` processes on a broker DB of their
own; failpoints (nen_celery.faults) freeze a task at a named place so it can be killed there.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from celery import Celery

from nen_celery.config import Settings
from nen_celery.crypto import Sealer
from nen_celery.simulator import SimulatorConfig, SimulatorServer
from nen_celery.store import RunStore
from nen_celery.worker import celery_config
from tests.callbacks import record
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, TEST_REDIS_URL
from tests.helpers import free_port, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.faults]

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
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


def _db_url(url: str, offset: int) -> str:
    base, db = url.rsplit("/", 1)
    return f"{base}/{(int(db or 0) + offset) % 16}"


class Cluster:
    """Simulator (thread), receiver and workers (processes) sharing one Redis DB."""

    def __init__(self, tmp: Path, redis_url: str, sim: SimulatorServer) -> None:
        self.tmp = tmp
        self.url = redis_url
        self.sim = sim
        self.prefix = f"nenfault{uuid.uuid4().hex[:6]}"
        self.receiver_port = free_port()
        self.env = {
            **os.environ,
            **FAST_ENV,
            "PYTHONPATH": str(ROOT),
            "NEN_REDIS_URL": redis_url,
            "NEN_BROKER_URL": redis_url,
            "NEN_KEY_PREFIX": self.prefix,
            "NEN_API_URL": sim.url,
            "NEN_WEBHOOK_URL": f"http://127.0.0.1:{self.receiver_port}/webhooks/nen",
            "NEN_API_KEY": SIM_API_KEY,
            "NEN_SIGNING_KEY": SIM_SIGNING_KEY,
            "NEN_WEBHOOK_SECRET": SIM_WEBHOOK_SECRET,
        }
        settings = Settings(**{k[4:].lower(): v for k, v in self.env.items()
                               if k.startswith("NEN_") and k[4:].lower() in Settings.model_fields})
        self.redis = redis.Redis.from_url(redis_url, decode_responses=True)
        self.store = RunStore(self.redis, settings, Sealer.from_settings(settings))
        self.sender = Celery("fault-sender")
        self.sender.conf.update(celery_config(settings))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.workers = 0

    # -- processes ----------------------------------------------------------------------------
    def spawn(self, name: str, argv: list[str], **env: str) -> subprocess.Popen[bytes]:
        with (self.tmp / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(argv, env={**self.env, **env}, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=ROOT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def receiver(self) -> subprocess.Popen[bytes]:
        proc = self.spawn("receiver", [str(BIN / "uvicorn"), "nen_celery.web.asgi:app", "--port",
                                       str(self.receiver_port), "--log-level", "warning"])
        wait_for(lambda: _healthy(f"http://127.0.0.1:{self.receiver_port}/healthz"), 30, "receiver")
        return proc

    def worker(self, failpoints: str = "", concurrency: int = 2) -> tuple[subprocess.Popen[bytes], str]:
        self.workers += 1
        node = f"fault{self.workers}-{os.getpid()}@localhost"
        proc = self.spawn(f"worker{self.workers}", [
            str(BIN / "celery"), "-A", "nen_celery.worker", "worker", "-I", "tests.callbacks",
            "-c", str(concurrency), "-n", node, "--loglevel", "INFO",
            "--without-gossip", "--without-mingle", "--without-heartbeat"], NEN_FAILPOINTS=failpoints)
        wait_for(lambda: bool(self.sender.control.ping(destination=[node], timeout=0.5)), 60,
                 f"worker {node}")
        return proc, node

    def beat(self) -> subprocess.Popen[bytes]:
        return self.spawn("beat", [str(BIN / "celery"), "-A", "nen_celery.worker", "beat", "--loglevel",
                                   "INFO", "-s", str(self.tmp / f"beat-{uuid.uuid4().hex}")])

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)  # the worker and its pool children: all started by us
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            self.stop(proc)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.tmp.glob("*.log")))

    # -- runs ---------------------------------------------------------------------------------
    def start(self, workflow: str = WF) -> str:
        run_id = f"f-{uuid.uuid4()}"
        assert self.store.create(run_id, workflow, {"PATIENT_NAME": "Jane"}, None,
                                 dict(record.s(tag="complete")), dict(record.s(tag="failure")))
        self.sender.send_task("nen_celery.submit_run", args=(run_id,), kwargs={"reschedule": 0},
                              queue="nen.submit")
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
        pending = sum(self.redis.llen(q) for q in QUEUES)
        return pending == 0 and self.redis.hlen("unacked") == 0

    def settle(self, run_ids: list[str], timeout: float = 60) -> None:
        def done() -> bool:
            runs = [self.store.raw(r) for r in run_ids]
            return all(r.get("completion") == "sent" for r in runs) and self.quiet()
        wait_for(done, timeout, "every run completed and the broker drained")


def _healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(api_key=SIM_API_KEY, signing_key=SIM_SIGNING_KEY,
                             webhook_secret=SIM_WEBHOOK_SECRET, processing_delay=0.05, terminal_delay=0.1)
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture
def cluster(tmp_path: Path, sim: SimulatorServer) -> Iterator[Cluster]:
    url = _db_url(TEST_REDIS_URL, 2)
    redis.Redis.from_url(url).flushdb()
    sim.reset()
    c = Cluster(tmp_path, url, sim)
    c.receiver()
    try:
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop_all()


@pytest.mark.parametrize("point", ["submit:before_post", "ingest:before_apply",
                                   "complete:before_dispatch", "complete:after_dispatch"])
def test_pool_process_killed_at_each_point_finishes_the_run_once(cluster: Cluster, point: str) -> None:
    cluster.worker(failpoints=point)
    cluster.arm(point)
    run_id = cluster.start()
    os.kill(cluster.frozen_pid(point), signal.SIGKILL)  # the pool process running the task
    cluster.settle([run_id])
    calls = cluster.calls(run_id)
    assert [c["tag"] for c in calls] == ["complete"], cluster.logs()
    assert cluster.posts(run_id) == 1
    assert cluster.store.raw(run_id)["status"] == "success"


def test_whole_worker_killed_mid_task_is_redelivered_to_a_new_worker(cluster: Cluster) -> None:
    point = "submit:before_post"
    worker, _ = cluster.worker(failpoints=point)
    cluster.arm(point)
    run_id = cluster.start()
    cluster.frozen_pid(point)
    cluster.stop(worker, signal.SIGKILL)  # master and pool: the message stays unacked in Redis
    cluster.worker()  # a fresh worker gets it back once the visibility timeout has passed
    cluster.settle([run_id], timeout=90)
    assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
    assert cluster.posts(run_id) == 1


def test_killed_after_nen_accepted_is_never_resent_and_ends_once(cluster: Cluster) -> None:
    """The 202 was lost with the worker: the run is `unknown`, Nen is not asked again, and the
    beat sweep ends it submit_failed (fate unknown) after NEN_UNKNOWN_TIMEOUT: one on_failure."""
    point = "submit:after_accept"
    cluster.worker(failpoints=point)
    cluster.beat()
    cluster.arm(point)
    run_id = cluster.start()
    os.kill(cluster.frozen_pid(point), signal.SIGKILL)
    cluster.settle([run_id])
    assert [c["tag"] for c in cluster.calls(run_id)] == ["failure"]
    data = cluster.store.raw(run_id)
    assert data["status"] == "submit_failed" and json.loads(data["error"])["type"] == "fate_unknown"
    assert "unknown" in [h["status"] for h in json.loads(data["history"])]
    assert cluster.posts(run_id) == 1


def test_two_workers_racing_duplicated_webhooks_fire_one_callback_per_run(cluster: Cluster) -> None:
    cluster.sim.state.config.webhook_duplicates = 4  # each webhook delivered 5 times, concurrently
    cluster.worker(concurrency=2)
    cluster.worker(concurrency=2)
    run_ids = [cluster.start() for _ in range(20)]
    cluster.settle(run_ids)
    for run_id in run_ids:
        assert [c["tag"] for c in cluster.calls(run_id)] == ["complete"]
        assert cluster.posts(run_id) == 1
    delivered = cluster.sim.stats()["deliveries"]
    assert max(len(v) for v in delivered.values()) >= 5  # the duplicates really were sent


def test_redis_restart_mid_flight_loses_nothing(tmp_path: Path, sim: SimulatorServer) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not on PATH")
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data), "--appendonly", "yes",
            "--appendfsync", "everysec", "--save", ""]

    def start_redis() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        wait_for(lambda: _pings(f"redis://127.0.0.1:{port}/0"), 20, "redis-server")
        return proc

    server = start_redis()
    sim.reset()
    c = Cluster(tmp_path, f"redis://127.0.0.1:{port}/0", sim)
    try:
        c.receiver()
        c.worker()
        c.beat()
        run_ids = [c.start() for _ in range(15)]
        wait_for(lambda: any(c.store.raw(r).get("message_id") for r in run_ids), 30, "a run in flight")
        server.send_signal(signal.SIGTERM)  # clean shutdown: the AOF is fsynced
        server.wait(30)
        server = start_redis()
        c.settle(run_ids, timeout=120)
        for run_id in run_ids:
            assert [x["tag"] for x in c.calls(run_id)] == ["complete"], c.logs()
            assert c.posts(run_id) == 1
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.stop_all()
        if server.poll() is None:
            server.terminate()
            server.wait(30)


def _pings(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False
