"""Bad input to start_run and to the settings: a clear error naming the field, nothing changed.

Complements tests/test_params.py (validate_params alone) and tests/test_lifecycle.py (non-UUID
workflow_id, extra keys, no NEN_SECRETS_KEY): here every case goes through start_run against the
real stack and must leave Redis, the broker and the simulator exactly as they were.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from nen_celery import InvalidParams, register_workflow, start_run, unregister_workflow
from nen_celery.errors import ConfigurationError
from nen_celery.settings import get_settings
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, Stack, env
from tests.security_support import published, settled_snapshot

pytestmark = pytest.mark.integration

WF = "0b9d8c4e-6f1a-4c1e-9a55-3f2f5d2e7a10"
SECRET_VALUE = "pw-never-echoed-51f0"


class Params(BaseModel):
    PATIENT_NAME: str


class Secure(BaseModel):
    password: str


@pytest.fixture
def registered() -> Iterator[None]:
    register_workflow(WF, params=Params, secure_params=Secure)
    yield
    unregister_workflow(WF)


@pytest.fixture
def unchanged(stack: Stack) -> Iterator[Stack]:
    """Asserts after the test that Redis (every key), publishes and Nen POSTs did not change."""
    before = settled_snapshot(stack)
    sent, posts = published(stack), stack.sim.stats()["posts"]
    yield stack
    assert published(stack) == sent
    assert stack.sim.stats()["posts"] == posts
    assert settled_snapshot(stack) == before


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("workflow_id int", {"workflow_id": 42}, r"workflow_id: must be a UUID string"),
    ("workflow_id None", {"workflow_id": None}, r"workflow_id"),
    ("workflow_id unhyphenated", {"workflow_id": WF.replace("-", "")}, r"workflow_id.*hyphenated"),
    ("params list value", {"params": {"PATIENT_NAME": ["J"]}}, r"params\.PATIENT_NAME"),
    ("params nested", {"params": {"A": {"b": 1}}, "workflow_id": WF.replace("0b", "1b")}, r"params\.A"),
    ("params None value", {"params": {"A": None}, "workflow_id": WF.replace("0b", "1b")}, r"params\.A"),
    ("params nan", {"params": {"A": float("nan")}, "workflow_id": WF.replace("0b", "1b")}, r"params\.A"),
    ("params not a dict", {"params": ["PATIENT_NAME", "J"]}, r"params: must be a dict"),
    ("params non-string key", {"params": {1: "x"}, "workflow_id": WF.replace("0b", "1b")}, r"params\[1\]"),
    ("extra key, registered", {"params": {"PATIENT_NAME": "J", "Extra": 1}}, r"params\.Extra: not a field"),
    ("wrong case, registered", {"params": {"patient_name": "J"}}, r"params\.patient_name"),
    ("secure int", {"secure_params": {"password": 51}}, r"secure_params\.password: must be a string"),
    ("secure None", {"secure_params": {"password": None}}, r"secure_params\.password"),
    ("secure list", {"secure_params": {"password": [SECRET_VALUE]}}, r"secure_params\.password"),
    ("secure bytes", {"secure_params": {"password": SECRET_VALUE.encode()}}, r"secure_params\.password"),
    ("secure not a dict", {"secure_params": SECRET_VALUE}, r"secure_params: must be a dict"),
    ("secure extra, registered", {"secure_params": {"password": "x", "pin": "1"}}, r"secure_params\.pin"),
    ("secure missing, registered", {"secure_params": None}, r"secure_params: required by this workflow"),
]


@pytest.mark.usefixtures("registered")
@pytest.mark.parametrize(("case", "change", "message"), CASES, ids=[c[0] for c in CASES])
def test_start_run_bad_input_names_the_field_and_changes_nothing(
    unchanged: Stack, case: str, change: dict[str, Any], message: str
) -> None:
    kwargs: dict[str, Any] = {
        "workflow_id": WF,
        "params": {"PATIENT_NAME": "Jane"},
        "secure_params": {"password": SECRET_VALUE},
        **change,
    }
    with pytest.raises(InvalidParams, match=message) as exc:
        start_run(kwargs.pop("workflow_id"), kwargs.pop("params"), **kwargs)
    assert isinstance(exc.value, ValueError)
    assert SECRET_VALUE not in str(exc.value) and "51" not in str(exc.value)


def test_invalid_secrets_key_is_named_not_echoed(unchanged: Stack) -> None:
    bad = "not-a-fernet-key-" + SECRET_VALUE
    with env(NEN_SECRETS_KEY=bad), pytest.raises(ConfigurationError, match="NEN_SECRETS_KEY") as exc:
        start_run(WF.replace("0b", "2b"), {}, secure_params={"password": "x"})
    assert SECRET_VALUE not in str(exc.value)


def test_secure_params_without_secrets_key_even_for_an_unregistered_workflow(unchanged: Stack) -> None:
    with env(NEN_SECRETS_KEY=None), pytest.raises(ConfigurationError, match="NEN_SECRETS_KEY"):
        start_run(WF.replace("0b", "3b"), {"A": 1}, secure_params={"token": SECRET_VALUE})


def leaks(secret: str, text: str, window: int = 8) -> bool:
    """Any ``window`` consecutive characters of ``secret`` in ``text`` (errors truncate values)."""
    return any(secret[i : i + window] in text for i in range(max(1, len(secret) - window + 1)))


CONFIG_CASES = [
    ({"NEN_WEBHOOK_SCHEME": "hmac"}, r"NEN_WEBHOOK_SCHEME must be 'nen' or 'standard'"),
    (
        {"NEN_WEBHOOK_SCHEME": "standard", "NEN_WEBHOOK_SECRET": "whsec_" + SECRET_VALUE + "!"},
        r"NEN_WEBHOOK_SECRET entry 1",
    ),
    ({"NEN_API_URL": "ftp://nen.example"}, r"NEN_API_URL must start with http"),
    ({"NEN_WEBHOOK_URL": "nen.example/hook"}, r"NEN_WEBHOOK_URL must start with http"),
    ({"NEN_RETRY_STATUSES": "429,abc"}, r"NEN_RETRY_STATUSES"),
    ({"NEN_RETRIEVAL_PATH": "runs"}, r"NEN_RETRIEVAL_PATH"),
    ({"NEN_WEBHOOK_MAX_BODY": "0"}, r"NEN_WEBHOOK_MAX_BODY: "),
    ({"NEN_WEBHOOK_TOLERANCE": "-1"}, r"NEN_WEBHOOK_TOLERANCE: "),
    ({"NEN_CLOCK_SKEW_MAX": "soon"}, r"NEN_CLOCK_SKEW_MAX: "),
    ({"NEN_WEBHOOK_PARKED_STATUS": "404"}, r"NEN_WEBHOOK_PARKED_STATUS: "),
]


@pytest.mark.parametrize(("values", "message"), CONFIG_CASES, ids=[next(iter(v)) for v, _ in CONFIG_CASES])
def test_bad_settings_fail_naming_the_setting_without_echoing_secrets(
    values: dict[str, str], message: str
) -> None:
    with env(**values), pytest.raises(ConfigurationError, match=message) as exc:
        get_settings()
    text = str(exc.value)
    for secret in (
        SIM_API_KEY,
        SIM_SIGNING_KEY,
        SIM_WEBHOOK_SECRET,
        SECRET_VALUE,
        os.environ["NEN_SECRETS_KEY"],
    ):
        assert not leaks(secret, text), f"a secret is echoed in: {text[:300]}"


def test_settings_errors_never_echo_secrets_whatever_fails() -> None:
    """A cross-field check (the visibility timeout one) must not print the other settings."""
    with env(NEN_VISIBILITY_TIMEOUT="1"), pytest.raises(ConfigurationError) as exc:
        get_settings()
    text = str(exc.value)
    # pydantic shortens the dump, so which secret shows depends on the environment's order
    assert "input_value={" not in text, f"ConfigurationError dumps every setting: {text[:300]}"
    for secret in (SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET):
        assert not leaks(secret, text), f"ConfigurationError echoes a secret setting: {text[:300]}"
