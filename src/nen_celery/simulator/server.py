"""Running the simulator: in a background thread (tests, benchmarks) or blocking (CLI)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from nen_celery.extras import requires_extra

with requires_extra("simulator", __name__):
    import uvicorn

from nen_celery.simulator.app import create_app, get_state
from nen_celery.simulator.config import SimulatorConfig
from nen_celery.simulator.log import logger
from nen_celery.simulator.state import SimulatorState


class _NotifyingServer(uvicorn.Server):
    """A uvicorn Server that reports the moment it is listening, so nobody has to sleep."""

    def __init__(
        self, config: uvicorn.Config, on_started: Callable[[asyncio.AbstractEventLoop], None]
    ) -> None:
        super().__init__(config)
        self._on_started = on_started

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self._on_started(asyncio.get_running_loop())


def _bind(host: str, port: int) -> socket.socket:
    """Bind the listening socket here, so the real port is known before uvicorn starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto=IPPROTO_TCP matters: asyncio only sets TCP_NODELAY on accepted sockets whose proto says
    # TCP, and without it every response waits ~40 ms on Nagle + delayed ACK.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _url_host(host: str) -> str:
    """The host part of a URL that reaches ``host``: loopback for a wildcard bind."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "127.0.0.1"
    if address.is_unspecified:
        return "[::1]" if address.version == 6 else "127.0.0.1"
    return f"[{host}]" if address.version == 6 else host


class SimulatorServer:
    """The simulator on a real port, served by uvicorn in a daemon thread.

    Use as a context manager; ``port=0`` picks a free port, readable from ``.url``/``.port``.
    """

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        startup_timeout: float = 10.0,
        shutdown_timeout: int = 10,
    ) -> None:
        self.config = config if config is not None else SimulatorConfig()
        self.host = host
        self.app = create_app(self.config)
        self.state: SimulatorState = get_state(self.app)
        self._requested_port = port
        self._port: int | None = None
        self._startup_timeout = startup_timeout
        self._shutdown_timeout = shutdown_timeout
        self._cond = threading.Condition()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._finished = False
        self._server: _NotifyingServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("SimulatorServer is not started")
        return self._port

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (no trailing slash)."""
        return f"http://{_url_host(self.host)}:{self.port}"

    def start(self) -> Self:
        """Start serving; return once the socket accepts connections (RuntimeError otherwise)."""
        if self._thread is not None:
            raise RuntimeError("SimulatorServer already started")
        sock = _bind(self.host, self._requested_port)
        self._port = int(sock.getsockname()[1])
        uv_config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self._port,
            log_level="warning",
            lifespan="on",
            access_log=False,
            timeout_graceful_shutdown=self._shutdown_timeout,
        )
        self._server = _NotifyingServer(uv_config, self._on_started)
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock), name=f"nen-simulator-{self._port}", daemon=True
        )
        self._thread.start()
        with self._cond:
            ready = self._cond.wait_for(
                lambda: self._loop is not None or self._finished, self._startup_timeout
            )
            started = self._loop is not None
        if not started:
            self.stop()
            reason = "it exited" if ready else f"no answer within {self._startup_timeout}s"
            raise RuntimeError(f"simulator failed to start on {self.url}: {reason}")
        return self

    def _on_started(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._cond:
            self._loop = loop
            self._cond.notify_all()

    def _run(self, server: _NotifyingServer, sock: socket.socket) -> None:
        try:
            server.run(sockets=[sock])
        finally:
            sock.close()
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def stop(self) -> None:
        """Stop accepting, cancel pending deliveries, join the thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        server.should_exit = True
        thread.join(self._shutdown_timeout)
        if thread.is_alive():
            server.force_exit = True
            thread.join(self._shutdown_timeout)
        self._server = None
        self._thread = None
        self._loop = None

    def stats(self) -> dict[str, Any]:
        """Same shape as ``GET /_sim/stats``, read from memory."""
        return self.state.stats()

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0) -> dict[str, Any]:
        """Block until ``predicate(stats)`` is true; return the stats (TimeoutError otherwise)."""
        return self.state.wait_for(predicate, timeout)

    def reset(self, timeout: float = 5.0) -> None:
        """Same as ``POST /_sim/reset``: forget runs and counters, cancel pending deliveries."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("SimulatorServer is not started")
        asyncio.run_coroutine_threadsafe(self.state.reset(), loop).result(timeout)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def configure_logging(level: int = logging.INFO) -> None:
    """Make the simulator's per-request lines visible when nothing configured logging yet."""
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logger.setLevel(level)
    # httpx logs every request with its full URL, query string included: keep it quiet.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def serve(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 8700) -> None:
    """Serve the simulator in the foreground; returns after Ctrl-C (``nen-celery simulate``)."""
    config = config if config is not None else SimulatorConfig()
    configure_logging()
    logger.info("Nen simulator %r", config)  # the config's repr leaves the secrets out
    uv_config = uvicorn.Config(
        create_app(config),
        host=host,
        port=port,
        log_level="info",
        lifespan="on",
        access_log=False,  # the app logs each request itself, without query strings
    )
    # uvicorn shuts down gracefully on Ctrl-C, then re-raises the signal: that is a normal exit here.
    with contextlib.suppress(KeyboardInterrupt):
        uvicorn.Server(uv_config).run()
