"""Shared by the framework adapter tests: signing, one request table, framework clients, a WSGI server."""

from __future__ import annotations

import importlib
import importlib.util
import io
import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import pytest

from nen_celery.domain.hints import hint_key, url_with_run
from nen_celery.domain.signing import webhook_signature
from nen_celery.settings import install_overrides
from tests.conftest import SIM_WEBHOOK_SECRET, Stack
from tests.helpers import run_ref, snapshot, wait_for

# The test apps' callback tasks, registered at collection: before the session's worker starts.
# Each where its framework is installed: the lowest-versions run (`make test-lowest`) has no
# FastAPI (none admits the lowest Starlette) and uses only this module's helpers.
for _framework, _module in (
    ("django", "tests.webapps.django_site.tasks"),
    ("flask", "tests.webapps.flask_site"),
    ("fastapi", "tests.webapps.fastapi_site"),
):
    if importlib.util.find_spec(_framework) is not None:
        importlib.import_module(_module)

WF = "12345678-1234-1234-1234-123456789abc"
WEBHOOK = "/webhooks/nen"
LIMIT = 1024 * 1024  # NEN_WEBHOOK_MAX_BODY default


def signed(body: bytes, secret: str = SIM_WEBHOOK_SECRET, **extra: str) -> dict[str, str]:
    return {"X-Hmac-Signature": webhook_signature(secret, body), "Content-Type": "application/json", **extra}


def hinted(run_id: str, attempt: int = 0, secret: str = SIM_WEBHOOK_SECRET, path: str = WEBHOOK) -> str:
    """``path`` naming the run as the URL a worker sends to Nen does (hints.py): with its token
    and the record's nonce, as its submit would make it now (none for a record that is not there)."""
    from nen_celery.runtime.context import get_context

    nonce = run_ref(get_context().store, run_id).nonce
    return url_with_run(path, "nen_run", run_id, attempt, hint_key(secret), nonce)


def webhook_body(message_id: str, status: str = "success") -> bytes:
    return json.dumps({"workflow_id": WF, "message_id": message_id, "status": status}).encode()


@dataclass(frozen=True)
class Reply:
    status: int
    body: Any


# (path, raw body, headers) -> the framework's answer
Post = Callable[[str, bytes, dict[str, str]], Reply]

_GOOD = webhook_body("never-bound-message")
_BIG = b"x" * (LIMIT + 1)

# Requests every receiver must refuse, changing nothing: name -> (body, headers, status, error code).
REFUSED: dict[str, tuple[bytes, dict[str, str], int, str]] = {
    "unsigned": (_GOOD, {"Content-Type": "application/json"}, 401, "invalid_signature"),
    "zero signature": (
        _GOOD,
        signed(_GOOD, **{"X-Hmac-Signature": "sha256=" + "0" * 64}),
        401,
        "invalid_signature",
    ),
    "other secret": (_GOOD, signed(_GOOD, "not-the-secret"), 401, "invalid_signature"),
    "signature of other body": (_GOOD, signed(b"{}"), 401, "invalid_signature"),
    "not json": (b"{not json", signed(b"{not json"), 400, "invalid_body"),
    "json array": (b"[1,2]", signed(b"[1,2]"), 400, "invalid_body"),
    "no message_id": (b'{"status":"success"}', signed(b'{"status":"success"}'), 400, "invalid_body"),
    "unknown status": (
        b'{"message_id":"m","status":"done"}',
        signed(b'{"message_id":"m","status":"done"}'),
        400,
        "invalid_body",
    ),
    "oversize": (_BIG, signed(_BIG), 413, "body_too_large"),
    "text/plain": (_GOOD, signed(_GOOD, **{"Content-Type": "text/plain"}), 415, "unsupported_media_type"),
    "form encoded": (
        _GOOD,
        signed(_GOOD, **{"Content-Type": "application/x-www-form-urlencoded"}),
        415,
        "unsupported_media_type",
    ),
}


