"""The task message ``apply_async`` would write, built without it: Celery's ``as_task_v2``
headers in kombu's Redis envelope, as the bytes kombu would LPUSH.

Apart from the publisher (direct_publish.py) so the self-check (selfcheck.py) can build its
probe with the very same code and neither has to import the other.
"""

from __future__ import annotations

import base64
import json
import os
import re
import uuid
from dataclasses import dataclass, field
from json.encoder import encode_basestring_ascii
from typing import Any

from celery import Celery, signals
from celery.utils.nodenames import anon_nodename

from nen_celery.fastpath.route import Route

RETRIES = 2  # as the receiver's apply_async retry_policy: 3 tries in all


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
class Template:
    """What ``as_task_v2`` and kombu's Redis channel put in every message of one task and route."""

    headers: dict[str, Any]
    embed: dict[str, Any]
    delivery: dict[str, Any]
    texts: dict[tuple[str, ...], list[str]] = field(default_factory=dict)  # build_text's


def make_template(app: Celery, task_name: str, route: Route) -> Template:
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
    return Template(dict(headers), dict(body[2]), delivery)


def build(
    app: Celery,
    task_name: str,
    route: Route,
    template: Template,
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
        return build_text(app, template, outgoing, task_id, body)
    return build_signalled(app, task_name, route, template, outgoing, task_id, body)


def build_signalled(
    app: Celery,
    task_name: str,
    route: Route,
    template: Template,
    outgoing: Outgoing,
    task_id: str,
    body: tuple[Any, ...],
) -> Message:
    """``build`` with ``before_task_publish`` sent (listeners may change the headers)."""
    msg_headers, properties = message_fields(template, outgoing, task_id, _origin(), app.thread_oid)
    signals.before_task_publish.send(
        sender=task_name,
        body=body,
        exchange="",
        routing_key=route.queue,
        declare=[],
        headers=msg_headers,
        properties=properties,
        retry_policy={"max_retries": RETRIES},
    )
    envelope = _envelope(template, dumps(body), msg_headers, properties, str(uuid.uuid4()))
    return Message(task_id, dumps(envelope).encode(), body, msg_headers)


def message_fields(
    template: Template, outgoing: Outgoing, task_id: str, origin: str, reply_to: str
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
    template: Template, body_json: str, headers: dict[str, Any], properties: dict[str, Any], tag: str
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


def _text_template(template: Template, outgoing: Outgoing) -> list[str]:
    """The envelope's JSON text split around its per-message values: literal, name, literal...

    Made once per template and set of extra header names, from the same ``message_fields`` and
    ``_envelope`` as the signalled path, with a marker string where each value goes.
    """
    names = {name: f"h{i}" for i, name in enumerate(outgoing.headers)}
    marked = Outgoing(
        (), {}, _HOLE + "argsrepr", _HOLE + "kwargsrepr", {k: _HOLE + v for k, v in names.items()}
    )
    headers, properties = message_fields(template, marked, _HOLE + "id", _HOLE + "origin", _HOLE + "reply_to")
    envelope = _envelope(template, "", headers, properties, _HOLE + "tag")
    envelope["body"] = _HOLE + "body"
    return _HOLES.split(dumps(envelope))


def build_text(
    app: Celery, template: Template, outgoing: Outgoing, task_id: str, body: tuple[Any, ...]
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


def published(task_name: str, route: Route, message: Message) -> None:
    """``after_task_publish``, as Celery sends it, once the message is on the queue."""
    if message.headers is None or not signals.after_task_publish.receivers:
        return
    signals.after_task_publish.send(
        sender=task_name, body=message.body, headers=message.headers, exchange="", routing_key=route.queue
    )
