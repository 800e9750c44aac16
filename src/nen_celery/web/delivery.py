"""A checked webhook's way to its run: applied here, queued for its hinted run, or looked up first.

Apart from ``verify`` because this is the part that does I/O (the run store, the broker) and
whose failures decide between 200, the parked status and 503. ``deliver`` takes its lookup,
publisher and applier as arguments; ``deliver_checked`` (a thread) and ``deliver_hinted`` (the
event loop) pass the process's own, from ``resources``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import redis

from nen_celery.domain import hints
from nen_celery.fastpath.direct_publish import DirectPublisher, Outgoing
from nen_celery.lifecycle.completion import dispatch_here
from nen_celery.lifecycle.webhook import RECEIVED_AT_HEADER
from nen_celery.logs import runlog
from nen_celery.runtime import metrics
from nen_celery.runtime.app import nen_task
from nen_celery.store.sealer import Sealer
from nen_celery.web import apply
from nen_celery.web.answers import NOT_DURABLE, NOT_QUEUED, QUEUED, Answer
from nen_celery.web.resources import (
    Durability,
    Lookup,
    async_apply,
    blocking_apply,
    broker_is_run_store,
    direct_publisher,
    durability,
    durability_made,
    run_lookup,
)
from nen_celery.web.verify import run_hint

if TYPE_CHECKING:
    from nen_celery.runtime.context import Context

log = logging.getLogger("nen_celery.web")


def ingest_message(
    sealer: Sealer,
    body: bytes,
    parsed: dict[str, Any],
    received_at: float | None,
    hint: hints.RunRef | None,
) -> Outgoing:
    """The ingest_webhook message for one verified webhook (its body sealed when a key is set)."""
    received_at = time.time() if received_at is None else received_at
    kwargs: dict[str, Any] = {}
    if hint:
        kwargs = {"run_id": hint.run_id, "attempt": hint.attempt}
        if hint.nonce:  # absent for a record made before records had one (hints.py)
            kwargs["nonce"] = hint.nonce
    return Outgoing(
        (sealer.seal_if_enabled(body),),
        kwargs,
        f"(message_id={parsed['message_id']!r}, status={parsed['status']!r})",
        repr(kwargs),
        {RECEIVED_AT_HEADER: repr(received_at)},
    )


def publish_with_celery(outgoing: Outgoing, publish_timeout: float, connection: Any = None) -> None:
    """``ingest_webhook.apply_async`` for brokers the direct publisher does not serve."""
    nen_task("ingest_webhook").apply_async(
        args=outgoing.args,
        kwargs=outgoing.kwargs,
        headers=outgoing.headers,
        argsrepr=outgoing.argsrepr,
        kwargsrepr=outgoing.kwargsrepr,
        retry=True,
        retry_policy={
            "max_retries": 2,
            "interval_start": 0.1,
            "interval_step": 0.2,
            "interval_max": publish_timeout / 2,
        },
        connection=connection,
    )


def _not_queued(parsed: dict[str, Any], exc: BaseException) -> Answer:
    log.error("webhook for message %s not queued: %s: %s", parsed["message_id"], type(exc).__name__, exc)
    return NOT_QUEUED


def enqueue(
    sealer: Sealer,
    body: bytes,
    parsed: dict[str, Any],
    publish_timeout: float,
    received_at: float | None = None,
    hint: hints.RunRef | None = None,
    publisher: DirectPublisher | None = None,
) -> Answer:
    """Queue ingest_webhook (with one LPUSH when ``publisher`` is given, else apply_async); 503
    when the broker cannot take it, so Nen redelivers."""
    outgoing = ingest_message(sealer, body, parsed, received_at, hint)
    try:
        if publisher is not None:
            publisher.publish(outgoing)
        else:
            publish_with_celery(outgoing, publish_timeout)
    except Exception as exc:  # broker down: any kombu/redis/socket error
        return _not_queued(parsed, exc)
    return QUEUED


def deliver_checked(ctx: Context, body: bytes, parsed: dict[str, Any], query: str | bytes = "") -> Answer:
    """``deliver`` with the process context's lookup, sealer and settings (blocking I/O)."""
    hint, refused = run_hint(ctx.settings, query)
    if refused is not None:
        _hint_refused(parsed, refused)
    applier = blocking_apply(ctx)
    barrier: Durability | None = None
    try:
        barrier = durability(ctx)  # the first call probes the run store (NEN_DURABILITY=auto)
    except Exception as exc:  # the run store is not reachable: nothing can be confirmed on it
        if broker_is_run_store(ctx):
            answer = _not_durable(parsed, exc)
            metrics.webhook_answered(answer.status_code, answer.body)
            return answer
        applier = _then_durable(ctx, applier)
    return deliver(
        run_lookup(ctx),
        ctx.sealer,
        body,
        parsed,
        ctx.settings.publish_timeout,
        ctx.settings.webhook_parked_status,
        hint,
        direct_publisher(ctx),
        applier,
        hint_refused=refused is not None,
        durability=barrier,
    )


