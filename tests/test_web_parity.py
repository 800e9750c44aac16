"""The ASGI receiver, the FastAPI router, a FastAPI mount, Flask and Django answer every input alike."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask

from nen_celery.web.asgi import create_app
from nen_celery.web.fastapi import create_router
from nen_celery.web.flask import NenCelery
from tests.conftest import SIM_WEBHOOK_SECRET, Stack, env
from tests.helpers import wait_for
from tests.web_support import REFUSED, WEBHOOK, WF, Reply, django_ready, hinted, signed, webhook_body

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("django_ready")]
__all__ = ["django_ready"]  # the fixture, imported for pytest

# (method, path, body, headers) -> answer
Call = Callable[[str, str, bytes, dict[str, str]], Reply]


def _starlette(client: TestClient, prefix: str) -> Call:
    def call(method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        response = client.request(method, prefix + path, content=body, headers=headers)
        is_json = response.headers.get("content-type", "").startswith("application/json")
        return Reply(response.status_code, response.json() if is_json else None)

    return call


def _flask(app: Flask, prefix: str) -> Call:
    client = app.test_client()

    def call(method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        response = client.open(prefix + path, method=method, data=body, headers=headers)
        return Reply(response.status_code, response.get_json(silent=True))

    return call


def _django() -> Call:
    from django.test import Client

    client = Client()

    def call(method: str, path: str, body: bytes, headers: dict[str, str]) -> Reply:
        response = client.generic(method, "/nen" + path, body, headers=headers)
        is_json = response.get("Content-Type", "").startswith("application/json")
        return Reply(response.status_code, json.loads(response.content) if is_json else None)

    return call


@pytest.fixture(scope="module")
def receivers(stack: Stack, django_ready: None) -> Iterator[dict[str, Call]]:
    flask_app = Flask("parity")
    NenCelery(flask_app)  # no NEN_* keys: the environment, as for the others
    router_app = FastAPI()
    router_app.include_router(create_router(), prefix="/nen")
    mount_app = FastAPI()
    mount_app.mount("/nen", create_app())
    with TestClient(create_app()) as asgi, TestClient(router_app) as router, TestClient(mount_app) as mount:
        yield {
            "asgi": _starlette(asgi, ""),
            "fastapi router": _starlette(router, "/nen"),
            "fastapi mount": _starlette(mount, "/nen"),
            "flask": _flask(flask_app, "/nen"),  # the blueprint's default prefix
            "django": _django(),
        }
    stack.counter.wait_idle()


def _answers(receivers: dict[str, Call], method: str, path: str, body: bytes, headers: dict[str, str]) -> Any:
    return {name: call(method, path, body, headers) for name, call in receivers.items()}


def _parked() -> tuple[bytes, dict[str, str]]:
    body = webhook_body(f"parity-{uuid.uuid4()}")
    return body, signed(body)


ACCEPTED: dict[str, Callable[[], tuple[bytes, dict[str, str]]]] = {
    "signed, unknown message": _parked,
    "charset in content type": lambda: (
        (b := webhook_body(f"parity-{uuid.uuid4()}")),
        signed(b, **{"Content-Type": "application/json; charset=utf-8"}),
    ),
    "lower-case signature header": lambda: (
        (b := webhook_body(f"parity-{uuid.uuid4()}")),
        {"x-hmac-signature": signed(b)["X-Hmac-Signature"], "content-type": "application/json"},
    ),
    "upper-case signature header": lambda: (
        (b := webhook_body(f"parity-{uuid.uuid4()}")),
        {"X-HMAC-SIGNATURE": signed(b)["X-Hmac-Signature"], "Content-Type": "application/json"},
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refusals_are_identical(receivers: dict[str, Call], case: str) -> None:
    body, headers, status, error = REFUSED[case]
    answers = _answers(receivers, "POST", WEBHOOK, body, headers)
    assert answers["asgi"].status == status and answers["asgi"].body["error"] == error
    assert answers == dict.fromkeys(receivers, answers["asgi"])


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_acceptances_are_identical(receivers: dict[str, Call], case: str) -> None:
    answers = {}
    for name, call in receivers.items():
        body, headers = ACCEPTED[case]()  # a fresh message id each: parked, never bound
        answers[name] = call("POST", WEBHOOK, body, headers)
    assert answers == dict.fromkeys(receivers, Reply(202, {"status": "parked"}))


def test_other_methods_and_healthz_are_identical(receivers: dict[str, Call]) -> None:
    assert {n: r.status for n, r in _answers(receivers, "GET", WEBHOOK, b"", {}).items()} == dict.fromkeys(
        receivers, 405
    )
    assert _answers(receivers, "GET", "/healthz", b"", {}) == dict.fromkeys(
        receivers, Reply(200, {"status": "ok"})
    )


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"NEN_WEBHOOK_SECRET": None}, "receiver has no webhook secret"),
        ({"NEN_WEBHOOK_SCHEME": "standard", "NEN_WEBHOOK_SECRET": None}, "receiver has no webhook secret"),
        ({"NEN_API_URL": "ftp://not-http"}, "receiver is misconfigured"),
    ],
)
def test_misconfigured_receivers_answer_503_identically(
    stack: Stack, receivers: dict[str, Call], settings: dict[str, str | None], message: str
) -> None:
    body = webhook_body("m")
    stack.counter.wait_idle()  # the in-process worker shares these settings
    with env(**settings):
        answers = _answers(receivers, "POST", WEBHOOK, body, signed(body, SIM_WEBHOOK_SECRET))
    expected = Reply(503, {"error": "not_configured", "message": message})
    assert answers == dict.fromkeys(receivers, expected)


def test_every_receiver_counts_refusals_and_serves_metrics(receivers: dict[str, Call]) -> None:
    from nen_celery.runtime.metrics import REGISTRY

    def refused() -> float:
        return REGISTRY.get_sample_value("nen_webhooks_total", {"result": "invalid_signature"}) or 0.0

    body, headers, _, _ = REFUSED["unsigned"]
    for name, call in receivers.items():
        before = refused()
        assert call("POST", WEBHOOK, body, headers).status == 401
        assert refused() == before + 1, name
    assert {n: r.status for n, r in _answers(receivers, "GET", "/metrics", b"", {}).items()} == dict.fromkeys(
        receivers, 404
    )  # opt-in (issue 29)
    with env(NEN_RECEIVER_METRICS="true"):
        answers = _answers(receivers, "GET", "/metrics", b"", {})
    assert {n: r.status for n, r in answers.items()} == dict.fromkeys(receivers, 200)


@pytest.mark.parametrize("applied_here", [True, False], ids=["receiver applies", "all queued"])
def test_every_receiver_passes_the_run_hint_to_the_ingest_task(
    stack: Stack, receivers: dict[str, Call], applied_here: bool
) -> None:
    """``?nen_run=<run id>~<attempt>~<token>``: no messageId lookup (where an unbound messageId
    alone gets 202 parked, and nothing is kept with the run). The webhook is kept with that run
    until the run binds: by the receiver itself, which ends a run with a terminal webhook
    (202 parked: the run is not bound yet), or, with NEN_WEBHOOK_APPLY_PROCESSING=false, by the
    ingest task it is queued for at once (200 queued)."""
    from nen_celery.runtime.context import get_context

    expected = Reply(202, {"status": "parked"}) if applied_here else Reply(200, {"status": "queued"})
    store = get_context().store
    kept = {}
    with env(NEN_WEBHOOK_APPLY_PROCESSING=str(applied_here).lower()):
        for name, call in receivers.items():
            run_id = f"parity-run-{uuid.uuid4()}"
            assert store.create(run_id, "12345678-1234-1234-1234-123456789abc", {}, None, None, None)
            body = webhook_body(f"parity-{uuid.uuid4()}")
            assert call("POST", hinted(run_id), body, signed(body)) == expected, name
            kept[name] = (run_id, body)
    stack.counter.wait_idle()
    for name, (run_id, body) in kept.items():
        # the queued one is kept by its ingest task: on a loaded machine it may still be running
        parked = wait_for(lambda rid=run_id: store.redis.hvals(store.run_parked_key(rid)), 20, name)
        assert [json.loads(get_context().sealer.open(p)) for p in parked] == [json.loads(body)], name


def test_every_receiver_ignores_a_run_hint_without_a_valid_token(
    stack: Stack, receivers: dict[str, Call], caplog: pytest.LogCaptureFixture
) -> None:
    """Nen signs the body, not the URL: a hint whose token is missing, another run's or under
    another key is not used (the webhook goes the messageId way: an unbound one is parked, 202),
    logged at WARNING without the token, and counted."""
    from nen_celery.runtime.context import get_context
    from nen_celery.runtime.metrics import REGISTRY

    def refused() -> float:
        return REGISTRY.get_sample_value("nen_webhooks_total", {"result": "hint_refused"}) or 0.0

    store = get_context().store
    for name, call in receivers.items():
        run_id = f"parity-run-{uuid.uuid4()}"
        assert store.create(run_id, "12345678-1234-1234-1234-123456789abc", {}, None, None, None)
        other = hinted(f"parity-run-{uuid.uuid4()}")
        urls = {
            "missing": f"{WEBHOOK}?nen_run={run_id}",
            "old format": f"{WEBHOOK}?nen_run={run_id}~0",
            "another run's": other.replace(other.split("=", 1)[1].split("~")[0], run_id),
            "another attempt's": hinted(run_id, 1).replace("~1~", "~0~"),
            "another key's": hinted(run_id, secret="not-our-secret"),
        }
        for kind, url in urls.items():
            for status in ("processing", "success"):
                body = webhook_body(f"parity-{uuid.uuid4()}", status)
                before = refused()
                caplog.clear()
                with caplog.at_level("WARNING", logger="nen_celery.web"):
                    assert call("POST", url, body, signed(body)) == Reply(202, {"status": "parked"}), (
                        name,
                        kind,
                    )
                assert refused() == before + 1, (name, kind)
                assert f"names run {run_id} (attempt 0) with a" in caplog.text, (name, kind)
                token = url.split("nen_run=", 1)[1].split("~")[2:]
                assert not token or token[0] not in caplog.text, (name, kind)  # never logged
    stack.counter.wait_idle()
    assert store.raw(run_id)["status"] == "queued"


def _bound_run(message_id: str) -> str:
    """A run Nen accepted as ``message_id`` (status submitted)."""
    from nen_celery.runtime.context import get_context

    store = get_context().store
    run_id = f"parity-run-{uuid.uuid4()}"
    assert store.create(run_id, "12345678-1234-1234-1234-123456789abc", {}, None, None, None)
    assert store.bind(run_id, message_id, {"messageId": message_id})[0] == "submitted"
    return run_id


def test_every_receiver_applies_a_processing_webhook_itself(stack: Stack, receivers: dict[str, Call]) -> None:
    """No ingest task for ``processing``: the receiver runs the script, and a hint that does not
    fit the signed body changes nothing; a run not bound yet keeps it (202, as when parked)."""
    from nen_celery.runtime.context import get_context
    from nen_celery.worker import ingest_webhook

    store = get_context().store
    stack.counter.wait_idle()
    before = stack.counter.published[ingest_webhook.name]
    queued, unknown_runs = 0, {}
    for name, call in receivers.items():
        message_id = f"parity-{uuid.uuid4()}"
        run_id = _bound_run(message_id)
        body = webhook_body(message_id, "processing")
        url = hinted(run_id)
        assert call("POST", url, body, signed(body)) == Reply(200, {"status": "applied"}), name
        run = store.get(run_id)
        assert run is not None and run.status == "processing", name
        again = call("POST", url, body, signed(body))  # a duplicate: applied, changes nothing
        assert again == Reply(200, {"status": "applied"}), name
        assert [h["status"] for h in store.get(run_id).history].count("processing") == 1  # type: ignore[union-attr]

        other = webhook_body(f"parity-{uuid.uuid4()}", "processing")  # another message's webhook
        other_run = _bound_run(f"parity-{uuid.uuid4()}")
        answer = call("POST", hinted(other_run), other, signed(other))
        assert answer == Reply(200, {"status": "ignored"}), name
        assert store.get(other_run).status == "submitted", name  # type: ignore[union-attr]

        unbound = f"parity-run-{uuid.uuid4()}"
        assert store.create(unbound, "12345678-1234-1234-1234-123456789abc", {}, None, None, None)
        answer = call("POST", hinted(unbound), body, signed(body))
        assert answer == Reply(202, {"status": "parked"}), name
        kept = store.redis.hgetall(store.run_parked_key(unbound))
        assert kept == {f"processing:{message_id}": WF}, name  # the binding applies it

        unknown = f"parity-run-{uuid.uuid4()}"  # its POST's fate unknown: the ingest task binds it
        assert store.create(unknown, "12345678-1234-1234-1234-123456789abc", {}, None, None, None)
        store.apply(unknown, "unknown", source="test")
        unknown_body = webhook_body(f"parity-{uuid.uuid4()}", "processing")
        answer = call("POST", hinted(unknown), unknown_body, signed(unknown_body))
        assert answer == Reply(200, {"status": "queued"}), name
        queued += 1
        unknown_runs[unknown] = json.loads(unknown_body)["message_id"]
    assert stack.counter.published[ingest_webhook.name] == before + queued  # only those
    stack.counter.wait_idle()
    for unknown, message_id in unknown_runs.items():
        bound = store.raw(unknown)
        assert (bound["status"], bound["message_id"]) == ("processing", message_id)


def test_with_apply_processing_off_every_receiver_queues_it(stack: Stack, receivers: dict[str, Call]) -> None:
    from nen_celery.runtime.context import get_context
    from nen_celery.worker import ingest_webhook

    stack.counter.wait_idle()
    before = stack.counter.published[ingest_webhook.name]
    runs = {}
    with env(NEN_WEBHOOK_APPLY_PROCESSING="false"):
        for name, call in receivers.items():
            message_id = f"parity-{uuid.uuid4()}"
            runs[name] = _bound_run(message_id)
            body = webhook_body(message_id, "processing")
            answer = call("POST", hinted(runs[name]), body, signed(body))
            assert answer == Reply(200, {"status": "queued"}), name
        assert stack.counter.published[ingest_webhook.name] == before + len(receivers)
        stack.counter.wait_idle()  # the worker applies them
    for name, run_id in runs.items():
        assert get_context().store.get(run_id).status == "processing", name  # type: ignore[union-attr]
