"""The run store's Redis must not evict: a worker refuses to start on an evicting
maxmemory-policy (unless NEN_ALLOW_EVICTION=true) and warns where it cannot read the policy."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from pathlib import Path

import pytest

from nen_celery.checks.config import ERROR, WARNING
from nen_celery.checks.durability import check_durability, durability_problems
from nen_celery.errors import ConfigurationError
from tests.cluster import BIN
from tests.helpers import ROOT, spawn_logged, stop_group, wait_for
from tests.own_redis import OwnRedis

DURABLE = {"appendonly": "yes", "appendfsync": "everysec", "maxmemory-policy": "noeviction"}


# -- durability_problems (pure) -----------------------------------------------------------------


def test_a_durable_non_evicting_redis_has_no_problem() -> None:
    assert durability_problems(DURABLE) == []
    assert durability_problems({**DURABLE, "appendfsync": "always"}) == []


@pytest.mark.parametrize("policy", ["volatile-lru", "allkeys-lru", "allkeys-lfu", "volatile-ttl"])
def test_an_evicting_policy_is_an_error_naming_the_policy_the_fix_and_the_escape_hatch(policy: str) -> None:
    [(level, message)] = durability_problems({**DURABLE, "maxmemory-policy": policy})
    assert level == ERROR
    assert repr(policy) in message
    assert "maxmemory-policy noeviction" in message
    assert "NEN_ALLOW_EVICTION=true" in message


def test_the_escape_hatch_turns_the_refusal_into_a_warning() -> None:
    [(level, message)] = durability_problems({**DURABLE, "maxmemory-policy": "volatile-lru"}, True)
    assert level == WARNING
    assert "'volatile-lru'" in message and "NEN_ALLOW_EVICTION=true" in message


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({**DURABLE, "appendonly": "no"}, "appendonly is not 'yes'"),
        ({**DURABLE, "appendfsync": "no"}, "appendfsync is 'no'"),
    ],
)
def test_aof_problems_stay_warnings(config: dict[str, str], expected: str) -> None:
    [(level, message)] = durability_problems(config)
    assert level == WARNING and expected in message


@pytest.mark.parametrize("unread", [{}, {"appendonly": "yes", "appendfsync": "everysec"}])
def test_a_policy_that_cannot_be_read_is_a_warning_saying_what_eviction_costs(unread: dict[str, str]) -> None:
    [(level, message)] = durability_problems(unread)
    assert level == WARNING
    assert "maxmemory-policy" in message and "could not read" in message
    assert "evicting" in message


# -- check_durability against a redis-server of our own ----------------------------------------


def test_an_evicting_redis_raises_and_the_escape_hatch_lets_it_pass(tmp_path: Path) -> None:
    with OwnRedis(tmp_path, "--maxmemory-policy", "volatile-lru", "--appendonly", "yes") as server:
        client = server.client()
        with pytest.raises(ConfigurationError, match=r"'volatile-lru'.*maxmemory-policy noeviction"):
            check_durability(client)
        assert [level for level, _ in check_durability(client, allow_eviction=True)] == [WARNING]


@pytest.mark.parametrize(
    "blocked",
    [
        ("--rename-command", "CONFIG", ""),  # a managed Redis that hides CONFIG
        ("--user", "default", "on", "nopass", "~*", "&*", "+@all", "-config"),  # an ACL
    ],
    ids=["renamed", "acl"],
)
def test_config_blocked_warns_at_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, blocked: tuple[str, ...]
) -> None:
    server = OwnRedis(tmp_path, "--maxmemory-policy", "volatile-lru", *blocked)
    with server, caplog.at_level(logging.INFO, logger="nen_celery.checks.durability"):
        problems = check_durability(server.client())
    assert [level for level, _ in problems] == [WARNING]
    [record] = [r for r in caplog.records if r.name == "nen_celery.checks.durability"]
    assert record.levelno == logging.WARNING
    assert "maxmemory-policy" in record.getMessage() and "could not read" in record.getMessage()


# -- a real worker ------------------------------------------------------------------------------


def _worker(tmp_path: Path, url: str, name: str, **env: str) -> tuple[subprocess.Popen[bytes], Path]:
    log = tmp_path / f"{name}.log"
    argv = [str(BIN / "celery"), "-A", "nen_celery.worker", "worker", "-c", "1", "-n", f"{name}@localhost"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "--loglevel", "INFO"]
    proc = spawn_logged(
        argv,
        log,
        {**os.environ, "PYTHONPATH": str(ROOT), "NEN_REDIS_URL": url, "NEN_BROKER_URL": url, **env},
    )
    return proc, log


@pytest.mark.integration
def test_the_worker_refuses_to_start_on_an_evicting_redis_unless_allowed(tmp_path: Path) -> None:
    with OwnRedis(tmp_path / "redis", "--maxmemory-policy", "volatile-lru", "--appendonly", "yes") as server:
        refused, log = _worker(tmp_path, server.url(), "refused")
        try:
            code = refused.wait(90)
        finally:
            if refused.poll() is None:
                os.killpg(refused.pid, signal.SIGKILL)
        output = log.read_text(errors="replace")
        assert code != 0, output
        assert "ConfigurationError" in output and "'volatile-lru'" in output, output
        assert "maxmemory-policy noeviction" in output and "NEN_ALLOW_EVICTION=true" in output

        allowed, log = _worker(tmp_path, server.url(), "allowed", NEN_ALLOW_EVICTION="true")
        try:
            wait_for(lambda: "ready." in log.read_text(errors="replace"), 90, "the allowed worker ready")
            assert allowed.poll() is None
            output = log.read_text(errors="replace")
            assert "WARNING" in output and "'volatile-lru'" in output, output
        finally:
            stop_group(allowed)  # the worker and its pool: ours