def _then_durable(ctx: Context, applier: apply.BlockingApply | None) -> apply.BlockingApply | None:
    """``applier`` followed by the barrier it could not be probed for: if the run store is back
    the apply waits for it; if not, the apply fails as a whole and the webhook is queued instead
    (on a broker of its own durability), as for any failed apply."""
    if applier is None:
        return None
    return apply.BlockingApply(applier.store, after=lambda: durability(ctx).wait())


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


async def deliver_hinted(
    ctx: Context, body: bytes, parsed: dict[str, Any], query: str | bytes
) -> Answer | None:
    """``deliver`` without a thread: a hinted webhook pushed (or, ``processing``, applied) from
    the event loop, or None when this needs the blocking path (no hint, no direct publisher for
    this broker, or a clustered run store)."""
    hint, _ = run_hint(ctx.settings, query)
    if hint is None:
        return None  # none, or refused: the thread path looks the messageId up (and logs it)
    if apply.ends_here(ctx.settings.webhook_apply_processing, parsed, hint):
        return None  # ends its run: the thread path applies it and publishes the callback
    barrier = durability_made(ctx)
    if barrier is None or (barrier.barrier.on and barrier.waiter is None):
        return None  # not probed yet, or a Sentinel run store: the thread path waits
    if apply.wanted(ctx.settings.webhook_apply_processing, parsed, hint):
        applier = async_apply(ctx)
        if applier is None:
            return None  # a clustered run store: the thread path applies it
        try:
            verdict, now = await applier(hint, parsed)
        except Exception as exc:  # run store down or slow: queue it instead
            _apply_failed(parsed, hint, exc)
        else:
            if verdict != apply.BINDS:
                failed = await _await_durable(barrier, parsed)
                if failed is not None:
                    metrics.webhook_answered(failed.status_code, failed.body)
                    return failed
                return _applied(verdict, now, parsed, hint, ctx.settings.webhook_parked_status)
    publisher = direct_publisher(ctx, create=False)  # not made yet: the thread path makes it
    if publisher is None:
        return None
    outgoing = ingest_message(ctx.sealer, body, parsed, None, hint)
    try:  # NEN_PUBLISH_TIMEOUT per connect, 3 tries, all within twice that
        await publisher.apublish(outgoing)
        answer = QUEUED
        if barrier.covers_broker:
            answer = await _await_durable(barrier, parsed) or QUEUED
    except Exception as exc:  # broker down or slow: any redis/socket error
        # the run ids on the log line: bound here only, the path that logs
        with runlog.bound(message_id=str(parsed["message_id"]), run_id=hint[0]):
            answer = _not_queued(parsed, exc)
    metrics.webhook_answered(answer.status_code, answer.body)
    return answer


async def _await_durable(barrier: Durability, parsed: dict[str, Any]) -> Answer | None:
    """None once what this webhook wrote is durable; else NOT_DURABLE (logged)."""
    if not barrier.barrier.on or barrier.waiter is None:
        return None
    try:
        await barrier.waiter()
    except Exception as exc:  # not confirmed in time, or the run store is down
        return _not_durable(parsed, exc)
    return None


def _made_durable(barrier: Durability | None, parsed: dict[str, Any]) -> Answer | None:
    """``_await_durable`` for the thread path."""
    if barrier is None or not barrier.barrier.on:
        return None
    try:
        barrier.wait()
    except Exception as exc:
        return _not_durable(parsed, exc)
    return None


def _not_durable(parsed: dict[str, Any], exc: BaseException) -> Answer:
    log.error(
        "webhook for message %s not confirmed durable: %s: %s; 503, Nen redelivers",
        parsed["message_id"],
        type(exc).__name__,
        exc,
    )
    return NOT_DURABLE


def _applied(
    verdict: str, now: str, parsed: dict[str, Any], hint: hints.RunRef, parked_status: int
) -> Answer:
    with runlog.bound(message_id=str(parsed["message_id"]), run_id=hint[0]):
        answer = apply.answer_for(verdict, now, hint[0], hint[1], parsed, parked_status)
    metrics.webhook_answered(answer.status_code, answer.body)
    return answer


def _apply_failed(parsed: dict[str, Any], hint: hints.RunRef, exc: BaseException) -> None:
    log.warning(
        "webhook %s for run %s: applying it failed (%s); queued instead",
        parsed["status"],
        hint[0],
        type(exc).__name__,
    )


