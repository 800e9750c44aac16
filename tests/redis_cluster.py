"""A real local Redis Cluster (3 masters) and a Sentinel, from `redis-server` processes on free
ports; each process is stopped by its pid afterwards."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from tests.helpers import free_port, wait_for

REDIS_SERVER = shutil.which("redis-server")
REDIS_CLI = shutil.which("redis-cli")


def _answers(port: int) -> bool:
    try:
        return bool(redis.Redis(port=port, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


def _server(tmp: Path, name: str, args: list[str]) -> subprocess.Popen[bytes]:
    assert REDIS_SERVER is not None
    (tmp / name).mkdir(parents=True, exist_ok=True)
    with (tmp / f"{name}.log").open("ab") as out:
        return subprocess.Popen(
            [REDIS_SERVER, *args, "--dir", str(tmp / name), "--save", "", "--appendonly", "no"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextmanager
def redis_cluster(tmp: Path, masters: int = 3) -> Iterator[str]:
    """Yield a ``redis+cluster://`` URL naming every master."""
    assert REDIS_CLI is not None
    ports = [free_port() for _ in range(masters)]
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            procs.append(
                _server(
                    tmp,
                    f"node{port}",
                    [
                        "--port",
                        str(port),
                        "--bind",
                        "127.0.0.1",
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        str(tmp / f"node{port}" / "nodes.conf"),
                        "--cluster-node-timeout",
                        "2000",
                    ],
                )
            )
        for port in ports:
            wait_for(lambda port=port: _answers(port), 15, f"cluster node {port}")
        subprocess.run(
            [
                REDIS_CLI,
                "--cluster",
                "create",
                *[f"127.0.0.1:{p}" for p in ports],
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

        def ready() -> bool:
            for port in ports:
                try:
                    info = redis.Redis(port=port, socket_connect_timeout=0.5).execute_command("CLUSTER INFO")
                except redis.RedisError:
                    return False
                text = info.decode() if isinstance(info, bytes) else str(info)
                if "cluster_state:ok" not in text and "'cluster_state': 'ok'" not in text:
                    return False
            return True

        wait_for(ready, 30, "cluster state ok on every master")
        yield "redis+cluster://" + ",".join(f"127.0.0.1:{p}" for p in ports)
    finally:
        _stop(procs)


@contextmanager
def redis_sentinel(tmp: Path, service: str = "nenmaster") -> Iterator[tuple[str, int]]:
    """A master and one Sentinel watching it: yields (``redis+sentinel://`` URL, master port)."""
    master_port, sentinel_port = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(
            _server(tmp, f"master{master_port}", ["--port", str(master_port), "--bind", "127.0.0.1"])
        )
        wait_for(lambda: _answers(master_port), 15, "sentinel's master")
        conf = tmp / "sentinel.conf"
        conf.write_text(
            f"port {sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor {service} 127.0.0.1 {master_port} 1\n"
            f"sentinel down-after-milliseconds {service} 5000\n"
        )
        assert REDIS_SERVER is not None
        with (tmp / "sentinel.log").open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [REDIS_SERVER, str(conf), "--sentinel"], stdout=out, stderr=subprocess.STDOUT
                )
            )

        def knows_master() -> bool:
            try:
                s = redis.Redis(port=sentinel_port, socket_connect_timeout=0.5)
                return s.sentinel_get_master_addr_by_name(service) is not None
            except redis.RedisError:
                return False

        wait_for(knows_master, 15, "sentinel to know its master")
        yield f"redis+sentinel://127.0.0.1:{sentinel_port}/{service}/0", master_port
    finally:
        _stop(procs)
