"""The steps of tests/test_model.py: each does what one piece of nen's code does with the run
store (submit.py, ingest.py, completion.py, sweep.py, api.redrive_run), one Redis step at a time
so that the machine can interleave them. The receiver is its own code: its plan (web/decide.py)
driven here, its ingest.lua calls through web/apply.py, only its publishes modelled."""

from __future__ import annotations

import json
import uuid
from typing import Any

from nen_celery.domain.hints import RunRef
from nen_celery.domain.status import is_terminal
from nen_celery.lifecycle import reconcile
from nen_celery.store.durable import NotDurable
from nen_celery.web.apply import BlockingApply
from nen_celery.web.decide import Apply, Dispatch, Durable, Effect, End, Publish, Release, Webhook, plan
from tests.model_world import SUBMIT_LEASE, Exec, NenRun, World

POST_OUTCOMES = ("connect_error", "connect_error_spent", "accepted", "lost_answer", "lost_unsent", "refused")


class Steps(World):
    # -- submit_run ---------------------------------------------------------------------------------
    def submit_claim(self, ex: Exec) -> None:
        """claim_submit with mark_post: the lease and the first POST's count, one script."""
        claim = self.store.claim_submit(self.run_id, SUBMIT_LEASE, ex.holder, ex.token, mark_post=True)
        self.note(f"claim_submit:{claim.verdict}")
        if claim.verdict == "ok":
            self.wrote(ex)
            ex.stage, ex.attempt = "claimed", int(claim.data.get("redrives") or 0)
            ex.counted, ex.data = claim.post_counted, claim.data  # the request is built from this read
        elif claim.verdict == "ambiguous":
            self.park_unknown(ex, "submit:redelivered")
        else:
            self.end_exec(ex)

    def park_unknown(self, ex: Exec | None, source: str) -> None:
        """submit.park_unknown: the POST's fate is unknown; webhooks kept with the run are
        queued again (the mailbox still holds them: Nen's webhooks can come again any time)."""
        error = {"type": "ambiguous", "message": "a POST may have been received"}
        verdict, _, _ = self.store.apply(self.run_id, "unknown", source=source, error=error, expect="queued")
        if verdict == "applied":
            self.store.take_run_parked(self.run_id)
        if ex is not None:
            self.end_exec(ex)

    def submit_post(self, ex: Exec, outcome: str, nen_outcome: str) -> None:
        """before_send (the claim counted the first POST; begin_post counts each later one), the
        durability barrier, the POST, and what came of it."""
        if ex.counted:
            ex.counted = False
        elif self.store.begin_post(self.run_id, ex.token) < 0:
            self.note("begin_post:refused")
            self.end_exec(ex)  # LeaseLost, or the run left queued
            return
        if ex.lost_write:
            # the barrier failed (Redis lost this execution's writes): the mark withdrawn, retried
            self.store.post_not_sent(self.run_id, ex.token, tried=False)
            self.end_exec(ex, redeliver=True)
            return
        self.barrier()
        attempt = ex.attempt  # the request was built from the claim's read
        created = outcome in ("accepted", "lost_answer")  # a 4xx proves Nen did not create it
        self.posts.append({"attempt": attempt, "surely_failed": not created, "holder": ex.holder})
        if outcome in ("accepted", "lost_answer"):
            mid = f"m-{uuid.uuid4().hex[:8]}"
            self.nen[mid] = NenRun(mid, attempt, nen_outcome, ex.data.get("nonce", ""))
            ex.message_id = mid
        self.note(f"post:{outcome}")
        if outcome in ("connect_error", "connect_error_spent", "refused"):  # client.post_run
            self.store.post_not_sent(self.run_id, ex.token)
        if outcome == "connect_error_spent":  # every retry spent, none reached Nen
            self.end_or_park(ex, "submit_failed", "submit:exhausted")
        elif outcome == "refused":
            self.end_or_park(ex, "rejected", "nen:400")
        elif outcome == "accepted":
            ex.stage = "accepted"
        elif outcome in ("lost_answer", "lost_unsent"):
            self.park_unknown(ex, "submit:ambiguous")

    def submit_unsent(self, ex: Exec) -> None:
        """Nothing left before the POST's before_send (the rate limiter's RateLimited, a request
        that could not be built): the claim's count withdrawn (submit.first_post_unsent), the
        lease released, the message re-queued under its task id (task.retry)."""
        if ex.counted:
            ex.counted = False
            self.store.post_not_sent(self.run_id, ex.token, tried=False)
        self.store.release_submit(self.run_id, ex.token)
        self.note("submit:unsent")
        self.end_exec(ex, redeliver=True)

    def end_or_park(self, ex: Exec, status: str, source: str) -> None:
        """submit._end_or_park: end the queued run as never started, unless an earlier POST
        of the attempt may have reached Nen (apply.lua: maybe_sent): then park it unknown."""
        error = {"type": source, "message": status}
        verdict, _, completion = self.store.apply(
            self.run_id, status, source=source, payload=error, error=error, expect="queued"
        )
        if completion == "pending":
            self.add_exec("complete")
        if verdict == "maybe_sent":
            self.park_unknown(ex, "submit:maybe_sent")
        else:
            self.end_exec(ex)

    def end_run(self, ex: Exec | None, status: str, source: str, expect: str | None = None) -> str:
        """completion.end_run: our own end, then complete_run if the completion is pending;
        the verdict."""
        error = {"type": source, "message": status}
        verdict, _, completion = self.store.apply(
            self.run_id, status, source=source, payload=error, error=error, expect=expect
        )
        if completion == "pending":
            self.add_exec("complete")
        if ex is not None:
            self.end_exec(ex)
        return str(verdict)

    def submit_bind(self, ex: Exec) -> None:
        """submit.bind_accepted: bind Nen's messageId, replay the webhooks parked before it."""
        try:
            _, parked = self.store.bind(self.run_id, ex.message_id, {}, attempt=ex.attempt)
        except RuntimeError:
            # bound to another messageId: only a 202 of an earlier attempt may find that
            assert self.nen[ex.message_id].attempt != int(self.raw().get("redrives") or 0)
            self.note("bind:conflict")
            self.end_exec(ex)
            return
        for sealed in parked:
            body = json.loads(self.sealer.open(sealed))
            if body.get("message_id") == ex.message_id:
                self.apply_nen(body["message_id"], body["status"], "webhook:parked")
        if parked:
            self.store.drop_parked(ex.message_id)
        self.end_exec(ex)

    def apply_nen(self, message_id: str, status: str, source: str) -> None:
        """completion.apply_nen_status: apply Nen's word; complete_run if pending."""
        body, _ = self.webhook(message_id, status)
        verdict, _, completion = self.store.apply(
            self.run_id,
            status,
            source=source,
            payload=body if is_terminal(status) else None,
            message_id=message_id,
        )
        self.note(f"apply:{source}:{verdict}")
        self.nen_applied(message_id, status, verdict)
        if completion == "pending":
            self.add_exec("complete")

    # -- webhooks -----------------------------------------------------------------------------------
    def deliver(self, index: int, path: str) -> None:
        """One of Nen's webhooks (again, late, out of order), by one of the three paths in."""
        message_id, status = self.mailbox[index % len(self.mailbox)]
        run = self.nen[message_id]
        hint = RunRef(self.run_id, run.attempt, run.nonce)
        body, sealed = self.webhook(message_id, status)
        self.note(f"deliver:{path}")
        if path == "receiver":  # the receiver's plan: applied, and a terminal one may claim
            self.receive(hint, body)
        elif path == "unhinted":  # ingest without a run hint: the messageId index, then apply
            found = self.store.find_or_park(message_id, sealed)
            if found is not None:
                self.applies.append((message_id, status, "webhook"))
        else:  # ingest_webhook with a hint: one script, the completion claimed with it
            holder = f"ingest-{uuid.uuid4().hex[:8]}"
            verdict, _, completion, data = self.store.ingest(
                hint, body, sealed, source="webhook", holder=holder
            )
            self.note(f"ingest:{verdict}")
            self.nen_applied(message_id, status, verdict)
            if completion == "claimed":
                ex = self.add_exec("complete", holder, stage="claimed", data=data)
                assert ex is not None
                self.claimed(ex)

    # -- the receiver ------------------------------------------------------------------------------
    def receive(self, hint: RunRef, body: dict[str, Any]) -> None:
        """The receiver's own plan for a hinted webhook (barrier on). A terminal one that claimed
        the completion becomes an execution no message brings back: its barrier, dispatch and
        answer are steps of their own."""
        webhook = Webhook(
            body=json.dumps(body).encode(),
            parsed=body,
            hint=hint,
            refused=None,
            received_at="0",
            apply=True,
            barrier=True,
            covers_broker=False,
            parked_status=202,
        )
        self.resume(Exec("complete", "", stage="receiving", redeliverable=False, plan=plan(webhook)))

    def resume(self, ex: Exec, result: Any = None, error: Exception | None = None) -> None:
        """Run ``ex``'s plan on until it answers, or until a claimed completion's barrier or
        dispatch: left ``pending`` for a later step."""
        while True:
            try:
                effect = ex.plan.send(result) if error is None else ex.plan.throw(error)
            except StopIteration as answered:
                self.note(f"receiver_answer:{answered.value.status_code}")
                self.end_exec(ex)
                return
            if ex in self.execs and isinstance(effect, Durable | Dispatch):
                ex.pending = effect
                return
            result, error = self.receiver_effect(ex, effect), None

    def receiver_effect(self, ex: Exec, effect: Effect[Any]) -> Any:
        """One effect of the receiver's plan, as delivery.BlockingEffects does it."""
        match effect:
            case Apply(ref, parsed):
                verdict, now = BlockingApply(self.store)(ref, parsed)
                self.nen_applied(parsed["message_id"], parsed["status"], verdict)
                return verdict, now
            case End(ref, parsed, raw):
                ended = BlockingApply(self.store).end(ref, parsed, self.sealer.seal_if_enabled(raw))
                self.note(f"receiver_end:{ended.verdict}")
                self.nen_applied(parsed["message_id"], parsed["status"], ended.verdict)
                if ended.data:  # claimed
                    ex.holder, ex.stage, ex.data = ended.holder, "claimed", ended.data
                    self.execs.append(ex)
                    self.claimed(ex)
                return ended
            case Durable():
                self.barrier()  # its 2xx comes next
            case Release(ref, holder):
                self.store.release_completion(ref.run_id, holder, ref.attempt)
            case Publish():
                pass  # queued for ingest_webhook: the mailbox's "task" path stands for it
            case _:
                raise AssertionError(f"the receiver's plan asked for {effect}")
        return None

    def receiver_durable(self, ex: Exec) -> bool:
        """A claimed completion's plan up to its dispatch: through the barrier if it waits on one
        (a rolled back write fails it: the plan releases the claim, 503). False: it answered."""
        if isinstance(ex.pending, Durable):
            if ex.lost_write:
                self.resume(ex, error=NotDurable("a rollback lost this execution's writes"))
            else:
                self.barrier()
                self.resume(ex)
        return ex in self.execs and isinstance(ex.pending, Dispatch)

    # -- complete_run ---------------------------------------------------------------------------------
    def claimed(self, ex: Exec) -> None:
        self.wrote(ex)
        ex.attempt = int(ex.data.get("redrives") or 0)
        assert ex.attempt not in self.mirror.sent, "a completion marked sent was claimed again"

    def complete_claim(self, ex: Exec) -> None:
        claim = self.store.claim_completion(self.run_id, ex.holder)
        self.note(f"claim_completion:{claim.verdict}")
        if claim.verdict != "claimed":
            self.end_exec(ex)
            return
        ex.stage, ex.data = "claimed", claim.data
        self.claimed(ex)

    def complete_dispatch(self, ex: Exec) -> None:
        if ex.plan is not None:  # the receiver's: its plan's barrier, then the publish
            if not self.receiver_durable(ex):
                return
        elif ex.lost_write:  # the barrier before the publish failed
            self.end_exec(ex, redeliver=True)  # a task's message comes back
            return
        else:
            self.barrier()
        self.record_dispatch(ex)
        ex.stage = "dispatched"

    def complete_finish(self, ex: Exec) -> None:
        if self.store.finish_completion(self.run_id, ex.task_id, ex.holder, ex.attempt):
            now = int(self.raw().get("redrives") or 0)
            assert now == ex.attempt, f"attempt {ex.attempt}'s dispatcher marked attempt {now} sent"
            self.mirror.sent.add(ex.attempt)
        if ex.plan is not None:
            self.resume(ex, True)  # dispatch_here done: the plan answers
        self.end_exec(ex)

    def complete_release(self, ex: Exec) -> None:
        """The broker refused the callback: release, and the task retries (same task id); a
        receiver hands it to complete_run after its barrier (completion.dispatch_here), a message
        of its own, and answers."""
        if ex.plan is not None and not self.receiver_durable(ex):
            return
        self.store.release_completion(self.run_id, ex.holder, ex.attempt)
        self.end_exec(ex, redeliver=True)
        if ex.plan is not None:
            self.add_exec("complete")
            self.resume(ex, True)

    # -- the sweep and the operator -----------------------------------------------------------------
    def sweep_read(self) -> None:
        data = self.raw()
        self.sweeps.append((data, reconcile.decide(data, self.clock.now, self.settings).action))

    def sweep_act(self, index: int) -> None:
        """sweep._act on a decision taken earlier (it may be stale by now)."""
        data, action = self.sweeps.pop(index % len(self.sweeps))
        self.note(f"sweep:{action}")
        if action == reconcile.RESUBMIT:
            self.add_exec("submit")
        elif action == reconcile.COMPLETE:
            self.add_exec("complete")
        elif action == reconcile.POLL:
            self.poll()
        elif action == reconcile.EXPIRE_UNKNOWN:
            self.end_run(None, "submit_failed", "reconcile:unknown_timeout", expect="unknown")
        elif action == reconcile.TIMEOUT:
            our = data.get("status") in ("queued", "unknown")
            end = "submit_failed" if our else "failed"
            if self.end_run(None, end, "reconcile:run_timeout", expect=data.get("status")) == "maybe_sent":
                self.park_unknown(None, "reconcile:run_timeout")  # sweep.py: a POST may have landed

    def poll(self) -> None:
        """retrieval.poll: Nen's current word for the bound messageId, applied at a later step."""
        data = self.raw()
        run = self.nen.get(data.get("message_id", ""))
        if is_terminal(data["status"]) or run is None or run.progress == 0:
            return
        self.applies.append((run.message_id, self.nen_word(run), "poll"))

    def apply_later(self, index: int) -> None:
        """The apply of an ingest that found the run by its messageId, or of a poll's answer."""
        self.apply_nen(*self.applies.pop(index % len(self.applies)))

    def redrive(self, force: bool) -> None:
        verdict, _ = self.store.redrive(self.run_id, force=force)
        self.note(f"redrive:{verdict}")
        if verdict == "ok":
            self.add_exec("submit")

    def lapse(self, ticks: float) -> None:
        self.clock.now += ticks