def deliver(
    lookup: Lookup,
    sealer: Sealer,
    body: bytes,
    parsed: dict[str, Any],
    publish_timeout: float,
    parked_status: int = 202,
    hint: hints.RunRef | None = None,
    publisher: DirectPublisher | None = None,
    applier: apply.BlockingApply | None = None,
    *,
    hint_refused: bool = False,
    durability: Durability | None = None,
) -> Answer:
    """Queue the webhook: for its hinted run at once (a ``processing`` one applied here when
    ``applier`` is given), else after looking its messageId up. ``hint`` is a verified one;
    ``hint_refused``: the URL named a run with a missing or wrong token (counted as such);
    ``durability``: the barrier a 2xx waits for (None: none)."""
    message_id = str(parsed["message_id"])
    with runlog.bound(message_id=message_id, workflow_id=parsed.get("workflow_id")):
        if hint is not None:
            if applier is not None:
                applied = _apply_here(applier, sealer, body, parsed, hint, durability, publish_timeout)
                if applied is not None:
                    return _answered(applied, parsed, hint, parked_status)
            with runlog.bound(run_id=hint[0]):
                answer = enqueue(sealer, body, parsed, publish_timeout, hint=hint, publisher=publisher)
                answer = _queued_durably(answer, durability, parsed)
                metrics.webhook_answered(answer.status_code, answer.body)
                return answer
        answer = _deliver(lookup, sealer, body, parsed, publish_timeout, parked_status, publisher, durability)
        metrics.webhook_answered(answer.status_code, answer.body, hint_refused=hint_refused)
        return answer


def _answered(
    applied: Answer | tuple[str, str], parsed: dict[str, Any], hint: hints.RunRef, parked_status: int
) -> Answer:
    if isinstance(applied, Answer):  # not durable, or the callback neither sent nor queued: 503
        metrics.webhook_answered(applied.status_code, applied.body)
        return applied
    return _applied(applied[0], applied[1], parsed, hint, parked_status)


def _apply_here(
    applier: apply.BlockingApply,
    sealer: Sealer,
    body: bytes,
    parsed: dict[str, Any],
    hint: hints.RunRef,
    durability: Durability | None,
    publish_timeout: float,
) -> Answer | tuple[str, str] | None:
    """Apply the webhook here: (verdict, status now) once durable (a terminal one: once its
    callback is out too, or handed to complete_run); a 503 Answer; None: queue it instead."""
    received_at = repr(time.time())
    ended: apply.Ended | None = None
    try:
        if apply.ends_here(True, parsed, hint):
            ended = applier.end(hint, parsed, sealer.seal_if_enabled(body))
            verdict, now = ended.verdict, ended.now
        else:
            verdict, now = applier(hint, parsed)
    except Exception as exc:  # any run-store error (a cluster's are not RedisErrors)
        _apply_failed(parsed, hint, exc)
        return None
    if verdict == apply.BINDS:
        return None
    failed = _made_durable(durability, parsed)
    if ended is not None and ended.data:  # this webhook claimed the completion
        with runlog.bound(run_id=hint[0]):
            if failed is not None:
                _release(applier, hint, ended)  # Nen redelivers: that copy claims it again
            elif not dispatch_here(
                applier.store, hint[0], ended.holder, ended.data, received_at, publish_timeout
            ):
                failed = NOT_QUEUED
    return (verdict, now) if failed is None else failed


def _release(applier: apply.BlockingApply, hint: hints.RunRef, ended: apply.Ended) -> None:
    try:
        applier.store.release_completion(hint.run_id, ended.holder, hint.attempt)
    except Exception as exc:  # the run store is down: the claim lapses, the sweep takes it over
        log.warning("run %s: completion claim not released (%s)", hint[0], type(exc).__name__)


def _queued_durably(answer: Answer, barrier: Durability | None, parsed: dict[str, Any]) -> Answer:
    """A queued webhook's answer once its message is durable (the broker is the run store's
    server; another broker's durability is its own)."""
    if answer.status_code >= 300 or barrier is None or not barrier.covers_broker:
        return answer
    return _made_durable(barrier, parsed) or answer


def _deliver(
    lookup: Lookup,
    sealer: Sealer,
    body: bytes,
    parsed: dict[str, Any],
    publish_timeout: float,
    parked_status: int,
    publisher: DirectPublisher | None,
    durability: Durability | None = None,
) -> Answer:
    message_id = str(parsed["message_id"])
    known: bool | None
    try:
        known = lookup(message_id) is not None
    except (redis.RedisError, OSError) as exc:
        log.warning(
            "webhook for message %s: run lookup failed (%s); queued anyway", message_id, type(exc).__name__
        )
        known = None
    answer = enqueue(sealer, body, parsed, publish_timeout, publisher=publisher)
    answer = _queued_durably(answer, durability, parsed)
    if answer.status_code == 200 and known is False:
        log.info("webhook %s for unbound message %s queued to be parked", parsed["status"], message_id)
        answer = Answer(parked_status, {"status": "parked"})
    return answer
