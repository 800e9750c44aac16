"""The hard way: run whole lifecycles with a marker secret, then look for it everywhere.

Searched: every key and value of every Redis DB (0-15) on the test Redis server (broker queues,
unacked messages and kombu bookkeeping included, base64 bodies decoded), every log record of
the process at DEBUG (worker, receiver, simulator, celery, kombu, httpx, httpcore...), a real
Flower process's task API and its log, and the simulator's state. Needles: the marker put in
secure_params, the configured NEN_API_KEY / NEN_SIGNING_KEY / NEN_WEBHOOK_SECRET /
NEN_SECRETS_KEY values, and the presigned URLs' X-Amz-Signature values.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis

from nen_celery import get_run, start_run
from nen_celery.settings import get_settings
from nen_celery.worker import app as celery_app
from tests.conftest import TEST_REDIS_URL, Stack
from tests.helpers import CHILD_PYTHONPATH, OTHER_PROCESS_HEADER, free_port, wait_for
from tests.security_callbacks import noted, noted_key

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
ROOT = Path(__file__).resolve().parent.parent
LOGGERS = ("", "celery", "kombu", "httpx", "httpcore", "nen_celery", "uvicorn", "amqp", "redis")
_B64 = re.compile(rb"[A-Za-z0-9+/_-]{16,}={0,2}")


def expand(data: bytes, depth: int = 2) -> list[bytes]:
    """``data`` and what its base64-looking runs decode to (kombu stores bodies in base64)."""
    out = [data]
    if depth == 0:
        return out
    for match in _B64.finditer(data):
        token = match.group().rstrip(b"=")
        token += b"=" * (-len(token) % 4)
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                decoded = decode(token)
            except ValueError:
                continue
            out += expand(decoded, depth - 1)
    return out


def redis_dump(url: str) -> dict[int, list[bytes]]:
    """Every key and value of DBs 0-15 of the server behind ``url``, all types, as bytes."""
    base = url.rsplit("/", 1)[0]
    dump: dict[int, list[bytes]] = {}
    for db in range(16):
        client = redis.Redis.from_url(f"{base}/{db}")
        chunks: list[bytes] = []
        for key in client.scan_iter(count=1000):
            chunks.append(key)
            kind = client.type(key).decode()
            if kind == "string":
                chunks.append(client.get(key) or b"")
            elif kind == "hash":
                for k, v in client.hgetall(key).items():
                    chunks += [k, v]
            elif kind == "list":
                chunks += client.lrange(key, 0, -1)
            elif kind == "set":
                chunks += list(client.smembers(key))
            elif kind == "zset":
                chunks += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
            elif kind == "stream":
                for _, fields in client.xrange(key):
                    for k, v in fields.items():
                        chunks += [k, v]
        client.close()
        if chunks:
            dump[db] = chunks
    return dump


def find(needles: dict[str, str], chunks: list[bytes]) -> list[str]:
    """Names of the needles found in any chunk or in what its base64 decodes to."""
    found: set[str] = set()
    encoded = {name: value.encode() for name, value in needles.items() if value}
    for chunk in chunks:
        for piece in expand(chunk):
            for name, value in encoded.items():
                if value in piece:
                    found.add(name)
    return sorted(found)


@dataclass
class Flower:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path
    send_probe: Callable[[], str]
    probes: list[str] = field(default_factory=list)

    def tasks(self) -> dict[str, dict[str, Any]]:
        try:
            response = httpx.get(self.url + "/api/tasks", timeout=5)
        except httpx.HTTPError:
            return {}
        if response.status_code != 200:
            return {}
        data: dict[str, dict[str, Any]] = response.json()
        return data

    def sees_worker_events(self) -> bool:
        """Send a probe task; True once Flower shows one probe succeeded (events flow both ways)."""
        tasks = self.tasks()
        if any(tasks.get(p, {}).get("state") == "SUCCESS" for p in self.probes):
            return True
        self.probes.append(self.send_probe())
        return False


@contextmanager
def run_flower(env: dict[str, str], log: Path, send_probe: Callable[[], str]) -> Iterator[Flower]:
    """A real ``celery flower`` process on ``env``'s broker, once it sees the worker's events."""
    port = free_port()
    env = {**env, "FLOWER_UNAUTHENTICATED_API": "true"}
    # Flower's own options are tornado options: --name=value
    argv = [str(BIN / "celery"), "-A", "nen_celery.worker", "flower", f"--port={port}", "--address=127.0.0.1"]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    flower = Flower(f"http://127.0.0.1:{port}", proc, log, send_probe)
    try:

        def healthy() -> bool:
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            try:
                return httpx.get(flower.url + "/healthcheck", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 30, "Flower to answer")
        wait_for(flower.sees_worker_events, 30, "Flower to see the worker's task events")
        yield flower
    finally:
        stop(proc)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop one process this test started, by its pid."""
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@pytest.fixture
def flower(stack: Stack, tmp_path: Path) -> Iterator[Flower]:
    def probe() -> str:
        return str(celery_app.send_task("celery.accumulate", args=(1,)).id)

    with run_flower(dict(os.environ), tmp_path / "flower.log", probe) as running:
        yield running
    stack.counter.wait_idle()


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog at DEBUG on every logger; non-propagating ones (celery.task, uvicorn.access) too."""
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name or None)
    isolated = [
        lg
        for lg in logging.root.manager.loggerDict.values()
        if isinstance(lg, logging.Logger) and not lg.propagate
    ]
    saved = [(lg, lg.level) for lg in isolated]
    for lg in isolated:
        lg.addHandler(caplog.handler)
        lg.setLevel(logging.DEBUG)
    try:
        yield caplog
    finally:
        for lg, level in saved:
            lg.removeHandler(caplog.handler)
            lg.setLevel(level)


def configured_secrets() -> dict[str, str]:
    settings = get_settings()
    needles: dict[str, str] = {}
    for name, secret in (
        ("NEN_API_KEY", settings.api_key),
        ("NEN_SIGNING_KEY", settings.signing_key),
        ("NEN_WEBHOOK_SECRET", settings.webhook_secret),
    ):
        assert secret is not None and secret.get_secret_value(), f"{name} must be set for the scan"
        needles[name] = secret.get_secret_value()
    for number, key in enumerate(settings.secrets_keys):
        needles[f"NEN_SECRETS_KEY[{number}]"] = key
    assert any(n.startswith("NEN_SECRETS_KEY") for n in needles), "NEN_SECRETS_KEY must be set"
    return needles


def signatures_of(payload: Any) -> list[str]:
    urls = [f["url"] for f in payload["result"]["files"]]
    found = [v for u in urls for v in parse_qs(urlsplit(u).query).get("X-Amz-Signature", [])]
    assert found, urls
    return found


def three_workflows(stack: Stack) -> tuple[str, str, str]:
    """Workflow ids the simulator runs to success, fails, and refuses (404)."""
    succeed, fail, refuse = (str(uuid.uuid4()) for _ in range(3))
    stack.sim.state.config.fail_workflows.add(fail)
    stack.sim.state.config.unknown_workflows.add(refuse)
    return succeed, fail, refuse


def in_process_lifecycles(stack: Stack, marker: str) -> dict[str, Any]:
    """A success, a failure in Nen and a refusal by Nen, each with the marker in secure_params."""
    succeed, fail, refuse = three_workflows(stack)
    handles = {
        wid: start_run(
            wid,
            {"PATIENT_NAME": "Scan Subject", "VISIT": 3},
            secure_params={"password": marker, "otp": marker[::-1]},
            on_complete=noted.s(tag="complete"),
            on_failure=noted.s(tag="failure"),
        )
        for wid in (succeed, fail, refuse)
    }
    statuses = {wid: h.wait(timeout=30).status for wid, h in handles.items()}
    assert statuses == {succeed: "success", fail: "failed", refuse: "rejected"}
    for handle in handles.values():
        wait_for(lambda h=handle: stack.redis.get(noted_key(h.run_id)), 20, f"callback of {handle.run_id}")
    stack.counter.wait_idle()
    run = get_run(handles[succeed].run_id)
    assert run is not None and run.message_id
    return {
        "run_id": handles[succeed].run_id,
        "message_id": run.message_id,
        "run_ids": [h.run_id for h in handles.values()],
        "signatures": signatures_of(run.payload),
    }


def wait_flower(flower: Flower, done: dict[str, Any]) -> dict[str, dict[str, Any]]:
    run_id, message_id = done["run_id"], done["message_id"]

    def mine() -> dict[str, dict[str, Any]] | None:
        tasks = flower.tasks()
        by_name: dict[str, list[str]] = {}
        for task in tasks.values():
            if task.get("state") == "SUCCESS":
                by_name.setdefault(str(task.get("name")), []).append(str(task.get("args")))
        submit = [a for a in by_name.get("nen_celery.submit_run", []) if run_id in a]
        # the receiver applies both webhooks of the successful run (message_id) and publishes its
        # callback itself: no task of nen's for it after the submit; the rejected run completes
        # through complete_run
        rejected = [
            a
            for a in by_name.get("nen_celery.complete_run", [])
            if any(r in a for r in done["run_ids"] if r != run_id)
        ]
        return tasks if submit and rejected and message_id else None

    return wait_for(mine, 30, "Flower to list the runs' submit_run and complete_run")


def check_flower(flower: Flower, done: dict[str, Any], needles: dict[str, str]) -> list[str]:
    """Flower lists the lifecycle's tasks by name, ids in their args; returns needles found."""
    tasks = wait_flower(flower, done)
    names = {t.get("name") for t in tasks.values()}
    assert {"nen_celery.submit_run", "nen_celery.complete_run"} <= names
    for task in tasks.values():
        if str(task.get("name", "")).startswith("nen_celery."):
            shown = f"{task.get('args')} {task.get('kwargs')}"
            assert "run_id=" in shown or "message_id=" in shown, (
                f"no argsrepr for {task.get('name')}: {shown}"
            )
    text = json.dumps(tasks)
    for run_id in done["run_ids"]:
        assert run_id in text
    return find(needles, [text.encode()])


