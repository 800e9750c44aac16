"""The local Nen simulator, over real HTTP: auth, validation, signing, webhooks, control endpoints."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from http.server import ThreadingHTTPServer as _StdThreadingHTTPServer
from typing import Any

import httpx
import pytest

from nen_celery.domain import signing
from nen_celery.simulator import SimulatorConfig, SimulatorServer
from nen_celery.simulator.cli import build_parser, config_from_args
from nen_celery.simulator.config import PlannedError

WORKFLOW = "8c9e2f64-1b7d-4c3e-9a55-0d6f2b7e4a11"
FAILING_WORKFLOW = "0b5d3c1e-7f2a-4e6b-8d90-1a2b3c4d5e6f"
WAIT = 5.0

#: ``GET /_sim/config`` with every fault off (the defaults).
FAULTS_OFF: dict[str, Any] = {
    "seed": None,
    "post_errors": [],
    "post_error_rate": 0.0,
    "post_error_status": 503,
    "post_latency": 0.0,
    "get_latency": 0.0,
    "bad_accept_body": False,
    "drop_after_accept": 0,
    "error_after_accept": [],
    "webhook_duplicates": 0,
    "webhook_drop": [],
    "webhook_drop_rate": 0.0,
    "webhook_reorder": False,
    "webhook_delay": 0.0,
    "never_terminal": False,
    "honour_idempotency_key": False,
    "lookup_by_idempotency_key": False,
}


class ThreadingHTTPServer(_StdThreadingHTTPServer):
    """The stdlib server with a real listen backlog: its default of 5 drops the SYNs of a
    burst of webhook deliveries (up to 32 at once), delaying them by the kernel's 1 s retry."""

    request_queue_size = 128


@dataclasses.dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int
    at: float  # time.monotonic() when it arrived

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


class Receiver:
    """A webhook receiver in a thread; records every attempt, can answer 500 on demand.

    With ``barrier`` set, each request waits there before it is answered: a barrier of N only
    lets requests through N at a time, which proves they were in flight together.
    """

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.deliveries: list[Delivery] = []
        self.fail_next = 0
        self.barrier: threading.Barrier | None = None
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.monotonic()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                barrier = receiver.barrier
                broken = False
                if barrier is not None:
                    try:
                        barrier.wait(WAIT)
                    except threading.BrokenBarrierError:
                        broken = True
                with receiver.cond:
                    status = 500 if receiver.fail_next > 0 or broken else 200
                    receiver.fail_next = max(0, receiver.fail_next - 1)
                    receiver.deliveries.append(
                        Delivery(self.path, dict(self.headers.items()), body, status, arrived)
                    )
                    receiver.cond.notify_all()
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def wait_for(self, predicate: Callable[[list[Delivery]], bool], timeout: float = WAIT) -> list[Delivery]:
        with self.cond:
            if not self.cond.wait_for(lambda: predicate(self.deliveries), timeout):
                raise TimeoutError(f"receiver condition not met; got {self.deliveries}")
            return list(self.deliveries)

    def delivered(self, message_id: str, count: int) -> list[dict[str, Any]]:
        """Wait for ``count`` 200-answered webhooks of ``message_id``; return their bodies in order."""

        def mine(deliveries: list[Delivery]) -> list[Delivery]:
            return [d for d in deliveries if d.answered == 200 and d.json()["message_id"] == message_id]

        return [d.json() for d in mine(self.wait_for(lambda ds: len(mine(ds)) >= count))]

    def reset(self) -> None:
        with self.cond:
            self.deliveries.clear()
            self.fail_next = 0
            self.barrier = None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(WAIT)


@pytest.fixture(scope="module")
def sim_module() -> Iterator[SimulatorServer]:
    config = SimulatorConfig(
        processing_delay=0.01,
        terminal_delay=0.02,
        delivery_backoff=0.02,
        fail_workflows={FAILING_WORKFLOW},
    )
    with SimulatorServer(config) as server:
        yield server


@pytest.fixture(scope="module")
def receiver_module() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def sim(sim_module: SimulatorServer) -> Iterator[SimulatorServer]:
    """The shared simulator, reset and with its original config restored after each test."""
    saved = copy.deepcopy(sim_module.config)
    sim_module.reset()
    yield sim_module
    sim_module.reset()
    for f in dataclasses.fields(saved):
        setattr(sim_module.config, f.name, copy.deepcopy(getattr(saved, f.name)))


@pytest.fixture
def receiver(receiver_module: Receiver) -> Iterator[Receiver]:
    receiver_module.reset()
    yield receiver_module
    receiver_module.reset()


@pytest.fixture(scope="module")
def clients(sim_module: SimulatorServer) -> Iterator[tuple[httpx.Client, httpx.Client]]:
    """(authenticated, anonymous) clients, shared: building an httpx.Client costs tens of ms."""
    headers = {"x-api-key": sim_module.config.api_key}
    with (
        httpx.Client(base_url=sim_module.url, headers=headers, trust_env=False) as authed,
        httpx.Client(base_url=sim_module.url, trust_env=False) as anonymous,
    ):
        yield authed, anonymous


@pytest.fixture
def client(sim: SimulatorServer, clients: tuple[httpx.Client, httpx.Client]) -> httpx.Client:
    """Sends the right x-api-key."""
    return clients[0]


@pytest.fixture
def anon(sim: SimulatorServer, clients: tuple[httpx.Client, httpx.Client]) -> httpx.Client:
    """Sends no x-api-key (control endpoints, auth failures)."""
    return clients[1]


def post_run(client: httpx.Client, body: dict[str, Any], **headers: str) -> httpx.Response:
    return client.post("/runs", content=json.dumps(body).encode(), headers=headers)


def signed_post(
    client: httpx.Client, sim: SimulatorServer, body: dict[str, Any], timestamp: str | None = None
) -> httpx.Response:
    raw = json.dumps(body).encode()
    ts = timestamp if timestamp is not None else str(int(time.time()))
    signature = signing.sign_request(sim.config.signing_key, "POST", "/runs", ts, raw)
    return client.post("/runs", content=raw, headers={"x-timestamp": ts, "x-signature": signature})


