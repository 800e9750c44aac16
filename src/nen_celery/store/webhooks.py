"""Nen's messageId and the webhooks that carry it: binding a run to its messageId, the index
from messageId to run, webhooks parked before the binding, and ingest.lua's one-trip apply of a
webhook that named its run."""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any

from redis.cluster import RedisCluster

from nen_celery.domain.hints import RunRef
from nen_celery.domain.status import is_terminal
from nen_celery.store.core import StoreCore
from nen_celery.store.scripts import BindArgs, IndexArgs, IngestArgs, ParkArgs, ReconcileLockArgs, pairs

PARKED_MAX = 20  # webhooks parked per messageId (newest kept)
KEPT_MAX = 32  # (status, messageId) pairs kept with a run before its binding (never pushed out)

log = logging.getLogger("nen_celery.store.runs")  # the name it had before the split


class Webhooks(StoreCore):
    def bind(
        self,
        run_id: str,
        message_id: str,
        accepted: dict[str, Any],
        next_check: float | None = None,
        attempt: int | None = None,
    ) -> tuple[str, list[str]]:
        """Bind Nen's messageId; return (status, webhooks parked before the binding).

        ``attempt``: the redrives the submit claimed; a 202 of an earlier attempt than the run's
        binds nothing (logged; the messageId's index entry is freed again).

        The parked ones are those kept with the run (hinted, ingest.lua) and those kept under the
        messageId (no hint, park.lua). The binding and the messageId index sit in different
        slots: one pipelined trip on a single server, two on a cluster.
        """
        now = self.clock.time()
        binding = BindArgs(
            run_id,
            message_id=message_id,
            now=now,
            accepted=json.dumps(accepted),
            next_check=next_check or now + self.next_check_after("submitted"),
            retention=self.settings.retention_seconds,
            processing_check=now + self.next_check_after("processing"),
            attempt="" if attempt is None else str(attempt),
        )
        index = IndexArgs(message_id, run_id=run_id, ttl=2 * self.settings.retention_seconds, mode="force")
        if isinstance(self.redis, RedisCluster):
            bound = self._call(binding)
            indexed = self._call(index) if bound[0] == "bound" else ["ok", ""]
        else:
            bound, indexed = self._pipelined([binding, index])
        if bound[0] == "conflict":
            raise RuntimeError(f"run {run_id} is already bound to messageId {bound[1]}")
        if bound[0] == "stale":
            self.release_message(message_id, run_id)
            log.error(
                "run %s: Nen accepted an earlier attempt as messageId %s after a redrive; not bound",
                run_id,
                message_id,
            )
            return str(bound[1]), []
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
        ttl = 2 * self.settings.retention_seconds
        res = self._call(IndexArgs(message_id, run_id=run_id, ttl=ttl, mode="free"))
        return str(res[1]) if res[0] == "taken" else ""

    def release_message(self, message_id: str, run_id: str) -> None:
        """Undo ``claim_message`` when the binding did not happen (only if still ``run_id``'s)."""
        self._call(ReconcileLockArgs(key=self.msg_key(message_id), token=run_id))  # compare-and-delete

    def run_for_message(self, message_id: str) -> str | None:
        value = self.redis.get(self.msg_key(message_id))
        return str(value) if value is not None else None

    # -- webhooks that came before the binding ------------------------------------------------
    def find_or_park(self, message_id: str, sealed_body: str) -> str | None:
        """run_id bound to message_id, or None after parking the webhook for the binding."""
        res = self._call(
            ParkArgs(
                body=sealed_body,
                ttl=self.settings.retention_seconds,
                max_parked=PARKED_MAX,
                message_id=message_id,
                due_at=self.clock.time() + self.settings.parked_grace,
            )
        )
        return str(res) if res else None

    def parked(self, message_id: str) -> list[str]:
        return [str(x) for x in self.redis.lrange(self.parked_key(message_id), 0, -1)]

    def drop_parked(self, message_id: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.parked_key(message_id))
        pipe.zrem(self.parked_due_key(message_id), message_id)
        pipe.execute()

    def take_run_parked(self, run_id: str) -> tuple[RunRef, list[str]]:
        """(the run attempt, as its URL's hint names it; the webhooks kept with it), removing
        them: one pipelined trip.

        A kept ``processing`` webhook (ingest.lua keeps only its messageId and workflow) comes
        back as a sealed body of its own, first, like the others."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.hmget(self.run_key(run_id), "redrives", "nonce")
        pipe.hgetall(self.run_parked_key(run_id))
        pipe.delete(self.run_parked_key(run_id))
        (redrives, nonce), kept, _ = pipe.execute()
        processing, others = [], []
        for field, sealed in sorted(kept.items()):
            status, _, message_id = str(field).partition(":")
            if status == "processing":
                fields = {"message_id": message_id, "status": "processing", "workflow_id": str(sealed)}
                processing.append(self.sealer.seal_if_enabled(json.dumps(fields).encode()))
            else:
                others.append(str(sealed))
        return RunRef(run_id, int(redrives or 0), nonce or ""), processing + others

    # -- a webhook that named its run -----------------------------------------------------------
    def ingest(
        self,
        hint: RunRef,
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
        mismatch | stale | reused (the hint's nonce is not the record's) | missing | foreign
        (the body's workflow is not the run's) | taken (its
        messageId is bound to another run) | full (no room left with the run before its
        binding) | unbound (only with ``bind=False``: the webhook would bind an ``unknown``
        run); with a ``holder``, a terminal run's completion comes back ``claimed`` with the
        record, for the caller to dispatch the callback and then ``finish_completion``.

        Binding an ``unknown`` run: the messageId index (on the messageId's slot) is claimed for
        the run first, only if no other run has it, then ingest.lua binds and applies; a claim
        whose binding did not happen is released. Three trips, once per such run.
        """
        args = self.ingest_args(hint, body, sealed_body, source, holder)
        res = self.ingest_result(self._call(args))
        if res[0] != "unbound" or not bind:
            return res
        run_id, message_id = hint.run_id, str(body["message_id"])
        other = self.claim_message(message_id, run_id)
        if other:
            return "taken", res[1], "", {}
        res = self.ingest_result(self._call(dataclasses.replace(args, claimed="1")))
        if res[0] not in ("applied", "noop", "late"):  # not bound to it (redriven, bound since)
            self.release_message(message_id, run_id)
        return res

    def ingest_args(
        self,
        hint: RunRef,
        body: dict[str, Any],
        sealed_body: str,
        source: str,
        holder: str = "",
    ) -> IngestArgs:
        """ingest.lua's arguments: ``ingest`` runs them, the receiver too (asyncio, web/apply.py)."""
        status = str(body["status"])
        payload = self.sealer.seal_if_enabled(json.dumps(body).encode()) if is_terminal(status) else ""
        now = self.clock.time()
        workflow_id = body.get("workflow_id")
        return IngestArgs(
            hint.run_id,
            message_id=str(body["message_id"]),
            status=status,
            now=now,
            payload=payload,
            source=source,
            retention=self.settings.retention_seconds,
            next_check=now + self.next_check_after(status),
            keep_ttl=self.settings.retention_seconds,
            max_kept=KEPT_MAX,
            sealed_body=sealed_body,
            completion_lease=self.settings.completion_lease,
            holder=holder,
            attempt=hint.attempt,
            workflow_id=workflow_id if isinstance(workflow_id, str) else "",
            claimed="0",  # ingest sets it once it holds the messageId index
            nonce=hint.nonce,
        )

    @staticmethod
    def ingest_result(res: list[Any]) -> tuple[str, str, str, dict[str, str]]:
        """ingest.lua's reply: (verdict, status now, completion, the record when claimed)."""
        data = pairs(res[3]) if len(res) > 3 else {}
        return str(res[0]), str(res[1]), str(res[2]), data