def record_texts(caplog: pytest.LogCaptureFixture) -> list[bytes]:
    return [
        (r.getMessage() + "\n" + (r.exc_text or "") + (r.stack_info or "")).encode() for r in caplog.records
    ] + [caplog.text.encode()]


def needles_for(marker: str, done: dict[str, Any]) -> dict[str, str]:
    needles = {"marker": marker, "marker reversed": marker[::-1], **configured_secrets()}
    for number, value in enumerate(done["signatures"]):
        needles[f"X-Amz-Signature[{number}]"] = value
    return needles


def redis_places(needles: dict[str, str]) -> dict[str, list[str]]:
    return {f"redis db {db}": find(needles, chunks) for db, chunks in redis_dump(TEST_REDIS_URL).items()}


def assert_nowhere(places: dict[str, list[str]]) -> None:
    leaks = {where: found for where, found in places.items() if found}
    assert not leaks, f"secrets found: {leaks}"


def test_marker_and_secrets_appear_nowhere(
    stack: Stack, flower: Flower, all_logs: pytest.LogCaptureFixture
) -> None:
    """Through the session stack: in-process worker, receiver and simulator, caplog at DEBUG."""
    marker = f"mk{uuid.uuid4().hex}zq"
    done = in_process_lifecycles(stack, marker)
    needles = needles_for(marker, done)
    places = {"flower api": check_flower(flower, done, needles), **redis_places(needles)}
    names = {r.name for r in all_logs.records}
    assert {
        "nen_celery.lifecycle",
        "nen_celery.simulator",
        "uvicorn.access",
        "httpcore.http11",
    } <= names, names
    places["logs"] = find(needles, record_texts(all_logs))
    places["flower log"] = find(needles, [flower.log.read_bytes()])
    places["simulator state"] = find(needles, [json.dumps(stack.sim.stats()).encode()])
    assert_nowhere(places)


