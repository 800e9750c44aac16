"""The run store's Lua scripts: their sources, and one typed arguments object per script.

A script's ARGV is positional; written out by hand at each call, its order drifts from the
script's. So each script has a frozen dataclass here whose fields are its ARGV, named and
ordered as the header of its file under lua/ names them::

    -- KEYS: run hash, secure key, timers
    -- ARGV: status, now, payload ('' = keep), source, retention, error ('' = none), next check
    --       (a list goes on over lines indented past the ``--``)

In a header a name's spaces read as underscores and a parenthesis is a note; ``fields...`` is
a variadic tail. tests/test_store_scripts.py holds every dataclass to its header. A field
declared with ``metadata=KEY_ONLY`` is not an ARGV: it names the record whose KEYS ``keys``
builds. A field left ``None`` is not sent (a trailing optional argument); a ``SPREAD`` field
is sent as its (field, value) pairs, flattened.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from functools import cache
from importlib import resources
from typing import Any, ClassVar

from nen_celery.domain.runstate import lua_guards
from nen_celery.store.keys import KeyLayout

KEY_ONLY = {"key_only": True}  # builds the KEYS, not sent as an ARGV
SPREAD = {"spread": True}  # a variadic tail of (field, value) pairs


@cache
def script_source(name: str) -> str:
    """A Lua script's source: the guards generated from the state table, the shared functions
    of _common.lua, then its file under lua/."""
    lua = resources.files("nen_celery.store") / "lua"
    common = (lua / "_common.lua").read_text()
    return lua_guards() + common + "\n" + (lua / f"{name}.lua").read_text()


@cache
def argv_fields(cls: type[Script]) -> tuple[dataclasses.Field[Any], ...]:
    """The fields of ``cls`` that are ARGV, in ARGV order (cached: ingest is on the receiver's
    hot path)."""
    return tuple(f for f in dataclasses.fields(cls) if not f.metadata.get("key_only"))


def pairs(flat: list[Any]) -> dict[str, str]:
    """A Lua HGETALL reply (k1, v1, k2, v2, ...) as a dict."""
    return {str(flat[i]): str(flat[i + 1]) for i in range(0, len(flat), 2)}


@dataclasses.dataclass(frozen=True)
class Script(ABC):
    """One call of the script lua/<NAME>.lua: its KEYS from ``keys``, its ARGV the fields."""

    NAME: ClassVar[str]

    @abstractmethod
    def keys(self, layout: KeyLayout) -> list[str]:
        """The KEYS, in the order of the script's header."""

    def argv(self) -> list[Any]:
        out: list[Any] = []
        for f in argv_fields(type(self)):
            value = getattr(self, f.name)
            if f.metadata.get("spread"):
                out += [item for pair in value for item in pair]
            elif value is not None:
                out.append(value)
        return out

    def call(self, layout: KeyLayout) -> tuple[list[str], list[Any]]:
        """(KEYS, ARGV), as a script object or EVALSHA takes them."""
        return self.keys(layout), self.argv()


@dataclasses.dataclass(frozen=True)
class OnRunRecord(Script):
    """A script whose one key is the run's record (the run hash)."""

    run_id: str = dataclasses.field(metadata=KEY_ONLY)

    def keys(self, layout: KeyLayout) -> list[str]:
        return [layout.run_key(self.run_id)]


# -- submitting a run ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class OnRunAndIndexes(Script):
    """A script that writes or removes a whole run: its record, the runs index, its secure
    params and its timer (the run id is its first ARGV too)."""

    run_id: str

    def keys(self, layout: KeyLayout) -> list[str]:
        rid = self.run_id
        return [layout.run_key(rid), layout.runs_key(rid), layout.secure_key(rid), layout.timers_key(rid)]


@dataclasses.dataclass(frozen=True)
class CreateArgs(OnRunAndIndexes):
    """The queued record (RunStore.create); only the record's non-empty fields are sent."""

    NAME: ClassVar[str] = "create"
    now: float
    secure_token: str
    retention: int
    next_check: float
    fields: tuple[tuple[str, str], ...] = dataclasses.field(metadata=SPREAD)


@dataclasses.dataclass(frozen=True)
class AdoptArgs(OnRunRecord):
    """A second start_run of the same run takes it (compare-and-set on what it read)."""

    NAME: ClassVar[str] = "adopt"
    workflow_id: str
    params: str


@dataclasses.dataclass(frozen=True)
class UncreateArgs(OnRunAndIndexes):
    """Undo this start_run call's create, unless the run moved on or was adopted."""

    NAME: ClassVar[str] = "uncreate"
    creator: str


@dataclasses.dataclass(frozen=True)
class ClaimSubmitArgs(Script):
    NAME: ClassVar[str] = "claim_submit"
    run_id: str = dataclasses.field(metadata=KEY_ONLY)
    now: float
    lease: float
    retry_ambiguous: str
    holder: str
    execution: str
    mark_post: str

    def keys(self, layout: KeyLayout) -> list[str]:
        rid = self.run_id
        return [layout.run_key(rid), layout.timers_key(rid), layout.secure_key(rid)]


@dataclasses.dataclass(frozen=True)
class BeginPostArgs(OnRunRecord):
    NAME: ClassVar[str] = "begin_post"
    now: float
    execution: str


@dataclasses.dataclass(frozen=True)
class PostNotSentArgs(OnRunRecord):
    NAME: ClassVar[str] = "post_not_sent"
    execution: str
    untried: str


@dataclasses.dataclass(frozen=True)
class HolderHsetArgs(OnRunRecord):
    """Set one submit field, only for the execution holding the submit lease."""

    NAME: ClassVar[str] = "holder_hset"
    execution: str
    field: str
    value: int | str


