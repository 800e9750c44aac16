"""The direct path's start-up self-check: does it write a task's messages as ``apply_async`` does?

Once per task, route and process before the first direct publish (``self_check``): one probe
message published through the task's own ``apply_async`` to a throwaway queue
(``nen.selfcheck.<uuid>``, on the same broker, not declared: no binding is written) is popped
back and compared field by field with the probe the direct path builds, both ways (with and
without publish-signal listeners). Only ``properties.delivery_tag`` (kombu draws a fresh uuid4
per message) and the values of headers that ``before_task_publish`` listeners add (tracing ids,
fresh per message; their names must match) may differ. Listeners see the probe: it carries the
header ``nen_selfcheck``. On a difference the caller (direct_publish.for_task) steps aside.

Why a probe rather than trust: Celery and kombu may change what they write in any release, and
a worker must never receive a message it reads differently from ``apply_async``'s.
"""

from __future__ import annotations

import base64
import inspect
import json
import logging
import os
import threading
import uuid
from typing import Any

import redis
from celery import Celery, Task

from nen_celery.fastpath import gate as fastpath
from nen_celery.fastpath.message import Outgoing, build_signalled, build_text, make_template, message_fields
from nen_celery.fastpath.route import Route

# the direct path's logger: one name to configure for the whole feature
log = logging.getLogger("nen_celery.fastpath.direct_publish")

PROBE_HEADER = "nen_selfcheck"  # on the probe message (its value: the probe's task id)
PROBE_QUEUE_PREFIX = "nen.selfcheck."
_PROBE_TEXT = "nen-selfcheck \u00e9"  # a non-ASCII character: JSON escaping is compared too

# (pid, app, task name, route) -> (ok, reason): a verdict holds for the life of the process
_verdicts: dict[tuple[int, int, str, Route], tuple[bool, str]] = {}
_verdicts_lock = threading.Lock()


def forget_self_checks() -> None:
    """Drop the cached verdicts (tests)."""
    with _verdicts_lock:
        _verdicts.clear()


def self_check(task: Task, route: Route, broker_url: str, timeout: float) -> tuple[bool, str]:
    """(True, "") when the direct path writes ``task``'s messages as ``apply_async`` does on
    this broker; else (False, the first differing field or why the probe could not run).

    Once per process, app, task and route (a verdict is kept; a probe that could not run, e.g.
    the broker was down, is tried again by the next publisher made). The probe runs in a thread
    of its own: no running task's ids, priority or trail are linked to it.
    """
    key = (os.getpid(), id(task.app), task.name, route)
    verdict = _verdicts.get(key)
    if verdict is not None:
        return verdict
    outcome: list[tuple[bool, str, bool]] = []

    def probe() -> None:
        try:
            ok, reason = _probe(task, route, broker_url, timeout)
            outcome.append((ok, reason, True))
        except Exception as exc:
            outcome.append((False, f"the probe could not run: {type(exc).__name__}: {exc}", False))

    thread = threading.Thread(target=probe, name="nen-selfcheck", daemon=True)
    thread.start()
    thread.join(10 * timeout + 5)  # a publish, a pop and a delete, each bounded by the broker
    if not outcome:
        return False, "the probe did not finish in time"
    ok, reason, definitive = outcome[0]
    if definitive:
        with _verdicts_lock:
            _verdicts[key] = (ok, reason)
    return ok, reason


def _probe_arguments(task: Task) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """Arguments that fit ``task``'s signature (apply_async checks them): one string for each
    required parameter."""
    try:
        params = list(inspect.signature(task.run).parameters.values())
    except (TypeError, ValueError):
        return (_PROBE_TEXT,), {}
    args: list[Any] = []
    kwargs: dict[str, Any] = {}
    for param in params:
        if param.default is not param.empty:
            continue
        if param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD):
            args.append(_PROBE_TEXT)
        elif param.kind is param.KEYWORD_ONLY:
            kwargs[param.name] = _PROBE_TEXT
    return tuple(args), kwargs


