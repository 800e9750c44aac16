"""Where ``apply_async`` would put a task's messages on a Redis broker, resolved once.

A module of its own so that message building, the self-check and the publisher all depend on
it and on nothing above it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from celery import Celery, Task

from nen_celery.runtime.app import with_default_queue

_DELIVERY_MODES = {"persistent": 2, "transient": 1, 2: 2, 1: 1}
# exec options of a task that would change the message: any of them set -> apply_async
_UNSUPPORTED_OPTIONS = ("priority", "expires", "time_limit", "soft_time_limit", "exchange", "routing_key")


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
