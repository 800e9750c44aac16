"""Celery task messages written straight onto a Redis broker's queue list: one LPUSH.

Opt-in, off by default: ``NEN_WEBHOOK_DIRECT_PUBLISH`` (the receiver's ingest_webhook) and
``NEN_DIRECT_PUBLISH`` (start_run's submit_run, the ready-made app's callbacks). Without them
every message goes through Celery's ``apply_async``. Nothing here runs on import or
``init_celery``: a publisher is made on the first publish of a process whose setting asked for
it (the standalone receiver makes its own at start-up, web/asgi.py).

Why: publishing through ``Task.apply_async`` costs ~300 µs of CPU per message in Celery and
kombu (routing, queue declaration, producer pool) on top of the LPUSH itself, and it blocks,
so an ASGI receiver must hop to a thread for it. The webhook receiver publishes one task,
``ingest_webhook``, always to the same queue: it resolves the route once (route.py), builds
each message with Celery's own ``as_task_v2`` and kombu's envelope (message.py), and pushes it
(from asyncio too, where the pushes of concurrent webhooks share LPUSHes: group_push.py).
``start_run`` publishes ``submit_run`` the same way, blocking, when it is not called from
inside a task (lifecycle.submit.enqueue_submit).

The message is the one ``apply_async`` would write (tests/test_direct_publish.py compares them
field by field), and ``before_task_publish`` / ``after_task_publish`` are sent with Celery's
arguments, so tracing hooks still see (and may add headers to) every message. Not sent: the
deprecated ``task_sent`` signal and ``task-sent`` events (this app turns them off).

``for_task`` returns None, and callers keep ``apply_async``, whenever the message could differ:
celery or kombu outside the tested range (gate.py), a broker other than plain ``redis://``
(RabbitMQ, TLS, Sentinel, failover lists), another serializer or compression, protocol 1, a
priority, expiry or time limit on the task, a route that is not a direct exchange, or a failed
self-check (selfcheck.py: one probe through ``apply_async`` per task, route and process,
compared field by field). A difference: one WARNING (logger ``nen_celery.fastpath.gate``)
naming the first differing field, and ``apply_async`` for that task.

The names callers use (``Outgoing``, ``Route``, ``route_for``, ``build``, ``self_check``, ...)
are all importable from here, wherever they are defined.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis
from celery import Celery, Task
from redis.backoff import ExponentialBackoff

from nen_celery.fastpath import gate as fastpath
from nen_celery.fastpath.group_push import GroupPush
from nen_celery.fastpath.message import (
    RETRIES,
    Message,
    Outgoing,
    Template,
    build,
    dumps,
    make_template,
    published,
)
from nen_celery.fastpath.route import Route, route_for
from nen_celery.fastpath.selfcheck import PROBE_HEADER, PROBE_QUEUE_PREFIX, forget_self_checks, self_check
from nen_celery.runtime.context import Context, made_for, per_context

__all__ = [
    "PROBE_HEADER",
    "PROBE_QUEUE_PREFIX",
    "DirectPublisher",
    "Message",
    "Outgoing",
    "Route",
    "build",
    "cached_for_task",
    "dumps",
    "for_task",
    "forget_self_checks",
    "route_for",
    "self_check",
]

log = logging.getLogger("nen_celery.fastpath.direct_publish")


@dataclass
class DirectPublisher:
    """Publishes one task's messages with a single LPUSH, blocking or from asyncio.

    Clients: one blocking client per publisher, one asyncio client per event loop (an asyncio
    connection belongs to the loop that opened it), whose pushes are grouped (``GroupPush``).
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
    _template: Template | None = None
    _async: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GroupPush] = field(
        default_factory=weakref.WeakKeyDictionary
    )

    def _retry(self, retry_class: Any) -> Any:
        """Two more tries after a connection error, backing off from 0.1 s (as apply_async did)."""
        return retry_class(ExponentialBackoff(cap=self.timeout / 2, base=0.1), RETRIES)

    def build(self, outgoing: Outgoing, task_id: str | None = None) -> Message:
        template = self._template
        if template is None:
            template = self._template = make_template(self.app, self.task_name, self.route)
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
        published(self.task_name, self.route, message)
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
            pusher = self._async[loop] = GroupPush(client, self.route.key, 2 * self.timeout)
        await pusher.push(message.payload)
        published(self.task_name, self.route, message)
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
