"""RunStore: run records, the messageId index and every state change, over Redis.

Each state change is one Lua script (lua/, its arguments typed in scripts.py) on keys of one
slot (keys.py has the layout). RunStore is put together from focused parts, each on its own
module: this one holds a run's submit, status and completion; webhooks.py binding and webhooks;
reads.py reading records; sweeps.py the reconcile sweep's timers and lock; callback_state.py
callback leases and dead letters; core.py what they share.
"""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from nen_celery.domain.hints import new_nonce
from nen_celery.store.callback_state import CallbackState
from nen_celery.store.reads import Reads, callbacks
from nen_celery.store.scripts import (
    AdoptArgs,
    ApplyArgs,
    BeginPostArgs,
    ClaimCompletionArgs,
    ClaimSubmitArgs,
    CreateArgs,
    FinishCompletionArgs,
    HolderHsetArgs,
    PostNotSentArgs,
    RedriveArgs,
    ReleaseCompletionArgs,
    UncreateArgs,
    pairs,
    script_source,
)
from nen_celery.store.sweeps import Sweeps
from nen_celery.store.webhooks import KEPT_MAX, PARKED_MAX, Webhooks

__all__ = ["KEPT_MAX", "PARKED_MAX", "Claim", "RunStore", "callbacks", "script_source"]


class Claim(NamedTuple):
    """A claim's answer: verdict and detail, and the record read in the same script."""

    verdict: str
    detail: str
    data: dict[str, str]
    secure: str | None  # sealed secure params (claim_submit only)

    @property
    def post_counted(self) -> bool:
        """claim_submit counted the first POST as possibly sent (``mark_post``): whoever then
        proves it never left must uncount it (``post_not_sent``)."""
        return self.verdict == "ok" and self.detail not in ("", "0")


