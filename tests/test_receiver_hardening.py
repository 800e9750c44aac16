"""Issue 29, the receiver's edges: every body read has a deadline (a real uvicorn, raw sockets;
the WSGI mounts over a real WSGI server), /metrics is opt-in on every mount and scraped off the
webhook path's threads, bad bodies get 4xx, and the deploy commands bound the receiver."""

from __future__ import annotations

import os
import select
import shlex
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from flask import Flask

from nen_celery.runtime.metrics import REGISTRY
from nen_celery.settings import get_settings
from nen_celery.web.asgi import create_app
from nen_celery.web.fastapi import create_router
from nen_celery.web.flask import NenCelery
from nen_celery.web.verify import check
from tests.conftest import Stack, env
from tests.helpers import free_port, wait_for
from tests.web_support import (
    django_ready,
    overrides_restored,
    serve_wsgi,
    signed,
    webhook_body,
)

pytestmark = pytest.mark.integration
__all__ = ["django_ready"]  # the fixture, imported for pytest

ROOT = Path(__file__).resolve().parent.parent
UVICORN = Path(sys.executable).parent / "uvicorn"  # the tests' venv (a worktree may share one)
TRICKLES = 100
HEAD = (
    "POST /webhooks/nen HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    "X-Hmac-Signature: sha256=00\r\nContent-Length: {length}\r\n\r\n"
)


def _procfile_web_options() -> list[str]:
    """The options the Procfile's `web` gives uvicorn, but its host and port."""
    line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:"))
    words = shlex.split(line.split(":", 1)[1])
    options = words[2:]
    for name in ("--host", "--port"):
        at = options.index(name)
        del options[at : at + 2]
    return options


@contextmanager
def standalone_receiver(**settings: str) -> Iterator[str]:
    """`uvicorn nen_celery.web.asgi:app` as the Procfile runs it, on a free port; its base URL."""
    port = free_port()
    command = [str(UVICORN), "nen_celery.web.asgi:app", "--host", "127.0.0.1", "--port", str(port)]
    process = subprocess.Popen(
        [*command, *_procfile_web_options(), "--log-level", "warning"],
        env={**os.environ, **settings},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url + "/healthz") == 200 or process.poll() is not None, 30, "the receiver")
        assert process.poll() is None, "the receiver exited at start"
        yield url
    finally:
        process.terminate()
        process.wait(15)


