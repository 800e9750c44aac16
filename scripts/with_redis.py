"""Run a command with a Redis for the tests: the one at NEN_TEST_REDIS_URL if it answers,
else a throwaway redis-server on a free port (stopped by its pid afterwards)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time

import redis

DEFAULT = "redis://127.0.0.1:6379/13"


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


def main() -> int:
    url = os.environ.get("NEN_TEST_REDIS_URL", DEFAULT)
    proc = None
    if not answers(url):
        binary = shutil.which("redis-server")
        if binary is None:
            print(f"no Redis answers at {url} and redis-server is not on PATH", file=sys.stderr)
            return 2
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        proc = subprocess.Popen(  # noqa: S603
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
        )
        url = f"redis://127.0.0.1:{port}/13"
        deadline = time.monotonic() + 10
        while not answers(url):
            if time.monotonic() > deadline or proc.poll() is not None:
                print("could not start redis-server", file=sys.stderr)
                return 2
            time.sleep(0.05)
        print(f"started a throwaway redis-server on port {port}", file=sys.stderr)
    try:
        return subprocess.call(sys.argv[1:], env={**os.environ, "NEN_TEST_REDIS_URL": url})  # noqa: S603
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