class RunStore(Webhooks, Reads, Sweeps, CallbackState):
    # -- submit -------------------------------------------------------------------------------
    def create(
        self,
        run_id: str,
        workflow_id: str,
        params: dict[str, Any],
        sealed_secure: str | None,
        on_complete: dict[str, Any] | None,
        on_failure: dict[str, Any] | None,
        next_check: float | None = None,
        creator: str = "",
    ) -> bool:
        """Write the queued record (and sealed secure params); False if run_id already exists.
        ``creator``: a token of the start_run call, so that its undo (``uncreate``) removes only
        what that call created."""
        fields: dict[str, str] = {
            "run_id": run_id,
            "nonce": new_nonce(),  # in the run's hint (hints.py): a reused run id gets another
            "creator": creator,
            "workflow_id": workflow_id,
            "params": json.dumps(params),
            "on_complete": json.dumps(on_complete) if on_complete else "",
            "on_failure": json.dumps(on_failure) if on_failure else "",
        }
        now = self.clock.time()
        args = CreateArgs(
            run_id=run_id,
            now=now,
            secure_token=sealed_secure or "",
            retention=self.settings.retention_seconds,
            next_check=next_check if next_check is not None else now + self.settings.queued_grace,
            fields=tuple((k, v) for k, v in fields.items() if v),  # an absent field reads as ""
        )
        return bool(self._call(args))

    def adopt(self, run_id: str, workflow_id: str, params: str) -> bool:
        """A second start_run of ``run_id`` takes the run as read (``params`` as stored): False
        if the record is gone or changed since that read."""
        return bool(self._call(AdoptArgs(run_id, workflow_id=workflow_id, params=params)))

    def uncreate(self, run_id: str, creator: str) -> bool:
        """Undo ``creator``'s create whose submit could not be queued; False (left as it is) when
        another call created it, it moved on, or another start_run adopted it."""
        return bool(self._call(UncreateArgs(run_id, creator)))

    def delete(self, run_id: str) -> None:
        """Remove a run's record outright (operators' and tests' clean-up)."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.delete(self.run_key(run_id))  # one key per DELETE: a Cluster pipeline allows no more
        pipe.delete(self.secure_key(run_id))
        pipe.zrem(self.runs_key(run_id), run_id)
        pipe.zrem(self.timers_key(run_id), run_id)
        pipe.execute()

    def claim_submit(
        self, run_id: str, lease: float, holder: str, execution: str, *, mark_post: bool = False
    ) -> Claim:
        """verdict ok | done | busy | ambiguous | missing; with ok, the record and sealed secure params.

        ``holder`` is the task id (its own redelivery may take the lease back while no POST is
        marked); ``execution`` is unique per task execution and gates begin_post. ``mark_post``:
        count the first POST in the same script, as begin_post would (one round trip less per
        run), unless the run's sealed secure params are gone; ``Claim.post_counted`` tells.
        """
        res = self._call(
            ClaimSubmitArgs(
                run_id,
                now=self.clock.time(),
                lease=lease,
                retry_ambiguous="1" if self.settings.retry_unknown else "0",
                holder=holder,
                execution=execution,
                mark_post="1" if mark_post else "0",
            )
        )
        data = pairs(res[2]) if len(res) > 2 else {}
        secure = str(res[3]) if len(res) > 3 and res[3] else None
        return Claim(str(res[0]), str(res[1]), data, secure)

    def begin_post(self, run_id: str, execution: str) -> int:
        """Mark a later POST of the execution as possibly sent (``claim_submit`` with
        ``mark_post`` counted the first); returns the attempt number.

        -1: the run is no longer queued; -2: another execution holds the submit lease.
        """
        return int(self._call(BeginPostArgs(run_id, now=self.clock.time(), execution=execution)))

    def post_not_sent(self, run_id: str, execution: str, *, tried: bool = True) -> None:
        """The last POST counted surely never reached Nen: uncount it. ``tried``: the request
        was made (a connect error), so it stays in ``attempts``; else (the request was never
        made: the rate limiter, the barrier, building it) ``attempts`` is uncounted too. An
        earlier POST of the attempt whose fate is unknown stays counted (post_not_sent.lua)."""
        self._call(PostNotSentArgs(run_id, execution=execution, untried="0" if tried else "1"))

    def release_submit(self, run_id: str, execution: str) -> None:
        self._call(HolderHsetArgs(run_id, execution=execution, field="submit_lease_until", value=0))

    def open_secure(self, token: str | None) -> dict[str, str] | None:
        """The secure params a claim returned sealed (None if the run has none)."""
        if token is None:
            return None
        result: dict[str, str] = json.loads(self.sealer.open(token))
        return result

    def redrive(self, run_id: str, *, force: bool = False) -> tuple[str, str]:
        """Operator action: a new attempt for a run Nen never ran; (verdict, idempotency key).

        Verdict ok | missing | refused | no_secure | may_have_started (unless ``force``).
        Every field of the old attempt is cleared (redrive.lua), and its messageId's index entry
        freed if still this run's: that message's webhooks without a run hint are then parked,
        not applied to the new attempt (a new 202 that carries it again indexes it again).
        """
        now = self.clock.time()
        next_check = now + self.settings.queued_grace
        res = self._call(RedriveArgs(run_id, now=now, next_check=next_check, force="1" if force else "0"))
        if res[0] == "ok" and len(res) > 2 and res[2]:
            self.release_message(str(res[2]), run_id)
        return str(res[0]), str(res[1])

    # -- status and completion ----------------------------------------------------------------
    def apply(
        self,
        run_id: str,
        status: str,
        *,
        source: str,
        payload: Any = None,
        error: dict[str, Any] | None = None,
        next_check: float | None = None,
        expect: str | None = None,
        message_id: str | None = None,
    ) -> tuple[str, str, str]:
        """Move the run forward; returns (verdict, status now, completion state). ``expect``:
        the status the decision read; if the run has moved since, nothing changes (``stale``).
        ``message_id``: Nen's word is for that message; a run bound to another (or none) is
        left as it is (``foreign``)."""
        sealed = self.sealer.seal_if_enabled(json.dumps(payload).encode()) if payload is not None else ""
        now = self.clock.time()
        res = self._call(
            ApplyArgs(
                run_id,
                status=status,
                now=now,
                payload=sealed,
                source=source,
                retention=self.settings.retention_seconds,
                error=json.dumps(error) if error else "",
                next_check=next_check if next_check is not None else now + self.next_check_after(status),
                expect=expect or "",
                message_id=message_id or "",
            )
        )
        return str(res[0]), str(res[1]), str(res[2])

    def claim_completion(self, run_id: str, holder: str) -> Claim:
        """verdict claimed | busy | done | not_terminal | missing; with claimed, the record."""
        lease = self.settings.completion_lease
        res = self._call(ClaimCompletionArgs(run_id, now=self.clock.time(), lease=lease, holder=holder))
        return Claim(str(res[0]), str(res[1]), pairs(res[2]) if len(res) > 2 else {}, None)

    def release_completion(self, run_id: str, holder: str, attempt: int) -> bool:
        """``holder`` could not dispatch ``attempt``'s callback: claimable again."""
        return bool(self._call(ReleaseCompletionArgs(run_id, holder=holder, attempt=attempt)))

    def finish_completion(self, run_id: str, callback_task_id: str, holder: str, attempt: int) -> bool:
        """Mark ``holder``'s claimed completion of ``attempt`` (the record's redrives it
        dispatched for) sent once the broker took the callback (or there is none): from then on
        nothing dispatches it again. False: not this holder's claim of that attempt."""
        done = FinishCompletionArgs(
            now=self.clock.time(),
            callback_task_id=callback_task_id,
            run_id=run_id,
            holder=holder,
            attempt=attempt,
        )
        return bool(self._call(done))
