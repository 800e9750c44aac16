"""Nen's queues on RabbitMQ, declared as this app declares them, before a worker consumes them.

RabbitMQ refuses to redeclare a queue or exchange with other arguments (406 PRECONDITION_FAILED).
The ready-made app declares nen's queues on topic exchanges, as NEN_BROKER_QUEUE_TYPE queues; an
app given to ``init_celery`` declares them with its own defaults (direct exchanges, classic
queues). Moving a deployment from one to the other on one vhost would otherwise stop the worker
with a consumer traceback; this says in one line what differs and how to move.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>exchange|queue) '(?P<name>[^']+)' "
    r"in vhost '(?P<vhost>[^']*)': received (?P<ours>.+?) but current is (?P<theirs>.+)$"
)
MOVE_DOC = "docs/operations.md, 'Moving nen's queues between apps on RabbitMQ'"


def describe(queue: str, reply: str) -> str:
    """What differs, from RabbitMQ's refusal."""
    found = _INEQUIVALENT.search(reply)
    if found is None:
        return f"RabbitMQ refused nen's queue {queue!r} as this app declares it ({reply})"
    return (
        f"RabbitMQ already has nen's {found['kind']} {found['name']!r} (vhost {found['vhost']!r}) "
        f"with {found['arg']} {found['theirs']}, and this app declares {found['ours']}"
    )


def move_advice(names: Iterable[str]) -> str:
    return (
        "another app (the ready-made nen_celery.worker, or an app given to init_celery) declared "
        "them first. To move: stop that app's workers, let its queues drain, delete the queues and "
        f"exchanges {', '.join(sorted(names))} (rabbitmqctl delete_queue; rabbitmqadmin delete "
        f"exchange), then start this worker ({MOVE_DOC})"
    )


def declaration_conflicts(app: Any, names: Iterable[str]) -> str | None:
    """Declare each named queue this worker consumes, as the worker is about to: one line naming
    every refusal and how to move, or None. A broker that cannot be reached is the worker's own
    business (it retries): None."""
    queues = app.amqp.queues
    wanted = [name for name in names if name in queues.consume_from]
    refused: list[str] = []
    with app.connection_for_write() as conn:
        try:
            conn.connect()
        except conn.connection_errors as exc:
            log.debug("queue declarations not checked: broker not reachable (%s)", type(exc).__name__)
            return None
        for name in wanted:
            channel = conn.channel()
            try:
                queues.consume_from[name].bind(channel).declare()
            except conn.channel_errors as exc:
                refused.append(describe(name, str(getattr(exc, "reply_text", "") or exc)))
            finally:
                with contextlib.suppress(Exception):  # a refusal already closed the channel
                    channel.close()
    return f"{'; '.join(refused)}: {move_advice(wanted)}" if refused else None
