"""What the reconcile sweep reads and writes: due timers over every shard, and its lock."""

from __future__ import annotations

import heapq
from collections import defaultdict
from collections.abc import Callable, Iterable

from nen_celery.store.core import StoreCore
from nen_celery.store.scripts import ReconcileLockArgs


class Sweeps(StoreCore):
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

    def set_timers(self, timers: dict[str, float], drop: Iterable[str]) -> None:
        self._set_zsets(self._timers_key, timers, drop)

    def set_parked_timers(self, timers: dict[str, float], drop: Iterable[str]) -> None:
        self._set_zsets(self._parked_due_key, timers, drop)

    def _set_zsets(self, key_of: Callable[[int], str], timers: dict[str, float], drop: Iterable[str]) -> None:
        """Set and drop members of a per-shard zset: one pipelined trip, one command per shard."""
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
        self._call(ReconcileLockArgs(key=self.reconcile_lock_key, token=token))