APP_SCRIPT = """
import json, os, sys, time
import redis
from nen_celery import start_run
from tests.security_callbacks import noted, noted_key

marker = os.environ["SCAN_MARKER"]
client = redis.Redis.from_url(os.environ["NEN_REDIS_URL"])
out = {}
for wid in sys.argv[1:]:
    handle = start_run(
        wid,
        {"PATIENT_NAME": "Scan Subject", "VISIT": 3},
        secure_params={"password": marker, "otp": marker[::-1]},
        on_complete=noted.s(tag="complete"),
        on_failure=noted.s(tag="failure"),
    )
    out[wid] = handle.run_id
for wid, run_id in out.items():
    run = handle.__class__(run_id).wait(timeout=60)
    deadline = time.monotonic() + 30
    while not client.get(noted_key(run_id)) and time.monotonic() < deadline:
        time.sleep(0.05)
    out[wid] = {"run_id": run_id, "status": run.status, "message_id": run.message_id, "payload": run.payload}
print(json.dumps(out))
"""


@pytest.fixture
def deployed(stack: Stack, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Worker and receiver as real processes at DEBUG on a broker DB of their own.

    Two DBs below the test DB (11 by default): test_processes takes 14, test_faults the one two above.
    """
    base, db = TEST_REDIS_URL.rsplit("/", 1)
    url = f"{base}/{(int(db or 0) - 2) % 16}"
    redis.Redis.from_url(url).flushdb()
    receiver_port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": CHILD_PYTHONPATH,
        "NEN_REDIS_URL": url,
        "NEN_BROKER_URL": url,
        "NEN_KEY_PREFIX": f"nenscan{uuid.uuid4().hex[:6]}",
        "NEN_API_URL": stack.sim.url,
        "NEN_WEBHOOK_URL": f"http://127.0.0.1:{receiver_port}/webhooks/nen",
    }
    logs = {name: tmp_path / f"{name}.log" for name in ("worker", "receiver")}
    argv = {
        "worker": [
            *(str(BIN / "celery"), "-A", "nen_celery.worker", "worker", "-l", "DEBUG", "-c", "2"),
            *("-I", "tests.security_callbacks", "-n", f"scan-{os.getpid()}@%h"),
        ],
        "receiver": [
            *(str(BIN / "uvicorn"), "nen_celery.web.asgi:app", "--port", str(receiver_port)),
            *("--log-level", "debug"),
        ],
    }
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for name, command in argv.items():
            with logs[name].open("wb") as out:
                procs.append(
                    subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
                )

        def receiver_up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{receiver_port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(receiver_up, 30, "the receiver process")
        yield {"env": env, "logs": logs, "url": url}
    finally:
        for proc in procs:
            stop(proc)


def test_marker_and_secrets_appear_nowhere_with_worker_and_receiver_processes_at_debug(
    stack: Stack, deployed: dict[str, Any], tmp_path: Path, all_logs: pytest.LogCaptureFixture
) -> None:
    """The deployed shape: `celery worker -l DEBUG`, `uvicorn ... --log-level debug`, Flower."""
    from celery import Celery

    env: dict[str, str] = deployed["env"]
    probe_app = Celery("scan-probe", broker=deployed["url"])

    def probe() -> str:
        # run by the deployed worker process: not this process's task counter's business
        sent = probe_app.send_task("celery.accumulate", args=(1,), headers={OTHER_PROCESS_HEADER: "1"})
        return str(sent.id)

    marker = f"mk{uuid.uuid4().hex}zq"
    succeed, fail, refuse = three_workflows(stack)
    with run_flower(env, tmp_path / "flower.log", probe) as flower:
        app_run = subprocess.run(
            [sys.executable, "-c", APP_SCRIPT, succeed, fail, refuse],
            env={**env, "SCAN_MARKER": marker},
            capture_output=True,
            timeout=120,
            check=False,
            cwd=ROOT,
        )
        assert app_run.returncode == 0, (
            app_run.stderr.decode(errors="replace")[-3000:]
            + deployed["logs"]["worker"].read_text(errors="replace")[-6000:]
        )
        runs = json.loads(app_run.stdout)  # the harness's own channel: it holds the result URLs
        assert {wid: r["status"] for wid, r in runs.items()} == {
            succeed: "success",
            fail: "failed",
            refuse: "rejected",
        }
        done = {
            "run_id": runs[succeed]["run_id"],
            "message_id": runs[succeed]["message_id"],
            "run_ids": [r["run_id"] for r in runs.values()],
            "signatures": signatures_of(runs[succeed]["payload"]),
        }
        needles = needles_for(marker, done)
        places = {"flower api": check_flower(flower, done, needles)}
    worker_log = deployed["logs"]["worker"].read_bytes()
    assert b"nen_celery.submit_run" in worker_log and b"DEBUG" in worker_log, worker_log[-2000:]
    places.update(redis_places(needles))
    places["worker log"] = find(needles, [worker_log])
    places["receiver log"] = find(needles, [deployed["logs"]["receiver"].read_bytes()])
    places["flower log"] = find(needles, [(tmp_path / "flower.log").read_bytes()])
    places["app stderr"] = find(needles, [app_run.stderr])
    places["logs"] = find(needles, record_texts(all_logs))
    assert_nowhere(places)


def test_the_scan_sees_base64_broker_bodies() -> None:
    """The scanner itself: a marker hidden the way kombu stores message bodies is found."""
    marker = "mk-hidden-0001"
    body = base64.b64encode(json.dumps([[marker], {}, {}]).encode())
    envelope = json.dumps({"body": body.decode(), "properties": {"body_encoding": "base64"}}).encode()
    assert find({"m": marker}, [envelope]) == ["m"]
    assert find({"m": marker}, [base64.urlsafe_b64encode(envelope)]) == ["m"]
    assert find({"m": marker}, [b"nothing here"]) == []
