"""Celery task messages written straight onto a Redis broker's queue list: one LPUSH.

Opt-in, off by default: ``NEN_WEBHOOK_DIRECT_PUBLISH`` (the receiver's ingest_webhook) and
``NEN_DIRECT_PUBLISH`` (start_run's submit_run, the ready-made app's callbacks). Without them
every message goes through Celery's ``apply_async``. Nothing here runs on import or
``init_celery``: a publisher is made on the first publish of a process whose setting asked for
it (the standalone receiver makes its own at start-up, web/asgi.py).

Why: publishing through ``Task.apply_async`` costs ~300 µs of CPU per message in Celery and
kombu (routing, queue declaration, producer pool) on top of the LPUSH itself, and it blocks,
so an ASGI receiver must hop to a thread for it. The webhook receiver publishes one task,
``ingest_webhook``, always to the same queue: it resolves the route once, builds each message
with Celery's own ``as_task_v2`` and kombu's envelope, and pushes it (from asyncio too, where
the pushes of concurrent webhooks share LPUSHes: ``_GroupPush``). ``start_run`` publishes
``submit_run`` the same way, blocking, when it is not called from inside a task
(tasks.enqueue_submit).

The message is the one ``apply_async`` would write (tests/test_direct_publish.py compares them
field by field), and ``before_task_publish`` / ``after_task_publish`` are sent with Celery's
arguments, so tracing hooks still see (and may add headers to) every message. Not sent: the
deprecated ``task_sent`` signal and ``task-sent`` events (this app turns them off).

``for_task`` returns None, and callers keep ``apply_async``, whenever the message could differ:
celery or kombu outside the tested range (fastpath.py), a broker other than plain ``redis://``
(RabbitMQ, TLS, Sentinel, failover lists), another serializer or compression, protocol 1, a
priority, expiry or time limit on the task, a route that is not a direct exchange, or a failed
self-check. The self-check (``self_check``), once per task, route and process before the first
direct publish: one probe message published through the task's own ``apply_async`` to a
throwaway queue (``nen.selfcheck.<uuid>``, on the same broker, not declared: no binding is
written) is popped back and compared field by field with the probe the direct path builds, both
ways (with and without publish-signal listeners). Only ``properties.delivery_tag`` (kombu draws
a fresh uuid4 per message) and the values of headers that ``before_task_publish`` listeners add
(tracing ids, fresh per message; their names must match) may differ. A difference: one WARNING
(logger ``nen_celery.fastpath.gate``) naming the first differing field, and ``apply_async`` for that
task. Listeners see the probe: it carries the header ``nen_selfcheck``.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import os
import re
import threading
import uuid
import weakref
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any

import redis
import redis.asyncio as aioredis
from celery import Celery, Task, signals
from celery.utils.nodenames import anon_nodename
from redis.backoff import ExponentialBackoff

from nen_celery.fastpath import gate as fastpath
from nen_celery.runtime.context import Context, made_for, per_context

log = logging.getLogger("nen_celery.fastpath.direct_publish")


def dumps(value: Any) -> str:
    """JSON as kombu writes it (its encoder is the stdlib's plus types these messages never hold:
    the C encoder, without kombu's subclass, costs a third as much)."""
    return json.dumps(value)


_nodenames: dict[int, str] = {}


def _origin() -> str:
    """Celery's ``origin`` header, ``gen<pid>@<host>``: one hostname lookup per process."""
    pid = os.getpid()
    name = _nodenames.get(pid)
    if name is None:
        name = _nodenames.setdefault(pid, anon_nodename())
    return name


_DELIVERY_MODES = {"persistent": 2, "transient": 1, 2: 2, 1: 1}
# exec options of a task that would change the message: any of them set -> apply_async
_UNSUPPORTED_OPTIONS = ("priority", "expires", "time_limit", "soft_time_limit", "exchange", "routing_key")
_RETRIES = 2  # as the receiver's apply_async retry_policy: 3 tries in all


@dataclass(frozen=True)
class Route:
    """Where ``apply_async`` would put the task's messages on a Redis broker."""

    queue: str  # the routing key in delivery_info (anonymous exchange: the queue's name)
    key: str  # the Redis list: kombu's global_keyprefix + the queue name
    delivery_mode: int
    ignore_result: bool
    # the queue's exchange, as apply_async sees it (the self-check's probe queue shares it)
    exchange: Any = field(default=None, compare=False, repr=False)


def route_for(app: Celery, task: Task) -> tuple[Route | None, str]:
    """The route, or None and why the direct path cannot reproduce ``apply_async`` here."""
    conf = app.conf
    url = str(conf.broker_write_url or conf.broker_url or "")
    if not url.startswith("redis://") or ";" in url:
        return None, "the broker is not a single plain redis:// URL"
    if conf.task_always_eager:
        return None, "tasks run eagerly (task_always_eager)"
    if conf.task_protocol != 2 or conf.task_serializer != "json" or conf.task_compression:
        return None, "task messages are not protocol 2 JSON without compression"
    if conf.task_default_priority is not None:
        return None, "a default task priority is set"
    from nen_celery.runtime.app import with_default_queue

    options = {k: v for k, v in task._get_exec_options().items() if v is not None}
    options = with_default_queue(task, (), {}, options)
    if any(options.get(name) is not None for name in _UNSUPPORTED_OPTIONS):
        return None, "the task sets a priority, expiry, time limit, exchange or routing key"
    if options.get("serializer", "json") != "json" or options.get("compression"):
        return None, "the task sets another serializer or compression"
    routed = app.amqp.router.route(dict(options), task.name, (), {}, task)
    queue = routed.get("queue")
    if queue is None or routed.get("exchange") or routed.get("routing_key") or routed.get("priority"):
        return None, "the task's route names an exchange, routing key or priority"
    if getattr(queue.exchange, "type", "direct") != "direct" or queue.max_priority:
        return None, "the task's queue is not on a direct exchange without priorities"
    mode = routed.get("delivery_mode") or getattr(queue.exchange, "delivery_mode", None)
    mode = _DELIVERY_MODES.get(mode or conf.task_default_delivery_mode)
    if mode is None:
        return None, "unknown delivery mode"
    transport = conf.broker_transport_options or {}
    prefix = str(transport.get("global_keyprefix") or "")
    ignore = bool(task.ignore_result if options.get("ignore_result") is None else options["ignore_result"])
    return Route(queue.name, prefix + queue.name, mode, ignore, queue.exchange), ""


@dataclass(frozen=True)
class Outgoing:
    """One task message's contents, however it is published (here or by ``apply_async``)."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    argsrepr: str
    kwargsrepr: str
    headers: dict[str, Any]


@dataclass(frozen=True)
class Message:
    task_id: str
    payload: bytes  # what is pushed
    body: tuple[Any, ...]  # (args, kwargs, embed), as the publish signals carry it
    headers: dict[str, Any] | None  # None: built as text, nobody listens to the signals


@dataclass(frozen=True)
class _Template:
    """What ``as_task_v2`` and kombu's Redis channel put in every message of one task and route."""

    headers: dict[str, Any]
    embed: dict[str, Any]
    delivery: dict[str, Any]
    texts: dict[tuple[str, ...], list[str]] = field(default_factory=dict)  # _build_text's


def _template(app: Celery, task_name: str, route: Route) -> _Template:
    placeholder = "00000000-0000-0000-0000-000000000000"
    headers, _, body, _ = app.amqp.as_task_v2(
        placeholder,
        task_name,
        args=(),
        kwargs={},
        root_id=placeholder,
        ignore_result=route.ignore_result,
        argsrepr="",
        kwargsrepr="",
    )
    delivery = {
        "delivery_mode": route.delivery_mode,
        "delivery_info": {"exchange": "", "routing_key": route.queue},
        "priority": 0,
        "body_encoding": "base64",
    }
    return _Template(dict(headers), dict(body[2]), delivery)


def build(
    app: Celery,
    task_name: str,
    route: Route,
    template: _Template,
    outgoing: Outgoing,
    task_id: str | None = None,
) -> Message:
    """The message kombu's Redis transport would LPUSH; ``before_task_publish`` sent as Celery does.

    Per message only the ids, the reprs, the origin and ``headers`` change: the rest is the
    template ``as_task_v2`` made once for this task and route. ``task_id``: a fresh one if None.
    """
    task_id = task_id or str(uuid.uuid4())
    body = (outgoing.args, dict(outgoing.kwargs), template.embed.copy())
    if not (signals.before_task_publish.receivers or signals.after_task_publish.receivers):
        return _build_text(app, template, outgoing, task_id, body)
    return _build_signalled(app, task_name, route, template, outgoing, task_id, body)


def _build_signalled(
    app: Celery,
    task_name: str,
    route: Route,
    template: _Template,
    outgoing: Outgoing,
    task_id: str,
    body: tuple[Any, ...],
) -> Message:
    """``build`` with ``before_task_publish`` sent (listeners may change the headers)."""
    msg_headers, properties = _fields(template, outgoing, task_id, _origin(), app.thread_oid)
    signals.before_task_publish.send(
        sender=task_name,
        body=body,
        exchange="",
        routing_key=route.queue,
        declare=[],
        headers=msg_headers,
        properties=properties,
        retry_policy={"max_retries": _RETRIES},
    )
    envelope = _envelope(template, dumps(body), msg_headers, properties, str(uuid.uuid4()))
    return Message(task_id, dumps(envelope).encode(), body, msg_headers)


def _fields(
    template: _Template, outgoing: Outgoing, task_id: str, origin: str, reply_to: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(headers, properties) as Celery hands them to ``before_task_publish``."""
    msg_headers = template.headers.copy()
    argsrepr, kwargsrepr = outgoing.argsrepr, outgoing.kwargsrepr
    msg_headers.update(id=task_id, root_id=task_id, argsrepr=argsrepr, kwargsrepr=kwargsrepr, origin=origin)
    msg_headers.update(outgoing.headers)
    # argsrepr/kwargsrepr: Celery copies its leftover publish options into the properties
    properties: dict[str, Any] = {
        "correlation_id": task_id,
        "reply_to": reply_to,
        "argsrepr": argsrepr,
        "kwargsrepr": kwargsrepr,
    }
    return msg_headers, properties


def _envelope(
    template: _Template, body_json: str, headers: dict[str, Any], properties: dict[str, Any], tag: str
) -> dict[str, Any]:
    """kombu's Redis envelope around one message."""
    properties.update(template.delivery)
    properties["delivery_info"] = dict(template.delivery["delivery_info"])
    properties["delivery_tag"] = tag
    return {
        "body": base64.b64encode(body_json.encode()).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": headers,
        "properties": properties,
    }


_string = encode_basestring_ascii  # json.dumps of a str, without its two Python frames
_HOLE = "\x00"
_HOLES = re.compile(r'"\\u0000([a-z_0-9]+)"')


def _text_template(template: _Template, outgoing: Outgoing) -> list[str]:
    """The envelope's JSON text split around its per-message values: literal, name, literal...

    Made once per template and set of extra header names, from the same ``_fields`` and
    ``_envelope`` as the signalled path, with a marker string where each value goes.
    """
    names = {name: f"h{i}" for i, name in enumerate(outgoing.headers)}
    marked = Outgoing(
        (), {}, _HOLE + "argsrepr", _HOLE + "kwargsrepr", {k: _HOLE + v for k, v in names.items()}
    )
    headers, properties = _fields(template, marked, _HOLE + "id", _HOLE + "origin", _HOLE + "reply_to")
    envelope = _envelope(template, "", headers, properties, _HOLE + "tag")
    envelope["body"] = _HOLE + "body"
    return _HOLES.split(dumps(envelope))


def _build_text(
    app: Celery, template: _Template, outgoing: Outgoing, task_id: str, body: tuple[Any, ...]
) -> Message:
    """``build`` without publish-signal listeners: the same message text, written around the
    template's fixed JSON (a third less CPU: no dicts rebuilt, fixed strings not re-escaped)."""
    key = tuple(outgoing.headers)
    parts = template.texts.get(key)
    if parts is None:
        parts = template.texts[key] = _text_template(template, outgoing)
    values = {
        "body": '"' + base64.b64encode(dumps(body).encode()).decode() + '"',
        "id": '"' + task_id + '"',
        "argsrepr": _string(outgoing.argsrepr),
        "kwargsrepr": _string(outgoing.kwargsrepr),
        "origin": _string(_origin()),
        "reply_to": _string(app.thread_oid),
        "tag": '"' + str(uuid.uuid4()) + '"',
    }
    for i, value in enumerate(outgoing.headers.values()):
        values[f"h{i}"] = dumps(value)
    text = "".join([part if i % 2 == 0 else values[part] for i, part in enumerate(parts)])
    return Message(task_id, text.encode(), body, None)


def _published(task_name: str, route: Route, message: Message) -> None:
    if message.headers is None or not signals.after_task_publish.receivers:
        return
    signals.after_task_publish.send(
        sender=task_name, body=message.body, headers=message.headers, exchange="", routing_key=route.queue
    )


_BATCH_MESSAGES = 128  # at most this many messages in one LPUSH ...
_BATCH_BYTES = 1 << 20  # ... or this many bytes (at least one message, whatever its size)


class _GroupPush:
    """One event loop's pushes onto one queue, as group commits: one LPUSH in flight at a time,
    carrying every message that arrived while the previous one was out (LPUSH takes many values
    and keeps their order, so the queue is FIFO as with one LPUSH each).

    Why: under load a receiver's webhooks arrive together; one command for all of them saves
    each one redis-py's command round (pool, encode, send, parse, timeout) and Redis its own
    command cost, which on a shared machine is CPU the receiver and workers get back.
    Each message is still answered only after Redis has it.

    Bounded in time: a batch must land within ``deadline`` of the arrival of its oldest message,
    so no message waits longer than that, however many batches were ahead of it; a failed or
    timed-out push fails its own batch (each caller raises the error), and the next batch tries
    afresh within what is left of its own deadline.
    """

    def __init__(self, client: aioredis.Redis, key: str, deadline: float) -> None:
        self.client = client
        self.key = key
        self.deadline = deadline
        self.waiting: list[tuple[bytes, float, asyncio.Future[None]]] = []
        self.flusher: asyncio.Task[None] | None = None

    async def push(self, payload: bytes) -> None:
        """Return once ``payload`` is on the queue; raise the push's error otherwise."""
        loop = asyncio.get_running_loop()
        pushed: asyncio.Future[None] = loop.create_future()
        self.waiting.append((payload, loop.time(), pushed))
        if self.flusher is None:
            self.flusher = loop.create_task(self._flush())
        await pushed

    def _take(self) -> list[tuple[bytes, float, asyncio.Future[None]]]:
        """The oldest waiting messages, up to one batch."""
        size, count = 0, 0
        for payload, _, _ in self.waiting:
            if count and (count == _BATCH_MESSAGES or size + len(payload) > _BATCH_BYTES):
                break
            size += len(payload)
            count += 1
        batch, self.waiting = self.waiting[:count], self.waiting[count:]
        return batch

    async def _flush(self) -> None:
        try:
            while self.waiting:
                batch = self._take()
                try:
                    async with asyncio.timeout_at(batch[0][1] + self.deadline):
                        await self.client.lpush(self.key, *[payload for payload, _, _ in batch])
                except BaseException as exc:
                    for _, _, pushed in batch:
                        if not pushed.done():
                            pushed.set_exception(exc)
                    if not isinstance(exc, Exception):
                        for _, _, pushed in self.waiting:
                            pushed.cancel()
                        raise  # cancelled (the loop is closing), or exiting
                else:
                    for _, _, pushed in batch:
                        if not pushed.done():  # its caller may have been cancelled
                            pushed.set_result(None)
        finally:
            self.flusher = None


@dataclass
class DirectPublisher:
    """Publishes one task's messages with a single LPUSH, blocking or from asyncio.

    Clients: one blocking client per publisher, one asyncio client per event loop (an asyncio
    connection belongs to the loop that opened it), whose pushes are grouped (``_GroupPush``).
    Each blocking try is bounded by ``timeout``; a connection error or timeout is retried twice,
    then raised (the receiver answers 503).
    """

    app: Celery
    task_name: str
    route: Route
    broker_url: str
    timeout: float
    max_connections: int
    _sync: redis.Redis | None = None
    _template: _Template | None = None
    _async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _GroupPush] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def _retry(self, retry_class: Any) -> Any:
        """Two more tries after a connection error, backing off from 0.1 s (as apply_async did)."""
        return retry_class(ExponentialBackoff(cap=self.timeout / 2, base=0.1), _RETRIES)

    def build(self, outgoing: Outgoing, task_id: str | None = None) -> Message:
        template = self._template
        if template is None:
            template = self._template = _template(self.app, self.task_name, self.route)
        return build(self.app, self.task_name, self.route, template, outgoing, task_id)

    def publish(self, outgoing: Outgoing, task_id: str | None = None) -> str:
        """Push the message (blocking); the task id (``task_id``, or a fresh one)."""
        message = self.build(outgoing, task_id)
        client = self._sync
        if client is None:
            from redis.retry import Retry

            client = self._sync = redis.Redis.from_url(
                self.broker_url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=self._retry(Retry),
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                max_connections=self.max_connections,
            )
        client.lpush(self.route.key, message.payload)
        _published(self.task_name, self.route, message)
        return message.task_id

    async def apublish(self, outgoing: Outgoing) -> str:
        """As ``publish``, within ``2 x timeout`` of the call (TimeoutError after that).

        One deadline rather than the client's socket timeout: redis-py's asyncio client wraps
        every send in ``asyncio.wait_for`` (a task per command) when one is set.
        """
        message = self.build(outgoing)
        loop = asyncio.get_running_loop()
        pusher = self._async.get(loop)
        if pusher is None:
            from redis.asyncio.retry import Retry

            client = aioredis.Redis.from_url(
                self.broker_url,
                socket_timeout=None,  # redis-py's default (5 s) costs a task per send; see above
                socket_connect_timeout=self.timeout,
                retry=self._retry(Retry),
                retry_on_error=[redis.ConnectionError],
                max_connections=self.max_connections,
            )
            pusher = self._async[loop] = _GroupPush(client, self.route.key, 2 * self.timeout)
        await pusher.push(message.payload)
        _published(self.task_name, self.route, message)
        return message.task_id


def cached_for_task(
    ctx: Context, task: Task, enabled: bool, setting: str = "NEN_DIRECT_PUBLISH", create: bool = True
) -> DirectPublisher | None:
    """``for_task`` with the context's publish timeout and broker pool size, made once per
    process and context; None when ``enabled`` (the caller's ``setting``) is false.

    ``create=False``: only a publisher already made for this context, else None (a caller on
    an event loop, which must not wait for the self-check's round trips).
    """
    key = f"publisher:{id(task.app)}:{task.name}"  # init_celery may come after a first publish
    if not create:
        made: DirectPublisher | None = made_for(key, ctx)
        return made

    def build() -> DirectPublisher | None:
        if not enabled:
            return None
        return for_task(task, ctx.settings.publish_timeout, ctx.settings.broker_max_connections, setting)

    publisher: DirectPublisher | None = per_context(key, ctx, build)
    return publisher


def for_task(
    task: Task, timeout: float, max_connections: int, setting: str = "NEN_DIRECT_PUBLISH"
) -> DirectPublisher | None:
    """A publisher for ``task`` on its app's broker, or None (apply_async) where it cannot match
    ``apply_async``: outside the tested celery/kombu range or after a failed self-check (one
    WARNING naming ``setting`` and why), or on a broker or route it cannot reproduce (logged
    at INFO)."""
    ok, reason = fastpath.direct_publish_ok()
    if not ok:
        fastpath.step_aside(fastpath.DIRECT_PUBLISH, setting, reason)
        return None
    app = task.app
    route, reason = route_for(app, task)
    if route is None:
        log.info("%s is published through Celery: %s", task.name, reason)
        return None
    url = str(app.conf.broker_write_url or app.conf.broker_url)
    ok, reason = self_check(task, route, url, timeout)
    if not ok:
        fastpath.step_aside(fastpath.DIRECT_PUBLISH, setting, f"self-check failed: {reason}", task.name)
        return None
    return DirectPublisher(app, task.name, route, url, timeout, max_connections)


# -- the self-check ----------------------------------------------------------------------------

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
    from kombu import Queue  # type: ignore[attr-defined]

    app = task.app
    probe_id = str(uuid.uuid4())
    name = PROBE_QUEUE_PREFIX + probe_id
    prefix = route.key[: len(route.key) - len(route.queue)]
    probe_route = Route(name, prefix + name, route.delivery_mode, route.ignore_result, route.exchange)
    queue = Queue(name, exchange=route.exchange, routing_key=name)  # type: ignore[no-untyped-call]
    args, kwargs = _probe_arguments(task)
    outgoing = Outgoing(args, kwargs, repr(args), repr(kwargs), {PROBE_HEADER: probe_id})
    client = redis.Redis.from_url(broker_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        task.apply_async(
            args=args,
            kwargs=kwargs,
            task_id=probe_id,
            queue=queue,
            declare=[],  # no binding written: the message itself is all that lands
            headers=dict(outgoing.headers),
            argsrepr=outgoing.argsrepr,
            kwargsrepr=outgoing.kwargsrepr,
            add_to_parent=False,
            retry=False,
        )
        _forget_result(app, probe_id, route.ignore_result)
        raw = client.rpop(probe_route.key)
    finally:
        client.delete(probe_route.key)  # the probe's own list: gone once popped, but be sure
        client.close()
    if not isinstance(raw, bytes):
        return False, f"apply_async's probe is not on the list {probe_route.key!r}"
    celery = _decoded(raw)
    template = _template(app, task.name, probe_route)
    body = (outgoing.args, dict(outgoing.kwargs), template.embed.copy())
    ours = _build_signalled(app, task.name, probe_route, template, outgoing, probe_id, body)
    # header names this package writes; any other was added by a before_task_publish listener
    known = set(_fields(template, outgoing, probe_id, "", "")[0])
    added = (set(celery.get("headers") or {}) | set(ours.headers or {})) - known
    per_message = {"properties.delivery_tag"}
    difference = fastpath.first_difference(
        celery, _decoded(ours.payload), per_message | {f"headers.{name}" for name in added}
    )
    if difference:
        return False, f"{difference} differs from apply_async's message"
    plain = {**celery, "headers": {k: v for k, v in celery["headers"].items() if k not in added}}
    text = _build_text(app, template, outgoing, probe_id, body)
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
