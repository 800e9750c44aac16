"""What the receiver does with a checked webhook: every decision once, for both of its drivers.

Why sans-I/O: the receiver runs a webhook from a thread (Flask, Django, the ASGI app's thread
pool) or from the event loop, and both must give the same answers behind the same barriers: the
durability barrier before any 2xx and before a callback's publish, a claim released when that
barrier fails, 503 when nothing could be confirmed or queued. ``plan(webhook)`` is a generator:
it yields the effects it needs (apply ingest.lua, end the run and claim its completion, wait for
durability, publish the ingest message, look the messageId up, dispatch a claimed completion,
release a claim), is sent each one's result or thrown its error, and returns the answer. It
reads and writes nothing itself (it logs, and counts the answer); delivery.py's drivers run the
effects, and a test can run it against a table of results.
"""

from __future__ import annotations

import logging
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import redis

from nen_celery import observe
from nen_celery.domain import hints
from nen_celery.domain.hints import RunRef
from nen_celery.domain.status import is_terminal
from nen_celery.lifecycle.webhook import MISFITS, log_hinted
from nen_celery.web.answers import APPLIED, IGNORED, NOT_DURABLE, NOT_QUEUED, QUEUED, Answer
from nen_celery.web.apply import BINDS, Ended

log = logging.getLogger("nen_celery.web")

T = TypeVar("T")

# a lookup that fails with these is not fatal: the webhook is queued anyway
LOOKUP_ERRORS = (redis.RedisError, OSError)


class Effect(Generic[T]):
    """One thing the plan needs done, whose result is a ``T`` (or an exception)."""

    __slots__ = ()


@dataclass(frozen=True, slots=True)
class Probe(Effect[bool]):
    """Probe the durability barrier (NEN_DURABILITY=auto): whether it is on."""


@dataclass(frozen=True, slots=True)
class Apply(Effect[tuple[str, str]]):
    """ingest.lua for a ``processing`` webhook: (verdict, status now)."""

    ref: RunRef
    parsed: dict[str, Any] = field(repr=False)  # never in a repr: the body holds presigned URLs


@dataclass(frozen=True, slots=True)
class End(Effect[Ended]):
    """ingest.lua for a terminal webhook, claiming the completion it makes pending."""

    ref: RunRef
    parsed: dict[str, Any] = field(repr=False)  # never in a repr: the body holds presigned URLs
    body: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Durable(Effect[None]):
    """Wait until every write so far is durable (raises if not in time)."""


@dataclass(frozen=True, slots=True)
class Publish(Effect[None]):
    """Queue ingest_webhook for the webhook (for its hinted run, if ``ref``)."""

    parsed: dict[str, Any] = field(repr=False)  # never in a repr: the body holds presigned URLs
    body: bytes = field(repr=False)
    ref: RunRef | None


@dataclass(frozen=True, slots=True)
class Lookup(Effect[bool]):
    """Whether the messageId is bound to a run."""

    message_id: str


@dataclass(frozen=True, slots=True)
class Dispatch(Effect[bool]):
    """completion.dispatch_here: publish the claimed completion's callback, mark it sent (or hand
    it to complete_run); False if neither happened."""

    ref: RunRef
    holder: str
    data: dict[str, str]
    received_at: str


@dataclass(frozen=True, slots=True)
class Release(Effect[None]):
    """Release a completion claim this webhook took."""

    ref: RunRef
    holder: str


@dataclass(frozen=True, slots=True)
class Webhook:
    """One checked webhook and what its plan depends on in this receiver."""

    body: bytes = field(repr=False)
    parsed: dict[str, Any] = field(repr=False)  # never in a repr: the body holds presigned URLs
    hint: RunRef | None  # the verified run hint, if any
    refused: hints.Hint | None  # a hint whose token was missing or wrong (then ``hint`` is None)
    received_at: str  # when it came in (repr of a time.time()): the webhook -> callback metric
    apply: bool  # NEN_WEBHOOK_APPLY_PROCESSING: a hinted one is applied here, not queued
    barrier: bool | None  # the durability barrier is on; None: not probed yet
    covers_broker: bool  # the broker is the run store's server: a queued webhook waits too
    parked_status: int  # NEN_WEBHOOK_PARKED_STATUS

    def log_ids(self) -> dict[str, str | None]:
        """The run ids the drivers bind on every log line of this webhook (runlog)."""
        workflow = self.parsed.get("workflow_id")
        return {
            "message_id": str(self.parsed["message_id"]),
            "workflow_id": workflow if isinstance(workflow, str) else None,
            "run_id": self.hint.run_id if self.hint else None,
        }


Plan = Generator[Effect[Any], Any, Answer]
Step = Generator[Effect[Any], Any, T]


def do(effect: Effect[T]) -> Step[T]:
    """Yield ``effect``; its result (typed): ``result = yield from do(effect)``."""
    result: T = yield effect
    return result


def plan(webhook: Webhook) -> Plan:
    """The answer to a checked webhook, with the effects it takes; counted once."""
    answer = yield from _decide(webhook)
    observe.webhook_answered(answer.status_code, answer.word, webhook.refused is not None)
    return answer


