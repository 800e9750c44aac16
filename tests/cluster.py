"""A deployment in processes, for fault tests and the soak benchmark: the simulator (in a
thread), the receiver, workers and beat (each its own process, on one Redis DB)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
from celery import Celery

from nen_celery.config import Settings
from nen_celery.crypto import Sealer
from nen_celery.simulator import SimulatorServer
from nen_celery.store import RunStore
from nen_celery.worker import celery_config
from tests.callbacks import record
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET
from tests.helpers import OTHER_PROCESS_HEADER, free_port, wait_for

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


def db_url(url: str, offset: int) -> str:
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
        with (self.tmp / f"{name}.log").open("ab") as out:
            proc = subprocess.Popen(
                argv,
                env={**self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def receiver(self) -> subprocess.Popen[bytes]:
        proc = self.spawn(
            "receiver",
            [
                str(BIN / "uvicorn"),
                "nen_celery.web.asgi:app",
                "--port",
                str(self.receiver_port),
                "--log-level",
                "warning",
            ],
        )
        wait_for(lambda: healthy(f"http://127.0.0.1:{self.receiver_port}/healthz"), 30, "receiver")
        return proc

    def worker(self, failpoints: str = "", concurrency: int = 2) -> tuple[subprocess.Popen[bytes], str]:
        self.workers += 1
        node = f"fault{self.workers}-{os.getpid()}@localhost"
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
                "INFO",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
            ],
            NEN_FAILPOINTS=failpoints,
        )
        wait_for(
            lambda: bool(self.sender.control.ping(destination=[node], timeout=0.5)), 60, f"worker {node}"
        )
        return proc, node

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
        pending = sum(self.redis.llen(q) for q in QUEUES)
        return pending == 0 and self.redis.hlen("unacked") == 0

    def settle(self, run_ids: list[str], timeout: float = 60) -> None:
        def done() -> bool:
            runs = [self.store.raw(r) for r in run_ids]
            return all(r.get("completion") == "sent" for r in runs) and self.quiet()

        wait_for(done, timeout, "every run completed and the broker drained")


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False
