"""What a callback's dispatch leaves on the store: failures counted on the run record, the
dead-letter list (lifecycle/deadletter.py), and the lease that lets one execution of a callback
run at a time (celery/callback_task.py's CallbackTask)."""

from __future__ import annotations

import json
from typing import Any

from nen_celery.store.core import StoreCore
from nen_celery.store.scripts import CallbackLeaseArgs, CountFailureArgs


class CallbackState(StoreCore):
    # -- callbacks that cannot be dispatched ----------------------------------------------------
    def note_callback_failure(self, run_id: str, attempt: int) -> int:
        """Count one failed dispatch of the run's callback (of redrive ``attempt``) on its record;
        the count so far, or -1 if the record is gone (no partial record is left behind)."""
        return int(self._call(CountFailureArgs(run_id, f"callback_failures:{attempt}")))

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

    # -- one execution of a callback at a time, fenced -------------------------------------------
    def claim_callback(self, run_id: str, attempt: str, holder: str, lease: float) -> tuple[str, int]:
        """(``claimed``, its fence token) to run it; (``busy``, 0) while another execution
        holds a live lease; (``done``, 0) once one completed it. Every claim of (run, attempt)
        takes a token greater than the claims before it."""
        ttl = max(1, int(lease * 1000))
        retention = self.settings.retention_seconds
        args = CallbackLeaseArgs(run_id, attempt, "claim", holder, ttl, token=0, retention=retention)
        verdict, token = self._call(args)
        return str(verdict), int(token)

    def renew_callback(self, run_id: str, attempt: str, holder: str, token: int, lease: float) -> int:
        """Extend the lease of ``holder``'s claim ``token``: 1 (held), 2 (it had lapsed but no
        claim came since: taken back) or 0 (another claim came, or the callback is done: lost)."""
        ttl = max(1, int(lease * 1000))
        args = CallbackLeaseArgs(run_id, attempt, mode="renew", holder=holder, ttl=ttl, token=token)
        return int(self._call(args))

    def finish_callback(self, run_id: str, attempt: str, holder: str, token: int) -> bool:
        """The callback of (run, attempt) reached its end: later copies skip it. Only the
        latest claim's execution marks it (False: a later claim holds it and decides)."""
        ttl = self.settings.retention_seconds
        args = CallbackLeaseArgs(run_id, attempt, mode="finish", holder=holder, ttl=ttl, token=token)
        return bool(self._call(args))

    def release_callback(self, run_id: str, attempt: str, holder: str, token: int) -> bool:
        """Drop ``holder``'s lease of claim ``token`` without marking done (its retry may run at once)."""
        args = CallbackLeaseArgs(run_id, attempt, mode="release", holder=holder, ttl=0, token=token)
        return bool(self._call(args))