def _decoded(raw: bytes) -> dict[str, Any]:
    """A message as kombu's Redis transport stores it, with its base64 body decoded."""
    message: dict[str, Any] = json.loads(raw)
    if message.get("properties", {}).get("body_encoding") == "base64":
        message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def _probe(task: Task, route: Route, broker_url: str, timeout: float) -> tuple[bool, str]:
    """Publish one probe through ``apply_async`` to a throwaway queue, pop it, and compare it
    with the direct path's probe (signalled build, then text build)."""
    probe_id = str(uuid.uuid4())
    name = PROBE_QUEUE_PREFIX + probe_id
    prefix = route.key[: len(route.key) - len(route.queue)]
    probe_route = Route(name, prefix + name, route.delivery_mode, route.ignore_result, route.exchange)
    args, kwargs = _probe_arguments(task)
    outgoing = Outgoing(args, kwargs, repr(args), repr(kwargs), {PROBE_HEADER: probe_id})
    raw = _through_celery(task, probe_route, outgoing, probe_id, broker_url, timeout)
    if not isinstance(raw, bytes):
        return False, f"apply_async's probe is not on the list {probe_route.key!r}"
    return _compare(task.app, task.name, probe_route, outgoing, probe_id, _decoded(raw))


def _through_celery(
    task: Task, probe_route: Route, outgoing: Outgoing, probe_id: str, broker_url: str, timeout: float
) -> Any:
    """The probe as ``apply_async`` writes it to its throwaway list, popped back (None: absent)."""
    from kombu.entity import Queue

    name = probe_route.queue
    queue = Queue(name, exchange=probe_route.exchange, routing_key=name)
    client = redis.Redis.from_url(broker_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        task.apply_async(
            args=outgoing.args,
            kwargs=outgoing.kwargs,
            task_id=probe_id,
            queue=queue,
            declare=[],  # no binding written: the message itself is all that lands
            headers=dict(outgoing.headers),
            argsrepr=outgoing.argsrepr,
            kwargsrepr=outgoing.kwargsrepr,
            add_to_parent=False,
            retry=False,
        )
        _forget_result(task.app, probe_id, probe_route.ignore_result)
        return client.rpop(probe_route.key)
    finally:
        client.delete(probe_route.key)  # the probe's own list: gone once popped, but be sure
        client.close()


def _compare(
    app: Celery, task_name: str, probe_route: Route, outgoing: Outgoing, probe_id: str, celery: dict[str, Any]
) -> tuple[bool, str]:
    """(True, "") when the direct path's probe, built both ways, matches ``celery``'s."""
    template = make_template(app, task_name, probe_route)
    body = (outgoing.args, dict(outgoing.kwargs), template.embed.copy())
    ours = build_signalled(app, task_name, probe_route, template, outgoing, probe_id, body)
    # header names this package writes; any other was added by a before_task_publish listener
    known = set(message_fields(template, outgoing, probe_id, "", "")[0])
    added = (set(celery.get("headers") or {}) | set(ours.headers or {})) - known
    per_message = {"properties.delivery_tag"}
    difference = fastpath.first_difference(
        celery, _decoded(ours.payload), per_message | {f"headers.{name}" for name in added}
    )
    if difference:
        return False, f"{difference} differs from apply_async's message"
    plain = {**celery, "headers": {k: v for k, v in celery["headers"].items() if k not in added}}
    text = build_text(app, template, outgoing, probe_id, body)
    difference = fastpath.first_difference(plain, _decoded(text.payload), per_message)
    if difference:
        return False, f"{difference} differs from apply_async's message (text build)"
    return True, ""


def _forget_result(app: Celery, task_id: str, ignore_result: bool) -> None:
    """A result backend that subscribed to the probe's result (Redis: pub/sub) stops waiting."""
    if ignore_result:
        return
    consumer = getattr(app.backend, "result_consumer", None)
    cancel = getattr(consumer, "cancel_for", None)
    if cancel is not None:
        try:
            cancel(task_id)
        except Exception as exc:  # nothing was subscribed, or the backend is away
            log.debug("self-check: the probe's result subscription not cancelled: %r", exc)
