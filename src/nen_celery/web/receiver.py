"""Framework-free webhook handling: verify, validate, look up, enqueue. Each web adapter wraps this.

1. ``check``: size (413), content type (415), signature (401; scheme ``NEN_WEBHOOK_SCHEME``),
   body shape (400). Pure: nothing is read or written.
2. ``deliver``: a webhook whose URL names its run (``?nen_run=``, hints.py; every run this
   package starts has one) with a valid token is queued for that run at once: 200, no Redis
   read; a ``processing`` one is applied here instead, with one script (apply.py): 200
   ``applied``. A hint whose token is missing or wrong is ignored (logged at WARNING, counted
   as ``hint_refused``): the webhook goes the messageId way. Otherwise one GET
   of the messageId index (bounded by ``NEN_PUBLISH_TIMEOUT``), then ``ingest_webhook`` is
   queued whatever the lookup said. Known messageId: 200. Unknown:
   ``NEN_WEBHOOK_PARKED_STATUS`` (202) ``{"status": "parked"}``: the ingest task parks it for
   the binding / reconciliation; not an error, so no retry storm from Nen. Lookup failed
   (Redis down): still queued, 200. Broker down: 503, so Nen redelivers.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import redis

from nen_celery.connections import redis_client
from nen_celery.domain import hints, signing
from nen_celery.fastpath import direct_publish
from nen_celery.fastpath.direct_publish import DirectPublisher, Outgoing
from nen_celery.lifecycle.webhook import RECEIVED_AT_HEADER, parse_webhook
from nen_celery.logs import runlog
from nen_celery.runtime import metrics
from nen_celery.runtime.context import per_context
from nen_celery.settings import Settings
from nen_celery.store.runs import RunStore
from nen_celery.store.sealer import Sealer
from nen_celery.web import apply
from nen_celery.web.answers import (
    NOT_CONFIGURED,
    NOT_QUEUED,
    QUEUED,
    Answer,
)

if TYPE_CHECKING:
    from nen_celery.runtime.context import Context

log = logging.getLogger("nen_celery.web")

SIGNATURE_HEADER = "x-hmac-signature"

Lookup = Callable[[str], "str | None"]


def refused_early(answer: Answer) -> Answer:
    """A refusal an adapter makes before ``check`` runs (settings, size): counted like the rest."""
    if answer is NOT_CONFIGURED:
        # Never log the error text itself: a settings error may quote the values it was given.
        log.error("webhook refused: the receiver's settings are invalid (see its start-up error)")
    metrics.webhook_answered(answer.status_code, answer.body)
    return answer


def handle(ctx: Context, body: bytes, headers: Mapping[str, str], query: str | bytes = "") -> Answer:
    """``check`` then ``deliver``: the whole answer to a body read within the limit (blocking).

    ``query``: the request's raw query string (it may carry the run hint).
    """
    error, parsed = check(ctx.settings, body, headers)
    if error is not None:
        return error
    return deliver_checked(ctx, body, parsed, query)


def deliver_checked(ctx: Context, body: bytes, parsed: dict[str, Any], query: str | bytes = "") -> Answer:
    """``deliver`` with the process context's lookup, sealer and settings (blocking I/O)."""
    hint, refused = run_hint(ctx.settings, query)
    if refused is not None:
        _hint_refused(parsed, refused)
    return deliver(
        run_lookup(ctx),
        ctx.sealer,
        body,
        parsed,
        ctx.settings.publish_timeout,
        ctx.settings.webhook_parked_status,
        hint,
        direct_publisher(ctx),
        blocking_apply(ctx),
        hint_refused=refused is not None,
    )


def run_hint(settings: Settings, query: str | bytes) -> tuple[tuple[str, int] | None, hints.Hint | None]:
    """(run id, attempt) of the query's run hint if its token checks out (hints.py), else None;
    and the refused hint (``hints.Hint``) when there was one whose token is missing or wrong."""
    hint = hints.hint_from_query(query, settings.webhook_run_param)
    if hint is None:
        return None, None
    if hints.verify(settings.hint_keys, hint):
        return (hint.run_id, hint.attempt), None
    return None, hint


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


def verify_signature(settings: Settings, body: bytes, headers: Mapping[str, str], now: float) -> str | None:
    """None when the delivery is signed under the configured scheme, else the reason.

    ``headers`` must have lower-case names. Raises ValueError for a malformed configured secret.
    """
    secrets = settings.webhook_secrets
    if settings.webhook_scheme == "standard":
        return signing.verify_standard_webhook(
            secrets, body, headers, now=now, tolerance=settings.webhook_tolerance
        )
    if signing.verify_webhook(secrets, body, headers.get(SIGNATURE_HEADER)):
        return None
    return "X-Hmac-Signature missing or wrong"


