"""A redis-server of its own for each pytest-xdist worker but the first (``make test`` runs two).

The suite owns its Redis: it flushes its database at start, and its in-process Celery worker
consumes every nen queue on it. Two test processes on one server would take each other's
tasks; on servers of their own, every database a test derives (``db_url``) is private too.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import time

import redis


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(binary: str) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    return proc, f"redis://127.0.0.1:{port}"


def worker_redis_url(url: str) -> str:
    """``url`` for the first (or only) test process; for another xdist worker the same database
    number on a redis-server started for it (stopped by its pid at exit)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    binary = shutil.which("redis-server")
    if worker in (None, "gw0") or binary is None:
        return url
    db = url.rsplit("/", 1)[1] if url.count("/") >= 3 else "0"
    for _ in range(3):  # a free port can be taken between the probe and the bind
        proc, base = _start(binary)
        deadline = time.monotonic() + 10
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                redis.Redis.from_url(base, socket_connect_timeout=1).ping()
            except redis.RedisError:
                time.sleep(0.02)  # polling the server's start, with a deadline
                continue
            atexit.register(_stop, proc)
            return f"{base}/{db}"
        _stop(proc)
    raise RuntimeError(f"xdist worker {worker}: could not start a redis-server of its own")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
