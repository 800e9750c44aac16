"""NenClient retry classification; respx supplies HTTP edge cases a real server can't easily."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import respx

from nen_celery.domain import signing
from nen_celery.errors import ConfigurationError, NenAPIError, NenProtocolError, NenTransportError
from nen_celery.nen.client import AttemptHooks, NenClient, RunRequest
from nen_celery.nen.retryable import parse_retry_after
from nen_celery.settings import Settings

API = "http://nen.test"
WF = "12345678-1234-1234-1234-123456789abc"
ACCEPTED = {"message": "Job accepted for processing.", "messageId": "m-1", "workflowId": WF}


def make(**overrides: Any) -> tuple[NenClient, list[float]]:
    values: dict[str, Any] = dict(
        api_url=API,
        api_key="k-123",
        signing_key="sign-456",
        submit_deadline=30,
        backoff_initial=0.01,
        backoff_max=0.05,
    )
    values.update(overrides)
    sleeps: list[float] = []
    settings = Settings(**values)
    client = NenClient(settings, httpx.Client(), sleep=sleeps.append)
    return client, sleeps


class Hooks(AttemptHooks):
    def __init__(self) -> None:
        self.sent = 0
        self.unsent = 0

    def before_send(self) -> None:
        self.sent += 1

    def not_sent(self) -> None:
        self.unsent += 1


REQ = RunRequest(WF, {"PATIENT_NAME": "Jane Doe"}, {"password": "pw-secret"}, "https://me.test/hook")


@respx.mock
def test_accepted_request_is_signed_over_the_exact_bytes() -> None:
    route = respx.post(f"{API}/runs").mock(return_value=httpx.Response(202, json=ACCEPTED))
    client, _ = make()
    accepted = client.post_run(REQ, "run-1")
    assert accepted.message_id == "m-1" and accepted.body == ACCEPTED
    sent = route.calls.last.request
    assert sent.headers["x-api-key"] == "k-123"
    assert sent.headers["idempotency-key"] == "run-1"
    body = json.loads(sent.content)
    assert body == {
        "workflow_id": WF,
        "workflow_params": {"PATIENT_NAME": "Jane Doe"},
        "secure_workflow_params": {"password": "pw-secret"},
        "webhook_callback": "https://me.test/hook",
    }
    ts = sent.headers["x-timestamp"]
    assert (
        signing.verify_request(
            "sign-456", "POST", "/runs", ts, sent.headers["x-signature"], sent.content, now=float(ts)
        )
        is None
    )


@respx.mock
def test_webhook_field_name_is_a_setting() -> None:
    route = respx.post(f"{API}/runs").mock(return_value=httpx.Response(202, json=ACCEPTED))
    client, _ = make(webhook_field="webhook_url")
    client.post_run(REQ, "run-1")
    assert "webhook_url" in json.loads(route.calls.last.request.content)


@respx.mock
def test_secure_params_are_never_sent_unsigned() -> None:
    route = respx.post(f"{API}/runs").mock(return_value=httpx.Response(202, json=ACCEPTED))
    client, _ = make(signing_key=None)
    with pytest.raises(ConfigurationError, match="NEN_SIGNING_KEY"):
        client.post_run(REQ, "run-1")
    assert route.call_count == 0


@respx.mock
def test_plain_params_need_no_signing_key() -> None:
    route = respx.post(f"{API}/runs").mock(return_value=httpx.Response(202, json=ACCEPTED))
    client, _ = make(signing_key=None)
    client.post_run(RunRequest(WF, {}, None, None), "run-1")
    assert "x-signature" not in route.calls.last.request.headers


@respx.mock
@pytest.mark.parametrize("code", [429, 503])
def test_only_nens_own_busy_answers_are_retried(code: int) -> None:
    """A 429/503 carrying Nen's error body proves Nen did not create the run: resent."""
    route = respx.post(f"{API}/runs").mock(
        side_effect=[
            httpx.Response(code, json={"error": "busy", "message": "try later"}),
            httpx.Response(code, json={"error": "busy", "message": "try later"}),
            httpx.Response(202, json=ACCEPTED),
        ]
    )
    client, sleeps = make()
    hooks = Hooks()
    assert client.post_run(REQ, "run-1", hooks=hooks).message_id == "m-1"
    assert route.call_count == 3 and len(sleeps) == 2
    assert all(0 < s <= 0.06 for s in sleeps)
    assert hooks.sent == 3 and hooks.unsent == 2