def _answers(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def _answer_of(sock: socket.socket, bound: float) -> bytes:
    """Everything the server sent until it closed the connection (or ``bound`` s passed)."""
    sock.settimeout(bound)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    return data


def test_trickling_connections_are_cut_at_the_deadline_while_a_webhook_lands(stack: Stack) -> None:
    """100 connections declare ~1 MB, send part of it and keep trickling: each gets 408 and is
    closed at NEN_WEBHOOK_BODY_TIMEOUT; a real signed webhook sent meanwhile is answered."""
    with standalone_receiver(NEN_WEBHOOK_BODY_TIMEOUT="4") as url:
        port = int(url.rsplit(":", 1)[1])
        socks = []
        for _ in range(TRICKLES):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(HEAD.format(length=1_048_000).encode() + b"[" * 64 * 1024)
            socks.append(sock)
        body = webhook_body(f"trickle-{uuid.uuid4()}")
        landed = httpx.post(url + "/webhooks/nen", content=body, headers=signed(body), timeout=10)
        assert landed.status_code == 202, landed.text  # signed, messageId unknown: parked
        readable, _, _ = select.select(socks, [], [], 0)
        assert readable == [], "a trickling connection was answered before the webhook"
        for sock in socks:
            sock.sendall(b"[")  # still trickling
        answers = [_answer_of(sock, 30) for sock in socks]
        for sock in socks:
            sock.close()
    assert all(a.startswith(b"HTTP/1.1 408 ") for a in answers), {a[:40] for a in answers}
    assert all(b"connection: close" in a.lower() for a in answers)


def _trickle(port: int, path: str, bound: float = 10.0) -> bytes:
    """Declare 500 kB, send 4 kB every 50 ms (up to 400 kB, never the whole body); the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        sock.sendall(HEAD.replace("/webhooks/nen", path).format(length=500_000).encode())
        for _ in range(100):
            readable, _, _ = select.select([sock], [], [], 0.05)  # paces the trickle
            if readable:
                break
            try:
                sock.sendall(b"[" * 4096)
            except OSError:
                break
        return _answer_of(sock, bound)
    finally:
        sock.close()


def test_wsgi_mounts_cut_a_trickled_body_at_the_deadline(stack: Stack, django_ready: None) -> None:
    """Flask and Django under a real WSGI server: a body trickled past NEN_WEBHOOK_BODY_TIMEOUT
    gets 408 instead of holding the server's thread for the whole trickle."""
    from django.core.wsgi import get_wsgi_application

    flask_app = Flask("trickle")
    flask_app.config["NEN_WEBHOOK_BODY_TIMEOUT"] = 1
    with overrides_restored():
        NenCelery(flask_app, url_prefix="/nen")
        with serve_wsgi(flask_app) as base:
            flask_answer = _trickle(int(base.rsplit(":", 1)[1]), "/nen/webhooks/nen")
    with env(NEN_WEBHOOK_BODY_TIMEOUT="1"), serve_wsgi(get_wsgi_application()) as base:
        django_answer = _trickle(int(base.rsplit(":", 1)[1]), "/nen/webhooks/nen")
    for answer in (flask_answer, django_answer):
        assert answer.split(b" ", 2)[1] == b"408", answer[:80]
        assert b'"body_timeout"' in answer


# ------------------------------------------------------------------------- /metrics opt-in

Get = Callable[[str], int]


@pytest.fixture(scope="module")
def mounts(stack: Stack, django_ready: None) -> Iterator[dict[str, Get]]:
    from django.test import Client

    flask_app = Flask("metrics")
    with overrides_restored():
        NenCelery(flask_app, url_prefix="/nen")
    router_app = FastAPI()
    router_app.include_router(create_router(), prefix="/nen")
    with TestClient(create_app()) as asgi, TestClient(router_app) as router:
        yield {
            "asgi": lambda path: asgi.get(path).status_code,
            "fastapi router": lambda path: router.get("/nen" + path).status_code,
            "flask": lambda path: flask_app.test_client().get("/nen" + path).status_code,
            "django": lambda path: Client().get("/nen" + path).status_code,
        }


def test_metrics_are_off_on_every_mount_unless_opted_in(mounts: dict[str, Get]) -> None:
    assert {name: get("/metrics") for name, get in mounts.items()} == dict.fromkeys(mounts, 404)
    with env(NEN_RECEIVER_METRICS="true"):
        assert {name: get("/metrics") for name, get in mounts.items()} == dict.fromkeys(mounts, 200)


class _ThreadSpy:
    """A collector of the real registry that notes which thread each scrape ran on."""

    def __init__(self) -> None:
        self.threads: list[str] = []

    def collect(self) -> Iterator[Any]:
        self.threads.append(threading.current_thread().name)
        return iter(())


def test_a_scrape_runs_on_its_own_thread_not_the_webhook_pool(mounts: dict[str, Get]) -> None:
    spy = _ThreadSpy()
    REGISTRY.register(spy)
    spy.threads.clear()  # registering collects once, to describe it
    try:
        with env(NEN_RECEIVER_METRICS="true"):
            for get in mounts.values():
                assert get("/metrics") == 200
    finally:
        REGISTRY.unregister(spy)
    assert len(spy.threads) == len(mounts)
    assert all(name.startswith("nen-metrics") for name in spy.threads), spy.threads


# --------------------------------------------------------------------------- bad bodies


def _deep(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


@pytest.mark.parametrize(
    ("name", "body"),
    [("deep object", _deep(100_000)), ("deep array", b"[" * 200_000 + b"]" * 200_000)],
)
def test_a_signed_body_that_cannot_be_parsed_is_400(stack: Stack, name: str, body: bytes) -> None:
    response = httpx.post(stack.webhook_url, content=body, headers=signed(body), timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "invalid_body"


def test_a_missing_content_type_is_415_as_documented(stack: Stack) -> None:
    body = webhook_body(f"no-type-{uuid.uuid4()}")
    headers = {k: v for k, v in signed(body).items() if k.lower() != "content-type"}
    error, _ = check(get_settings(), body, headers)
    assert error is not None and error.status_code == 415
    response = httpx.post(stack.webhook_url, content=body, headers=headers, timeout=10)
    assert response.status_code == 415
    assert response.json() == {"error": "unsupported_media_type", "message": "expected application/json"}
    docs = (ROOT / "docs" / "security.md").read_text()
    assert "no `Content-Type`" in docs and "415" in docs


# ----------------------------------------------------------------------- deploy commands


def test_the_standalone_receiver_commands_bound_concurrency_and_flower_asks_for_auth() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    procfile = dict(
        line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if ":" in line
    )
    for receiver in (compose["receiver"]["command"], procfile["web"]):
        words = shlex.split(receiver)
        assert int(words[words.index("--limit-concurrency") + 1]) > TRICKLES, receiver
    for flower in (compose["flower"]["command"], procfile["flower"]):
        auth = [w for w in shlex.split(flower) if w.startswith("--basic-auth=")]
        assert auth and auth[0].split("=", 1)[1].startswith("${FLOWER_BASIC_AUTH"), flower


def test_operations_doc_tells_wsgi_users_what_their_server_needs() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    for needed in ("--limit-concurrency", "gunicorn", "--timeout", "NEN_WEBHOOK_BODY_TIMEOUT"):
        assert needed in docs, needed
    assert "NEN_RECEIVER_METRICS" in docs
