"""Secrets never reach log output through a handler with ``RedactingFilter`` (nen's own processes
put it on theirs; users add it to theirs)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import httpx
import pytest

from nen_celery.errors import NenAPIError
from nen_celery.logs import redaction as lf
from nen_celery.nen.client import NenClient
from nen_celery.settings import get_settings, loaded_settings
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, Stack, env

PRESIGNED = "https://files.example/bucket/out.json?X-Amz-Credential=AKIA%2F&X-Amz-Signature=deadbeefcafe&X-Amz-Expires=60"

log = logging.getLogger("nen_celery.test_security_logging")


@pytest.fixture
def installed(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """The filter on the capturing handler, as a user puts it on theirs."""
    redacting = lf.RedactingFilter()
    caplog.handler.addFilter(redacting)
    yield
    caplog.handler.removeFilter(redacting)


def secrets_now() -> list[str]:
    settings = get_settings()
    return [SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, *settings.secrets_keys]


def test_add_redaction_puts_one_filter_on_each_handler() -> None:
    logger = logging.getLogger("nen_celery.test_security_logging.add")
    first, second, alone = logging.NullHandler(), logging.NullHandler(), logging.NullHandler()
    for handler in (first, second):
        logger.addHandler(handler)
    try:
        lf.add_redaction(logger, alone)
        lf.add_redaction(logger, alone, first)  # idempotent
        for handler in (first, second, alone):
            assert [type(f) for f in handler.filters] == [lf.RedactingFilter]
        assert logger.filters == []  # on the handlers: a logger filter misses propagated records
    finally:
        for handler in (first, second):
            logger.removeHandler(handler)


def _record(msg: str, *args: object, name: str = "x") -> logging.LogRecord:
    return logging.LogRecord(name, logging.INFO, __file__, 1, msg, args or None, None)


def test_the_filter_renders_exactly_the_redacted_message() -> None:
    for msg, args in [
        ("sending %s to %s", ({"x-api-key": SIM_API_KEY}, PRESIGNED)),
        ("key %s", (SIM_API_KEY,)),
        ('%s - "%s %s HTTP/%s" %d', ("1.2.3.4:5", "POST", "/webhooks/nen?token=abc123", "1.1", 200)),
        ("plain %s", ("nothing to hide",)),
    ]:
        record = _record(msg, *args)
        expected = lf.redact(msg % args)
        assert lf.RedactingFilter().filter(record) is True
        assert record.getMessage() == expected
        for secret in (SIM_API_KEY, "deadbeefcafe", "abc123"):
            assert secret not in record.getMessage()


def test_uvicorn_access_lines_keep_their_args_and_lose_the_query() -> None:
    """uvicorn's AccessFormatter unpacks record.args: merging them would break every access line."""
    from uvicorn.logging import AccessFormatter

    record = _record(
        '%s - "%s %s HTTP/%s" %d',
        "1.2.3.4:5",
        "POST",
        f"/webhooks/nen?k={SIM_API_KEY}&sig=abc123",
        "1.1",
        200,
        name="uvicorn.access",
    )
    lf.RedactingFilter().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(
        record
    )
    assert line == '1.2.3.4:5 - "POST /webhooks/nen?[REDACTED] HTTP/1.1" 200 OK', line
    untouched = _record("run %s done", "r-1")
    lf.RedactingFilter().filter(untouched)
    assert (untouched.msg, untouched.args) == ("run %s done", ("r-1",))


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


def test_without_redaction_the_same_lines_would_leak(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check above can fail: without the filter, the secrets are in the output. (The suite's
    in-process worker is nen's own ready-made worker: it put the filter on the root handlers
    that existed when it started, pytest's among them; they are taken off for this test.)"""
    for handler in logging.getLogger().handlers:
        kept = [f for f in handler.filters if not isinstance(f, lf.RedactingFilter)]
        monkeypatch.setattr(handler, "filters", kept)
    caplog.set_level(logging.DEBUG, logger=log.name)
    log.info("sending %s", {"x-api-key": SIM_API_KEY})
    assert caplog.handler.filters == []
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
            client.retrieve_run("no-such-message")  # a real GET with x-api-key to the simulator
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
    return int(loaded_settings() is not None)