@respx.mock
@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, text="<html>bad gateway</html>"),
        httpx.Response(504, text="<html>gateway timeout</html>"),
        httpx.Response(500, text="Internal Server Error"),
        httpx.Response(500, json={"error": "internal", "message": "oops"}),  # Nen's, but a 5xx
        httpx.Response(502, json={"error": "bad_gateway", "message": "upstream"}),  # not 429/503
        httpx.Response(503, text="<html>service unavailable</html>"),  # a proxy's 503
        httpx.Response(429, text="slow down"),  # a proxy's rate limit
        httpx.Response(408, text="request timeout"),
    ],
    ids=["502", "504", "500", "500-nen-body", "502-nen-body", "503-html", "429-text", "408"],
)
def test_an_answer_that_does_not_prove_not_created_is_never_resent(response: httpx.Response) -> None:
    """The request went out; a gateway (or Nen failing) answered: Nen may have created the run."""
    route = respx.post(f"{API}/runs").mock(side_effect=[response, httpx.Response(202, json=ACCEPTED)])
    client, sleeps = make()
    hooks = Hooks()
    with pytest.raises(NenAPIError) as err:
        client.post_run(REQ, "run-1", hooks=hooks)
    assert route.call_count == 1 and sleeps == []
    assert err.value.maybe_sent and not err.value.retryable
    assert hooks.unsent == 0  # the POST stays marked as possibly sent


@respx.mock
def test_ambiguous_answers_are_resent_only_with_the_opt_in_and_the_same_key() -> None:
    route = respx.post(f"{API}/runs").mock(
        side_effect=[httpx.Response(504, text="<html>timeout</html>"), httpx.Response(202, json=ACCEPTED)]
    )
    client, _ = make(retry_ambiguous=True)
    assert client.post_run(REQ, "run-1").message_id == "m-1"
    assert route.call_count == 2
    assert {c.request.headers["idempotency-key"] for c in route.calls} == {"run-1"}


@respx.mock
def test_429_honours_retry_after() -> None:
    respx.post(f"{API}/runs").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "7"}, json={"error": "rate_limited", "message": "x"}),
            httpx.Response(202, json=ACCEPTED),
        ]
    )
    client, sleeps = make()
    client.post_run(REQ, "run-1")
    assert sleeps == [7.0]


@respx.mock
@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 422])
def test_client_errors_are_never_retried_and_keep_the_body(code: int) -> None:
    body = {"error": "hmac_required_for_secure_params", "message": "sign it"}
    route = respx.post(f"{API}/runs").mock(return_value=httpx.Response(code, json=body))
    client, sleeps = make()
    with pytest.raises(NenAPIError) as exc:
        client.post_run(REQ, "run-1")
    assert route.call_count == 1 and sleeps == []
    assert exc.value.status_code == code and exc.value.body == body
    assert exc.value.error == "hmac_required_for_secure_params" and not exc.value.retryable
    assert exc.value.to_dict() == {"type": "NenAPIError", "status_code": code, **body}  # no "body"


@respx.mock
def test_connect_errors_are_retried_and_marked_not_sent() -> None:
    route = respx.post(f"{API}/runs").mock(
        side_effect=[
            httpx.ConnectError("refused"),
            httpx.ConnectTimeout("slow"),
            httpx.Response(202, json=ACCEPTED),
        ]
    )
    client, _ = make()
    hooks = Hooks()
    client.post_run(REQ, "run-1", hooks=hooks)
    assert route.call_count == 3 and hooks.unsent == 2


