"""The local Nen simulator, over real HTTP: auth, validation, signing, webhooks, control endpoints."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from nen_celery import signing
from nen_celery.simulator import SimulatorConfig, SimulatorServer
from nen_celery.simulator.cli import build_parser, config_from_args

WORKFLOW = "8c9e2f64-1b7d-4c3e-9a55-0d6f2b7e4a11"
FAILING_WORKFLOW = "0b5d3c1e-7f2a-4e6b-8d90-1a2b3c4d5e6f"
WAIT = 5.0


@dataclasses.dataclass
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: int

    def json(self) -> dict[str, Any]:
        data = json.loads(self.body)
        assert isinstance(data, dict)
        return data


class Receiver:
    """A webhook receiver in a thread; records every attempt, can answer 500 on demand."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.deliveries: list[Delivery] = []
        self.fail_next = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.cond:
                    status = 500 if receiver.fail_next > 0 else 200
                    receiver.fail_next = max(0, receiver.fail_next - 1)
                    receiver.deliveries.append(Delivery(self.path, dict(self.headers.items()), body, status))
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
    saved = dataclasses.replace(sim_module.config)
    sim_module.reset()
    yield sim_module
    sim_module.reset()
    for f in dataclasses.fields(saved):
        value = getattr(saved, f.name)
        setattr(sim_module.config, f.name, set(value) if isinstance(value, set) else value)


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
    assert all(run["workflow_id"] == WORKFLOW for run in stats["runs"].values())
    assert sim.stats()["posts_by_idempotency_key"] == stats["posts_by_idempotency_key"]


def test_reset_clears_runs_and_stats(sim: SimulatorServer, client: httpx.Client, anon: httpx.Client) -> None:
    message_id = post_run(client, {"workflow_id": WORKFLOW}).json()["messageId"]
    assert anon.post("/_sim/reset").status_code == 200
    stats = sim.stats()
    assert stats["posts"] == 0
    assert stats["runs"] == {}
    assert stats["posts_by_idempotency_key"] == {}
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
