"""RunStore: run records, the messageId index and every state change, over Redis.

Each state change is one Lua script whose keys share one ``{<shard>}`` hash tag, so changes
are atomic and every script touches one slot: the layout works on a standalone Redis and on a
Redis Cluster alike. A run belongs to shard ``crc32(run_id) % NEN_STORE_SHARDS``, a messageId
to shard ``crc32(message_id) % NEN_STORE_SHARDS``; the sorted sets are kept per shard, so they
spread over the cluster's masters with the records they index. Keys (prefix ``NEN_KEY_PREFIX``,
``k`` a shard number):

- ``<p>:run:{k}:<run_id>``              hash: the record (expires ``retention`` after it finishes)
- ``<p>:run:{k}:<run_id>:secure``       sealed secure params, deleted once Nen accepted/refused them
- ``<p>:run:{k}:<run_id>:kept``         hash: webhooks that named the run (hints.py) before its
                                        binding, one per ``<status>:<message_id>``
- ``<p>:runs:{k}``                      zset run_id by creation time (listing)
- ``<p>:timers:{k}``                    zset run_id by next reconcile check (sweeps read due runs only)
- ``<p>:msg:{k}:<message_id>``          run_id bound to Nen's messageId (O(1) webhook lookup)
- ``<p>:parked:{k}:<message_id>``       webhooks that arrived before their messageId was bound
- ``<p>:parked:due:{k}``                zset message_id by next check of its parked webhooks
- ``<p>:reconcile:lock``                the sweep's lock (a single key)

``NEN_STORE_SHARDS`` is part of the layout: keep it fixed for the life of a deployment.
"""

from __future__ import annotations

import heapq
import json
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterable
from functools import cache
from importlib import resources
from typing import Any, NamedTuple

import redis
from redis.cluster import RedisCluster

from nen_celery.domain.models import Run
from nen_celery.domain.status import is_terminal
from nen_celery.settings import Settings
from nen_celery.store.sealer import Sealer

_SCRIPTS = (
    "create",
    "claim_submit",
    "begin_post",
    "holder_hset",
    "bind",
    "index",
    "park",
    "apply",
    "ingest",
    "claim_completion",
    "finish_completion",
    "release_completion",
    "redrive",
    "reconcile_lock",
    "callback_lease",
)
PARKED_MAX = 20  # webhooks parked per messageId (newest kept)
KEPT_MAX = 32  # (status, messageId) pairs kept with a run before its binding (never pushed out)

log = logging.getLogger("nen_celery.store.runs")


class Claim(NamedTuple):
    """A claim's answer: verdict and detail, and the record read in the same script."""

    verdict: str
    detail: str
    data: dict[str, str]
    secure: str | None  # sealed secure params (claim_submit only)