@respx.mock
@pytest.mark.parametrize(
    "exc", [httpx.ReadTimeout("slow"), httpx.RemoteProtocolError("eof"), httpx.WriteTimeout("stuck")]
)
def test_read_timeout_after_send_is_not_retried_by_default(exc: Exception) -> None:
    route = respx.post(f"{API}/runs").mock(side_effect=[exc, httpx.Response(202, json=ACCEPTED)])
    client, _ = make()
    hooks = Hooks()
    with pytest.raises(NenTransportError) as err:
        client.post_run(REQ, "run-1", hooks=hooks)
    assert route.call_count == 1
    assert err.value.maybe_sent and not err.value.retryable
    assert hooks.unsent == 0  # the POST stays marked as possibly sent


@respx.mock
def test_read_timeout_retry_is_an_opt_in_setting() -> None:
    route = respx.post(f"{API}/runs").mock(
        side_effect=[httpx.ReadTimeout("slow"), httpx.Response(202, json=ACCEPTED)]
    )
    client, _ = make(retry_read_timeout=True)
    client.post_run(REQ, "run-1")
    assert route.call_count == 2
    assert {c.request.headers["idempotency-key"] for c in route.calls} == {"run-1"}


@respx.mock
@pytest.mark.parametrize(
    "response", [httpx.Response(202, text="accepted!"), httpx.Response(202, json={"message": "no id"})]
)
def test_202_without_usable_body_is_a_protocol_error(response: httpx.Response) -> None:
    route = respx.post(f"{API}/runs").mock(return_value=response)
    client, _ = make()
    with pytest.raises(NenProtocolError) as err:
        client.post_run(REQ, "run-1")
    assert route.call_count == 1 and err.value.maybe_sent


@respx.mock
def test_total_deadline_bounds_retries() -> None:
    route = respx.post(f"{API}/runs").mock(return_value=httpx.Response(503, json={"error": "down"}))
    settings = Settings(api_url=API, api_key="k", submit_deadline=0.3, backoff_initial=0.02, backoff_max=0.05)
    client = NenClient(settings, httpx.Client())  # real sleeps: the deadline is wall-clock
    with pytest.raises(NenAPIError) as err:
        client.post_run(RunRequest(WF, {}, None, None), "run-1")
    assert err.value.retryable and err.value.status_code == 503
    assert 2 <= route.call_count <= 20


@respx.mock
def test_get_run_uses_the_retrieval_path_setting() -> None:
    route = respx.get(f"{API}/v2/results/m-1").mock(
        return_value=httpx.Response(200, json={"message_id": "m-1", "status": "processing"})
    )
    client, _ = make(retrieval_path="/v2/results/{message_id}")
    assert client.retrieve_run("m-1")["status"] == "processing"
    assert route.calls.last.request.headers["x-api-key"] == "k-123"


def test_missing_api_key_is_a_configuration_error_naming_it() -> None:
    client, _ = make(api_key=None)
    with pytest.raises(ConfigurationError, match="NEN_API_KEY"):
        client.post_run(RunRequest(WF, {}, None, None), "run-1")


def test_parse_retry_after() -> None:
    assert parse_retry_after("12", now=0) == 12.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480) == 10.0
    assert parse_retry_after("soon", now=0) is None
    assert parse_retry_after(None, now=0) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("api_url", "ftp://x"),
        ("webhook_url", "nope"),
        ("retrieval_path", "/runs"),
        ("retry_statuses", "429,abc"),
        ("reschedule_delay", 600),
        ("http_max_connections", 0),
        ("http_keepalive_expiry", 0),
    ],
)
def test_bad_settings_name_the_setting(name: str, value: Any) -> None:
    by_env_name = ("api_url", "webhook_url", "retrieval_path", "retry_statuses")
    with pytest.raises(ValueError, match=name.upper() if name in by_env_name else name):
        Settings(**{name: value})
