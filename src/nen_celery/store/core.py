"""What every part of RunStore shares: the client, the settings, how a script is run, and when
the reconcile sweep should next look at a run.

RunStore (runs.py) is assembled from focused parts (webhooks.py, reads.py, sweeps.py,
callback_state.py), each a subclass of StoreCore, so each can be read on its own.
"""

from __future__ import annotations

from typing import Any

import redis

from nen_celery.settings import Settings
from nen_celery.store.clock import TIME_SCRIPT, StoreClock
from nen_celery.store.keys import KeyLayout
from nen_celery.store.scripts import ARGS, Script, script_source
from nen_celery.store.sealer import Sealer


class StoreCore(KeyLayout):
    def __init__(self, client: redis.Redis, settings: Settings, sealer: Sealer) -> None:
        super().__init__(settings.key_prefix, settings.store_shards)
        self.redis = client
        self.settings = settings
        self.sealer = sealer
        self._scripts = {name: client.register_script(script_source(name)) for name in ARGS}
        self._time_script = client.register_script(TIME_SCRIPT)
        # every time a script compares or stores: the run store's, never this host's (clock.py)
        self.clock = StoreClock(self._read_time)

    def _read_time(self) -> tuple[int, int]:
        seconds, micros = self._time_script(keys=[self.clock_key])
        return int(seconds), int(micros)

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

    def _call(self, script: Script) -> Any:
        keys, argv = script.call(self)
        return self._scripts[script.NAME](keys=keys, args=argv)

    def _pipelined(self, scripts: list[Script]) -> list[Any]:
        """Several scripts in one round trip (single server only: keys in different slots).

        EVALSHA straight into the pipeline: redis-py's Script objects would add a SCRIPT EXISTS
        trip to every pipeline. A script the server lost (restart, SCRIPT FLUSH) is run again on
        its own; only those that failed are, so a script that consumed something is not re-run.
        """
        pipe = self.redis.pipeline(transaction=False)
        for script in scripts:
            keys, argv = script.call(self)
            pipe.evalsha(self._scripts[script.NAME].sha, len(keys), *keys, *argv)
        results: list[Any] = pipe.execute(raise_on_error=False)
        for i, script in enumerate(scripts):
            if isinstance(results[i], redis.exceptions.NoScriptError):
                results[i] = self._call(script)
            elif isinstance(results[i], Exception):
                raise results[i]
        return results
