"""The world outside Redis for tests/test_model.py: a fake clock, Nen's own truth, the task
executions in flight, what was sent and dispatched, and the invariants checked after each step.

Every Redis call goes through RunStore (the real Lua scripts); only what Redis cannot know (a
POST on the wire, Nen's runs, callbacks published, what was acknowledged) is modelled here.
"""

from __future__ import annotations

import copy
import json
import time as real_time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis

from nen_celery.domain.status import is_terminal
from nen_celery.lifecycle.completion import callback_task_id
from nen_celery.settings import Settings
from nen_celery.store.runs import RunStore
from nen_celery.store.sealer import Sealer

WF = "12345678-1234-1234-1234-123456789abc"
SUBMIT_LEASE = 20.0
TIMINGS = {  # small numbers, so that a few ticks cross every lease and timeout
    "completion_lease": 10.0,
    "queued_grace": 5.0,
    "unknown_timeout": 100.0,
    "run_timeout": 1000.0,
    "webhook_deadline": 50.0,
    "repoll_interval": 50.0,
    "reconcile_interval": 1.0,
}
TICKS = (1.0, 1.0, 11.0, 11.0, 21.0, 21.0, 101.0, 1001.0)  # nothing, each lease, the unknown and run timeouts


class FakeClock:
    """The model's store clock (``RunStore.clock``, store/clock.py): it moves only when a rule
    moves it, so leases lapse and timeouts pass in no time."""

    def __init__(self) -> None:
        self.now = real_time.time()

    def time(self) -> float:
        return self.now


@dataclass
class NenRun:
    """One run Nen created (a POST that landed): its own truth, whatever we recorded."""

    message_id: str
    attempt: int  # the run attempt whose POST created it (its webhook URL's hint)
    outcome: str  # success | failed
    nonce: str = ""  # the record's nonce in its webhook URL's hint
    progress: int = 0  # 0 created, 1 processing, 2 its end


@dataclass(eq=False)  # one execution is itself, whatever its fields
class Exec:
    """One execution of a task message; ``holder`` is the message's task id (a redelivered
    copy has the same), ``token`` the execution's own."""

    kind: str  # submit | complete
    holder: str
    stage: str = "new"  # submit: new, claimed, accepted; complete: new, claimed, dispatched
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    attempt: int = -1
    counted: bool = False  # submit: its claim counted its first POST, not yet sent or withdrawn
    message_id: str = ""
    data: dict[str, str] = field(default_factory=dict)
    task_id: str = ""
    wrote_at: int = -1  # the step of its last Redis write
    lost_write: bool = False  # a rollback lost a write of its: its next barrier fails
    # False: a receiver's dispatch (web/delivery.py), no task message: nothing comes back when it
    # dies (Nen redelivers the webhook: the mailbox keeps every one)
    redeliverable: bool = True
    plan: Any = None  # a receiver's: its plan (web/decide.py), suspended at ``pending``
    pending: Any = None  # the effect its plan waits on: a step of its own


@dataclass
class Mirror:
    """What the model learnt from Redis; rolled back with Redis (a write that was lost was never
    acknowledged to anyone)."""

    ends: dict[int, tuple[str, str]] = field(default_factory=dict)  # attempt -> (status, finished_at)
    sent: set[int] = field(default_factory=set)  # attempts whose completion was marked sent
    redrives: int = 0


