"""The environment's proxy settings reach Nen through the sharded HTTP transport (issue 18).

httpx reads HTTP(S)_PROXY / NO_PROXY only when it builds its own transport; ours is passed in,
so the client computes the proxy itself. Tested through a real forward proxy on loopback.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from nen_celery.nen.client import NenClient, RunRequest, new_http_client
from nen_celery.nen.transport import environment_proxy
from nen_celery.settings import Settings
from nen_celery.simulator import SimulatorServer
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, sim_config

WF = "12345678-1234-1234-1234-123456789abc"


class _Forward(BaseHTTPRequestHandler):
    """A plain-HTTP forward proxy: the request line carries the absolute URL."""

    seen: list[str]

    def _forward(self) -> None:
        type(self).seen.append(f"{self.command} {self.path}")
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "proxy-connection")}
        with httpx.Client(trust_env=False, timeout=10) as upstream:  # not back through itself
            answer = upstream.request(self.command, self.path, content=body, headers=headers)
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("content-length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)

    do_GET = do_POST = _forward

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def proxy() -> Iterator[tuple[str, list[str]]]:
    handler = type("Forward", (_Forward,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler.seen
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config()) as server:
        yield server


def post_once(sim: SimulatorServer) -> str:
    settings = Settings(api_url=sim.url, api_key=SIM_API_KEY, signing_key=SIM_SIGNING_KEY)
    with new_http_client(settings) as http:
        client = NenClient(settings, http, limiter=None)
        return client.post_run_once(RunRequest(WF, {}, None, None), "proxy-test").message_id


def test_the_environments_proxy_carries_the_post(
    sim: SimulatorServer, proxy: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = proxy
    for name in ("NO_PROXY", "no_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", url)
    assert environment_proxy(sim.url) == url
    assert post_once(sim)
    assert seen == [f"POST {sim.url}/runs"]  # through the proxy, as httpx's own transport would go


def test_no_proxy_bypasses_it(
    sim: SimulatorServer, proxy: tuple[str, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, seen = proxy
    monkeypatch.setenv("HTTP_PROXY", url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert environment_proxy(sim.url) is None
    assert post_once(sim)
    assert seen == []


def test_an_https_url_takes_https_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NO_PROXY", "no_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://egress.internal:3128")
    assert environment_proxy("https://api.example.test") == "http://egress.internal:3128"
    assert environment_proxy("http://api.example.test") is None
    monkeypatch.setenv("NO_PROXY", ".example.test")
    assert environment_proxy("https://api.example.test") is None
