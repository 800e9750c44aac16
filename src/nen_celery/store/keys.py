"""Where the run store keeps things: every Redis key name, and the shard each id belongs to.

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
- ``<p>:run:{k}:<run_id>:callback:<attempt>:lease`` / ``...:done`` / ``...:fence``  one callback
                                        execution at a time (CallbackTask), its fence tokens
- ``<p>:runs:{k}``                      zset run_id by creation time (listing)
- ``<p>:timers:{k}``                    zset run_id by next reconcile check (sweeps read due runs only)
- ``<p>:msg:{k}:<message_id>``          run_id bound to Nen's messageId (O(1) webhook lookup)
- ``<p>:parked:{k}:<message_id>``       webhooks that arrived before their messageId was bound
- ``<p>:parked:due:{k}``                zset message_id by next check of its parked webhooks
- ``<p>:reconcile:lock``                the sweep's lock (a single key)
- ``<p>:deadletter``                    callbacks that could not be dispatched (a single key)
- ``<p>:ratelimit``                     the shared token bucket towards Nen (nen/ratelimit.py)
- ``<p>:durable``                       the durability barrier's marker write (durable.py)
- ``<p>:clock``                         never written: routes the clock's TIME to one node
- ``<p>:failpoint:<name>``              testing only (runtime/faults.py; ``...:armed`` beside it)

docs/operations.md shows this layout as a table; tests/test_docs_true.py builds every key named
here for a sample id and holds that table to them.

``NEN_STORE_SHARDS`` is part of the layout: keep it fixed for the life of a deployment.
"""

from __future__ import annotations

import zlib


class KeyLayout:
    """Key names only: no I/O, so scripts.py builds each script's KEYS from it too."""

    def __init__(self, prefix: str, shards: int) -> None:
        self.prefix = prefix
        self.shards = shards

    def shard(self, some_id: str) -> int:
        return zlib.crc32(some_id.encode()) % self.shards

    # -- one run (all in the run's slot) ------------------------------------------------------
    def run_key(self, run_id: str) -> str:
        return f"{self.prefix}:run:{{{self.shard(run_id)}}}:{run_id}"

    # Every other key of a run is <run key>:<suffix>, the suffix's first word one of the words a
    # run id may not hold as a part (domain/run_ids.py), so no run id reaches another run's keys.
    def secure_key(self, run_id: str) -> str:
        return f"{self.run_key(run_id)}:secure"

    def run_parked_key(self, run_id: str) -> str:
        """Webhooks that named their run (hints.py) and came before its binding: a hash, one
        field per ``<status>:<message_id>`` (a ``processing`` one holds its workflow id; the
        others the sealed body), so copies of one webhook never push out another."""
        return f"{self.run_key(run_id)}:kept"

    def runs_key(self, run_id: str) -> str:
        return self._runs_key(self.shard(run_id))

    def timers_key(self, run_id: str) -> str:
        return self._timers_key(self.shard(run_id))

    def run_keys(self, run_id: str) -> list[str]:
        """The keys of one run that bind.lua and ingest.lua touch (one slot)."""
        return [
            self.run_key(run_id),
            self.secure_key(run_id),
            self.timers_key(run_id),
            self.run_parked_key(run_id),
        ]

    def callback_keys(self, run_id: str, attempt: str) -> tuple[str, str, str]:
        """``<run key>:callback:<attempt>:lease``, ``...:done`` and ``...:fence`` (the counter of
        the claims' fence tokens), in the run's slot."""
        base = f"{self.run_key(run_id)}:callback:{attempt}"
        return f"{base}:lease", f"{base}:done", f"{base}:fence"

    # -- one messageId (all in the messageId's slot) --------------------------------------------
    def msg_key(self, message_id: str) -> str:
        return f"{self.prefix}:msg:{{{self.shard(message_id)}}}:{message_id}"

    def parked_key(self, message_id: str) -> str:
        return f"{self.prefix}:parked:{{{self.shard(message_id)}}}:{message_id}"

    def parked_due_key(self, message_id: str) -> str:
        return self._parked_due_key(self.shard(message_id))

    # -- per shard, and single keys ------------------------------------------------------------
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
    def clock_key(self) -> str:
        """Never written: it routes the clock's TIME to one node (clock.py)."""
        return f"{self.prefix}:clock"

    @property
    def reconcile_lock_key(self) -> str:
        return f"{self.prefix}:reconcile:lock"

    @property
    def deadletter_key(self) -> str:
        """``<p>:deadletter``: list of JSON entries, newest first (a single key)."""
        return f"{self.prefix}:deadletter"

    @property
    def ratelimit_key(self) -> str:
        """The token bucket (nen/ratelimit.py builds the same name: it may not import store)."""
        return f"{self.prefix}:ratelimit"

    @property
    def durable_key(self) -> str:
        """The durability barrier's marker (durable.py)."""
        return f"{self.prefix}:durable"

    def failpoint_key(self, name: str) -> str:
        """Testing only (runtime/faults.py)."""
        return f"{self.prefix}:failpoint:{name}"