@dataclasses.dataclass(frozen=True)
class RedriveArgs(Script):
    NAME: ClassVar[str] = "redrive"
    run_id: str = dataclasses.field(metadata=KEY_ONLY)
    now: float
    next_check: float
    force: str

    def keys(self, layout: KeyLayout) -> list[str]:
        rid = self.run_id
        return layout.run_keys(rid)


# -- binding Nen's messageId and taking webhooks in ----------------------------------------------
@dataclasses.dataclass(frozen=True)
class BindArgs(Script):
    NAME: ClassVar[str] = "bind"
    run_id: str = dataclasses.field(metadata=KEY_ONLY)
    message_id: str
    now: float
    accepted: str
    next_check: float
    retention: int
    processing_check: float
    attempt: str = ""

    def keys(self, layout: KeyLayout) -> list[str]:
        return layout.run_keys(self.run_id)


@dataclasses.dataclass(frozen=True)
class IndexArgs(Script):
    """The messageId index, on the messageId's slot (bind's other half, a hint's claim)."""

    NAME: ClassVar[str] = "index"
    message_id: str = dataclasses.field(metadata=KEY_ONLY)
    run_id: str
    ttl: int
    mode: str

    def keys(self, layout: KeyLayout) -> list[str]:
        return [layout.msg_key(self.message_id), layout.parked_key(self.message_id)]


@dataclasses.dataclass(frozen=True)
class ParkArgs(Script):
    NAME: ClassVar[str] = "park"
    body: str
    ttl: int
    max_parked: int
    message_id: str
    due_at: float

    def keys(self, layout: KeyLayout) -> list[str]:
        mid = self.message_id
        return [layout.msg_key(mid), layout.parked_key(mid), layout.parked_due_key(mid)]


@dataclasses.dataclass(frozen=True)
class IngestArgs(Script):
    """A webhook that named its run. The receiver runs it too, on its asyncio client (web/apply.py)."""

    NAME: ClassVar[str] = "ingest"
    run_id: str = dataclasses.field(metadata=KEY_ONLY)
    message_id: str
    status: str
    now: float
    payload: str
    source: str
    retention: int
    next_check: float
    keep_ttl: int
    max_kept: int
    sealed_body: str
    completion_lease: float
    holder: str
    attempt: int
    workflow_id: str
    claimed: str
    nonce: str

    def keys(self, layout: KeyLayout) -> list[str]:
        return layout.run_keys(self.run_id)


# -- statuses and completion ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ApplyArgs(Script):
    NAME: ClassVar[str] = "apply"
    run_id: str = dataclasses.field(metadata=KEY_ONLY)
    status: str
    now: float
    payload: str
    source: str
    retention: int
    error: str
    next_check: float
    expect: str = ""
    message_id: str = ""

    def keys(self, layout: KeyLayout) -> list[str]:
        rid = self.run_id
        return [layout.run_key(rid), layout.secure_key(rid), layout.timers_key(rid)]


@dataclasses.dataclass(frozen=True)
class ClaimCompletionArgs(OnRunRecord):
    NAME: ClassVar[str] = "claim_completion"
    now: float
    lease: float
    holder: str


@dataclasses.dataclass(frozen=True)
class ReleaseCompletionArgs(OnRunRecord):
    NAME: ClassVar[str] = "release_completion"
    holder: str
    attempt: int


@dataclasses.dataclass(frozen=True)
class FinishCompletionArgs(Script):
    NAME: ClassVar[str] = "finish_completion"
    now: float
    callback_task_id: str
    run_id: str
    holder: str
    attempt: int

    def keys(self, layout: KeyLayout) -> list[str]:
        return [layout.run_key(self.run_id), layout.timers_key(self.run_id)]


# -- locks and leases ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ReconcileLockArgs(Script):
    """Compare-and-delete of one key: the sweep's lock, or a messageId index entry."""

    NAME: ClassVar[str] = "reconcile_lock"
    key: str = dataclasses.field(metadata=KEY_ONLY)
    token: str

    def keys(self, layout: KeyLayout) -> list[str]:
        return [self.key]


@dataclasses.dataclass(frozen=True)
class CallbackLeaseArgs(Script):
    """One callback execution per (run, attempt), fenced: ``token`` is the execution's fence
    token (the claim's number; a claim sends 0 and ``retention``, the fence counter's)."""

    NAME: ClassVar[str] = "callback_lease"
    run_id: str = dataclasses.field(metadata=KEY_ONLY)
    attempt: str = dataclasses.field(metadata=KEY_ONLY)
    mode: str
    holder: str
    ttl: int | None = None
    token: int | None = None
    retention: int | None = None

    def keys(self, layout: KeyLayout) -> list[str]:
        return list(layout.callback_keys(self.run_id, self.attempt))


@dataclasses.dataclass(frozen=True)
class CountFailureArgs(OnRunRecord):
    """One more failed dispatch of a run's callback, counted on its record if it exists."""

    NAME: ClassVar[str] = "count_failure"
    field: str


# Every script RunStore runs, by name
ARGS: dict[str, type[Script]] = {
    cls.NAME: cls
    for cls in (
        CreateArgs,
        AdoptArgs,
        UncreateArgs,
        ClaimSubmitArgs,
        BeginPostArgs,
        HolderHsetArgs,
        PostNotSentArgs,
        RedriveArgs,
        BindArgs,
        IndexArgs,
        ParkArgs,
        IngestArgs,
        ApplyArgs,
        ClaimCompletionArgs,
        ReleaseCompletionArgs,
        FinishCompletionArgs,
        ReconcileLockArgs,
        CallbackLeaseArgs,
        CountFailureArgs,
    )
}
