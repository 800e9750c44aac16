"""4. Redis cost of one run, counted at the client: every request/reply exchange of every
redis-py connection in this process, blocking or asyncio (a script call, a single command or a
whole pipeline is one round trip; a group-committed LPUSH of several webhooks is one), split by
DB: run state (DB 11) and broker (DB 12). The simulator, receiver and a threads worker run in
this process so nothing escapes the count.

- round trips on the run-state DB per run lifecycle (start_run .. callback done): target <= 7 (issue 28)
- broker round trips per run, against a bare 3-task sequence (reported, no target)
- MEMORY USAGE of a finished run's record, terminal payload excluded: target <= 2 KB
- a reconcile sweep with 10 due runs among 100,000 stored finished runs: Redis time
  (INFO commandstats usec delta) < 10 ms
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import (
    BROKER_DB,
    RUN_DB,
    WF,
    Result,
    configure,
    env_int,
    flush,
    measured_in_defaults,
    sim_config,
    wait_for,
)


class RoundTrips:
    """Counts round trips per (db, what) by wrapping redis-py's command and pipeline paths."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[int, str]] = Counter()
        self.names: dict[str, str] = {}  # script sha -> script name
        self._paused: set[int] = set()

    @contextmanager
    def active(self) -> Iterator[RoundTrips]:
        import redis.client

        redis_cls, pipe_cls = redis.client.Redis, redis.client.Pipeline
        plain, piped = redis_cls.execute_command, pipe_cls.execute
        counts, names, paused = self.counts, self.names, self._paused

        def db_of(client: Any) -> int:
            return int(client.connection_pool.connection_kwargs.get("db") or 0)

        def execute_command(client: Any, *args: Any, **options: Any) -> Any:
            what = str(args[0]).upper()
            if threading.get_ident() in paused:
                return plain(client, *args, **options)
            if what == "EVALSHA":
                what = "script:" + names.get(str(args[1]), str(args[1])[:8])
            counts[(db_of(client), what)] += 1
            return plain(client, *args, **options)

        def execute(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            if pipe.command_stack and threading.get_ident() not in paused:
                counts[(db_of(pipe), "pipeline")] += 1
            return piped(pipe, *args, **kwargs)

        # the receiver's asyncio clients too: its group-committed LPUSHes, its ingest.lua calls
        import redis.asyncio.client as aclient

        async_cls, async_pipe_cls = aclient.Redis, aclient.Pipeline
        aplain, apiped = async_cls.execute_command, async_pipe_cls.execute

        async def aexecute_command(client: Any, *args: Any, **options: Any) -> Any:
            what = str(args[0]).upper()
            if what == "EVALSHA":
                what = "script:" + names.get(str(args[1]), str(args[1])[:8])
            counts[(db_of(client), what)] += 1
            return await aplain(client, *args, **options)

        async def aexecute(pipe: Any, *args: Any, **kwargs: Any) -> Any:
            if pipe.command_stack:
                counts[(db_of(pipe), "pipeline")] += 1
            return await apiped(pipe, *args, **kwargs)

        redis_cls.execute_command = execute_command  # type: ignore[method-assign,assignment]
        pipe_cls.execute = execute  # type: ignore[method-assign,assignment]
        async_cls.execute_command = aexecute_command  # type: ignore[method-assign,assignment]
        async_pipe_cls.execute = aexecute  # type: ignore[method-assign,assignment]
        try:
            yield self
        finally:
            redis_cls.execute_command = plain  # type: ignore[method-assign]
            pipe_cls.execute = piped  # type: ignore[method-assign]
            async_cls.execute_command = aplain  # type: ignore[method-assign]
            async_pipe_cls.execute = apiped  # type: ignore[method-assign]

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Round trips made inside this block (by this thread) are not counted."""
        self._paused.add(threading.get_ident())
        try:
            yield
        finally:
            self._paused.discard(threading.get_ident())

    def per(self, db: int, n: int) -> float:
        return sum(v for (d, _), v in self.counts.items() if d == db) / n

    def breakdown(self, db: int, n: int) -> str:
        items = sorted(((w, v) for (d, w), v in self.counts.items() if d == db), key=lambda x: -x[1])
        return ", ".join(f"{w} {v / n:.2f}" for w, v in items)


def _lifecycles(n: int, counter: RoundTrips) -> tuple[float, float, float, str, list[str]]:
    """(run-state RT/run, broker RT/run, bare broker RT/sequence, breakdown, finished run ids)."""
    from celery.contrib.testing.worker import start_worker
    from tests.helpers import serve_in_thread

    from bench.tasks import done, finished, step
    from nen_celery import start_run
    from nen_celery.runtime.context import get_context
    from nen_celery.simulator import SimulatorServer
    from nen_celery.web.asgi import create_app
    from nen_celery.worker import app

    with SimulatorServer(sim_config()) as sim, serve_in_thread(create_app()) as receiver:
        configure(NEN_API_URL=sim.url, NEN_WEBHOOK_URL=receiver + "/webhooks/nen")
        store = get_context().store
        counter.names.update({s.sha: name for name, s in store._scripts.items()})
        with start_worker(app, pool="threads", concurrency=4, perform_ping_check=False, loglevel="WARNING"):
            warm = f"warm:{uuid.uuid4().hex[:6]}"
            for _ in range(5):  # script loads, connections
                start_run(WF, {"PATIENT_NAME": "P"}, on_complete=done.s(key=warm))
            wait_for(lambda: finished(warm) >= 5, 60, "warm-up runs")
            counter.counts.clear()
            with counter.active():
                key = f"cost:{uuid.uuid4().hex[:6]}"
                ids = [
                    start_run(WF, {"PATIENT_NAME": f"P{i}"}, on_complete=done.s(key=key)).run_id
                    for i in range(n)
                ]
                wait_for(lambda: finished(key) >= n, 60 + n, f"{n} runs")
                with counter.paused():  # the bench's own reads are not the lifecycle's
                    wait_for(
                        lambda: all(store.raw(r).get("completion") == "sent" for r in ids), 30, "records"
                    )
                time.sleep(0.5)  # let the callbacks' own guard writes land (counted per run)
            ours_state, ours_broker = counter.per(RUN_DB, n), counter.per(BROKER_DB, n)
            breakdown = counter.breakdown(RUN_DB, n)
            counter.counts.clear()
            with counter.active():
                key = f"costbare:{uuid.uuid4().hex[:6]}"
                for _ in range(n):
                    step.apply_async((key, 2))
                wait_for(lambda: finished(key) >= n, 60 + n, f"{n} bare sequences")
                time.sleep(0.5)
            bare_broker = counter.per(BROKER_DB, n)
    return ours_state, ours_broker, bare_broker, breakdown, ids


def _key(store: Any, name: str, run_id: str) -> str:
    """A per-run index key: per shard (a method) in the sharded layout, one key (a property) before."""
    key = getattr(store, name)
    return str(key(run_id) if callable(key) else key)


def _listpack_record(ids: list[str]) -> float:
    """Bytes per record (payload excluded) if the server keeps such hashes as listpacks
    (hash-max-listpack-value above the longest field): copies of 50 records, config restored."""
    from nen_celery.runtime.context import get_context

    r: Any = get_context().store.redis  # decoded strings; redis-py's stubs type them as bytes | str
    before = r.config_get("hash-max-listpack-value")["hash-max-listpack-value"]
    r.config_set("hash-max-listpack-value", 65536)
    try:
        sizes = []
        for i, rid in enumerate(ids[:50]):
            data = r.hgetall(get_context().store.run_key(rid))
            r.hset(f"bench:listpack:{i}", mapping=data)
            usage = int(r.memory_usage(f"bench:listpack:{i}", samples=0) or 0)
            sizes.append(usage - len(data.get("payload", "")))
            r.delete(f"bench:listpack:{i}")
    finally:
        r.config_set("hash-max-listpack-value", before)
    return sum(sizes) / len(sizes)


def _memory(ids: list[str]) -> tuple[float, float]:
    """(bytes per record excluding the payload, bytes of every per-run key and zset entry)."""
    from nen_celery.runtime.context import get_context

    store = get_context().store
    r: Any = store.redis
    record, total = [], []
    for rid in ids[:200]:
        # the record as stored, less its payload field: a copy without it, measured by the
        # server (usage - strlen would count the payload's allocator rounding as record)
        data = r.hgetall(store.run_key(rid))
        data.pop("payload", None)
        copy = f"{store.run_key(rid)}:bench-nopayload"
        r.hset(copy, mapping=data)
        usage = int(r.memory_usage(copy, samples=0) or 0)
        r.delete(copy)
        record.append(usage)
        extra = [store.msg_key(str(data.get("message_id")))]  # the messageId index entry
        total.append(usage + sum(int(r.memory_usage(k, samples=0) or 0) for k in extra))
    index_keys = {_key(store, name, rid) for rid in ids for name in ("runs_key", "timers_key")}
    zsets = sum(int(r.memory_usage(k, samples=0) or 0) for k in index_keys)
    members = max(1, sum(int(r.zcard(k)) for k in {_key(store, "runs_key", rid) for rid in ids}))
    return sum(record) / len(record), sum(total) / len(total) + zsets / members


def _sweep(ids: list[str], stored: int) -> tuple[float, float, dict[str, int]]:
    """Fill ``stored`` finished records like ours, make 10 runs due, time one sweep."""
    from nen_celery.runtime.context import get_context
    from nen_celery.worker import reconcile_runs

    store = get_context().store
    r: Any = store.redis
    template = r.hgetall(store.run_key(ids[0]))
    now = time.time()
    for start in range(0, stored, 2000):
        pipe = r.pipeline(transaction=False)
        for i in range(start, min(stored, start + 2000)):
            rid = f"stored-{i}"
            pipe.hset(store.run_key(rid), mapping={**template, "run_id": rid})
            pipe.expire(store.run_key(rid), 3600)
            pipe.zadd(_key(store, "runs_key", rid), {rid: now})
            # finished runs whose callback check is still ahead: timers in the future
            pipe.zadd(_key(store, "timers_key", rid), {rid: now + 3600})
        pipe.execute()
    for i in range(10):  # queued runs nobody holds: the sweep re-queues their submit
        store.create(f"due-{i}", WF, {"PATIENT_NAME": "P"}, None, None, None, next_check=now - 1)
    r.config_resetstat()
    t0 = time.perf_counter()
    counts = reconcile_runs()
    wall = (time.perf_counter() - t0) * 1000
    stats = r.info("commandstats")
    usec = sum(int(v["usec"]) for k, v in stats.items() if k != "cmdstat_info")
    return usec / 1000, wall, counts


def run() -> list[Result]:
    """4c and 4d do not depend on the fast-path settings (the record is written by the same Lua
    scripts either way; the sweep is the run store's scripts, in this process, and 10 submit
    publishes): when bench/run.py measures the defaults column too, the fast one skips them."""
    n = env_int("BENCH_COST_N", 200)
    stored = env_int("BENCH_SWEEP_STORED", 100_000)
    flush()
    counter = RoundTrips()
    state, broker, bare, breakdown, ids = _lifecycles(n, counter)
    print(f"redis cost: {state:.2f} run-state round trips/run ({breakdown})")
    print(f"redis cost: broker {broker:.1f} round trips/run vs bare {bare:.1f} per 3-task sequence")
    results = [
        Result(
            f"4a. run-state round trips per run (N={n})",
            f"{state:.1f}",
            "7 (target)",
            None,
            "<= 7",
            state <= 7,
            breakdown,
        ),
        Result(
            "4b. broker round trips per run",
            f"{broker:.1f}",
            f"{bare:.1f} per bare 3-task sequence",
            broker / bare,
            "(none)",
            True,
            "Celery/kombu traffic: publish, fetch, ack, events",
        ),
    ]
    if measured_in_defaults():
        flush()
        return results
    record, per_run = _memory(ids)
    listpack = _listpack_record(ids)
    configure()  # the in-process stack is gone; the sweep needs no Nen
    redis_ms, wall_ms, counts = _sweep(ids, stored)
    flush()
    print(f"redis cost: record {record:.0f} B without payload, all per-run keys {per_run:.0f} B")
    print(
        f"redis cost: sweep over {stored} stored runs: {redis_ms:.2f} ms Redis time, "
        f"{wall_ms:.1f} ms wall, {counts}"
    )
    return [
        *results,
        Result(
            "4c. memory per finished run",
            f"{record:.0f} B record (payload excluded); {per_run:.0f} B with index keys",
            "2048 B",
            record / 2048,
            "<= 2 KB",
            record <= 2048,
            f"MEMORY USAGE SAMPLES 0; fields over 64 B make it a hashtable: as a listpack "
            f"(hash-max-listpack-value 65536) {listpack:.0f} B",
            same_in_both=True,
        ),
        Result(
            f"4d. reconcile sweep, 10 due among {stored:,} stored",
            f"{redis_ms:.2f} ms Redis time ({wall_ms:.0f} ms wall)",
            "10 ms",
            redis_ms / 10,
            "< 10 ms",
            redis_ms < 10,
            "INFO commandstats usec delta; " + ", ".join(f"{k} {v}" for k, v in counts.items()),
            same_in_both=True,
        ),
    ]
