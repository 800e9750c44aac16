"""Reading run records: one run, several, and the newest over every shard (listing)."""

from __future__ import annotations

import heapq
import json
import logging
from typing import Any, cast

import redis

from nen_celery.domain.models import Run
from nen_celery.store.core import StoreCore

log = logging.getLogger("nen_celery.store")


class Reads(StoreCore):
    def raw(self, run_id: str) -> dict[str, str]:
        return cast("dict[str, str]", self.redis.hgetall(self.run_key(run_id)))

    def raw_many(self, run_ids: list[str]) -> list[dict[str, str] | None]:
        """Each run's record; None for a key that holds no run record (a foreign or damaged
        entry: another type under the run's key), logged with its key, so one bad entry never
        fails the batch. Any other Redis error raises."""
        pipe = self.redis.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hgetall(self.run_key(rid))
        records: list[dict[str, str] | None] = []
        for rid, got in zip(run_ids, pipe.execute(raise_on_error=False), strict=True):
            if isinstance(got, redis.ResponseError) and str(got).startswith("WRONGTYPE"):
                log.error("run store: %s holds no run record (%s): skipped", self.run_key(rid), got)
                records.append(None)
            elif isinstance(got, Exception):
                raise got
            else:
                records.append(got)
        return records

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
            for rid, data in zip(ids, self.raw_many(ids), strict=True):
                if not data:
                    continue
                if status and data.get("status") != status:
                    continue
                if workflow_id and data.get("workflow_id") != workflow_id:
                    continue
                run = self._readable(rid, data)
                if run is not None:
                    runs.append(run)
                if len(runs) >= limit:
                    break
        return runs

    def _readable(self, run_id: str, data: dict[str, str]) -> Run | None:
        """The record as a Run, or None (logged with its key) when it cannot be read as one."""
        try:
            return self.to_run(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.error("run store: %s is not a readable run record (%s): skipped", self.run_key(run_id), exc)
            return None


def callbacks(data: dict[str, str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The (on_complete, on_failure) signatures kept in a run record."""
    on_complete, on_failure = data.get("on_complete"), data.get("on_failure")
    return (
        json.loads(on_complete) if on_complete else None,
        json.loads(on_failure) if on_failure else None,
    )