def stage_execs(world: World, kind: str, stage: str) -> list[Exec]:
    return [e for e in world.execs if e.kind == kind and e.stage == stage]


def pick(items: list[Any], index: int) -> Any:
    return items[index % len(items)]


def drain(world: Steps) -> None:
    """At the end of an example, with nothing crashing any more: every execution in flight has
    died (their messages lost), Nen finishes its runs and its webhooks come, the sweep and the
    tasks it queues run, time passes. The run's current attempt must end and its callback go
    out: nothing is stuck (late forever, not_terminal) and no callback is lost."""
    for ex in list(world.execs):
        world.end_exec(ex)
    world.snapshots.clear()
    for _ in range(12):
        data = world.raw()
        if is_terminal(data["status"]) and data.get("completion") == "sent":
            break
        for run in world.nen.values():
            while run.progress < 2:
                run.progress += 1
                world.mailbox.append((run.message_id, world.nen_word(run)))
        for i in range(len(world.mailbox)):
            world.deliver(i, "task")
        world.lapse(21.0)
        world.sweep_read()
        world.sweep_act(-1)
        while world.applies:
            world.apply_later(0)
        _run_all(world)
    data = world.raw()
    attempt = int(data.get("redrives") or 0)
    assert is_terminal(data["status"]) and data["completion"] == "sent", f"stuck: {data['status']}"
    assert any(d["attempt"] == attempt for d in world.dispatches), f"attempt {attempt}: no callback"


def _run_all(world: Steps) -> None:
    """Every execution waiting runs to its end, nothing in between."""
    for ex in list(world.execs):
        if ex.kind == "submit" and ex.stage == "new":
            world.submit_claim(ex)
        if ex.kind == "submit" and ex.stage == "claimed":
            world.submit_post(ex, "accepted", "success")
        if ex.kind == "submit" and ex.stage == "accepted":
            world.submit_bind(ex)
        if ex.kind == "complete" and ex.stage == "new":
            world.complete_claim(ex)
        if ex.kind == "complete" and ex.stage == "claimed":
            world.complete_dispatch(ex)
        if ex.kind == "complete" and ex.stage == "dispatched":
            world.complete_finish(ex)
