"""direct_publish (opt-in: NEN_WEBHOOK_DIRECT_PUBLISH / NEN_DIRECT_PUBLISH, set for every test
here): the receiver's one-LPUSH publish writes exactly what apply_async writes, is
run by real workers, keeps the publish signals, and steps aside wherever it could differ."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from celery import Celery, signals
from kombu import Connection, Exchange, Queue
from starlette.testclient import TestClient

from nen_celery import worker
from nen_celery.domain.hints import RunRef
from nen_celery.fastpath import direct_publish, group_push
from nen_celery.fastpath.direct_publish import Outgoing
from nen_celery.lifecycle.webhook import RECEIVED_AT_HEADER
from nen_celery.runtime.context import get_context
from nen_celery.store.sealer import Sealer
from nen_celery.web import receiver
from nen_celery.web.asgi import create_app
from nen_celery.worker import INGEST_QUEUE, ingest_webhook
from tests.cluster import db_url
from tests.conftest import SIM_WEBHOOK_SECRET, TEST_REDIS_URL, Stack, env
from tests.helpers import OTHER_PROCESS_HEADER, flushed_db
from tests.web_support import hinted, signed, webhook_body

SCRATCH_URL = db_url(TEST_REDIS_URL, 8)  # no worker consumes this database
# on every scratch message: the suite's TaskCounter must not wait for a worker to run it
NOT_HERE = {OTHER_PROCESS_HEADER: "1"}
# the fields that differ between any two messages: fresh ids
PER_MESSAGE = {
    ("headers", "id"),
    ("headers", "root_id"),
    ("properties", "correlation_id"),
    ("properties", "delivery_tag"),
}


@pytest.fixture(autouse=True)
def asked_for() -> Iterator[None]:
    """The fast path is opt-in (off by default): every test here is about it."""
    with env(NEN_WEBHOOK_DIRECT_PUBLISH="true", NEN_DIRECT_PUBLISH="true"):
        yield


@pytest.fixture
def scratch() -> Iterator[redis.Redis]:
    with flushed_db(SCRATCH_URL) as client:
        yield client


def _decoded(raw: bytes) -> dict[str, Any]:
    """A message as kombu's Redis transport stores it, with its base64 body decoded."""
    message: dict[str, Any] = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    return message


def _pop(client: redis.Redis, key: str) -> dict[str, Any]:
    assert client.llen(key) == 1, f"expected one message in {key}"
    raw = client.rpop(key)
    assert isinstance(raw, bytes)
    return _decoded(raw)


def _differences(a: dict[str, Any], b: dict[str, Any]) -> set[tuple[str, str]]:
    out = {("body", "")} if a["body"] != b["body"] else set()
    for part in ("headers", "properties"):
        for name in set(a[part]) | set(b[part]):
            if a[part].get(name, "<missing>") != b[part].get(name, "<missing>"):
                out.add((part, name))
    out |= {(name, "") for name in set(a) ^ set(b)}
    out |= {(name, "") for name in set(a) & set(b) - {"body", "headers", "properties"} if a[name] != b[name]}
    return out


def _publisher(url: str = SCRATCH_URL) -> direct_publish.DirectPublisher:
    publisher = direct_publish.for_task(ingest_webhook, timeout=2.0, max_connections=10)
    assert publisher is not None, "the suite's redis:// broker must take the direct path"
    publisher.broker_url = url
    return publisher


