"""The webhook receiver the session starts: nen's ASGI receiver (``nen_celery.web.asgi.create_app``)
served by uvicorn in a thread on a free loopback port, so the fake Nen's webhooks travel real HTTP
into your app's Celery, whatever web framework the app uses."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

from nen_celery.extras import requires_extra

with requires_extra("receiver", __name__):
    import uvicorn


def bind_free_port(host: str = "127.0.0.1") -> socket.socket:
    """A listening socket on a free port, bound now so the URL is known before anything starts."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    return sock


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, started: threading.Event) -> None:
        super().__init__(config)
        self._started = started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self._started.set()


class ReceiverServer:
    """An ASGI app on a pre-bound socket, in a daemon thread; ``start`` returns once it listens."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._started = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self, app: Any, timeout: float = 10.0) -> None:
        config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
        self._server = _Server(config, self._started)
        self._thread = threading.Thread(
            target=self._serve, args=(self._server,), name="nen-testing-receiver", daemon=True
        )
        self._thread.start()
        if not self._started.wait(timeout):
            self.stop()
            raise RuntimeError(f"the webhook receiver did not start on {self.url} within {timeout}s")

    def _serve(self, server: _Server) -> None:
        asyncio.run(server.serve(sockets=[self.sock]))

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is not None and thread is not None:
            server.should_exit = True
            thread.join(10)
            if thread.is_alive():
                server.force_exit = True
                thread.join(10)
        self._server = self._thread = None
        self.sock.close()