def _decide(w: Webhook) -> Plan:
    if w.refused is not None:
        _hint_refused(w.parsed, w.refused)
    barrier = w.barrier
    if barrier is None:
        try:
            barrier = yield from do(Probe())
        except Exception as exc:  # the run store is not reachable: nothing can be confirmed on it
            if w.covers_broker:
                return _not_durable(w.parsed, exc)
            # else an apply waits for it itself (queued if it fails); a queued webhook need not
    if w.hint is None:
        return (yield from _looked_up(w, barrier))
    if w.apply:
        applied = yield from _applied_here(w, w.hint, barrier)
        if applied is not None:
            return applied
    return (yield from _queued(w, w.hint, barrier))


def _applied_here(w: Webhook, ref: RunRef, barrier: bool | None) -> Step[Answer | None]:
    """Apply the webhook here: its answer once durable (a terminal one's: once its callback is out
    too, or handed to complete_run), a 503, or None: queue it instead."""
    ended: Ended | None = None
    try:
        if is_terminal(str(w.parsed["status"])):
            ended = yield from do(End(ref, w.parsed, w.body))
            verdict, now = ended.verdict, ended.now
        else:
            verdict, now = yield from do(Apply(ref, w.parsed))
        if barrier is None and verdict != BINDS:
            yield from do(Durable())  # the barrier that could not be probed: failing, queued
    except Exception as exc:  # any run-store error (a cluster's are not RedisErrors), a timeout
        _apply_failed(w.parsed, ref, exc)
        if ended is not None and ended.data:
            yield from _release(ref, ended.holder)
        return None
    if verdict == BINDS:
        return None
    failed = (yield from _durable(w.parsed)) if barrier else None
    if ended is not None and ended.data:  # this webhook claimed the completion
        if failed is not None:
            yield from _release(ref, ended.holder)  # Nen redelivers: that copy claims it again
        elif not (yield from do(Dispatch(ref, ended.holder, ended.data, w.received_at))):
            failed = NOT_QUEUED
    if failed is not None:
        return failed
    return answer_for(verdict, now, ref, w.parsed, w.parked_status)


def _queued(w: Webhook, ref: RunRef | None, barrier: bool | None) -> Step[Answer]:
    """Queue ingest_webhook; 503 when the broker cannot take it (Nen redelivers). On the run
    store's server, the message is made durable before the 200; another broker's is its own."""
    try:
        yield from do(Publish(w.parsed, w.body, ref))
    except Exception as exc:  # broker down or slow: any kombu/redis/socket error
        log.error(
            "webhook for message %s not queued: %s: %s", w.parsed["message_id"], type(exc).__name__, exc
        )
        return NOT_QUEUED
    if barrier and w.covers_broker:
        return (yield from _durable(w.parsed)) or QUEUED
    return QUEUED


def _looked_up(w: Webhook, barrier: bool | None) -> Step[Answer]:
    """No usable hint: look the messageId up, queue the webhook whatever the lookup said; an
    unbound messageId is answered as parked (NEN_WEBHOOK_PARKED_STATUS)."""
    message_id = str(w.parsed["message_id"])
    known: bool | None
    try:
        known = yield from do(Lookup(message_id))
    except LOOKUP_ERRORS as exc:
        log.warning(
            "webhook for message %s: run lookup failed (%s); queued anyway", message_id, type(exc).__name__
        )
        known = None
    answer = yield from _queued(w, None, barrier)
    if answer.status_code == 200 and known is False:
        log.info("webhook %s for unbound message %s queued to be parked", w.parsed["status"], message_id)
        answer = Answer(w.parked_status, {"status": "parked"})
    return answer


def _durable(parsed: dict[str, Any]) -> Step[Answer | None]:
    """None once what this webhook wrote is durable; else NOT_DURABLE (logged)."""
    try:
        yield from do(Durable())
    except Exception as exc:  # not confirmed in time, or the run store is down
        return _not_durable(parsed, exc)
    return None


def _release(ref: RunRef, holder: str) -> Step[None]:
    try:
        yield from do(Release(ref, holder))
    except Exception as exc:  # the run store is down: the claim lapses, the sweep takes it over
        log.warning("run %s: completion claim not released (%s)", ref.run_id, type(exc).__name__)


def answer_for(verdict: str, now: str, ref: RunRef, parsed: dict[str, Any], parked_status: int) -> Answer:
    """The answer to Nen for ingest.lua's verdict, logged as ``ingest_webhook`` logs it."""
    status, message_id = str(parsed["status"]), str(parsed["message_id"])
    log_hinted(log, verdict, now, ref.run_id, ref.attempt, status, message_id)
    if verdict in MISFITS:
        return IGNORED
    if verdict == "parked":
        return Answer(parked_status, {"status": "parked"})
    return APPLIED


def _not_durable(parsed: dict[str, Any], exc: BaseException) -> Answer:
    log.error(
        "webhook for message %s not confirmed durable: %s: %s; 503, Nen redelivers",
        parsed["message_id"],
        type(exc).__name__,
        exc,
    )
    return NOT_DURABLE


def _apply_failed(parsed: dict[str, Any], ref: RunRef, exc: BaseException) -> None:
    log.warning(
        "webhook %s for run %s: applying it failed (%s); queued instead",
        parsed["status"],
        ref.run_id,
        type(exc).__name__,
    )


def _hint_refused(parsed: dict[str, Any], hint: hints.Hint) -> None:
    # the token itself is never logged: only whether there was one
    log.warning(
        "webhook %s for message %s names run %s (attempt %d) with a %s token: hint ignored, "
        "the run is looked up by messageId",
        parsed["status"],
        parsed["message_id"],
        hint.run_id,
        hint.attempt,
        "wrong" if hint.token else "missing",
    )