def check(
    settings: Settings, body: bytes, headers: Mapping[str, str], now: float | None = None
) -> tuple[Answer | None, dict[str, Any]]:
    """Everything short of enqueueing: (error answer or None, parsed body). No state is read or
    written; a refusal is counted in ``nen_webhooks``.

    Header names are matched case-insensitively (an adapter may pass its framework's own dict).
    """
    error, parsed = _check(settings, body, headers, now)
    if error is not None:
        metrics.webhook_answered(error.status_code, error.body)
    return error, parsed


def _check(
    settings: Settings, body: bytes, headers: Mapping[str, str], now: float | None
) -> tuple[Answer | None, dict[str, Any]]:
    headers = {name.lower(): value for name, value in headers.items()}

    if len(body) > settings.webhook_max_body:
        return Answer(
            413, {"error": "body_too_large", "message": f"limit is {settings.webhook_max_body} bytes"}
        ), {}
    content_type = headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if content_type != "application/json":
        return Answer(415, {"error": "unsupported_media_type", "message": "expected application/json"}), {}
    if not settings.webhook_secrets:
        log.error("webhook refused: NEN_WEBHOOK_SECRET is not set on the receiver")
        return Answer(503, {"error": "not_configured", "message": "receiver has no webhook secret"}), {}
    try:
        reason = verify_signature(settings, body, headers, time.time() if now is None else now)
    except ValueError:
        log.error("webhook refused: NEN_WEBHOOK_SECRET is not valid for NEN_WEBHOOK_SCHEME")
        return Answer(503, {"error": "not_configured", "message": "receiver secret is invalid"}), {}
    if reason is not None:
        log.info("webhook refused (401): %s", reason)
        return Answer(401, {"error": "invalid_signature", "message": reason}), {}
    try:
        parsed = parse_webhook(body)
    except ValueError as exc:
        return Answer(400, {"error": "invalid_body", "message": str(exc)}), {}
    return None, parsed


def ingest_message(
    sealer: Sealer,
    body: bytes,
    parsed: dict[str, Any],
    received_at: float | None,
    hint: tuple[str, int] | None,
) -> Outgoing:
    """The ingest_webhook message for one verified webhook (its body sealed when a key is set)."""
    received_at = time.time() if received_at is None else received_at
    kwargs: dict[str, Any] = {"run_id": hint[0], "attempt": hint[1]} if hint else {}
    return Outgoing(
        (sealer.seal_if_enabled(body),),
        kwargs,
        f"(message_id={parsed['message_id']!r}, status={parsed['status']!r})",
        repr(kwargs),
        {RECEIVED_AT_HEADER: repr(received_at)},
    )


def publish_with_celery(outgoing: Outgoing, publish_timeout: float, connection: Any = None) -> None:
    """``ingest_webhook.apply_async`` for brokers the direct publisher does not serve."""
    from nen_celery.runtime.app import nen_task

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
    hint: tuple[str, int] | None = None,
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


async def deliver_hinted(
    ctx: Context, body: bytes, parsed: dict[str, Any], query: str | bytes
) -> Answer | None:
    """``deliver`` without a thread: a hinted webhook pushed (or, ``processing``, applied) from
    the event loop, or None when this needs the blocking path (no hint, no direct publisher for
    this broker, or a clustered run store)."""
    hint, _ = run_hint(ctx.settings, query)
    if hint is None:
        return None  # none, or refused: the thread path looks the messageId up (and logs it)
    if apply.wanted(ctx.settings.webhook_apply_processing, parsed, hint):
        applier = async_apply(ctx)
        if applier is None:
            return None  # a clustered run store: the thread path applies it
        try:
            verdict, now = await applier(hint[0], hint[1], parsed)
        except Exception as exc:  # run store down or slow: queue it instead
            _apply_failed(parsed, hint, exc)
        else:
            if verdict != apply.BINDS:
                return _applied(verdict, now, parsed, hint, ctx.settings.webhook_parked_status)
    publisher = direct_publisher(ctx, create=False)  # not made yet: the thread path makes it
    if publisher is None:
        return None
    outgoing = ingest_message(ctx.sealer, body, parsed, None, hint)
    try:  # NEN_PUBLISH_TIMEOUT per connect, 3 tries, all within twice that
        await publisher.apublish(outgoing)
        answer = QUEUED
    except Exception as exc:  # broker down or slow: any redis/socket error
        # the run ids on the log line: bound here only, the path that logs
        with runlog.bound(message_id=str(parsed["message_id"]), run_id=hint[0]):
            answer = _not_queued(parsed, exc)
    metrics.webhook_answered(answer.status_code, answer.body)
    return answer


def _applied(
    verdict: str, now: str, parsed: dict[str, Any], hint: tuple[str, int], parked_status: int
) -> Answer:
    with runlog.bound(message_id=str(parsed["message_id"]), run_id=hint[0]):
        answer = apply.answer_for(verdict, now, hint[0], hint[1], parsed, parked_status)
    metrics.webhook_answered(answer.status_code, answer.body)
    return answer


