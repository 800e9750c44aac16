"""Reading run records: one run, several, and the newest over every shard (listing)."""

from __future__ import annotations

import heapq
import json
from typing import Any, cast

from nen_celery.domain.models import Run
from nen_celery.store.core import StoreCore


class Reads(StoreCore):
    def raw(self, run_id: str) -> dict[str, str]:
        return cast("dict[str, str]", self.redis.hgetall(self.run_key(run_id)))

    def raw_many(self, run_ids: list[str]) -> list[dict[str, str]]:
        pipe = self.redis.pipeline(transaction=False)
        for rid in run_ids:
            pipe.hgetall(self.run_key(rid))
        return list(pipe.execute())

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


def callbacks(data: dict[str, str]) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The (on_complete, on_failure) signatures kept in a run record."""
    on_complete, on_failure = data.get("on_complete"), data.get("on_failure")
    return (
        json.loads(on_complete) if on_complete else None,
        json.loads(on_failure) if on_failure else None,
    )
