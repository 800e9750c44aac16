"""Secrets never reach log output: the redaction installed by the receiver and the worker."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from nen_celery import logging_filters as lf
from nen_celery.client import NenClient
from nen_celery.config import get_settings
from nen_celery.errors import NenAPIError
from nen_celery.web.asgi import create_app
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, Stack, env

PRESIGNED = "https://files.example/bucket/out.json?X-Amz-Credential=AKIA%2F&X-Amz-Signature=deadbeefcafe&X-Amz-Expires=60"

log = logging.getLogger("nen_celery.test_security_logging")


@pytest.fixture
def installed() -> Iterator[None]:
    lf.install_redaction()
    yield
    lf.install_redaction()


def secrets_now() -> list[str]:
    settings = get_settings()
    return [SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, *settings.secrets_keys]


def test_the_receiver_installs_redaction() -> None:
    lf.uninstall_redaction()
    assert not lf.redaction_installed()
    create_app()
    assert lf.redaction_installed()


@pytest.mark.parametrize(
    ("text", "gone", "kept"),
    [
        (f"key={SIM_API_KEY}", [SIM_API_KEY], ["key=[REDACTED]"]),
        (f"signing with {SIM_SIGNING_KEY}!", [SIM_SIGNING_KEY], ["signing with [REDACTED]!"]),
        (repr({"secret": SIM_WEBHOOK_SECRET}), [SIM_WEBHOOK_SECRET], ["'secret': '[REDACTED]'"]),
        (
            f"GET {PRESIGNED} done",
            ["X-Amz-Signature", "deadbeef", "AKIA"],
            ["https://files.example/bucket/out.json?"],
        ),
        (f'{{"url": "{PRESIGNED}"}}', ["deadbeef"], ['"https://files.example/bucket/out.json?[REDACTED]"']),
        (
            "broker redis://:hunter2pw@redis.internal:6379/0 down",
            ["hunter2pw"],
            ["redis://redis.internal:6379/0"],
        ),
        ('"POST /webhooks/nen?token=abc123 HTTP/1.1" 200', ["abc123"], ["/webhooks/nen?[REDACTED]"]),
        ("Headers({'host': 'h', 'x-api-key': 'some-other-key'})", ["some-other-key"], ["'host': 'h'"]),
        ("[(b'x-api-key', b'k-999'), (b'accept', b'*/*')]", ["k-999"], ["(b'accept', b'*/*')"]),
        ("Authorization: Bearer tok.en.value", ["tok.en.value"], ["Authorization: [REDACTED]"]),
        ("X-API-KEY=abc;", ["abc"], ["X-API-KEY=[REDACTED]"]),
        ("no secrets here: run r-1 status success", [], ["no secrets here: run r-1 status success"]),
    ],
)
def test_redact_table(text: str, gone: list[str], kept: list[str]) -> None:
    out = lf.redact(text)
    for value in gone:
        assert value not in out, out
    for value in kept:
        assert value in out, out


def test_settings_secrets_cover_every_secret_setting() -> None:
    with env(
        NEN_WEBHOOK_SECRET="whsec_c3RhbmRhcmQtc2VjcmV0LWJ5dGVz,old-secret-1234",
        NEN_REDIS_URL="redis://:redispw-77@127.0.0.1:6379/0",
        NEN_BROKER_URL="redis://user:brokerpw-88@127.0.0.1:6379/1",
    ):
        values = lf.settings_secrets(get_settings())
        line = lf.redact(
            "c3RhbmRhcmQtc2VjcmV0LWJ5dGVz old-secret-1234 redispw-77 brokerpw-88 "
            + " ".join(get_settings().secrets_keys)
            + f" {SIM_API_KEY} {SIM_SIGNING_KEY}"
        )
    for secret in ("c3RhbmRhcmQtc2VjcmV0LWJ5dGVz", "old-secret-1234", "redispw-77", "brokerpw-88"):
        assert secret in values
    assert set(line.split()) == {"[REDACTED]"}, line


@pytest.mark.usefixtures("installed")
def test_every_record_is_cleaned_args_tracebacks_and_bad_format(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger=log.name)
    log.info("sending %s to %s", {"x-api-key": SIM_API_KEY}, PRESIGNED)
    log.warning("ctx %(key)s", {"key": SIM_SIGNING_KEY})
    try:
        raise RuntimeError(f"boom with {SIM_WEBHOOK_SECRET}")
    except RuntimeError:
        log.exception("failed")
    log.error("too many %s %s", SIM_API_KEY)  # bad args: logging would otherwise print them raw
    log.debug(lf.REDACTED, stack_info=True)
    text = caplog.text + "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for secret in [*secrets_now(), "deadbeefcafe"]:
        assert secret not in text
    assert "boom with [REDACTED]" in text and "RuntimeError" in text
    assert "https://files.example/bucket/out.json" in text


def test_without_redaction_the_same_lines_would_leak(caplog: pytest.LogCaptureFixture) -> None:
    """The check above can fail: with the factory removed, the secrets are in the output."""
    lf.uninstall_redaction()
    try:
        caplog.set_level(logging.DEBUG, logger=log.name)
        log.info("sending %s", {"x-api-key": SIM_API_KEY})
    finally:
        lf.install_redaction()
    assert SIM_API_KEY in caplog.text


@pytest.mark.integration
@pytest.mark.usefixtures("installed")
def test_httpx_and_httpcore_debug_never_show_the_api_key(
    stack: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    for name in ("httpx", "httpcore", log.name):
        caplog.set_level(logging.DEBUG, logger=name)

    def show_request(request: httpx.Request) -> None:  # what a debugging user might add
        log.debug("request %s %s headers=%r", request.method, request.url, request.headers)
        log.debug("raw headers %r", request.headers.raw)

    settings = get_settings()
    with httpx.Client(event_hooks={"request": [show_request]}) as http:
        client = NenClient(settings, http)
        with pytest.raises(NenAPIError):
            client.get_run("no-such-message")  # a real GET with x-api-key to the simulator
    text = caplog.text
    assert "x-api-key" in text.lower() and "httpcore" in text  # the hook and httpcore did log
    assert SIM_API_KEY not in text
    assert stack.sim.url.split("://")[1] in text


@pytest.mark.usefixtures("installed")
def test_redaction_reads_the_environment_and_never_loads_settings(caplog: pytest.LogCaptureFixture) -> None:
    """Loading settings from a log call would cache whatever the environment is at that moment."""
    caplog.set_level(logging.INFO, logger=log.name)
    with env(NEN_API_KEY="env-only-key-4411"):
        assert get_settings_cached() == 0
        log.info("key %s", "env-only-key-4411")
        assert get_settings_cached() == 0
    assert "env-only-key-4411" not in caplog.text and "key [REDACTED]" in caplog.text
    assert lf.env_secrets(
        {"nen_webhook_secret": "a1b2c3d4,whsec_ZGVm", "NEN_REDIS_URL": "redis://:pw9@h/0"}
    ) == [
        "a1b2c3d4,whsec_ZGVm",
        "a1b2c3d4",
        "whsec_ZGVm",
        "ZGVm",
        "pw9",
    ]


def get_settings_cached() -> int:
    return get_settings.cache_info().currsize
