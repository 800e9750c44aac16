"""The deployed shape: separate processes, started with the documented commands.

Simulator (`nen-celery simulate`), worker (`celery -A nen_celery.worker worker`), receiver
(`uvicorn nen_celery.web.asgi:app`) and the CLI (`nen-celery start --wait`) each run as their
own process on a broker DB of their own, so the in-process test worker cannot help them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from nen_celery.domain.hints import hint_key, run_token
from nen_celery.domain.signing import webhook_signature
from nen_celery.worker import INGEST_QUEUE
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, TEST_REDIS_URL
from tests.helpers import CHILD_PYTHONPATH, free_port, wait_for
from tests.own_redis import OwnRedis

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
WF = "12345678-1234-1234-1234-123456789abc"
FAIL_WF = "87654321-4321-4321-4321-cba987654321"


def _db_url(offset: int) -> str:
    """A DB next to the suite's own (suite DB + offset), so parallel suites can pick apart."""
    base, db = TEST_REDIS_URL.rsplit("/", 1)
    return f"{base}/{(int(db or 0) + offset) % 16}"


class Procs:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: list[tuple[subprocess.Popen[bytes], Path]] = []

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        self.procs.append((proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(
            f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for _, log in self.procs
        )

    def stop(self) -> None:
        for proc, _ in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc, _ in self.procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.fixture(scope="module")
def deployed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    url = _db_url(1)
    redis.Redis.from_url(url).flushdb()
    sim_port, receiver_port = free_port(), free_port()
    env = {
        **os.environ,
        "PYTHONPATH": CHILD_PYTHONPATH,
        "NEN_REDIS_URL": url,
        "NEN_BROKER_URL": url,
        "NEN_KEY_PREFIX": "nenproc",
        "NEN_API_URL": f"http://127.0.0.1:{sim_port}",
        "NEN_WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/webhooks/nen",
        "NEN_API_KEY": SIM_API_KEY,
        "NEN_SIGNING_KEY": SIM_SIGNING_KEY,
        "NEN_WEBHOOK_SECRET": SIM_WEBHOOK_SECRET,
    }
    procs = Procs(tmp_path_factory.mktemp("procs"))
    try:
        procs.spawn(
            "simulator",
            [
                str(BIN / "nen-celery"),
                "simulate",
                "--port",
                str(sim_port),
                "--processing-delay",
                "0.02",
                "--terminal-delay",
                "0.02",
                "--fail-workflow",
                FAIL_WF,
            ],
            env,
        )
        procs.spawn(
            "worker",
            [
                str(BIN / "celery"),
                "-A",
                "nen_celery.worker",
                "worker",
                "-c",
                "2",
                "--loglevel",
                "INFO",
                "-n",
                f"proc-{os.getpid()}@%h",
            ],
            env,
        )
        procs.spawn(
            "receiver",
            [
                str(BIN / "uvicorn"),
                "nen_celery.web.asgi:app",
                "--port",
                str(receiver_port),
                "--log-level",
                "warning",
            ],
            env,
        )
        wait_for(lambda: healthy(f"http://127.0.0.1:{sim_port}/healthz"), 30, "simulator process")
        wait_for(lambda: healthy(f"http://127.0.0.1:{receiver_port}/healthz"), 30, "receiver process")
        yield env
    except BaseException:
        print(procs.logs())
        raise
    finally:
        procs.stop()


def cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "nen-celery"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def test_cli_start_wait_through_real_worker_and_receiver_processes(deployed: dict[str, str]) -> None:
    env = deployed  # the same NEN_SECRETS_KEY as worker and receiver
    done = cli(
        env,
        "start",
        WF,
        "--param",
        "PATIENT_NAME=Jane Doe",
        "--secure-param",
        "password=pw-proc-marker",
        "--wait",
        "--timeout",
        "60",
        "--json",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    run = json.loads(done.stdout)
    assert run["status"] == "success" and run["message_id"]
    assert [h["status"] for h in run["history"]] == ["queued", "submitted", "processing", "success"]
    assert "pw-proc-marker" not in done.stdout

    status = cli(env, "status", run["run_id"], "--json")
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "success"
    listed = json.loads(cli(env, "list", "--status", "success", "--json").stdout)
    assert run["run_id"] in [r["run_id"] for r in listed]


def test_cli_exit_codes(deployed: dict[str, str]) -> None:
    failed = cli(deployed, "start", FAIL_WF, "--wait", "--timeout", "60", "--json")
    assert failed.returncode == 1 and json.loads(failed.stdout)["status"] == "failed"
    assert cli(deployed, "status", "no-such-run").returncode == 3
    bad = cli(deployed, "start", "not-a-uuid")
    assert bad.returncode == 2 and "workflow_id" in bad.stderr
    secure_without_key = cli({**deployed, "NEN_SECRETS_KEY": ""}, "start", WF, "--secure-param", "p=x")
    assert secure_without_key.returncode == 2 and "NEN_SECRETS_KEY" in secure_without_key.stderr


def _receiver(tmp_path: Path, **settings: str) -> tuple[Procs, str]:
    """A receiver process (uvicorn) with ``settings`` on top of the suite's; its webhook URL."""
    port = free_port()
    env = {**os.environ, "NEN_WEBHOOK_SECRET": SIM_WEBHOOK_SECRET, "NEN_PUBLISH_TIMEOUT": "1", **settings}
    procs = Procs(tmp_path)
    procs.spawn(
        "receiver",
        [str(BIN / "uvicorn"), "nen_celery.web.asgi:app", "--port", str(port), "--log-level", "warning"],
        env,
    )
    try:
        wait_for(lambda: healthy(f"http://127.0.0.1:{port}/healthz"), 30, "receiver process")
    except BaseException:
        procs.stop()
        raise
    return procs, f"http://127.0.0.1:{port}/webhooks/nen"


# the run hint a worker with the suite's webhook secret puts in a run's URL (hints.py)
SOME_RUN = f"?nen_run=some-run~0~{run_token(hint_key(SIM_WEBHOOK_SECRET), 'some-run', 0)}"


def _signed_webhook(status: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps({"workflow_id": WF, "message_id": "m-1", "status": status}).encode()
    return body, {
        "X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body),
        "content-type": "application/json",
    }


def test_receiver_answers_503_when_the_broker_is_down(tmp_path: Path) -> None:
    # a hinted webhook is queued only when the receiver applies nothing (else it applies it on
    # the run store and publishes no ingest_webhook: tests/test_faults.py covers its callback)
    procs, url = _receiver(
        tmp_path, NEN_BROKER_URL=f"redis://127.0.0.1:{free_port()}/0", NEN_WEBHOOK_APPLY_PROCESSING="false"
    )
    try:
        body, headers = _signed_webhook("success")
        # within Nen's 5 s: the request itself times out otherwise. Both paths: a run hint is
        # pushed from the event loop, a webhook without one from a thread after its lookup.
        for query in (SOME_RUN, ""):
            response = httpx.post(url + query, content=body, headers=headers, timeout=5)
            assert response.status_code == 503, procs.logs()
            assert response.json()["error"] == "unavailable"
    finally:
        procs.stop()


def test_receiver_answers_503_while_its_redis_restarts(tmp_path: Path) -> None:
    """One Redis (AOF) as run store and broker, stopped and started again under a running
    receiver: 2xx before; while it is down, 503 on both paths within Nen's 5 s (Nen redelivers);
    2xx again once it is back, without restarting the receiver."""
    with OwnRedis(tmp_path / "redis", "--appendonly", "yes") as server:
        procs, url = _receiver(tmp_path, NEN_REDIS_URL=server.url(), NEN_BROKER_URL=server.url())
        try:
            body, headers = _signed_webhook("success")

            def answers() -> list[int]:  # hinted (pushed at once), then looked up by messageId
                return [
                    httpx.post(url + query, content=body, headers=headers, timeout=5).status_code
                    for query in (SOME_RUN, "")
                ]

            assert answers() == [200, 202], procs.logs()  # queued; parked (m-1 is no run's)
            server.stop()
            assert answers() == [503, 503], procs.logs()
            assert answers() == [503, 503], procs.logs()
            server.start()
            wait_for(lambda: answers() == [200, 202], 30, "2xx once Redis is back")
            assert server.client().llen(INGEST_QUEUE) >= 2  # the messages are on the broker
        finally:
            procs.stop()


def test_receiver_queues_a_processing_webhook_when_its_run_store_is_down(tmp_path: Path) -> None:
    """The receiver applies ``processing`` webhooks itself; with the run store unreachable it
    queues them for a worker instead, within Nen's 5 s, and still answers 200."""
    broker = redis.Redis.from_url(_db_url(8))  # no worker consumes this database
    broker.flushdb()
    procs, url = _receiver(
        tmp_path,
        NEN_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nobody listens
        NEN_BROKER_URL=_db_url(8),
    )
    try:
        body, headers = _signed_webhook("processing")
        response = httpx.post(url + SOME_RUN, content=body, headers=headers, timeout=5)
        assert response.status_code == 200 and response.json() == {"status": "queued"}, procs.logs()
        assert broker.llen(INGEST_QUEUE) == 1
        assert "applying it failed (ConnectionError); queued instead" in procs.logs()
    finally:
        procs.stop()
        broker.flushdb()


def test_dead_letters_are_listed_and_redriven_from_the_cli(deployed: dict[str, str]) -> None:
    unknown_wf = "0f0f0f0f-0000-4000-8000-000000000001"
    sim = deployed["NEN_API_URL"]
    assert httpx.post(f"{sim}/_sim/config", json={"unknown_workflows": [unknown_wf]}).status_code == 200
    rejected = cli(deployed, "start", unknown_wf, "--wait", "--timeout", "60", "--json")
    run_id = json.loads(rejected.stdout)["run_id"]
    assert rejected.returncode == 1 and json.loads(rejected.stdout)["status"] == "rejected"
    dead = json.loads(cli(deployed, "runs", "list", "--status", "rejected", "--json").stdout)
    assert run_id in [r["run_id"] for r in dead]
    # Nen accepts the workflow now: redrive it as a new attempt
    assert httpx.post(f"{sim}/_sim/config", json={"unknown_workflows": []}).status_code == 200
    redriven = cli(deployed, "runs", "redrive", run_id)
    assert redriven.returncode == 0, redriven.stdout + redriven.stderr

    def finished() -> dict[str, object] | None:
        shown = json.loads(cli(deployed, "runs", "show", run_id, "--json").stdout)
        return shown if shown["status"] == "success" else None

    run = wait_for(finished, 60, "the redriven run to succeed")
    assert run["redrives"] == 1 and run["previous_errors"][0]["status_code"] == 404  # type: ignore[index]
    again = cli(deployed, "runs", "redrive", run_id)
    assert again.returncode == 2 and "only rejected" in again.stdout
    assert cli(deployed, "runs", "redrive", "no-such-run").returncode == 3