def assert_error(response: httpx.Response, status: int, error: str, mentions: str = "") -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "message"}
    assert body["error"] == error
    assert mentions in body["message"]


def set_config(anon: httpx.Client, **update: Any) -> dict[str, Any]:
    """POST /_sim/config; return the config it shows afterwards."""
    response = anon.post("/_sim/config", json=update)
    assert response.status_code == 200, response.text
    shown = response.json()
    assert isinstance(shown, dict)
    return shown


def start_run(
    client: httpx.Client, workflow_id: str = WORKFLOW, callback: str | None = None, **headers: str
) -> str:
    """POST a run (with a webhook when ``callback`` is given) that must be accepted; its messageId."""
    body: dict[str, Any] = {"workflow_id": workflow_id}
    if callback is not None:
        body["webhook_callback"] = callback
    response = post_run(client, body, **headers)
    assert response.status_code == 202, response.text
    message_id = response.json()["messageId"]
    assert isinstance(message_id, str)
    return message_id


class _ListHandler(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def captured_logs(*names: str, level: int = logging.WARNING) -> Iterator[list[logging.LogRecord]]:
    """Records of these loggers at ``level`` or above (uvicorn's loggers do not reach caplog)."""
    handler = _ListHandler(level)
    loggers = [logging.getLogger(name) for name in names]
    for log in loggers:
        log.addHandler(handler)
    try:
        yield handler.records
    finally:
        for log in loggers:
            log.removeHandler(handler)


# -- plumbing -----------------------------------------------------------------


def test_healthz_and_url(sim: SimulatorServer, client: httpx.Client, anon: httpx.Client) -> None:
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.url)
    assert sim.port > 0
    response = anon.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_unknown_route_answers_json_error(client: httpx.Client) -> None:
    assert_error(client.get("/nope"), 404, "not_found")


# -- auth and validation ----------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"x-api-key": "wrong"}], ids=["missing", "wrong"])
def test_api_key_required(sim: SimulatorServer, headers: dict[str, str], anon: httpx.Client) -> None:
    body = json.dumps({"workflow_id": WORKFLOW}).encode()
    response = anon.post("/runs", content=body, headers=headers)
    assert_error(response, 401, "unauthorized")
    get = anon.get(f"/runs/{uuid.uuid4()}", headers=headers)
    assert_error(get, 401, "unauthorized")
    assert sim.stats()["posts"] == 0  # rejected before auth: not counted


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b'"text"', b'{"workflow_id": NaN}', b""])
def test_bad_json_is_400(client: httpx.Client, raw: bytes) -> None:
    assert_error(client.post("/runs", content=raw), 400, "invalid_json")


@pytest.mark.parametrize(
    ("body", "mentions"),
    [
        ({}, "workflow_id"),
        ({"workflow_id": "not-a-uuid"}, "workflow_id"),
        ({"workflow_id": 42}, "workflow_id"),
        ({"workflow_id": WORKFLOW, "workflow_params": ["a"]}, "workflow_params"),
        ({"workflow_id": WORKFLOW, "workflow_params": {"name": None}}, "workflow_params.name"),
        ({"workflow_id": WORKFLOW, "workflow_params": {"nested": {"a": 1}}}, "workflow_params.nested"),
        ({"workflow_id": WORKFLOW, "workflow_params": {"items": [1, 2]}}, "workflow_params.items"),
        ({"workflow_id": WORKFLOW, "secure_workflow_params": "x"}, "secure_workflow_params"),
        ({"workflow_id": WORKFLOW, "secure_workflow_params": {"pin": 1234}}, "secure_workflow_params.pin"),
        ({"workflow_id": WORKFLOW, "webhook_callback": "ftp://example.com/x"}, "webhook_callback"),
        ({"workflow_id": WORKFLOW, "webhook_callback": 7}, "webhook_callback"),
        ({"workflow_id": WORKFLOW, "webhook_url": "not a url"}, "webhook_url"),
        ({"workflow_id": WORKFLOW, "surprise": 1}, "surprise"),
    ],
)
def test_invalid_fields_are_422(client: httpx.Client, body: dict[str, Any], mentions: str) -> None:
    assert_error(post_run(client, body), 422, "invalid_request", mentions)


def test_422_never_echoes_secure_values(client: httpx.Client) -> None:
    response = post_run(
        client, {"workflow_id": WORKFLOW, "secure_workflow_params": {"pin": ["s3cr3t-value"]}}
    )
    assert_error(response, 422, "invalid_request", "secure_workflow_params.pin")
    assert "s3cr3t-value" not in response.text