def _apply_failed(parsed: dict[str, Any], hint: tuple[str, int], exc: BaseException) -> None:
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
    hint: tuple[str, int] | None = None,
    publisher: DirectPublisher | None = None,
    applier: apply.BlockingApply | None = None,
    *,
    hint_refused: bool = False,
) -> Answer:
    """Queue the webhook: for its hinted run at once (a ``processing`` one applied here when
    ``applier`` is given), else after looking its messageId up. ``hint`` is a verified one;
    ``hint_refused``: the URL named a run with a missing or wrong token (counted as such)."""
    message_id = str(parsed["message_id"])
    with runlog.bound(message_id=message_id, workflow_id=parsed.get("workflow_id")):
        if hint is not None:
            if applier is not None and apply.wanted(True, parsed, hint):
                try:
                    verdict, now = applier(hint[0], hint[1], parsed)
                except Exception as exc:  # any run-store error (a cluster's are not RedisErrors)
                    _apply_failed(parsed, hint, exc)
                else:
                    if verdict != apply.BINDS:
                        return _applied(verdict, now, parsed, hint, parked_status)
            with runlog.bound(run_id=hint[0]):
                answer = enqueue(sealer, body, parsed, publish_timeout, hint=hint, publisher=publisher)
                metrics.webhook_answered(answer.status_code, answer.body)
                return answer
        return _deliver(lookup, sealer, body, parsed, publish_timeout, parked_status, publisher, hint_refused)


def _deliver(
    lookup: Lookup,
    sealer: Sealer,
    body: bytes,
    parsed: dict[str, Any],
    publish_timeout: float,
    parked_status: int,
    publisher: DirectPublisher | None,
    hint_refused: bool = False,
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
    if answer.status_code == 200 and known is False:
        log.info("webhook %s for unbound message %s queued to be parked", parsed["status"], message_id)
        answer = Answer(parked_status, {"status": "parked"})
    metrics.webhook_answered(answer.status_code, answer.body, hint_refused=hint_refused)
    return answer


_lookups: dict[int, tuple[object, redis.Redis, RunStore]] = {}
_lookups_lock = threading.Lock()


def run_lookup(ctx: Context) -> Lookup:
    """``RunStore.run_for_message`` over ``run_store``'s client."""
    return run_store(ctx).run_for_message


def run_store(ctx: Context) -> RunStore:
    """The receiver's run store: a Redis client whose timeouts fit Nen's 5 s answer budget.

    The process context's client waits up to 5 s to connect and retries on timeout; this one
    gives up after ``NEN_PUBLISH_TIMEOUT`` so a blackholed Redis cannot hold a webhook answer.
    """
    key = os.getpid()
    cached = _lookups.get(key)
    if cached is None or cached[0] is not ctx:
        with _lookups_lock:
            cached = _lookups.get(key)
            if cached is None or cached[0] is not ctx:
                timeout = ctx.settings.publish_timeout
                client = redis_client(
                    ctx.settings.redis_url,
                    decode_responses=True,
                    socket_connect_timeout=timeout,
                    socket_timeout=timeout,
                )
                _lookups.clear()  # the old client may still serve a request: let it be collected
                cached = (ctx, client, RunStore(client, ctx.settings, ctx.sealer))
                _lookups[key] = cached
    return cached[2]


def direct_publisher(ctx: Context, create: bool = True) -> DirectPublisher | None:
    """This process's ingest_webhook publisher (direct_publish.py, with
    NEN_WEBHOOK_DIRECT_PUBLISH), or None: apply_async. The first call makes it, with its
    self-check (a few broker round trips): the standalone receiver at start-up, a mounted one
    on its first webhook, in a thread. ``create=False`` (the event loop): only one made before."""
    from nen_celery.runtime.app import nen_task

    return direct_publish.cached_for_task(
        ctx,
        nen_task("ingest_webhook"),
        ctx.settings.webhook_direct_publish,
        "NEN_WEBHOOK_DIRECT_PUBLISH",
        create=create,
    )


def blocking_apply(ctx: Context) -> apply.BlockingApply | None:
    """This process's apply for the thread path, or None with NEN_WEBHOOK_APPLY_PROCESSING off."""
    applier: apply.BlockingApply | None = per_context(
        "blocking_apply",
        ctx,
        lambda: apply.blocking(run_store(ctx)) if ctx.settings.webhook_apply_processing else None,
    )
    return applier


def async_apply(ctx: Context) -> apply.AsyncApply | None:
    """This process's event-loop apply (None: the run store is clustered); each call bounded by
    half of ``NEN_PUBLISH_TIMEOUT``, so with the queueing that follows a failure the answer
    stays within Nen's budget."""
    settings = ctx.settings
    applier: apply.AsyncApply | None = per_context(
        "apply", ctx, lambda: apply.for_url(ctx.store, settings.redis_url, settings.publish_timeout / 2)
    )
    return applier
