"""The shared HTTP client's transport: small kept-alive pools, real sockets (nen/transport.py)."""

from __future__ import annotations

import http.server
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from nen_celery.nen.client import new_http_client
from nen_celery.nen.transport import ShardedTransport, shard_sizes
from nen_celery.settings import Settings


def test_connections_are_split_into_even_small_pools() -> None:
    assert shard_sizes(100) == [4] * 25
    assert shard_sizes(10) == [4, 3, 3]
    assert shard_sizes(1) == [1]
    assert sum(shard_sizes(37)) == 37 and max(shard_sizes(37)) <= 4
    with pytest.raises(ValueError, match="max_connections"):
        shard_sizes(0)


class _Server(http.server.ThreadingHTTPServer):
    """HTTP/1.1 keep-alive; counts the TCP connections it accepted. With a barrier, each
    request waits until ``parties`` requests are being served at once."""

    daemon_threads = True
    # socketserver's default backlog is 5: a burst of 24 connects overflows it, the kernel
    # drops the SYNs and the clients retry 1 s, 3 s later, past the others' read timeout.
    request_queue_size = 128

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.accepted = 0
        self.lock = threading.Lock()
        self.barrier: threading.Barrier | None = None

    def get_request(self) -> tuple[socket.socket, object]:
        conn = super().get_request()
        with self.lock:
            self.accepted += 1
        return conn


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        if self.server.barrier is not None:
            self.server.barrier.wait(timeout=20)
        body = b'{"ok":true}'
        self.send_response(202)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[_Server]:
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _url(srv: _Server) -> str:
    return f"http://127.0.0.1:{srv.server_address[1]}/runs"


# Longer than the barrier's wait, so a stalled burst fails there, naming the barrier.
_TIMEOUT = httpx.Timeout(30.0)


def _bursts(client: httpx.Client, srv: _Server, width: int, bursts: int) -> None:
    """``bursts`` rounds of ``width`` POSTs all in flight at once (the server's barrier)."""
    srv.barrier = threading.Barrier(width)
    with ThreadPoolExecutor(width) as pool:
        for _ in range(bursts):
            answers = list(pool.map(lambda _: client.post(_url(srv), content=b"{}"), range(width)))
            assert [a.status_code for a in answers] == [202] * width


def test_every_connection_is_kept_alive_and_reused(server: _Server) -> None:
    transport = ShardedTransport(24)
    with httpx.Client(transport=transport, timeout=_TIMEOUT) as client:
        _bursts(client, server, width=24, bursts=4)
        assert server.accepted == 24  # 96 POSTs, 24 at a time, over the first 24 connections
        assert transport.in_flight == [0] * len(transport.pools)


def test_httpx_default_limits_reconnect_for_most_posts(server: _Server) -> None:
    """Why the transport exists: the same load on httpx's default limits (20 kept alive of
    100) opens new connections burst after burst (and can close one in use: httpcore#1110)."""
    with httpx.Client(
        limits=httpx.Limits(max_connections=100, max_keepalive_connections=20), timeout=_TIMEOUT
    ) as client:
        _bursts(client, server, width=24, bursts=4)
    assert server.accepted > 24


def test_a_request_goes_to_the_pool_with_the_fewest_in_flight(server: _Server) -> None:
    transport = ShardedTransport(8, shard_size=2)
    with httpx.Client(transport=transport, timeout=_TIMEOUT) as client:
        _bursts(client, server, width=8, bursts=1)  # 8 at once fit only if spread over all 4 pools
        assert server.accepted == 8
    assert transport.in_flight == [0, 0, 0, 0]


def test_a_failed_request_gives_its_slot_back() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        transport = ShardedTransport(4)
        with httpx.Client(transport=transport, timeout=_TIMEOUT) as client:
            for _ in range(3):
                with pytest.raises(httpx.ConnectError):
                    client.post(f"http://127.0.0.1:{port}/runs", content=b"{}")
        assert transport.in_flight == [0]


def test_the_shared_client_uses_the_settings() -> None:
    client = new_http_client(Settings(http_max_connections=10, http_keepalive_expiry=2.5))
    transport = client._transport  # httpx keeps the transport it was given here
    assert isinstance(transport, ShardedTransport)
    assert [p._pool._max_connections for p in transport.pools] == [4, 3, 3]  # type: ignore[attr-defined]
    assert {p._pool._keepalive_expiry for p in transport.pools} == {2.5}  # type: ignore[attr-defined]
    # one TLS context (CA bundle loaded once), not one per pool
    assert len({id(p._pool._ssl_context) for p in transport.pools}) == 1  # type: ignore[attr-defined]
