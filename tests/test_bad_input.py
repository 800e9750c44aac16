"""Bad input at the public API (issue 17, item 6): strings that cannot be encoded, oversized
params, and what is kept of Nen's error answers (only error/message, cut, secure values redacted)."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from nen_celery import InvalidParams, get_run, register_workflow, start_run, unregister_workflow
from nen_celery.domain.params import json_size, validate_params
from nen_celery.errors import (
    ERROR_TEXT_MAX,
    REDACTED,
    ConfigurationError,
    NenAPIError,
    error_fields,
    redact,
    redacting,
    shown_text,
)
from nen_celery.settings import get_settings
from nen_celery.simulator.config import PlannedError
from tests.callbacks import calls, record
from tests.conftest import Stack, env
from tests.helpers import snapshot, wait_for

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"
LONE = "\ud800"  # a lone surrogate: a valid Python str that has no UTF-8 encoding


@pytest.fixture
def unchanged(stack: Stack) -> Iterator[None]:
    """The test's refusals leave Redis, the broker and Nen exactly as they were."""
    stack.counter.wait_idle()  # earlier tests' tasks settled: only this test could change state
    before_keys = snapshot(stack.redis, "*")
    before_posts = stack.sim.stats()["posts"]
    published = sum(stack.counter.published.values())
    yield
    assert snapshot(stack.redis, "*") == before_keys
    assert stack.sim.stats()["posts"] == before_posts
    assert sum(stack.counter.published.values()) == published


def refused(field: str, **kwargs: Any) -> InvalidParams:
    kwargs.setdefault("workflow_id", WF)
    with pytest.raises(InvalidParams) as caught:
        start_run(
            kwargs.pop("workflow_id"),
            kwargs.pop("params", {"A": "b"}),
            on_complete=record.s(tag="complete"),
            **kwargs,
        )
    exc = caught.value
    assert field in [f for f, _ in exc.errors], exc.errors
    str(exc).encode("utf-8")  # the error itself can be logged and printed
    return exc


# -- strings that cannot be encoded ------------------------------------------------------------


@pytest.mark.usefixtures("unchanged")
@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("params.A", {"params": {"A": f"ok{LONE}"}}),
        (f"params[{'K' + LONE!r}]", {"params": {"K" + LONE: "v"}}),
        ("secure_params.password", {"secure_params": {"password": f"pw{LONE}x"}}),
        (f"secure_params[{LONE!r}]", {"secure_params": {LONE: "v"}}),
        ("workflow_id", {"workflow_id": WF[:-1] + LONE}),
        ("run_id", {"run_id": f"run-{LONE}"}),
    ],
    ids=["params value", "params key", "secure value", "secure key", "workflow_id", "run_id"],
)
def test_lone_surrogates_are_refused_before_anything_is_stored(field: str, kwargs: dict[str, Any]) -> None:
    exc = refused(field, run_id=kwargs.pop("run_id", f"bad-input-{uuid.uuid4()}"), **kwargs)
    if field.startswith("secure_params."):
        assert "pw" not in str(exc)  # the secure value is never part of the error


def test_lone_surrogate_refused_for_a_registered_workflow_too(stack: Stack) -> None:
    class Params(BaseModel):
        NAME: str

    class Secure(BaseModel):
        password: str

    register_workflow(WF, params=Params, secure_params=Secure)
    try:
        refused("params.NAME", params={"NAME": LONE}, secure_params={"password": "x"})
        refused("secure_params.password", params={"NAME": "n"}, secure_params={"password": LONE})
    finally:
        unregister_workflow(WF)


def test_a_refused_run_id_is_invalid_params_naming_it(unchanged: None) -> None:
    for bad in ("has space", "trailing-newline\n", "x" * 129, ""):
        refused("run_id", run_id=bad)
    refused("run_id", run_id=42)


def test_a_run_id_that_names_another_runs_key_is_refused(unchanged: None) -> None:
    """Issue 29 finding 1: ``X:secure`` was accepted, and its record overwrote run X's sealed
    secure params when both ids fell in one shard (tried on c89bfbc)."""
    for bad in ("X:secure", "X:kept", "X:callback:0:done", "X:callback:1:lease"):
        error = refused("run_id", run_id=bad)
        assert "'secure', 'kept', 'callback'" in str(error)


def test_lone_surrogate_in_callback_arguments_is_refused(unchanged: None) -> None:
    refused("on_failure", on_failure=record.s(tag=LONE))


# -- size ------------------------------------------------------------------------------------


def test_size_is_counted_as_compact_utf8_json_params_and_secure_params_each() -> None:
    assert json_size({"A": "é" * 10}) == len('{"A":""}') + 20
    fits = {"A": "x" * (100 - len('{"A":""}'))}
    assert json_size(fits) == 100
    assert validate_params(WF, fits, dict(fits), max_bytes=100)[1] == fits  # each on its own
    with pytest.raises(InvalidParams) as caught:
        validate_params(WF, {"A": "é" * 50}, {"s": "secret-value" * 10}, max_bytes=100)
    assert [f for f, _ in caught.value.errors] == ["params", "secure_params"]
    assert "NEN_MAX_PARAMS_BYTES" in str(caught.value) and "secret-value" not in str(caught.value)