class World:
    def __init__(self, client: redis.Redis, sealer: Sealer, base: Settings) -> None:
        self.prefix = f"model{uuid.uuid4().hex[:10]}"
        self.settings = base.model_copy(
            update={**TIMINGS, "key_prefix": self.prefix, "webhook_url": "https://app.example/hook"}
        )
        self.redis = client
        self.sealer = sealer
        self.clock = FakeClock()
        self.store = RunStore(client, self.settings, sealer)
        self.store.clock = self.clock
        self.run_id = f"r-{uuid.uuid4().hex[:10]}"
        self.step = 0
        self.nen: dict[str, NenRun] = {}
        self.mailbox: list[tuple[str, str]] = []  # (messageId, status) webhooks Nen sent
        self.execs: list[Exec] = []
        self.posts: list[dict[str, Any]] = []  # every POST that went out
        self.dispatches: list[dict[str, Any]] = []  # every callback published
        self.sweeps: list[tuple[dict[str, str], str]] = []  # decisions read, not yet acted on
        self.applies: list[tuple[str, str, str]] = []  # Nen words found a run for, not yet applied
        self.snapshots: list[tuple[int, dict[str, tuple[bytes, int]], Mirror]] = []
        self.mirror = Mirror()
        self.status = "queued"  # as of the last check (the rules' preconditions read it)
        self.stats: dict[str, int] = {}
        assert self.store.create(self.run_id, WF, {"A": 1}, None, {"task": "cb.ok"}, {"task": "cb.fail"})
        self.barrier()  # start_run returned (with the opt-in barrier)
        self.add_exec("submit")

    # -- bookkeeping ------------------------------------------------------------------------------
    def note(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def add_exec(self, kind: str, holder: str | None = None, **kw: Any) -> Exec | None:
        """A new task message (a new holder), or ``holder``'s message again. More than three
        fresh copies waiting add nothing to explore: the fourth is not added."""
        if holder is None and sum(e.kind == kind and e.stage == "new" for e in self.execs) >= 3:
            return None
        ex = Exec(kind, holder or f"{kind}-{uuid.uuid4().hex[:8]}", **kw)
        self.execs.append(ex)
        return ex

    def wrote(self, ex: Exec) -> None:
        ex.wrote_at = self.step

    def end_exec(self, ex: Exec, redeliver: bool = False) -> None:
        """The execution is over; ``redeliver``: it died and its message comes back (late acks)."""
        if ex in self.execs:
            self.execs.remove(ex)
        if redeliver and ex.redeliverable:
            self.add_exec(ex.kind, ex.holder)

    def raw(self) -> dict[str, str]:
        return self.store.raw(self.run_id)

    def barrier(self) -> None:
        """A side effect that cannot be taken back comes next: every write so far is durable
        (the durability barrier), so no earlier snapshot may be restored."""
        self.snapshots.clear()

    def cleanup(self) -> None:
        keys = list(self.redis.scan_iter(match=f"{self.prefix}:*", count=500))
        if keys:
            self.redis.delete(*keys)

    # -- Redis rollbacks ----------------------------------------------------------------------------
    def snapshot(self) -> None:
        keys = {}
        for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=500):
            dumped = self.redis.dump(key)
            if dumped is not None:
                keys[key] = (dumped, max(0, int(self.redis.pttl(key))))
        self.snapshots.append((self.step, keys, copy.deepcopy(self.mirror)))

    def rollback(self, index: int) -> None:
        """Restore a snapshot taken after the last barrier: the writes since are lost, as an AOF
        cut back would lose them. Executions that wrote since cannot pass their next barrier."""
        taken, keys, mirror = self.snapshots[index % len(self.snapshots)]
        for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=500):
            if key not in keys:
                self.redis.delete(key)
        for key, (dumped, ttl) in keys.items():
            self.redis.restore(key, ttl, dumped, replace=True)
        self.mirror = copy.deepcopy(mirror)
        for ex in self.execs:
            if ex.wrote_at > taken:
                ex.lost_write = True
        del self.snapshots[index % len(self.snapshots) :]  # each crash once
        self.note("rollback")

    # -- Nen -----------------------------------------------------------------------------------------
    def webhook(self, message_id: str, status: str) -> tuple[dict[str, Any], str]:
        body = {"message_id": message_id, "status": status, "workflow_id": WF}
        return body, self.sealer.seal_if_enabled(json.dumps(body).encode())

    def nen_word(self, run: NenRun) -> str:
        return "processing" if run.progress == 1 else run.outcome

    def nen_progress(self, index: int) -> None:
        """Nen moves one of its runs forward and sends the webhook."""
        moving = [r for r in self.nen.values() if r.progress < 2]
        if not moving:
            return
        run = moving[index % len(moving)]
        run.progress += 1
        self.mailbox.append((run.message_id, self.nen_word(run)))

    def nen_applied(self, message_id: str, status: str, verdict: str) -> None:
        """A Nen word was applied: if it ended the run, it must be the word of the Nen run the
        record is bound to (Nen's first terminal word for this run, not another's)."""
        if verdict != "applied" or not is_terminal(status):
            return
        bound = self.raw().get("message_id", "")
        assert bound == message_id, f"{message_id}'s {status} ended a run bound to {bound}"
        assert self.nen[message_id].outcome == status

    # -- invariants ---------------------------------------------------------------------------------
    def check(self) -> None:
        data = self.raw()
        assert data, "the run's record is gone (start_run returned, nothing expires here)"
        attempt = int(data.get("redrives") or 0)
        self.status = data["status"]
        assert attempt >= self.mirror.redrives, "a redrive was forgotten"
        self.mirror.redrives = attempt
        end = self.mirror.ends.get(attempt)
        if is_terminal(data["status"]):
            now = (data["status"], data.get("finished_at", ""))
            assert end in (None, now), f"attempt {attempt} ended {end}, then {now}: a run ends once"
            self.mirror.ends[attempt] = now
        else:
            assert end is None, f"attempt {attempt} ended {end}, now {data['status']}"
        if attempt in self.mirror.sent:
            assert data["completion"] == "sent", "a completion marked sent was forgotten"
        self.check_posts(data)
        self.check_callbacks()

    def check_posts(self, data: dict[str, str]) -> None:
        """At most one POST per attempt, unless an earlier one surely failed; every POST that
        went out is counted in ``attempts`` (never uncounted: a rollback cannot reach past the
        barrier before it)."""
        assert int(data.get("attempts") or 0) >= len(self.posts), "a POST that went out is uncounted"
        maybe: dict[int, int] = {}
        for post in self.posts:
            if not post["surely_failed"]:
                maybe[post["attempt"]] = maybe.get(post["attempt"], 0) + 1
        assert all(n <= 1 for n in maybe.values()), f"POSTs that may have reached Nen: {maybe}"

    def check_callbacks(self) -> None:
        """One callback per run end: every dispatch of an attempt carries its end's status
        (so one task id), the kind the status calls for."""
        for d in self.dispatches:
            end = self.mirror.ends.get(d["attempt"])
            assert end is None or end[0] == d["status"], f"{d} for an attempt that ended {end}"
            assert d["kind"] == ("on_complete" if d["status"] == "success" else "on_failure")
        ids: dict[int, set[str]] = {}
        for d in self.dispatches:
            ids.setdefault(d["attempt"], set()).add(d["task_id"])
        assert all(len(s) == 1 for s in ids.values()), f"callbacks of one attempt: {ids}"

    def record_dispatch(self, ex: Exec) -> None:
        # a side effect that cannot be taken back: no rollback may lose what it rests on any more
        assert not self.snapshots, f"{ex.holder} published a callback before the durability barrier"
        status, attempt = ex.data["status"], int(ex.data.get("redrives") or 0)
        ex.task_id = callback_task_id(self.run_id, status, attempt)
        if any(d["attempt"] == attempt for d in self.dispatches):
            self.note("dispatch_again_same_id")
        kind = "on_complete" if status == "success" else "on_failure"
        self.dispatches.append({"attempt": attempt, "status": status, "kind": kind, "task_id": ex.task_id})