def _pairs(flat: list[Any]) -> dict[str, str]:
    """A Lua HGETALL reply (k1, v1, k2, v2, ...) as a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


@cache
def script_source(name: str) -> str:
    """A Lua script's source: its file under lua/ after the shared functions of _common.lua."""
    lua = resources.files("nen_celery.store") / "lua"
    return (lua / "_common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class RunStore:
    def __init__(self, client: redis.Redis, settings: Settings, sealer: Sealer) -> None:
        self.redis = client
        self.settings = settings
        self.sealer = sealer
        self.prefix = settings.key_prefix
        self.shards = settings.store_shards
        self._scripts = {name: client.register_script(script_source(name)) for name in _SCRIPTS}

    # -- keys -------------------------------------------------------------------------------
    def shard(self, some_id: str) -> int:
        return zlib.crc32(some_id.encode()) % self.shards

    def run_key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{{{self.shard(run_id)}}}:{run_id}"

    def secure_key(self, run_id: str) -> str:
        return f"{self.run_key(run_id)}:secure"

    def msg_key(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{{{self.shard(message_id)}}}:{message_id}"

    def _run_keys(self, run_id: str) -> list[str]:
        """The keys of one run that bind.lua and ingest.lua touch (one slot)."""
        return [
            self.run_key(run_id),
            self.secure_key(run_id),
            self.timers_key(run_id),
            self.run_parked_key(run_id),
        ]

    def run_parked_key(self, run_id: str) -> str:
        """Webhooks that named their run (hints.py) and came before its binding: a hash, one
        field per ``<status>:<message_id>`` (a ``processing`` one holds its workflow id; the
        others the sealed body), so copies of one webhook never push out another."""
        return f"{self.run_key(run_id)}:kept"

    def parked_key(self, message_id: str) -> str:
        return f"{self.prefix}:parked:{{{self.shard(message_id)}}}:{message_id}"

    def runs_key(self, run_id: str) -> str:
        return self._runs_key(self.shard(run_id))

    def timers_key(self, run_id: str) -> str:
        return self._timers_key(self.shard(run_id))

    def parked_due_key(self, message_id: str) -> str:
        return self._parked_due_key(self.shard(message_id))

    def _runs_key(self, shard: int) -> str:
        return f"{self.prefix}:runs:{{{shard}}}"

    def _timers_key(self, shard: int) -> str:
        return f"{self.prefix}:timers:{{{shard}}}"

    def _parked_due_key(self, shard: int) -> str:
        return f"{self.prefix}:parked:due:{{{shard}}}"

    @property
    def all_timers_keys(self) -> list[str]:
        return [self._timers_key(k) for k in range(self.shards)]

    @property
    def all_parked_due_keys(self) -> list[str]:
        return [self._parked_due_key(k) for k in range(self.shards)]

    @property
    def reconcile_lock_key(self) -> str:
        return f"{self.prefix}:reconcile:lock"

    def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        return self._scripts[name](keys=keys, args=args)

    def _pipelined(self, calls: list[tuple[str, list[str], list[Any]]]) -> list[Any]:
        """Several scripts in one round trip (single server only: keys in different slots).

        EVALSHA straight into the pipeline: redis-py's Script objects would add a SCRIPT EXISTS
        trip to every pipeline. A script the server lost (restart, SCRIPT FLUSH) is run again on
        its own; only those that failed are, so a script that consumed something is not re-run.
        """
        pipe = self.redis.pipeline(transaction=False)
        for name, keys, args in calls:
            pipe.evalsha(self._scripts[name].sha, len(keys), *keys, *args)
        results: list[Any] = pipe.execute(raise_on_error=False)
        for i, (name, keys, args) in enumerate(calls):
            if isinstance(results[i], redis.exceptions.NoScriptError):
                results[i] = self._call(name, keys, args)
            elif isinstance(results[i], Exception):
                raise results[i]
        return results

    # -- lifecycle --------------------------------------------------------------------------
    def create(
        self,
        run_id: str,
        workflow_id: str,
        params: dict[str, Any],
        sealed_secure: str | None,
        on_complete: dict[str, Any] | None,
        on_failure: dict[str, Any] | None,
        next_check: float | None = None,
    ) -> bool:
        """Write the queued record (and sealed secure params); False if run_id already exists."""
        fields: dict[str, str] = {
            "run_id": run_id,
            "workflow_id": workflow_id,
            "params": json.dumps(params),
            "on_complete": json.dumps(on_complete) if on_complete else "",
            "on_failure": json.dumps(on_failure) if on_failure else "",
        }
        now = time.time()
        check = next_check if next_check is not None else now + self.settings.queued_grace
        args: list[Any] = [run_id, now, sealed_secure or "", self.settings.retention_seconds, check]
        for k, v in fields.items():
            if v:  # an absent field reads as "" anyway
                args += [k, v]
        keys = [self.run_key(run_id), self.runs_key(run_id), self.secure_key(run_id), self.timers_key(run_id)]
        return bool(self._call("create", keys, args))

    def delete(self, run_id: str) -> None:
        """Undo a create whose task could not be queued."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.run_key(run_id))  # one key per DELETE: a Cluster pipeline allows no more
        pipe.delete(self.secure_key(run_id))
        pipe.zrem(self.runs_key(run_id), run_id)
        pipe.zrem(self.timers_key(run_id), run_id)
        pipe.execute()

    def claim_submit(self, run_id: str, lease: float, holder: str, execution: str) -> Claim:
        """verdict ok | done | busy | ambiguous | missing; with ok, the record and sealed secure params.

        ``holder`` is the task id (its own redelivery may take the lease back while no POST is
        marked); ``execution`` is unique per task execution and gates begin_post.
        """
        retry_ambiguous = "1" if self.settings.retry_unknown else "0"
        res = self._call(
            "claim_submit",
            [self.run_key(run_id), self.timers_key(run_id), self.secure_key(run_id)],
            [time.time(), lease, retry_ambiguous, holder, execution],
        )
        data = _pairs(res[2]) if len(res) > 2 else {}
        secure = str(res[3]) if len(res) > 3 and res[3] else None
        return Claim(str(res[0]), str(res[1]), data, secure)

    def begin_post(self, run_id: str, execution: str) -> int:
        """Mark a POST as possibly sent; returns the attempt number.

        -1: the run is no longer queued; -2: another execution holds the submit lease.
        """
        return int(self._call("begin_post", [self.run_key(run_id)], [time.time(), execution]))

    def post_not_sent(self, run_id: str, execution: str) -> None:
        """The last POST surely never reached Nen (connect error): a resend is safe."""
        self._call("holder_hset", [self.run_key(run_id)], [execution, "post_inflight", 0])

    def release_submit(self, run_id: str, execution: str) -> None:
        self._call("holder_hset", [self.run_key(run_id)], [execution, "submit_lease_until", 0])

    def open_secure(self, token: str | None) -> dict[str, str] | None:
        """The secure params a claim returned sealed (None if the run has none)."""
        if token is None:
            return None
        result: dict[str, str] = json.loads(self.sealer.open(token))
        return result

    def bind(
        self, run_id: str, message_id: str, accepted: dict[str, Any], next_check: float | None = None
    ) -> tuple[str, list[str]]:
        """Bind Nen's messageId; return (status, webhooks parked before the binding).

        The parked ones are those kept with the run (hinted, ingest.lua) and those kept under the
        messageId (no hint, park.lua). The binding and the messageId index sit in different
        slots: one pipelined trip on a single server, two on a cluster.
        """
        now = time.time()
        check = next_check or now + self.next_check_after("submitted")
        bind_keys = self._run_keys(run_id)
        processing_check = now + self.next_check_after("processing")
        retention = self.settings.retention_seconds
        bind_args: list[Any] = [message_id, now, json.dumps(accepted), check, retention, processing_check]
        index_keys = [self.msg_key(message_id), self.parked_key(message_id)]
        index_args: list[Any] = [run_id, 2 * self.settings.retention_seconds, "force"]
        if isinstance(self.redis, RedisCluster):
            bound = self._call("bind", bind_keys, bind_args)
            indexed = self._call("index", index_keys, index_args) if bound[0] == "bound" else ["ok", ""]
        else:
            bound, indexed = self._pipelined(
                [("bind", bind_keys, bind_args), ("index", index_keys, index_args)]
            )
        if bound[0] == "conflict":
            raise RuntimeError(f"run {run_id} is already bound to messageId {bound[1]}")
        if indexed[1]:
            # Nen's answer is its word; a run hint bound this messageId to another run first,
            # which the binding rules of ingest.lua (workflow, index claim) should make impossible
            log.error(
                "messageId %s was indexed to run %s; Nen's answer binds it to run %s",
                message_id,
                indexed[1],
                run_id,
            )
        return str(bound[1]), [str(p) for p in [*bound[2:], *indexed[2:]]]

    def claim_message(self, message_id: str, run_id: str) -> str:
        """Index ``message_id`` to ``run_id`` unless another run has it: "" when claimed (or
        already this run's), else the run it is bound to. For a binding by a webhook's run
        hint, before ingest.lua records it (the index lives on the messageId's slot)."""
        res = self._call(
            "index",
            [self.msg_key(message_id), self.parked_key(message_id)],
            [run_id, 2 * self.settings.retention_seconds, "free"],
        )
        return str(res[1]) if res[0] == "taken" else ""

    def release_message(self, message_id: str, run_id: str) -> None:
        """Undo ``claim_message`` when the binding did not happen (only if still ``run_id``'s)."""
        self._call("reconcile_lock", [self.msg_key(message_id)], [run_id])  # compare-and-delete

    def take_run_parked(self, run_id: str) -> tuple[int, list[str]]:
        """(the run's attempt, the webhooks kept with it), removing them: one pipelined trip.

        A kept ``processing`` webhook (ingest.lua keeps only its messageId and workflow) comes
        back as a sealed body of its own, first, like the others."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hget(self.run_key(run_id), "redrives")
        pipe.hgetall(self.run_parked_key(run_id))
        pipe.delete(self.run_parked_key(run_id))
        redrives, kept, _ = pipe.execute()
        processing, others = [], []
        for field, sealed in sorted(kept.items()):
            status, _, message_id = str(field).partition(":")
            if status == "processing":
                fields = {"message_id": message_id, "status": "processing", "workflow_id": str(sealed)}
                processing.append(self.sealer.seal_if_enabled(json.dumps(fields).encode()))
            else:
                others.append(str(sealed))
        return int(redrives or 0), processing + others

    def drop_parked(self, message_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.parked_key(message_id))
        pipe.zrem(self.parked_due_key(message_id), message_id)
        pipe.execute()

    def parked(self, message_id: str) -> list[str]:
        return [str(x) for x in self.redis.lrange(self.parked_key(message_id), 0, -1)]

    def find_or_park(self, message_id: str, sealed_body: str) -> str | None:
        """run_id bound to message_id, or None after parking the webhook for the binding."""
        keys = [self.msg_key(message_id), self.parked_key(message_id), self.parked_due_key(message_id)]
        due = time.time() + self.settings.parked_grace
        res = self._call(
            "park", keys, [sealed_body, self.settings.retention_seconds, PARKED_MAX, message_id, due]
        )
        return str(res) if res else None

    def run_for_message(self, message_id: str) -> str | None:
        value = self.redis.get(self.msg_key(message_id))
        return str(value) if value is not None else None

    def apply(
        self,
        run_id: str,
        status: str,
        *,
        source: str,
        payload: Any = None,
        error: dict[str, Any] | None = None,
        next_check: float | None = None,
    ) -> tuple[str, str, str]:
        """Move the run forward; returns (verdict, status now, completion state)."""
        sealed = self.sealer.seal_if_enabled(json.dumps(payload).encode()) if payload is not None else ""
        now = time.time()
        res = self._call(
            "apply",
            [self.run_key(run_id), self.secure_key(run_id), self.timers_key(run_id)],
            [
                status,
                now,
                sealed,
                source,
                self.settings.retention_seconds,
                json.dumps(error) if error else "",
                next_check if next_check is not None else now + self.next_check_after(status),
            ],
        )
        return str(res[0]), str(res[1]), str(res[2])

    def ingest(
        self,
        run_id: str,
        attempt: int,
        body: dict[str, Any],
        sealed_body: str,
        *,
        source: str,
        holder: str = "",
        bind: bool = True,
    ) -> tuple[str, str, str, dict[str, str]]:
        """Apply a webhook that named its run, in one trip (ingest.lua) but for an ``unknown``
        run it binds.

        Returns (verdict, status now, completion, record): verdict applied | noop | parked |
        mismatch | stale | missing | foreign (the body's workflow is not the run's) | taken (its
        messageId is bound to another run) | full (no room left with the run before its
        binding) | unbound (only with ``bind=False``: the webhook would bind an ``unknown``
        run); with a ``holder``, a terminal run's completion comes back ``claimed`` with the
        record, for the caller to dispatch the callback and then ``finish_completion``.

        Binding an ``unknown`` run: the messageId index (on the messageId's slot) is claimed for
        the run first, only if no other run has it, then ingest.lua binds and applies; a claim
        whose binding did not happen is released. Three trips, once per such run.
        """
        keys, args = self.ingest_call(run_id, attempt, body, sealed_body, source, holder)
        res = self.ingest_result(self._call("ingest", keys, args))
        if res[0] != "unbound" or not bind:
            return res
        message_id = str(body["message_id"])
        other = self.claim_message(message_id, run_id)
        if other:
            return "taken", res[1], "", {}
        args[-1] = "1"  # claimed
        res = self.ingest_result(self._call("ingest", keys, args))
        if res[0] not in ("applied", "noop", "late"):  # not bound to it (redriven, bound since)
            self.release_message(message_id, run_id)
        return res

    def ingest_call(
        self,
        run_id: str,
        attempt: int,
        body: dict[str, Any],
        sealed_body: str,
        source: str,
        holder: str = "",
    ) -> tuple[list[str], list[Any]]:
        """ingest.lua's keys and arguments: ``ingest`` runs them, the receiver too (asyncio)."""
        status = str(body["status"])
        payload = self.sealer.seal_if_enabled(json.dumps(body).encode()) if is_terminal(status) else ""
        now = time.time()
        workflow_id = body.get("workflow_id")
        return self._run_keys(run_id), [
            str(body["message_id"]),
            status,
            now,
            payload,
            source,
            self.settings.retention_seconds,
            now + self.next_check_after(status),
            self.settings.retention_seconds,
            KEPT_MAX,
            sealed_body,
            self.settings.completion_lease,
            holder,
            attempt,
            workflow_id if isinstance(workflow_id, str) else "",
            "0",  # claimed: RunStore.ingest sets it once it holds the messageId index
        ]

    @staticmethod
    def ingest_result(res: list[Any]) -> tuple[str, str, str, dict[str, str]]:
        data = _pairs(res[3]) if len(res) > 3 else {}
        return str(res[0]), str(res[1]), str(res[2]), data

    def claim_completion(self, run_id: str, holder: str) -> Claim:
        """verdict claimed | busy | done | not_terminal | missing; with claimed, the record."""
        res = self._call(
            "claim_completion", [self.run_key(run_id)], [time.time(), self.settings.completion_lease, holder]
        )
        return Claim(str(res[0]), str(res[1]), _pairs(res[2]) if len(res) > 2 else {}, None)

    def release_completion(self, run_id: str, holder: str) -> bool:
        return bool(self._call("release_completion", [self.run_key(run_id)], [holder]))

    def finish_completion(self, run_id: str, callback_task_id: str) -> bool:
        """Mark the claimed completion sent once the broker took the callback (or there is none):
        from then on nothing dispatches it again."""
        return bool(
            self._call(
                "finish_completion",
                [self.run_key(run_id), self.timers_key(run_id)],
                [time.time(), callback_task_id, run_id],
            )
        )

    def next_check_after(self, status: str) -> float:
        """Seconds until reconciliation should look at a run that just entered ``status``."""
        s = self.settings
        if status in ("success", "failed", "rejected", "submit_failed"):
            return s.completion_lease + s.reconcile_interval  # the callback should be out by then
        if status == "unknown":
            return s.reconcile_interval if s.lookup_path else s.unknown_timeout
        if status == "queued":
            return s.queued_grace
        return s.webhook_deadline if s.webhook_url else s.poll_interval

    def redrive(self, run_id: str, *, force: bool = False) -> tuple[str, str]:
        """Operator action: a new attempt for a run Nen never ran; (verdict, idempotency key).

        Verdict ok | missing | refused | no_secure | may_have_started (unless ``force``).
        """
        now = time.time()
        res = self._call(
            "redrive",
            [self.run_key(run_id), self.secure_key(run_id), self.timers_key(run_id)],
            [now, now + self.settings.queued_grace, "1" if force else "0"],
        )
        return str(res[0]), str(res[1])

    # -- reconciliation ---------------------------------------------------------------------
    def due_runs(self, now: float, limit: int) -> list[str]:
        """The ``limit`` most overdue runs over every shard (one pipelined read per shard)."""
        return self._due(self.all_timers_keys, now, limit)

    def due_parked(self, now: float, limit: int) -> list[str]:
        return self._due(self.all_parked_due_keys, now, limit)

    def _due(self, keys: list[str], now: float, limit: int) -> list[str]:
        pipe = self.redis.pipeline(transaction=False)
        for key in keys:
            pipe.zrangebyscore(key, "-inf", now, start=0, num=limit, withscores=True)
        merged = heapq.merge(*pipe.execute(), key=lambda pair: pair[1])
        return [str(member) for member, _ in list(merged)[:limit]]

    def pending_counts(self) -> tuple[int, int]:
        """(runs with a timer, messageIds with parked webhooks), summed over the shards."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.all_timers_keys + self.all_parked_due_keys:
            pipe.zcard(key)
        counts = [int(n) for n in pipe.execute()]
        return sum(counts[: self.shards]), sum(counts[self.shards :])

    def timers(self) -> dict[str, float]:
        """Every run timer (tests and tooling; O(timers))."""
        pipe = self.redis.pipeline(transaction=False)
        for key in self.all_timers_keys:
            pipe.zrange(key, 0, -1, withscores=True)
        return {str(m): float(s) for pairs in pipe.execute() for m, s in pairs}

    def raw_many(self, run_ids: list[str]) -> list[dict[str, str]]:
        pipe = self.redis.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hgetall(self.run_key(rid))
        return list(pipe.execute())

    def set_timers(self, timers: dict[str, float], drop: Iterable[str]) -> None:
        self._set_zsets(self._timers_key, timers, drop)

    def set_parked_timers(self, timers: dict[str, float], drop: Iterable[str]) -> None:
        self._set_zsets(self._parked_due_key, timers, drop)

    def _set_zsets(self, key_of: Callable[[int], str], timers: dict[str, float], drop: Iterable[str]) -> None:
        adds: dict[int, dict[str, float]] = defaultdict(dict)
        removes: dict[int, list[str]] = defaultdict(list)
        for member, score in timers.items():
            adds[self.shard(member)][member] = score
        for member in drop:
            removes[self.shard(member)].append(member)
        if not adds and not removes:
            return
        pipe = self.redis.pipeline(transaction=False)
        for shard, mapping in adds.items():
            pipe.zadd(key_of(shard), mapping)
        for shard, members in removes.items():
            pipe.zrem(key_of(shard), *members)
        pipe.execute()

    def acquire_reconcile_lock(self, token: str, ttl: float) -> bool:
        return bool(self.redis.set(self.reconcile_lock_key, token, nx=True, px=int(ttl * 1000)))

    def release_reconcile_lock(self, token: str) -> None:
        self._call("reconcile_lock", [self.reconcile_lock_key], [token])

    # -- reads ------------------------------------------------------------------------------
    def raw(self, run_id: str) -> dict[str, str]:
        data: dict[str, str] = self.redis.hgetall(self.run_key(run_id))  # type: ignore[assignment]
        return data

    def get(self, run_id: str) -> Run | None:
        data = self.raw(run_id)
        if not data:
            return None
        return self.to_run(data)

    def to_run(self, data: dict[str, str]) -> Run:
        payload = json.loads(self.sealer.open(data["payload"])) if data.get("payload") else None
        return Run.from_hash(data, payload)

    def _newest(self, count: int) -> list[str]:
        """The ``count`` newest run ids over every shard."""
        pipe = self.redis.pipeline(transaction=False)
        for shard in range(self.shards):
            pipe.zrevrange(self._runs_key(shard), 0, count - 1, withscores=True)
        merged = heapq.merge(*pipe.execute(), key=lambda pair: pair[1], reverse=True)
        return [str(member) for member, _ in list(merged)[:count]]

    def list(self, limit: int = 100, status: str | None = None, workflow_id: str | None = None) -> list[Run]:
        """Newest first; filters applied after the fetch (no per-status index yet)."""
        runs: list[Run] = []
        offset = 0
        batch = max(limit, 100)
        while len(runs) < limit:
            ids = self._newest(offset + batch)[offset:]
            if not ids:
                break
            offset += batch
            pipe = self.redis.pipeline(transaction=False)
            for rid in ids:
                pipe.hgetall(self.run_key(str(rid)))
            for data in pipe.execute():
                if not data:
                    continue
                if status and data.get("status") != status:
                    continue
                if workflow_id and data.get("workflow_id") != workflow_id:
                    continue
                runs.append(self.to_run(data))
                if len(runs) >= limit:
                    break
        return runs

    # -- callbacks that cannot be dispatched (deadletter.py) ----------------------------------
    @property
    def deadletter_key(self) -> str:
        """``<p>:deadletter``: list of JSON entries, newest first (a single key)."""
        return f"{self.prefix}:deadletter"

    def note_callback_failure(self, run_id: str, attempt: int) -> int:
        """Count one failed dispatch of the run's callback (of redrive ``attempt``) on its record;
        the count so far, or -1 if the record is gone (no partial record is left behind)."""
        return int(
            self.redis.eval(
                "if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end "
                "return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)",
                1,
                self.run_key(run_id),
                f"callback_failures:{attempt}",
            )
        )

    def add_dead_letter(self, entry: dict[str, Any], keep: int) -> None:
        """Put an entry first on the dead-letter list, keeping the newest ``keep``."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.lpush(self.deadletter_key, json.dumps(entry))
        pipe.ltrim(self.deadletter_key, 0, keep - 1)
        pipe.expire(self.deadletter_key, self.settings.retention_seconds)
        pipe.execute()

    def dead_letters(self, limit: int = 100) -> tuple[dict[str, Any], ...]:
        """The newest ``limit`` dead-letter entries, newest first."""
        if limit <= 0:
            return ()
        return tuple(json.loads(x) for x in self.redis.lrange(self.deadletter_key, 0, limit - 1))

    # -- one execution of a callback at a time (celery.callback_task.CallbackTask) ---------------------
    def _callback_keys(self, run_id: str, attempt: str) -> tuple[str, str]:
        """``<run key>:callback:<attempt>:lease`` and ``...:done`` (the run's slot)."""
        base = f"{self.run_key(run_id)}:callback:{attempt}"
        return f"{base}:lease", f"{base}:done"

    def claim_callback(self, run_id: str, attempt: str, holder: str, lease: float) -> str:
        """``claimed`` (run it), ``busy`` (another execution holds a live lease) or ``done``."""
        keys = self._callback_keys(run_id, attempt)
        return str(self._call("callback_lease", [*keys], ["claim", holder, max(1, int(lease * 1000))]))

    def renew_callback(self, run_id: str, attempt: str, holder: str, lease: float) -> bool:
        """Extend ``holder``'s lease; False once it lapsed."""
        keys = self._callback_keys(run_id, attempt)
        return bool(self._call("callback_lease", [*keys], ["renew", holder, max(1, int(lease * 1000))]))

    def finish_callback(self, run_id: str, attempt: str, holder: str) -> None:
        """The callback of (run, attempt) reached its end: later copies skip it."""
        keys = self._callback_keys(run_id, attempt)
        self._call("callback_lease", [*keys], ["finish", holder, self.settings.retention_seconds])

    def release_callback(self, run_id: str, attempt: str, holder: str) -> bool:
        """Drop ``holder``'s lease without marking done (its retry may run at once)."""
        keys = self._callback_keys(run_id, attempt)
        return bool(self._call("callback_lease", [*keys], ["release", holder]))


def callbacks(data: dict[str, str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The (on_complete, on_failure) signatures kept in a run record."""
    on_complete, on_failure = data.get("on_complete"), data.get("on_failure")
    return (
        json.loads(on_complete) if on_complete else None,
        json.loads(on_failure) if on_failure else None,
    )