def published(stack: Stack) -> int:
    return sum(stack.counter.published.values())


def assert_refused_and_nothing_changed(stack: Stack, post: Post, prefix: str = "") -> None:
    """Every REFUSED request gets its status and JSON error; Redis and the broker are untouched."""
    stack.counter.wait_idle()
    before, sent = snapshot(stack.redis, "*"), published(stack)
    for name, (body, headers, status, error) in REFUSED.items():
        reply = post(prefix + WEBHOOK, body, headers)
        assert (reply.status, (reply.body or {}).get("error")) == (status, error), name
        assert reply.body["message"], name
    assert published(stack) == sent
    assert snapshot(stack.redis, "*") == before


def drive_run(stack: Stack, post: Post, path: str, statuses: list[str]) -> tuple[list[str], Any]:
    """Start a run (the simulator sends no webhook), deliver ``statuses`` as signed webhooks through
    ``post``, wait for its callback; (callback tags, final run). Each delivery must answer 200."""
    from nen_celery import get_run, start_run
    from tests.callbacks import calls, record

    handle = start_run(
        WF, {"A": "b"}, on_complete=record.s(tag="complete"), on_failure=record.s(tag="failure")
    )
    run = wait_for(
        lambda: (r := get_run(handle.run_id)) is not None and r.message_id and r, 20, "the 202 bound"
    )
    for status in statuses:
        body = webhook_body(str(run.message_id), status)
        assert post(path, body, signed(body)) == Reply(200, {"status": "queued"}), status
        stack.counter.wait_idle()  # applied before the next is sent, as Nen sends them in order
    wait_for(lambda: calls(handle.run_id), 20, "the callback")
    stack.counter.wait_idle()
    return [c["tag"] for c in calls(handle.run_id)], get_run(handle.run_id)


class CountingStream(io.BytesIO):
    """A request body that counts how much of it the receiver read."""

    def __init__(self, size: int) -> None:
        super().__init__(b"{" * size)
        self.consumed = 0

    def read(self, size: int | None = -1) -> bytes:
        chunk = super().read(size)
        self.consumed += len(chunk)
        return chunk

    readinto = None  # type: ignore[assignment]  # every read goes through read()


@contextmanager
def overrides_restored() -> Iterator[None]:
    """Whatever a framework installs over the environment is gone afterwards."""
    try:
        yield
    finally:
        install_overrides({})


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def recording(app: Any, seen: list[tuple[str, int]]) -> Any:
    """The WSGI app, noting (path, status) of every request it answers."""

    def wrapped(environ: dict[str, Any], start_response: Any) -> Any:
        def start(status: str, headers: Any, exc_info: Any = None) -> Any:
            seen.append((environ["PATH_INFO"], int(status.split()[0])))
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


@contextmanager
def serve_wsgi(app: Any) -> Iterator[str]:
    """Serve a WSGI app over real HTTP on a loopback port in a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, _ThreadingWSGIServer, _QuietHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def setup_django() -> None:
    """Configure Django once per process with the test project's settings (tests/webapps/django_site)."""
    import os

    import django
    from django.conf import settings

    if not settings.configured:
        ours = "DJANGO_SETTINGS_MODULE" not in os.environ
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.webapps.django_site.settings")
        try:
            django.setup()
        finally:
            # read once; left set, it reaches the worker processes later tests start (their
            # environment copies ours), and Celery's Django fixup fails there on the import
            if ours:
                del os.environ["DJANGO_SETTINGS_MODULE"]


@pytest.fixture(scope="module")
def django_ready(stack: Stack) -> Iterator[None]:
    """Django set up after the stack (its settings read NEN_WEBHOOK_URL), NEN_CELERY installed."""
    from nen_celery.web.django import install_from_settings

    setup_django()
    with overrides_restored():
        install_from_settings()
        yield