@pytest.mark.parametrize("listeners", [True, False], ids=["signal-listeners", "no-listeners"])
@pytest.mark.parametrize("hint", [None, RunRef("run-1", 0), RunRef("run-2", 3, "AbCdEfGhIjKl_-89")])
def test_the_message_is_the_one_apply_async_writes(
    scratch: redis.Redis, hint: RunRef | None, listeners: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not listeners:  # the suite's TaskCounter listens; without listeners no signal is sent
        monkeypatch.setattr(signals.before_task_publish, "receivers", [])
        monkeypatch.setattr(signals.after_task_publish, "receivers", [])
    body = webhook_body(f"m-{uuid.uuid4()}", "success")
    parsed = json.loads(body)
    outgoing = receiver.ingest_message(Sealer([]), body, parsed, 1234.5, hint)
    outgoing.headers.update(NOT_HERE)
    with Connection(SCRATCH_URL) as conn:
        receiver.publish_with_celery(outgoing, 2.0, connection=conn)
    celery_message = _pop(scratch, INGEST_QUEUE)
    task_id = _publisher().publish(outgoing)
    ours = _pop(scratch, INGEST_QUEUE)

    assert _differences(celery_message, ours) == PER_MESSAGE
    assert (
        ours["headers"]["id"] == ours["headers"]["root_id"] == ours["properties"]["correlation_id"] == task_id
    )
    assert ours["body"][0] == [body.decode()] and ours["body"][1] == outgoing.kwargs
    assert ours["headers"][RECEIVED_AT_HEADER] == "1234.5"
    assert ours["properties"]["delivery_info"] == {"exchange": "", "routing_key": INGEST_QUEUE}


def test_the_asyncio_publish_writes_the_same_message(scratch: redis.Redis) -> None:
    publisher = _publisher()
    outgoing = Outgoing(("x",), {"run_id": "r", "attempt": 0}, "(x)", "{}", {"h": "1", **NOT_HERE})
    task_id = asyncio.run(publisher.apublish(outgoing))
    sync_id = publisher.publish(outgoing)
    first, second = _pop_two(scratch)
    assert {first["headers"]["id"], second["headers"]["id"]} == {task_id, sync_id}
    assert _differences(first, second) == PER_MESSAGE


def _pop_two(client: redis.Redis) -> tuple[dict[str, Any], dict[str, Any]]:
    raw = client.lrange(INGEST_QUEUE, 0, -1)
    assert len(raw) == 2
    client.delete(INGEST_QUEUE)
    out = [_decoded(item) for item in raw]
    return out[0], out[1]


def test_publish_signals_are_sent_and_their_headers_kept(scratch: redis.Redis) -> None:
    seen: list[tuple[str, dict[str, Any]]] = []

    def before(sender: str, headers: dict[str, Any], routing_key: str, **_: Any) -> None:
        headers["traceparent"] = "00-trace-span-01"  # what a tracing hook does
        seen.append(("before", {"sender": sender, "routing_key": routing_key}))

    def after(sender: str, headers: dict[str, Any], body: Any, **_: Any) -> None:
        seen.append(("after", {"sender": sender, "id": headers["id"], "args": list(body[0])}))

    signals.before_task_publish.connect(before, weak=False)
    signals.after_task_publish.connect(after, weak=False)
    try:
        task_id = _publisher().publish(Outgoing(("x",), {}, "(x)", "{}", dict(NOT_HERE)))
    finally:
        signals.before_task_publish.disconnect(before)
        signals.after_task_publish.disconnect(after)
    assert seen == [
        ("before", {"sender": ingest_webhook.name, "routing_key": INGEST_QUEUE}),
        ("after", {"sender": ingest_webhook.name, "id": task_id, "args": ["x"]}),
    ]
    assert _pop(scratch, INGEST_QUEUE)["headers"]["traceparent"] == "00-trace-span-01"


def test_the_text_build_writes_what_the_signalled_build_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without listeners the message is written as text around a template (direct_publish
    ``_build_text``); quotes, non-ASCII, numbers and headers that replace Celery's own fields
    must come out as the dict build writes them."""
    publisher = _publisher()
    outgoing = Outgoing(
        ('a"b\\c', "é\u2028"),
        {"run_id": "r", "attempt": 2},
        "(x='\"')",
        "{'k': 'é'}",
        {"origin": "elsewhere", "argsrepr": "replaced", "h": 1.5, **NOT_HERE},
    )
    monkeypatch.setattr(signals.before_task_publish, "receivers", [])
    monkeypatch.setattr(signals.after_task_publish, "receivers", [])
    as_text = publisher.build(outgoing)
    assert as_text.headers is None  # the text path was taken

    def listener(**_: Any) -> None:
        pass

    signals.before_task_publish.connect(listener, weak=False)
    try:
        as_dicts = publisher.build(outgoing)
    finally:
        signals.before_task_publish.disconnect(listener)
    assert as_dicts.headers is not None
    text, dicts = _decoded(as_text.payload), _decoded(as_dicts.payload)
    assert _differences(text, dicts) == PER_MESSAGE
    assert text["headers"]["origin"] == "elsewhere" and text["headers"]["argsrepr"] == "replaced"
    assert text["properties"]["argsrepr"] == "(x='\"')"


def test_a_dead_broker_raises_after_the_retries_and_pushes_nothing(scratch: redis.Redis) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    publisher = _publisher(dead)
    started = time.monotonic()
    with pytest.raises(redis.ConnectionError):
        publisher.publish(Outgoing(("x",), {}, "(x)", "{}", dict(NOT_HERE)))
    assert time.monotonic() - started < 5


def _app(**conf: Any) -> tuple[Celery, Any]:
    """A separate Celery app whose one task is routed to queue q1, with ``conf`` on top."""
    name = f"t.ingest.{uuid.uuid4().hex[:8]}"
    app = Celery("direct-test", set_as_current=False)
    settings: dict[str, Any] = {
        "broker_url": "redis://127.0.0.1:6379/0",
        "task_serializer": "json",
        "task_ignore_result": True,
        "task_queues": (Queue("q1"),),
        "task_routes": {name: {"queue": "q1"}},
    }
    for key, value in conf.items():
        settings[key] = {name: value} if key == "task_routes" else value
    app.conf.update(settings)

    @app.task(name=name)
    def ingest(body: str) -> None:  # pragma: no cover - never run
        pass

    return app, ingest


@pytest.mark.parametrize(
    ("conf", "reason"),
    [
        ({"broker_url": "amqp://guest:guest@127.0.0.1:5672//"}, "not a single plain redis://"),
        ({"broker_url": "rediss://127.0.0.1:6380/0"}, "not a single plain redis://"),
        ({"broker_url": "sentinel://127.0.0.1:26379"}, "not a single plain redis://"),
        ({"broker_url": "redis://a:6379/0;redis://b:6379/0"}, "not a single plain redis://"),
        ({"task_serializer": "pickle", "accept_content": ["pickle"]}, "protocol 2 JSON"),
        ({"task_compression": "gzip"}, "protocol 2 JSON"),
        ({"task_protocol": 1}, "protocol 2 JSON"),
        ({"task_default_priority": 5}, "default task priority"),
        ({"task_routes": {"queue": "q1", "priority": 3}}, "route names"),
        ({"task_queues": (Queue("q1", Exchange("q1", type="topic"), routing_key="q1"),)}, "direct exchange"),
        ({"task_queues": (Queue("q1", max_priority=10),)}, "without priorities"),
        ({"task_always_eager": True}, "eagerly"),
    ],
)
def test_it_steps_aside_where_the_message_could_differ(conf: dict[str, Any], reason: str) -> None:
    app, task = _app(**conf)
    route, why = direct_publish.route_for(app, task)
    assert route is None and reason in why


def test_a_task_with_its_own_expiry_or_time_limit_stays_on_apply_async() -> None:
    app, task = _app()
    task.time_limit = 30
    assert direct_publish.route_for(app, task)[0] is None
    app, task = _app()
    task.expires = 60
    assert direct_publish.route_for(app, task)[0] is None


def test_the_route_follows_kombus_key_prefix_and_delivery_mode() -> None:
    app, task = _app(broker_transport_options={"global_keyprefix": "tenant1:"})
    route, _ = direct_publish.route_for(app, task)
    assert route == direct_publish.Route("q1", "tenant1:q1", 2, True)
    app, task = _app(task_default_delivery_mode="transient", task_ignore_result=False)
    route, _ = direct_publish.route_for(app, task)
    assert route == direct_publish.Route("q1", "q1", 1, False)


def test_the_setting_turns_it_on() -> None:
    with env(NEN_WEBHOOK_DIRECT_PUBLISH="false"):
        assert receiver.direct_publisher(get_context()) is None
    with env(NEN_WEBHOOK_DIRECT_PUBLISH=None):  # the default: off
        assert receiver.direct_publisher(get_context()) is None
    assert receiver.direct_publisher(get_context()) is not None


def test_the_asgi_receiver_pushes_hinted_webhooks_from_its_event_loop(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No thread hop for a hinted webhook once the publisher is made; one client per event loop
    (each TestClient has its own). A mounted receiver's first webhook makes the publisher (and
    runs its self-check) in a thread, never on the event loop."""
    calls: list[str] = []
    original = direct_publish.DirectPublisher.apublish

    async def spy(self: direct_publish.DirectPublisher, outgoing: Outgoing) -> str:
        calls.append(outgoing.argsrepr)
        return await original(self, outgoing)

    monkeypatch.setattr(direct_publish.DirectPublisher, "apublish", spy)
    # terminal: queued (NEN_WEBHOOK_APPLY_PROCESSING=false below; else the receiver applies it)
    body = webhook_body(f"unknown-{uuid.uuid4()}", "success")
    headers = signed(body, SIM_WEBHOOK_SECRET)
    before = stack.counter.published[ingest_webhook.name]
    with env(NEN_PUBLISH_TIMEOUT="2.5", NEN_WEBHOOK_APPLY_PROCESSING="false"):  # a context of its own
        assert receiver.direct_publisher(get_context(), create=False) is None
        for _ in range(3):
            with TestClient(create_app()) as client:
                answer = client.post(hinted("no-such-run"), content=body, headers=headers)
                assert answer.status_code == 200 and answer.json() == {"status": "queued"}
        assert receiver.direct_publisher(get_context(), create=False) is not None
    assert len(calls) == 2  # the first from a thread (it made the publisher), then none
    # the publish signal counted them: the worker runs them (a hint for no run is dropped)
    assert stack.counter.published[ingest_webhook.name] == before + 3
    stack.counter.wait_idle()


def _numbered(count: int) -> list[Outgoing]:
    return [Outgoing((f"m{i}",), {}, f"(m{i})", "{}", dict(NOT_HERE)) for i in range(count)]


def test_concurrent_asyncio_publishes_share_lpushes_and_keep_their_order(
    scratch: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Group commit: webhooks answered together go out in a few LPUSHes, first in first out."""
    pushes: list[int] = []
    original = aioredis.Redis.lpush

    def counting(self: aioredis.Redis, name: str, *values: Any) -> Any:
        pushes.append(len(values))
        return original(self, name, *values)

    monkeypatch.setattr(aioredis.Redis, "lpush", counting)
    publisher = _publisher()
    outgoing = _numbered(300)

    async def burst() -> list[str]:
        return list(await asyncio.gather(*(publisher.apublish(o) for o in outgoing)))

    task_ids = asyncio.run(burst())
    assert sum(pushes) == 300 and len(pushes) < 300 / 4, pushes
    assert max(pushes) <= group_push.BATCH_MESSAGES
    queued = [_decoded(raw) for raw in reversed(scratch.lrange(INGEST_QUEUE, 0, -1))]  # RPOP order
    assert [m["body"][0][0] for m in queued] == [f"m{i}" for i in range(300)]
    assert [m["headers"]["id"] for m in queued] == task_ids


class _Proxy:
    """A TCP proxy to the scratch Redis that can stop passing requests on (a hung broker)."""

    def __init__(self) -> None:
        self.frozen = False
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []
        self.pipes: list[asyncio.Future[Any]] = []

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        kwargs = redis.Redis.from_url(SCRATCH_URL).connection_pool.connection_kwargs
        self.upstream = (str(kwargs["host"]), int(kwargs["port"]))
        return f"redis://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/{kwargs['db']}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, upstream_writer]

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, held: bool) -> None:
            while data := await source.read(65536):
                if not (held and self.frozen):  # a frozen broker swallows requests unanswered
                    sink.write(data)
            sink.close()

        pipes = asyncio.gather(
            pipe(reader, upstream_writer, True), pipe(upstream_reader, writer, False), return_exceptions=True
        )
        self.pipes.append(pipes)
        await pipes

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.gather(*self.pipes)


def test_a_hung_broker_fails_every_waiting_publish_within_the_deadline_then_recovers(
    scratch: redis.Redis,
) -> None:
    proxy = _Proxy()

    async def scenario() -> tuple[list[BaseException | str], float, list[str]]:
        publisher = _publisher(await proxy.start())
        publisher.timeout = 0.5  # each publish answered within 2 x 0.5 s
        await publisher.apublish(_numbered(1)[0])  # connected, through the proxy
        proxy.frozen = True
        loop = asyncio.get_running_loop()
        started = loop.time()
        first, *rest = _numbered(20)
        publishes = [asyncio.ensure_future(publisher.apublish(first))]
        pusher = publisher._async[loop]
        deadline = started + 5
        while pusher.waiting or pusher.flusher is None:  # until the first push is out, unanswered
            assert loop.time() < deadline, "the first push never went out"
            await asyncio.sleep(0)
        publishes += [asyncio.ensure_future(publisher.apublish(o)) for o in rest]  # queued behind it
        failed = await asyncio.gather(*publishes, return_exceptions=True)
        elapsed = loop.time() - started
        proxy.frozen = False
        after = [await publisher.apublish(o) for o in _numbered(3)]
        await proxy.close()
        return failed, elapsed, after

    failed, elapsed, after = asyncio.run(scenario())
    assert all(isinstance(result, TimeoutError) for result in failed), failed
    # within each one's own deadline (2 x 0.5 s), not one deadline after the batch ahead of them
    assert elapsed < 2 * 0.5 + 0.5
    queued = [_decoded(raw)["headers"]["id"] for raw in scratch.lrange(INGEST_QUEUE, 0, -1)]
    assert len(queued) == 4 and set(after) <= set(queued)  # nothing frozen got through; it works again


# -- submit_run from start_run (lifecycle.submit.enqueue_submit) ------------------------------------------


def _submit_outgoing(run_id: str, headers: dict[str, Any]) -> Outgoing:
    kwargs = {"reschedule": 0}
    return Outgoing((run_id,), kwargs, f"(run_id={run_id!r}, workflow_id='w')", repr(kwargs), headers)


def test_start_runs_submit_message_is_the_one_apply_async_writes(scratch: redis.Redis) -> None:
    from nen_celery.worker import SUBMIT_QUEUE, submit_run

    outgoing = _submit_outgoing("run-s1", dict(NOT_HERE))
    with Connection(SCRATCH_URL) as conn:
        submit_run.apply_async(
            args=outgoing.args,
            kwargs=outgoing.kwargs,
            argsrepr=outgoing.argsrepr,
            kwargsrepr=outgoing.kwargsrepr,
            headers=outgoing.headers,
            connection=conn,
        )
    celery_message = _pop(scratch, SUBMIT_QUEUE)
    publisher = direct_publish.for_task(submit_run, timeout=2.0, max_connections=10)
    assert publisher is not None
    publisher.broker_url = SCRATCH_URL
    publisher.publish(outgoing)
    assert _differences(celery_message, _pop(scratch, SUBMIT_QUEUE)) == PER_MESSAGE


class _Recorder:
    """Stands in for the publisher to see which path enqueue_submit takes (nothing is sent)."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []

    def publish(self, outgoing: Outgoing) -> str:
        self.sent.append(outgoing)
        return "id"


def test_enqueue_submit_pushes_directly_only_outside_a_task_and_without_countdown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from celery._state import _task_stack

    from nen_celery.lifecycle import submit

    recorder, applied = _Recorder(), []
    monkeypatch.setattr(submit, "submit_publisher", lambda: recorder)
    monkeypatch.setattr(worker.submit_run, "apply_async", lambda *a, **kw: applied.append(kw))

    submit.enqueue_submit("run-a", "wf")
    assert [(o.args, o.kwargs, o.argsrepr) for o in recorder.sent] == [
        (("run-a",), {"reschedule": 0}, "(run_id='run-a', workflow_id='wf')")
    ]
    assert applied == []

    submit.enqueue_submit("run-b", "wf", reschedule=1, countdown=5)  # countdowns: apply_async
    assert len(recorder.sent) == 1 and applied[-1]["countdown"] == 5

    parent = worker.ingest_webhook  # inside a running task: apply_async links the parent
    parent.push_request(id="parent-1", called_directly=False)
    _task_stack.push(parent)
    try:
        submit.enqueue_submit("run-c", "wf")
    finally:
        _task_stack.pop()
        parent.pop_request()
    assert len(recorder.sent) == 1 and applied[-1]["args"] == ("run-c",)


def test_start_run_with_the_broker_down_raises_operational_error_and_keeps_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import socket

    from kombu.exceptions import OperationalError

    from nen_celery import get_run, start_run
    from nen_celery.lifecycle import submit
    from nen_celery.worker import submit_run

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    publisher = direct_publish.for_task(submit_run, timeout=0.5, max_connections=10)
    assert publisher is not None
    publisher.broker_url = dead
    monkeypatch.setattr(submit, "submit_publisher", lambda: publisher)
    # the suite's TaskCounter would count a message that never reaches a worker
    monkeypatch.setattr(signals.before_task_publish, "receivers", [])
    monkeypatch.setattr(signals.after_task_publish, "receivers", [])
    run_id = f"down-{uuid.uuid4()}"
    with pytest.raises(OperationalError, match="submit_run not queued: ConnectionError"):
        start_run("12345678-1234-1234-1234-123456789abc", {"A": "b"}, run_id=run_id)
    assert get_run(run_id) is None  # the record was removed: nothing half-started


def test_the_submit_setting_turns_it_on() -> None:
    from nen_celery.lifecycle import submit

    with env(NEN_DIRECT_PUBLISH="false"):
        assert submit.submit_publisher() is None
    with env(NEN_DIRECT_PUBLISH=None):  # the default: off
        assert submit.submit_publisher() is None
    assert submit.submit_publisher() is not None


# -- on_complete / on_failure callbacks from the workers (completion.send_callback) ------------------


@contextlib.contextmanager
def _running_task(task_id: str, root_id: str | None) -> Iterator[Any]:
    """As if the worker were running ingest_webhook: what apply_async links a message to."""
    from celery._state import _task_stack

    parent = ingest_webhook
    parent.push_request(id=task_id, root_id=root_id, called_directly=False)
    _task_stack.push(parent)
    try:
        yield parent
    finally:
        _task_stack.pop()
        parent.pop_request()


def _scratch_callback(sig: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    """What ``direct_callback`` chose for ``sig``, with a publisher of its own onto the scratch
    database (the cached one keeps serving the suite's workers)."""
    from nen_celery.lifecycle import completion

    chosen = completion.direct_callback(sig)
    assert chosen is not None, "a plain callback signature must take the direct path"
    publisher = direct_publish.for_task(chosen[0], timeout=2.0, max_connections=10)
    assert publisher is not None and publisher.route == chosen[1].route
    publisher.broker_url = SCRATCH_URL
    monkeypatch.setattr(completion, "direct_callback", lambda *_: (chosen[0], publisher))
    return chosen[0], publisher


@pytest.mark.parametrize("listeners", [True, False], ids=["signal-listeners", "no-listeners"])
@pytest.mark.parametrize("root_id", [None, "root-7"])
def test_a_callback_message_is_the_one_apply_async_writes(
    scratch: redis.Redis, root_id: str | None, listeners: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from celery.canvas import signature

    from nen_celery.lifecycle import completion
    from nen_celery.worker import app
    from tests.callbacks import record

    if not listeners:
        monkeypatch.setattr(signals.before_task_publish, "receivers", [])
        monkeypatch.setattr(signals.after_task_publish, "receivers", [])
    sig = dict(record.s(tag="t-é"))
    direct = _scratch_callback(sig, monkeypatch)
    run = {"run_id": "r1", "status": "success", "payload": {"url": "https://x/a?sig=1"}, "n": [1, 2.5]}
    headers = {"nen_dispatch": "r1|0|nonce", **NOT_HERE}
    queue = direct[1].route.key
    with _running_task("ingest-1", root_id):
        with Connection(SCRATCH_URL) as conn:
            signature(sig, app=app).apply_async(  # as send_callback's Celery path calls it
                args=(run,),
                task_id="cb-1",
                headers=headers,
                argsrepr="(run_id='r1')",
                kwargsrepr="{'tag': 't-é'}",
                connection=conn,
            )
        celery_message = _pop(scratch, queue)
        completion.send_callback(sig, run, "cb-1", headers, "(run_id='r1')")
        ours = _pop(scratch, queue)
    assert _differences(celery_message, ours) == {("properties", "delivery_tag")}
    assert ours["headers"]["parent_id"] == "ingest-1"
    assert ours["headers"]["root_id"] == (root_id or "ingest-1")
    assert ours["headers"]["id"] == "cb-1" and ours["body"][:2] == [[run], {"tag": "t-é"}]


def test_callbacks_that_apply_async_could_write_differently_stay_on_it() -> None:
    from nen_celery.lifecycle import completion
    from nen_celery.worker import NenTask, app
    from tests.callbacks import record

    assert completion.direct_callback(dict(record.s())) is not None
    assert completion.direct_callback(dict(record.s().set(queue="elsewhere"))) is None  # options
    assert completion.direct_callback(dict(record.si({"run_id": "x"}))) is None  # immutable
    assert completion.direct_callback(dict(record.s() | record.s())) is None  # a chain
    assert completion.direct_callback({"task": "not.registered.here", "args": [], "kwargs": {}}) is None

    class Custom(NenTask):  # type: ignore[misc]
        def apply_async(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover - never sent
            return super().apply_async(*args, **kwargs)

    name = f"tests.custom.{uuid.uuid4().hex[:8]}"

    @app.task(name=name, base=Custom)
    def custom(run: dict[str, Any]) -> None:  # pragma: no cover - never run
        pass

    try:
        assert completion.direct_callback({"task": name, "args": [], "kwargs": {}, "options": {}}) is None
        with env(NEN_DIRECT_PUBLISH="false"):
            assert completion.direct_callback(dict(record.s())) is None
    finally:
        app.tasks.pop(name, None)


def test_a_callback_whose_arguments_do_not_fit_raises_before_anything_is_pushed(
    scratch: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nen_celery.lifecycle import completion
    from tests.callbacks import record

    sig = dict(record.s(tag="x", unknown_kwarg=1))
    _scratch_callback(sig, monkeypatch)
    with pytest.raises(TypeError):
        completion.send_callback(sig, {"run_id": "r"}, "cb-2", dict(NOT_HERE), "(x)")
    assert scratch.dbsize() == 0


def test_a_kwargsrepr_set_on_the_signature_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    """A caller hiding its callback's kwargs (``.set(kwargsrepr=...)``, Celery's "Hiding
    sensitive information") keeps that repr: such a signature goes through apply_async, and
    the repr this package computes must not replace it."""
    from celery.canvas import Signature

    from nen_celery.lifecycle import completion
    from tests.callbacks import record

    effective: list[dict[str, Any]] = []

    def capture(self: Signature, args: Any = None, kwargs: Any = None, **options: Any) -> None:
        effective.append(self._merge(args, kwargs, options)[2])  # what apply_async would send

    monkeypatch.setattr(Signature, "apply_async", capture)
    hidden = dict(record.s(tag="secret-tag").set(kwargsrepr="{'tag': '<hidden>'}"))
    completion.send_callback(hidden, {"run_id": "r"}, "cb-3", dict(NOT_HERE), "(x)")
    assert effective[-1]["kwargsrepr"] == "{'tag': '<hidden>'}"
    assert effective[-1]["argsrepr"] == "(x)" and effective[-1]["task_id"] == "cb-3"
