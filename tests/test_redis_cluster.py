"""Run state on a real 3-master Redis Cluster and behind a real Sentinel (redis-server
processes started here). A script whose keys spanned slots would fail with CROSSSLOT."""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from nen_celery import start_run
from nen_celery.connections import redis_client
from nen_celery.errors import ConfigurationError
from nen_celery.runtime.context import get_context
from nen_celery.settings import Settings, get_settings
from nen_celery.store.runs import RunStore
from nen_celery.store.sealer import Sealer
from nen_celery.worker import reconcile_runs
from tests.callbacks import calls, record
from tests.conftest import Stack, env
from tests.helpers import run_ref, wait_for
from tests.redis_cluster import REDIS_CLI, REDIS_SERVER, redis_cluster, redis_sentinel

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        REDIS_SERVER is None or REDIS_CLI is None, reason="redis-server/redis-cli not on PATH"
    ),
]

WF = "12345678-1234-1234-1234-123456789abc"


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as url:
        yield url


def cluster_store(url: str) -> RunStore:
    settings = Settings(
        redis_url=url, broker_url="redis://127.0.0.1:1/0", key_prefix=f"c{uuid.uuid4().hex[:6]}"
    )
    client = redis_client(url, decode_responses=True, socket_timeout=5)
    return RunStore(client, settings, Sealer.from_settings(settings))


def test_every_store_operation_runs_on_a_cluster_and_spreads_over_masters(cluster_url: str) -> None:
    store = cluster_store(cluster_url)
    client = store.redis
    runs = [f"r-{i}-{uuid.uuid4()}" for i in range(40)]
    for rid in runs:
        assert store.create(rid, WF, {"A": "1"}, "sealed-token", {"task": "t"}, None)
    assert not store.create(runs[0], WF, {}, None, None, None)  # exists: refused

    rid, mid = runs[0], str(uuid.uuid4())
    assert store.claim_submit(rid, 30, "h1", "x1")[0] == "ok"
    assert store.begin_post(rid, "x1") == 1
    assert store.find_or_park(mid, "early-webhook") is None  # before the binding: parked
    status, parked = store.bind(rid, mid, {"messageId": mid})
    assert status == "submitted" and parked == ["early-webhook"]
    store.drop_parked(mid)
    assert store.find_or_park(mid, "late") == rid and store.run_for_message(mid) == rid
    assert store.apply(rid, "processing", source="webhook")[:2] == ("applied", "processing")
    assert store.apply(rid, "success", source="webhook", payload={"ok": 1})[2] == "pending"
    assert store.claim_completion(rid, "c1")[0] == "claimed"
    assert store.finish_completion(rid, "cb-task", "c1", 0)
    assert store.claim_completion(rid, "c2")[0] == "done"
    assert store.get(rid).status == "success"  # type: ignore[union-attr]

    # hinted webhooks (ingest.lua): kept with a queued run (a processing one as its messageId,
    # applied by the binding; a terminal one whole, handed back); applied and the completion
    # claimed in one script; an unknown run is bound by its own webhook
    hinted, hmid = runs[1], str(uuid.uuid4())
    assert store.claim_submit(hinted, 30, "h2", "x2")[0] == "ok"
    store.post_not_sent(hinted, "x2")
    store.release_submit(hinted, "x2")
    body = {"message_id": hmid, "status": "processing", "workflow_id": WF}
    done = {"message_id": hmid, "status": "success", "workflow_id": WF}
    assert store.ingest(run_ref(store, hinted), body, "early", source="webhook")[0] == "parked"
    assert store.ingest(run_ref(store, hinted), done, "kept", source="webhook")[0] == "parked"
    assert store.bind(hinted, hmid, {}) == ("processing", ["kept"])
    assert store.ingest(run_ref(store, hinted), done, "x", source="webhook", holder="i1")[2] == "claimed"
    lost = runs[7]
    assert store.ingest(run_ref(store, lost), done, "early", source="webhook")[0] == "parked"
    store.apply(lost, "unknown", source="submit:ambiguous")
    assert store.take_run_parked(lost) == (run_ref(store, lost), ["early"])
    # ... once its messageId is claimed in the index, on the messageId's own slot; another run's
    # messageId binds nothing
    assert store.ingest(run_ref(store, lost), done, "replayed", source="webhook")[:2] == ("taken", "unknown")
    lost_mid = str(uuid.uuid4())
    lost_body = {"message_id": lost_mid, "status": "processing", "workflow_id": WF}
    assert store.ingest(run_ref(store, lost), lost_body, "", source="webhook")[:2] == (
        "applied",
        "processing",
    )
    assert store.run_for_message(lost_mid) == lost

    other = f"plain-{uuid.uuid4()}"
    assert store.create(other, WF, {"A": "1"}, None, None, None)
    assert store.apply(other, "rejected", source="nen:404", error={"status_code": 404})[1] == "rejected"
    assert store.redrive(other) == ("ok", f"{other}.1")

    # timers live per shard: a sweep over every shard finds exactly the due runs, most overdue first
    store.set_timers({r: 1000.0 + i for i, r in enumerate(runs[2:7])}, [])
    assert store.due_runs(time.time(), 3) == runs[2:5]
    store.set_timers({}, runs[2:7])
    assert not set(runs[2:7]) & set(store.due_runs(time.time(), 100))
    assert store.pending_counts()[0] >= len(runs) - 7

    newest = store.list(limit=5)
    assert [r.run_id for r in newest] == [other, *list(reversed(runs))[:4]]
    store.delete(runs[-1])
    assert store.get(runs[-1]) is None

    assert store.acquire_reconcile_lock("t1", 5) and not store.acquire_reconcile_lock("t2", 5)
    store.release_reconcile_lock("t1")

    masters = Counter(client.get_node_from_key(store.run_key(r)).name for r in runs)  # type: ignore[attr-defined]
    assert len(masters) >= 2, masters