def test_params_over_the_default_limit_are_refused(unchanged: None) -> None:
    assert get_settings().max_params_bytes == 65536
    exc = refused("params", params={"A": "x" * 65536})
    assert "65536" in str(exc) and "NEN_MAX_PARAMS_BYTES" in str(exc)
    refused("secure_params", secure_params={"big": "s" * 70_000})


def test_the_limit_is_a_setting(stack: Stack) -> None:
    with env(NEN_MAX_PARAMS_BYTES="64"):
        stack.counter.wait_idle()
        before = snapshot(stack.redis, "*")
        exc = refused("params", params={"A": "x" * 60})
        assert "limit of 64" in str(exc)
        assert snapshot(stack.redis, "*") == before
    with env(NEN_MAX_PARAMS_BYTES="0"), pytest.raises(ConfigurationError, match="NEN_MAX_PARAMS_BYTES"):
        get_settings()


# -- what is kept of Nen's error answers ---------------------------------------------------------


def test_error_fields_keep_only_error_and_message_cut_and_redacted() -> None:
    secret = 'pw"7 é'
    body = {
        "error": "invalid_secure_param",
        "message": f"value {secret} rejected; as JSON {json.dumps(secret)}; as repr {secret!r}",
        "echo": {"secure_workflow_params": {"password": secret}},
    }
    error, message = error_fields(body, [secret])
    assert error == "invalid_secure_param"
    assert message is not None and message.count(REDACTED) == 3
    assert "pw" not in message and "7 " not in message
    # cut after redacting: a secret at the cut leaves no prefix of itself behind
    error, message = error_fields(
        {"error": "e" * 2000, "message": "m" * 495 + "hunter2-secret"}, ["hunter2-secret"]
    )
    assert error is not None and message is not None
    assert len(error) == len(message) == ERROR_TEXT_MAX and message.endswith("...")
    assert "hunt" not in message
    # anything but Nen's JSON object: no error, the start of its text
    assert error_fields("<html>" + "x" * 5000) == (
        None,
        ("<html>" + "x" * 5000)[: ERROR_TEXT_MAX - 3] + "...",
    )
    assert error_fields({"detail": "not nen's shape"}) == (None, None)
    assert shown_text(f"bad {LONE} text") == "bad ? text"  # a body's escapes can make surrogates
    assert redact("a s3 b", ["s3", ""]) == f"a {REDACTED} b"


def test_nen_api_error_built_in_a_redacting_block_shows_no_secure_value() -> None:
    body = {"error": "bad_param", "message": "password hunter2 is wrong " + "z" * 3000}
    with redacting(["hunter2"]):
        exc = NenAPIError(400, body, retryable=False)
    assert "hunter2" not in str(exc) and "hunter2" not in json.dumps(exc.to_dict())
    assert exc.to_dict() == {
        "type": "NenAPIError",
        "status_code": 400,
        "error": "bad_param",
        "message": exc.message,
    }
    assert len(exc.message or "") == ERROR_TEXT_MAX and len(str(exc)) < 2 * ERROR_TEXT_MAX
    assert exc.body == body  # the answer as received stays available to code, never stored
    assert "hunter2" in (NenAPIError(400, body, retryable=False).message or "")  # outside a block


def test_a_rejected_run_stores_and_logs_no_secure_value(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """Nen echoes the secure value in its error message (on a retried 503, then on the 400 that
    rejects the run): the stored error, the callback and every log line of ours show it redacted."""
    caplog.set_level(logging.INFO)
    secret = f"sv-{uuid.uuid4().hex}"
    long_tail = " detail" * 400
    stack.counter.wait_idle()
    stack.sim.state.config.post_errors = [
        PlannedError(503, error="service_unavailable", message=f"try later, token={secret}"),
        PlannedError(400, error="invalid_secure_param", message=f"token {secret} is not valid.{long_tail}"),
    ]
    try:
        handle = start_run(
            WF,
            {"A": "b"},
            secure_params={"token": secret},
            on_failure=record.s(tag="failure"),
        )
        run = handle.wait(timeout=20)
        (call,) = wait_for(lambda: calls(handle.run_id), 20, "the failure callback")
        stack.counter.wait_idle()
    finally:
        stack.sim.state.config.post_errors = []
    assert run.status == "rejected" and run.error is not None
    assert set(run.error) == {"type", "status_code", "error", "message"}  # never the whole body
    assert run.error["error"] == "invalid_secure_param"
    assert run.error["message"].startswith(f"token {REDACTED} is not valid.")
    assert len(run.error["message"]) == ERROR_TEXT_MAX
    stored = get_run(handle.run_id)
    assert stored is not None and secret not in json.dumps(stored.to_dict())
    assert secret not in json.dumps(call)
    assert secret not in json.dumps(snapshot(stack.redis, "*"))  # records, broker messages: nowhere
    ours = [r for r in caplog.records if not r.name.startswith("nen_celery.simulator")]
    texts = [r.getMessage() + (r.exc_text or "") for r in ours]
    assert any(REDACTED in t and "try later" in t for t in texts), "the retried 503 was logged"
    assert any(REDACTED in t and "is not valid" in t for t in texts), "the rejection was logged"
    assert not [t for t in texts if secret in t]