def test_too_large_body_is_413(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.max_body_bytes = 64
    response = post_run(client, {"workflow_id": WORKFLOW, "workflow_params": {"text": "x" * 100}})
    assert_error(response, 413, "payload_too_large")


# -- signing ------------------------------------------------------------------


def test_secure_params_without_signature_is_403(client: httpx.Client) -> None:
    response = post_run(client, {"workflow_id": WORKFLOW, "secure_workflow_params": {"password": "hunter2"}})
    assert_error(response, 403, "hmac_required_for_secure_params")


def test_bad_signature_is_401(client: httpx.Client) -> None:
    raw = json.dumps({"workflow_id": WORKFLOW, "secure_workflow_params": {"password": "hunter2"}}).encode()
    ts = str(int(time.time()))
    wrong = signing.sign_request("another-key", "POST", "/runs", ts, raw)
    response = client.post("/runs", content=raw, headers={"x-timestamp": ts, "x-signature": wrong})
    assert_error(response, 401, "invalid_signature", "does not match")


def test_signature_without_timestamp_is_401(client: httpx.Client) -> None:
    response = client.post(
        "/runs", content=json.dumps({"workflow_id": WORKFLOW}).encode(), headers={"x-signature": "ab"}
    )
    assert_error(response, 401, "invalid_signature", "x-timestamp")


def test_signature_over_other_bytes_is_401(sim: SimulatorServer, client: httpx.Client) -> None:
    signed = json.dumps({"workflow_id": WORKFLOW, "secure_workflow_params": {"password": "a"}}).encode()
    sent = json.dumps({"workflow_id": WORKFLOW, "secure_workflow_params": {"password": "b"}}).encode()
    ts = str(int(time.time()))
    signature = signing.sign_request(sim.config.signing_key, "POST", "/runs", ts, signed)
    response = client.post("/runs", content=sent, headers={"x-timestamp": ts, "x-signature": signature})
    assert_error(response, 401, "invalid_signature")


@pytest.mark.parametrize("offset", [-600, 600], ids=["10min-past", "10min-future"])
def test_timestamp_outside_window_is_401(sim: SimulatorServer, client: httpx.Client, offset: int) -> None:
    body = {"workflow_id": WORKFLOW, "secure_workflow_params": {"password": "hunter2"}}
    response = signed_post(client, sim, body, timestamp=str(int(time.time()) + offset))
    assert_error(response, 401, "invalid_signature", "window")


@pytest.mark.parametrize(
    "make_timestamp",
    [
        lambda: str(int(time.time())),
        lambda: str(int(time.time() * 1000)),
        lambda: datetime.now(UTC).isoformat(),
        lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    ],
    ids=["seconds", "milliseconds", "iso", "iso-z"],
)
def test_signed_secure_request_accepted(
    sim: SimulatorServer, client: httpx.Client, make_timestamp: Callable[[], str]
) -> None:
    body = {"workflow_id": WORKFLOW, "secure_workflow_params": {"password": "hunter2"}}
    response = signed_post(client, sim, body, timestamp=make_timestamp())
    assert response.status_code == 202, response.text


def test_secure_values_are_not_kept(sim: SimulatorServer, client: httpx.Client) -> None:
    body = {"workflow_id": WORKFLOW, "secure_workflow_params": {"password": "hunter2-unique"}}
    response = signed_post(client, sim, body)
    assert response.status_code == 202
    message_id = response.json()["messageId"]
    sim.wait_for(lambda s: s["runs"][message_id]["status"] == "success")
    assert "hunter2-unique" not in json.dumps(sim.stats())
    assert "hunter2-unique" not in client.get(f"/runs/{message_id}").text
    assert "hunter2-unique" not in repr(vars(sim.state))  # includes the repr of every stored Run


def test_signed_request_without_secure_params_accepted(sim: SimulatorServer, client: httpx.Client) -> None:
    assert signed_post(client, sim, {"workflow_id": WORKFLOW}).status_code == 202


# -- acceptance and run lifecycle ----------------------------------------------


def test_202_shape(client: httpx.Client) -> None:
    response = post_run(
        client, {"workflow_id": WORKFLOW, "workflow_params": {"name": "x", "n": 2, "f": 1.5, "b": True}}
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"message", "messageId", "workflowId"}
    assert body["message"] == "Job accepted for processing."
    assert uuid.UUID(body["messageId"]).version == 4
    assert body["workflowId"] == WORKFLOW


def test_unknown_workflow_is_404(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.unknown_workflows = {WORKFLOW}
    assert_error(post_run(client, {"workflow_id": WORKFLOW}), 404, "workflow_not_found", WORKFLOW)


def test_webhooks_processing_then_success_signed(
    sim: SimulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    before = int(time.time())
    response = post_run(client, {"workflow_id": WORKFLOW, "webhook_callback": receiver.url})
    message_id = response.json()["messageId"]
    processing, success = receiver.delivered(message_id, 2)
    assert [processing["status"], success["status"]] == ["processing", "success"]
    for delivery in receiver.deliveries:
        assert delivery.path == "/hook"
        assert delivery.headers["Content-Type"] == "application/json"
        assert signing.verify_webhook(
            sim.config.webhook_secret, delivery.body, delivery.headers["X-Hmac-Signature"]
        )
        assert not signing.verify_webhook("other-secret", delivery.body, delivery.headers["X-Hmac-Signature"])
    for payload in (processing, success):
        assert payload["workflow_id"] == WORKFLOW
        assert payload["message_id"] == message_id
        assert isinstance(payload["expires_at"], int)
        assert before + 3600 <= payload["expires_at"] <= int(time.time()) + 3600
    [file] = success["result"]["files"]
    assert file["name"] == "output.json"
    assert re.fullmatch(
        rf"https://files\.sim\.invalid/{message_id}/output\.json\?X-Amz-Signature=[0-9a-f]+&X-Amz-Expires=3600",
        file["url"],
    )
    assert "error" not in success
    stats = sim.wait_for(lambda s: s["webhooks_sent"] == 2)
    assert stats["webhooks_failed"] == 0


def test_webhook_url_field_is_accepted(client: httpx.Client, receiver: Receiver) -> None:
    response = post_run(client, {"workflow_id": WORKFLOW, "webhook_url": receiver.url})
    assert response.status_code == 202
    assert [p["status"] for p in receiver.delivered(response.json()["messageId"], 2)] == [
        "processing",
        "success",
    ]


def test_fail_workflows_end_failed(client: httpx.Client, receiver: Receiver) -> None:
    response = post_run(client, {"workflow_id": FAILING_WORKFLOW, "webhook_callback": receiver.url})
    processing, failed = receiver.delivered(response.json()["messageId"], 2)
    assert processing["status"] == "processing"
    assert failed["status"] == "failed"
    assert failed["error"] == {"code": "workflow_failed", "message": "simulated failure"}
    assert "result" not in failed


def test_get_run_follows_state(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.terminal_delay = 30  # parked in "processing" until the test resets
    message_id = post_run(client, {"workflow_id": WORKFLOW}).json()["messageId"]
    first = client.get(f"/runs/{message_id}")
    assert first.status_code == 200
    assert first.json()["status"] == "processing"
    assert set(first.json()) == {"workflow_id", "message_id", "status", "expires_at"}
    sim.wait_for(lambda s: s["runs"][message_id]["status"] == "processing")
    assert client.get(f"/runs/{message_id}").json()["status"] == "processing"

    sim.config.terminal_delay = 0.01
    done_id = post_run(client, {"workflow_id": WORKFLOW}).json()["messageId"]
    sim.wait_for(lambda s: s["runs"][done_id]["status"] == "success")  # no callback: timers still run
    done = client.get(f"/runs/{done_id}").json()
    assert done["status"] == "success"
    assert done["message_id"] == done_id
    assert done["result"]["files"][0]["name"] == "output.json"
    assert sim.stats()["webhooks_sent"] == 0


def test_get_unknown_run_is_404(client: httpx.Client) -> None:
    assert_error(client.get(f"/runs/{uuid.uuid4()}"), 404, "run_not_found")


def test_stats_count_posts_per_idempotency_key(
    sim: SimulatorServer, client: httpx.Client, anon: httpx.Client
) -> None:
    ids = [
        post_run(client, {"workflow_id": WORKFLOW}, **{"Idempotency-Key": "a"}).json()["messageId"],
        post_run(client, {"workflow_id": WORKFLOW}, **{"Idempotency-Key": "a"}).json()["messageId"],
        post_run(client, {"workflow_id": WORKFLOW}, **{"Idempotency-Key": "b"}).json()["messageId"],
        post_run(client, {"workflow_id": WORKFLOW}).json()["messageId"],
    ]
    assert post_run(client, {"workflow_id": "bad"}, **{"Idempotency-Key": "a"}).status_code == 422
    stats = anon.get("/_sim/stats").json()
    assert stats["posts"] == 5
    assert stats["accepted"] == 4
    assert stats["posts_by_idempotency_key"] == {"a": 3, "b": 1, "<none>": 1}
    assert set(stats["runs"]) == set(ids)
    assert [stats["runs"][i]["idempotency_key"] for i in ids] == ["a", "a", "b", "<none>"]
    assert [stats["runs"][i]["posts"] for i in ids] == [3, 3, 1, 1]
    assert stats["errors_injected"] == 0
    assert stats["idempotent_replays"] == 0
    assert all(run["workflow_id"] == WORKFLOW for run in stats["runs"].values())
    assert sim.stats()["posts_by_idempotency_key"] == stats["posts_by_idempotency_key"]


def test_reset_clears_runs_and_stats(sim: SimulatorServer, client: httpx.Client, anon: httpx.Client) -> None:
    message_id = post_run(client, {"workflow_id": WORKFLOW}).json()["messageId"]
    assert anon.post("/_sim/reset").status_code == 200
    stats = sim.stats()
    assert stats["posts"] == 0
    assert stats["runs"] == {}
    assert stats["posts_by_idempotency_key"] == {}
    assert stats["deliveries"] == {}
    assert stats["errors_injected"] == stats["webhooks_attempted"] == stats["idempotent_replays"] == 0
    assert client.get(f"/runs/{message_id}").status_code == 404


# -- delivery retries -----------------------------------------------------------


def test_webhook_retried_until_receiver_answers(
    sim: SimulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    receiver.fail_next = 2
    message_id = post_run(client, {"workflow_id": WORKFLOW, "webhook_callback": receiver.url}).json()[
        "messageId"
    ]
    assert [p["status"] for p in receiver.delivered(message_id, 2)] == ["processing", "success"]
    attempts = [(d.json()["status"], d.answered) for d in receiver.deliveries]
    assert attempts == [("processing", 500), ("processing", 500), ("processing", 200), ("success", 200)]
    stats = sim.wait_for(lambda s: s["webhooks_sent"] == 2)
    assert stats["webhooks_failed"] == 0
    assert stats["webhooks_attempted"] == 4
    assert stats["deliveries"] == {message_id: ["processing", "success"]}


def test_webhook_given_up_after_attempts(
    sim: SimulatorServer, client: httpx.Client, receiver: Receiver
) -> None:
    sim.config.delivery_attempts = 2
    receiver.fail_next = 100
    post_run(client, {"workflow_id": WORKFLOW, "webhook_callback": receiver.url})
    stats = sim.wait_for(lambda s: s["webhooks_failed"] == 2)  # processing given up, then terminal
    assert stats["webhooks_sent"] == 0
    statuses = [d.json()["status"] for d in receiver.deliveries]
    assert statuses == ["processing", "processing", "success", "success"]


def test_unreachable_receiver_is_given_up(sim: SimulatorServer, client: httpx.Client) -> None:
    sim.config.delivery_attempts = 1
    with socket.socket() as probe:  # a port that was free a moment ago: connection refused
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    post_run(client, {"workflow_id": WORKFLOW, "webhook_callback": f"http://127.0.0.1:{closed_port}/hook"})
    stats = sim.wait_for(lambda s: s["webhooks_failed"] == 2)
    assert stats["webhooks_sent"] == 0


def test_shutdown_cancels_pending_deliveries(receiver: Receiver, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    config = SimulatorConfig(processing_delay=0.0, terminal_delay=30.0)
    with SimulatorServer(config) as server:
        raw = json.dumps({"workflow_id": WORKFLOW, "webhook_callback": receiver.url}).encode()
        response = httpx.post(
            server.url + "/runs", content=raw, headers={"x-api-key": config.api_key}, trust_env=False
        )
        receiver.delivered(response.json()["messageId"], 1)
        started = time.monotonic()
    assert time.monotonic() - started < 3
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url + "/healthz", trust_env=False)


# -- control endpoint -----------------------------------------------------------


def test_sim_config_updates_values(sim: SimulatorServer, anon: httpx.Client) -> None:
    update = {
        "processing_delay": 0,
        "terminal_delay": 0.5,
        "fail_workflows": [WORKFLOW],
        "unknown_workflows": [],
    }
    response = anon.post("/_sim/config", json=update)
    assert response.status_code == 200
    assert response.json() == {
        "processing_delay": 0.0,
        "terminal_delay": 0.5,
        "fail_workflows": [WORKFLOW],
        "unknown_workflows": [],
        **FAULTS_OFF,
    }
    assert sim.config.fail_workflows == {WORKFLOW}
    assert anon.get("/_sim/config").json() == response.json()


def test_sim_config_changes_behaviour(sim: SimulatorServer, client: httpx.Client, anon: httpx.Client) -> None:
    response = anon.post("/_sim/config", json={"unknown_workflows": [WORKFLOW]})
    assert response.status_code == 200
    assert_error(post_run(client, {"workflow_id": WORKFLOW}), 404, "workflow_not_found")


@pytest.mark.parametrize(
    ("update", "mentions"),
    [
        ({"bogus": 1}, "bogus"),
        ({"api_key": "x"}, "api_key"),
        ({"processing_delay": -1}, "processing_delay"),
        ({"terminal_delay": "soon"}, "terminal_delay"),
        ({"terminal_delay": True}, "terminal_delay"),
        ({"fail_workflows": WORKFLOW}, "fail_workflows"),
        ({"unknown_workflows": [1]}, "unknown_workflows"),
        ({"seed": "42"}, "seed"),
        ({"post_errors": {"status": 503}}, "post_errors"),
        ({"post_errors": [503]}, "post_errors[0]"),
        ({"post_errors": [{"status": 503}, {"retry_after": 1}]}, "post_errors[1].status"),
        ({"post_errors": [{"status": 200}]}, "post_errors[0].status"),
        ({"post_errors": [{"status": 503, "retry": 1}]}, "retry"),
        ({"post_errors": [{"status": 503, "retry_after": -1}]}, "post_errors[0].retry_after"),
        ({"post_errors": [{"status": 503, "retry_after": "1\r\nX-Evil: 1"}]}, "retry_after"),
        ({"post_errors": [{"status": 503, "error": 5}]}, "post_errors[0].error"),
        ({"post_error_rate": 1.5}, "post_error_rate"),
        ({"post_error_status": 302}, "post_error_status"),
        ({"post_latency": -0.1}, "post_latency"),
        ({"get_latency": "slow"}, "get_latency"),
        ({"bad_accept_body": -1}, "bad_accept_body"),
        ({"bad_accept_body": "yes"}, "bad_accept_body"),
        ({"drop_after_accept": 1.5}, "drop_after_accept"),
        ({"drop_after_accept": True}, "drop_after_accept"),
        ({"webhook_duplicates": 1000}, "webhook_duplicates"),
        ({"webhook_drop": ["done"]}, "webhook_drop"),
        ({"webhook_drop": "processing"}, "webhook_drop"),
        ({"webhook_drop_rate": -0.5}, "webhook_drop_rate"),
        ({"webhook_reorder": 1}, "webhook_reorder"),
        ({"webhook_delay": [1]}, "webhook_delay"),
        ({"never_terminal": "all"}, "never_terminal"),
        ({"honour_idempotency_key": "yes"}, "honour_idempotency_key"),
        ({"lookup_by_idempotency_key": None}, "lookup_by_idempotency_key"),
    ],
)
def test_sim_config_rejects_bad_keys(
    sim: SimulatorServer, update: dict[str, Any], mentions: str, anon: httpx.Client
) -> None:
    before = dataclasses.asdict(sim.config)
    response = anon.post("/_sim/config", json={"processing_delay": 2, **update})
    assert_error(response, 400, "invalid_config", mentions)
    assert dataclasses.asdict(sim.config) == before  # all-or-nothing


def test_sim_config_rejects_non_object(sim: SimulatorServer, anon: httpx.Client) -> None:
    response = anon.post("/_sim/config", content=b"[]")
    assert_error(response, 400, "invalid_json")


# -- fault injection: POST /runs ------------------------------------------------------------


def test_post_errors_are_answered_in_order_without_runs(
    sim: SimulatorServer, client: httpx.Client, anon: httpx.Client
) -> None:
    plan = [
        {"status": 503},
        {"status": 429, "retry_after": 2},
        {"status": 502, "error": "upstream_down", "message": "gateway hiccup"},
    ]
    assert set_config(anon, post_errors=plan)["post_errors"] == plan
    body = {"workflow_id": WORKFLOW}
    assert post_run(anon, body).status_code == 401  # unauthenticated: consumes nothing
    answers = [post_run(client, body, **{"Idempotency-Key": "k"}) for _ in range(4)]
    assert_error(answers[0], 503, "service_unavailable")
    assert "retry-after" not in answers[0].headers
    assert_error(answers[1], 429, "too_many_requests")
    assert answers[1].headers["Retry-After"] == "2"
    assert_error(answers[2], 502, "upstream_down", "gateway hiccup")
    assert answers[3].status_code == 202
    message_id = answers[3].json()["messageId"]
    stats = sim.stats()
    assert (stats["posts"], stats["accepted"], stats["errors_injected"]) == (4, 1, 3)
    assert stats["posts_by_idempotency_key"] == {"k": 4}
    assert list(stats["runs"]) == [message_id]
    assert stats["runs"][message_id]["posts"] == 4
    assert anon.get("/_sim/config").json()["post_errors"] == []  # consumed


def test_post_error_rate_is_random_but_seeded(
    sim: SimulatorServer, client: httpx.Client, anon: httpx.Client
) -> None:
    def burst() -> list[int]:
        set_config(anon, seed=42, post_error_rate=0.5, post_error_status=429)
        return [post_run(client, {"workflow_id": WORKFLOW}).status_code for _ in range(16)]

    first = burst()
    assert set(first) == {202, 429}
    stats = sim.stats()
    assert stats["errors_injected"] == first.count(429)
    assert stats["accepted"] == len(stats["runs"]) == first.count(202)
    assert anon.post("/_sim/reset").status_code == 200
    assert burst() == first  # same seed, same sequence
    set_config(anon, post_error_rate=1.0, post_error_status=503)
    response = post_run(client, {"workflow_id": WORKFLOW})
    assert_error(response, 503, "service_unavailable")
    assert "retry-after" not in response.headers


def test_post_latency_answers_late_but_starts_the_run_first(
    anon: httpx.Client, client: httpx.Client, receiver: Receiver
) -> None:
    set_config(anon, post_latency=0.4)
    started = time.monotonic()
    message_id = start_run(client, callback=receiver.url)
    answered = time.monotonic()
    assert answered - started >= 0.4
    deliveries = receiver.wait_for(lambda ds: len(ds) >= 2)
    assert [d.json()["status"] for d in deliveries] == ["processing", "success"]
    assert all(d.json()["message_id"] == message_id for d in deliveries)
    assert all(d.at < answered for d in deliveries)  # both webhooks came while the client waited


def test_read_timeout_leaves_a_started_run_behind(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client, receiver: Receiver
) -> None:
    set_config(anon, post_latency=30)
    raw = json.dumps({"workflow_id": WORKFLOW, "webhook_callback": receiver.url}).encode()
    with pytest.raises(httpx.ReadTimeout):
        client.post("/runs", content=raw, headers={"Idempotency-Key": "lost"}, timeout=0.3)
    stats = sim.wait_for(lambda s: list(s["deliveries"].values()) == [["processing", "success"]])
    [(message_id, run)] = stats["runs"].items()
    assert run["status"] == "success"
    assert run["idempotency_key"] == "lost"
    assert [d.json()["message_id"] for d in receiver.deliveries] == [message_id, message_id]


def test_get_latency(anon: httpx.Client, client: httpx.Client) -> None:
    message_id = start_run(client)
    set_config(anon, get_latency=0.3)
    started = time.monotonic()
    response = client.get(f"/runs/{message_id}")
    assert time.monotonic() - started >= 0.3
    assert response.status_code == 200
    assert response.json()["message_id"] == message_id


def test_bad_accept_body_still_creates_the_run(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client, receiver: Receiver
) -> None:
    set_config(anon, bad_accept_body=1)
    body = {"workflow_id": WORKFLOW, "webhook_callback": receiver.url}
    bad = post_run(client, body)
    assert bad.status_code == 202
    assert bad.text == "accepted"
    with pytest.raises(ValueError):
        bad.json()
    stats = sim.wait_for(lambda s: list(s["deliveries"].values()) == [["processing", "success"]])
    assert (stats["accepted"], stats["bad_accept_bodies"]) == (1, 1)
    assert anon.get("/_sim/config").json()["bad_accept_body"] == 0  # the count was used up
    assert start_run(client) not in stats["runs"]  # the next one is well-formed again

    set_config(anon, bad_accept_body=True)
    assert [post_run(client, body).text for _ in range(2)] == ["accepted", "accepted"]
    assert sim.stats()["accepted"] == 4


def test_drop_after_accept_closes_the_connection_unanswered(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client, receiver: Receiver
) -> None:
    set_config(anon, drop_after_accept=1)
    with captured_logs("uvicorn", "uvicorn.error", "nen_celery.simulator") as problems:
        with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
            post_run(client, {"workflow_id": WORKFLOW, "webhook_callback": receiver.url})
        stats = sim.wait_for(lambda s: list(s["deliveries"].values()) == [["processing", "success"]])
        assert (stats["accepted"], stats["dropped_connections"], stats["errors_injected"]) == (1, 1, 0)
        [run] = stats["runs"].values()
        assert run["status"] == "success"
        start_run(client)  # the same client carries on, answered normally
    assert problems == []  # no "Exception in ASGI application", no 500


def test_error_after_accept_creates_the_run_then_answers_like_a_gateway(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client, receiver: Receiver
) -> None:
    set_config(anon, error_after_accept=[502, 504])
    body = {"workflow_id": WORKFLOW, "webhook_callback": receiver.url}
    answers = [post_run(client, body) for _ in range(3)]
    assert [a.status_code for a in answers] == [502, 504, 202]
    assert "<html>" in answers[0].text  # not Nen's {"error", "message"} shape
    stats = sim.wait_for(lambda s: len(s["runs"]) == 3)
    assert (stats["accepted"], stats["errors_injected"]) == (3, 2)  # every POST created its run
    assert anon.get("/_sim/config").json()["error_after_accept"] == []
    assert anon.post("/_sim/config", json={"error_after_accept": [200]}).status_code == 400


# -- fault injection: webhooks --------------------------------------------------------------


def test_webhook_duplicates_are_delivered_concurrently(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client, receiver: Receiver
) -> None:
    set_config(anon, webhook_duplicates=2)
    receiver.barrier = threading.Barrier(3)  # answers only when all three copies are in flight
    message_id = start_run(client, callback=receiver.url)
    statuses = [p["status"] for p in receiver.delivered(message_id, 6)]
    assert statuses == ["processing"] * 3 + ["success"] * 3
    stats = sim.wait_for(lambda s: s["webhooks_sent"] == 6)
    assert stats["deliveries"][message_id] == statuses
    assert (stats["webhooks_attempted"], stats["webhooks_failed"]) == (6, 0)


@pytest.mark.parametrize(
    ("drop", "delivered"),
    [(["processing"], ["success"]), (["success", "failed"], ["processing"])],
    ids=["processing", "terminal"],
)
def test_webhook_drop_never_delivers_those_statuses(
    sim: SimulatorServer,
    anon: httpx.Client,
    client: httpx.Client,
    receiver: Receiver,
    drop: list[str],
    delivered: list[str],
) -> None:
    set_config(anon, webhook_drop=drop)
    message_id = start_run(client, callback=receiver.url)
    stats = sim.wait_for(
        lambda s: (
            s["runs"][message_id]["status"] == "success"
            and s["webhooks_dropped"] == 1
            and s["deliveries"][message_id] == delivered
        )
    )
    assert stats["webhooks_attempted"] == 1
    assert [d.json()["status"] for d in receiver.deliveries] == delivered
    assert client.get(f"/runs/{message_id}").json()["status"] == "success"


def test_webhook_drop_rate_is_seeded(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client, receiver: Receiver
) -> None:
    def one_run() -> Counter[str]:
        set_config(anon, seed=7, webhook_drop_rate=0.5, webhook_duplicates=7)  # 8 copies each
        message_id = start_run(client, callback=receiver.url)
        stats = sim.wait_for(lambda s: s["webhooks_dropped"] + s["webhooks_sent"] == 16)
        return Counter(stats["deliveries"][message_id])

    first = one_run()
    assert 0 < sum(first.values()) < 16
    sim.reset()
    assert one_run() == first


def test_webhook_reorder_sends_the_terminal_status_first(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client, receiver: Receiver
) -> None:
    set_config(anon, webhook_reorder=True)
    message_id = start_run(client, FAILING_WORKFLOW, callback=receiver.url)
    assert [p["status"] for p in receiver.delivered(message_id, 2)] == ["failed", "processing"]
    stats = sim.wait_for(lambda s: s["webhooks_sent"] == 2)
    assert stats["deliveries"][message_id] == ["failed", "processing"]
    assert client.get(f"/runs/{message_id}").json()["status"] == "failed"  # the state is not reordered


def test_webhook_delay(anon: httpx.Client, client: httpx.Client, receiver: Receiver) -> None:
    set_config(anon, webhook_delay=0.3)
    started = time.monotonic()
    message_id = start_run(client, callback=receiver.url)
    processing, success = receiver.wait_for(lambda ds: len(ds) >= 2)
    assert [processing.json()["status"], success.json()["status"]] == ["processing", "success"]
    assert processing.json()["message_id"] == message_id
    assert processing.at - started >= 0.3
    assert success.at - processing.at >= 0.29  # its own delay, after the processing one was delivered


def test_never_terminal_runs_stay_processing(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client, receiver: Receiver
) -> None:
    set_config(anon, never_terminal=[WORKFLOW])
    stuck = start_run(client, WORKFLOW, callback=receiver.url)
    # A run started later with the same timings ends after the stuck one would have.
    control = start_run(client, FAILING_WORKFLOW, callback=receiver.url)
    assert [p["status"] for p in receiver.delivered(control, 2)] == ["processing", "failed"]
    set_config(anon, never_terminal=True)
    stuck_too = start_run(client, FAILING_WORKFLOW, callback=receiver.url)
    set_config(anon, never_terminal=False)  # decided when the run was accepted
    later = start_run(client, FAILING_WORKFLOW, callback=receiver.url)
    assert [p["status"] for p in receiver.delivered(later, 2)] == ["processing", "failed"]

    stats = sim.wait_for(lambda s: s["deliveries"][stuck] == s["deliveries"][stuck_too] == ["processing"])
    for message_id in (stuck, stuck_too):
        assert stats["runs"][message_id]["status"] == "processing"
        assert client.get(f"/runs/{message_id}").json()["status"] == "processing"
        assert [d.json()["status"] for d in receiver.deliveries if d.json()["message_id"] == message_id] == [
            "processing"
        ]


# -- fault injection: idempotency, reset, start-up config -----------------------------------


def test_honour_idempotency_key_replays_the_original_202(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client
) -> None:
    set_config(anon, honour_idempotency_key=True, post_errors=[{"status": 503}])
    body = {"workflow_id": WORKFLOW}
    assert post_run(client, body, **{"Idempotency-Key": "a"}).status_code == 503  # no run: not a replay
    first = post_run(client, body, **{"Idempotency-Key": "a"})
    again = post_run(client, body, **{"Idempotency-Key": "a"})
    assert first.status_code == again.status_code == 202
    assert again.json() == first.json()
    other = start_run(client, **{"Idempotency-Key": "b"})
    keyless = {start_run(client), start_run(client)}
    stats = sim.stats()
    assert (stats["posts"], stats["accepted"], stats["idempotent_replays"]) == (6, 4, 1)
    assert set(stats["runs"]) == {first.json()["messageId"], other, *keyless}
    assert stats["runs"][first.json()["messageId"]]["posts"] == 3


def test_lookup_by_idempotency_key(sim: SimulatorServer, anon: httpx.Client, client: httpx.Client) -> None:
    params = {"idempotency_key": "k"}
    assert_error(client.get("/runs", params=params), 405, "method_not_allowed")  # off by default
    original = start_run(client, **{"Idempotency-Key": "k"})
    start_run(client, **{"Idempotency-Key": "k"})  # not honoured: a second run, same key
    set_config(anon, lookup_by_idempotency_key=True)
    assert_error(anon.get("/runs", params=params), 401, "unauthorized")
    assert_error(client.get("/runs"), 400, "invalid_request", "idempotency_key")
    assert_error(client.get("/runs", params={"idempotency_key": "other"}), 404, "run_not_found")
    sim.wait_for(lambda s: s["runs"][original]["status"] == "success")
    found = client.get("/runs", params=params)
    assert found.status_code == 200
    assert found.json() == client.get(f"/runs/{original}").json()  # the first run that key created
    assert found.json()["status"] == "success"


def test_reset_restores_fault_defaults(
    sim: SimulatorServer, anon: httpx.Client, client: httpx.Client
) -> None:
    faults_on = {
        "seed": 3,
        "post_errors": [{"status": 429, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT"}],
        "post_error_rate": 0.25,
        "post_error_status": 500,
        "post_latency": 1.5,
        "get_latency": 0.5,
        "bad_accept_body": 2,
        "drop_after_accept": 1,
        "error_after_accept": [502, 504],
        "webhook_duplicates": 3,
        "webhook_drop": ["success", "processing"],
        "webhook_drop_rate": 0.1,
        "webhook_reorder": True,
        "webhook_delay": 0.2,
        "never_terminal": [FAILING_WORKFLOW, WORKFLOW],
        "honour_idempotency_key": True,
        "lookup_by_idempotency_key": True,
    }
    shown = set_config(anon, **faults_on)
    assert {key: shown[key] for key in FAULTS_OFF} == {
        **faults_on,
        "post_error_rate": 0.25,
        "webhook_drop": ["processing", "success"],
        "never_terminal": sorted([FAILING_WORKFLOW, WORKFLOW]),
    }
    assert anon.post("/_sim/reset").status_code == 200
    config = anon.get("/_sim/config").json()
    assert {key: config[key] for key in FAULTS_OFF} == FAULTS_OFF
    assert config["processing_delay"] == sim.config.processing_delay == 0.01  # not a fault: kept
    start_run(client)


def test_faults_from_the_start_config_come_back_on_reset() -> None:
    date = "Wed, 21 Oct 2015 07:28:00 GMT"
    config = SimulatorConfig(post_errors=[PlannedError(429, retry_after=date)], honour_idempotency_key=True)
    with (
        SimulatorServer(config) as server,
        httpx.Client(base_url=server.url, headers={"x-api-key": config.api_key}, trust_env=False) as client,
    ):
        for _ in range(2):
            response = post_run(client, {"workflow_id": WORKFLOW})
            assert_error(response, 429, "too_many_requests")
            assert response.headers["Retry-After"] == date
            assert post_run(client, {"workflow_id": WORKFLOW}).status_code == 202
            server.reset()  # the plan is back; honour_idempotency_key stays on
            assert config.honour_idempotency_key


# -- command line ---------------------------------------------------------------


def test_cli_arguments_and_environment() -> None:
    env = {"NEN_SIM_PORT": "8123", "NEN_API_KEY": "env-key", "NEN_WEBHOOK_SECRET": "env-secret"}
    args = build_parser(env).parse_args(
        ["--processing-delay", "0.5", "--fail-workflow", WORKFLOW, "--fail-workflow", FAILING_WORKFLOW]
    )
    config = config_from_args(args)
    assert args.port == 8123
    assert config.api_key == "env-key"
    assert config.webhook_secret == "env-secret"
    assert config.signing_key == "sim-signing-key"
    assert config.processing_delay == 0.5
    assert config.fail_workflows == {WORKFLOW, FAILING_WORKFLOW}
    assert "env-key" not in repr(config)
    override = config_from_args(build_parser(env).parse_args(["--api-key", "cli-key"]))
    assert override.api_key == "cli-key"
    assert dataclasses.replace(override, api_key="sim-api-key", webhook_secret="sim-webhook-secret") == (
        SimulatorConfig()
    )  # every fault off unless asked for


def test_cli_fault_flags() -> None:
    argv = [
        "--seed", "9",
        "--post-error", "503",
        "--post-error", "429:2",
        "--post-error", "503:Wed, 21 Oct 2015 07:28:00 GMT",
        "--post-error-rate", "0.1",
        "--post-error-status", "502",
        "--post-latency", "1.5",
        "--get-latency", "0.5",
        "--bad-accept-body",
        "--drop-after-accept", "2",
        "--webhook-duplicates", "1",
        "--webhook-drop", "processing",
        "--webhook-drop", "failed",
        "--webhook-drop-rate", "0.2",
        "--webhook-reorder",
        "--webhook-delay", "0.3",
        "--never-terminal-workflow", WORKFLOW,
        "--honour-idempotency-key",
        "--lookup-by-idempotency-key",
    ]  # fmt: skip
    config = config_from_args(build_parser({}).parse_args(argv))
    assert config.seed == 9
    assert config.post_errors == [
        PlannedError(503),
        PlannedError(429, retry_after=2),
        PlannedError(503, retry_after="Wed, 21 Oct 2015 07:28:00 GMT"),
    ]
    assert (config.post_error_rate, config.post_error_status) == (0.1, 502)
    assert (config.post_latency, config.get_latency) == (1.5, 0.5)
    assert (config.bad_accept_body, config.drop_after_accept) == (True, 2)
    assert (config.webhook_duplicates, config.webhook_drop, config.webhook_drop_rate) == (
        1,
        {"processing", "failed"},
        0.2,
    )
    assert (config.webhook_reorder, config.webhook_delay) == (True, 0.3)
    assert config.never_terminal == {WORKFLOW}
    assert config.honour_idempotency_key and config.lookup_by_idempotency_key
    counted = config_from_args(build_parser({}).parse_args(["--bad-accept-body", "3", "--never-terminal"]))
    assert (counted.bad_accept_body, counted.never_terminal) == (3, True)


@pytest.mark.parametrize(
    "argv",
    [
        ["--post-error", "200"],
        ["--post-error", "abc"],
        ["--post-error-rate", "1.5"],
        ["--post-latency", "-1"],
        ["--bad-accept-body", "-2"],
        ["--webhook-drop", "done"],
        ["--webhook-duplicates", "1000"],
    ],
)
def test_cli_rejects_bad_fault_flags(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser({}).parse_args(argv)
    assert exited.value.code == 2
    assert argv[0] in capsys.readouterr().err


def test_deliveries_queue_behind_the_concurrency_cap_instead_of_failing() -> None:
    """Many webhooks at once: at most delivery_concurrency in flight; the rest wait their turn
    (longer than delivery_timeout) without counting a failed attempt."""
    lock = threading.Lock()
    state = {"now": 0, "max": 0, "done": 0}

    class Slow(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            with lock:
                state["now"] += 1
                state["max"] = max(state["max"], state["now"])
            time.sleep(0.1)  # a slow receiver (the thing under test is the sender's queueing)
            with lock:
                state["now"] -= 1
                state["done"] += 1
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    config = SimulatorConfig(
        processing_delay=0.0, terminal_delay=0.0, delivery_concurrency=2, delivery_timeout=0.5
    )
    try:
        with (
            SimulatorServer(config) as sim,
            httpx.Client(base_url=sim.url, headers={"x-api-key": config.api_key}, trust_env=False) as client,
        ):
            for _ in range(10):
                body = {"workflow_id": WORKFLOW, "workflow_params": {}, "webhook_callback": url}
                assert post_run(client, body).status_code == 202
            deadline = time.monotonic() + 30
            while sim.stats()["webhooks_sent"] < 20:
                assert time.monotonic() < deadline, sim.stats()
                with sim.state.changed:
                    sim.state.changed.wait(0.5)
            stats = sim.stats()
    finally:
        server.shutdown()
        server.server_close()
    assert stats["webhooks_attempted"] == 20 and stats["webhooks_failed"] == 0
    assert state["max"] <= 2 and state["done"] == 20