def test_runs_complete_once_with_run_state_on_a_cluster(stack: Stack, cluster_url: str) -> None:
    failing = str(uuid.uuid4())
    stack.sim.state.config.fail_workflows.add(failing)
    stack.counter.wait_idle()
    try:
        with env(NEN_REDIS_URL=cluster_url):
            handles = [
                start_run(wf, {"A": "1"}, on_complete=record.s(tag="c"), on_failure=record.s(tag="f"))
                for wf in [WF] * 7 + [failing]
            ]
            for h in handles:
                wait_for(lambda h=h: len(calls(h.run_id)) == 1, 30, f"callback of {h.run_id}")
            stack.counter.wait_idle()
            tags = [[c["tag"] for c in calls(h.run_id)] for h in handles]
            assert tags == [["c"]] * 7 + [["f"]]
            assert [h.get().status for h in handles] == ["success"] * 7 + ["failed"]  # type: ignore[union-attr]
            assert isinstance(reconcile_runs.apply().get(), dict)  # the sweep reads every shard
            store = get_context().store
            assert store.list(limit=8)[0].run_id == handles[-1].run_id
            # nothing of these runs went to the standalone Redis
            assert not any(stack.redis.exists(store.run_key(h.run_id)) for h in handles)
    finally:
        stack.sim.state.config.fail_workflows.discard(failing)


def test_the_rate_limiter_runs_on_a_cluster_run_store(cluster_url: str) -> None:
    """NEN_RATE_LIMIT with run state on a Redis Cluster: the limiter's client comes from the one
    place that understands redis+cluster:// (a plain redis.Redis.from_url refused the URL)."""
    from nen_celery.nen.ratelimit import new_limiter

    settings = Settings(
        redis_url=cluster_url,
        broker_url="redis://127.0.0.1:1/0",
        key_prefix=f"rl{uuid.uuid4().hex[:6]}",
        rate_limit=5,
    )
    limiter = new_limiter(settings)
    assert limiter is not None
    grants = [limiter.take(max_wait=0) for _ in range(8)]
    assert [g.allowed for g in grants] == [True] * 5 + [False] * 3  # the burst, then none now
    before = limiter.epoch()
    assert limiter.pause(2.0) > 0 and limiter.epoch() > before  # a 429 pauses every worker


def test_sentinel_url_reaches_the_master(tmp_path: Path) -> None:
    with redis_sentinel(tmp_path) as (url, master_port):
        store = cluster_store(url)
        assert store.create("s-1", WF, {"A": "1"}, None, None, None)
        direct = redis_client(f"redis://127.0.0.1:{master_port}/0", decode_responses=True)
        assert direct.hget(store.run_key("s-1"), "workflow_id") == WF


def test_cluster_and_sentinel_urls_need_a_broker_url_and_valid_hosts() -> None:
    with (
        env(NEN_REDIS_URL="redis+cluster://127.0.0.1:7000", NEN_BROKER_URL=None),
        pytest.raises(ConfigurationError, match="NEN_BROKER_URL"),
    ):
        get_settings()
    with pytest.raises(ConfigurationError, match="NEN_REDIS_URL: 'h:x' is not host:port"):
        redis_client("redis+cluster://h:x")
    with pytest.raises(ConfigurationError, match="needs /service_name"):
        redis_client("redis+sentinel://127.0.0.1:26379")
