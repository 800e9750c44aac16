"""The standalone receiver's memory under trickled bodies (issue 29, item 3).

N connections each declare 1,048,000 bytes, send 1,040,000 and stall (the security review's
shape): before the body deadline every one held its connection and its buffered bytes forever.
The receiver's RSS is sampled (psutil) before, at its peak and at the end, while one signed
webhook per second checks that real deliveries are still answered.

    NEN_TEST_REDIS_URL=redis://127.0.0.1:6393/13 .venv/bin/python bench/trickle.py [--connections 1000]
        [--seconds 15] [--src DIR] [--plain]

``--src DIR`` serves the package from another source tree (the code before a change: ``git
archive <rev> src | tar -x -C DIR``); ``--plain`` runs uvicorn without the Procfile's options.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil  # type: ignore[import-untyped]

from nen_celery.domain.signing import webhook_signature

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-trickle-secret"
DECLARED, SENT = 1_048_000, 1_040_000
HEAD = (
    "POST /webhooks/nen HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
    f"X-Hmac-Signature: sha256=00\r\nContent-Length: {DECLARED}\r\n\r\n"
).encode()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _web_options() -> list[str]:
    line = next(x for x in (ROOT / "Procfile").read_text().splitlines() if x.startswith("web:"))
    words = shlex.split(line.split(":", 1)[1])[2:]
    for name in ("--host", "--port"):
        at = words.index(name)
        del words[at : at + 2]
    return words


def start_receiver(port: int, src: str | None, plain: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NEN_WEBHOOK_SECRET": SECRET, "NEN_KEY_PREFIX": "benchtrickle"}
    url = os.environ.get("NEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
    env.update(NEN_REDIS_URL=url, NEN_BROKER_URL=url)
    if src:
        env["PYTHONPATH"] = src
    command = [str(ROOT / ".venv/bin/uvicorn"), "nen_celery.web.asgi:app", "--port", str(port)]
    command += ["--log-level", "warning"] + ([] if plain else _web_options())
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return process
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise SystemExit("the receiver did not start")


class Trickles:
    """N non-blocking connections, each sending HEAD and SENT bytes of body, then nothing."""

    def __init__(self, port: int, count: int) -> None:
        self.selector = selectors.DefaultSelector()
        self.left: dict[socket.socket, int] = {}
        self.answered: dict[str, int] = {}
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.setblocking(False)
            self.left[sock] = len(HEAD) + SENT
            self.selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
        self.chunk = b"[" * 65536

    def step(self, timeout: float) -> None:
        for key, events in self.selector.select(timeout):
            sock: Any = key.fileobj
            if events & selectors.EVENT_READ:
                self._answered(sock)
            elif self.left.get(sock, 0) > 0:
                self._send(sock)

    def _send(self, sock: socket.socket) -> None:
        total = len(HEAD) + SENT
        done = total - self.left[sock]
        data = HEAD[done:] if done < len(HEAD) else self.chunk[: self.left[sock]]
        try:
            self.left[sock] -= sock.send(data)
        except OSError:
            self.left[sock] = 0
        if self.left[sock] <= 0:
            self.selector.modify(sock, selectors.EVENT_READ)

    def _answered(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        status = data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/") else "closed"
        self.answered[status] = self.answered.get(status, 0) + 1
        self.selector.unregister(sock)
        sock.close()


def _deliver(port: int) -> int | str:
    """One signed webhook (an unknown messageId: 202 parked); its status, or the error's name."""
    body = json.dumps({"message_id": f"bench-{time.time()}", "status": "success"}).encode()
    headers = {"Content-Type": "application/json", "X-Hmac-Signature": webhook_signature(SECRET, body)}
    try:
        url = f"http://127.0.0.1:{port}/webhooks/nen"
        return httpx.post(url, content=body, headers=headers, timeout=5).status_code
    except httpx.HTTPError as exc:
        return type(exc).__name__


def measure(connections: int, seconds: float, src: str | None, plain: bool) -> dict[str, Any]:
    port = _free_port()
    receiver = start_receiver(port, src, plain)
    rss = psutil.Process(receiver.pid)
    try:
        baseline = rss.memory_info().rss
        trickles = Trickles(port, connections)
        peak, webhooks, next_webhook = baseline, [], time.monotonic()
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            trickles.step(0.05)
            peak = max(peak, rss.memory_info().rss)
            if time.monotonic() >= next_webhook:  # a real delivery meanwhile: answered?
                webhooks.append(_deliver(port))
                next_webhook += 1.0
        return {
            "connections": connections,
            "rss_before_mb": round(baseline / 2**20),
            "rss_peak_mb": round(peak / 2**20),
            "rss_end_mb": round(rss.memory_info().rss / 2**20),
            "answers_to_trickles": trickles.answered,
            "still_open": connections - sum(trickles.answered.values()),
            "webhooks_meanwhile": webhooks,
        }
    finally:  # a receiver still holding trickles does not stop gracefully: killed after 5 s
        receiver.terminate()
        try:
            receiver.wait(5)
        except subprocess.TimeoutExpired:
            receiver.kill()
            receiver.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--src", help="serve nen_celery from this source tree (the code before)")
    parser.add_argument("--plain", action="store_true", help="uvicorn without the Procfile's options")
    args = parser.parse_args()
    print(json.dumps(measure(args.connections, args.seconds, args.src, args.plain)), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
