"""The opt-in fast paths' gates (fastpath/gate.py): tested version ranges, signature checks, the
direct-publish self-check on a real broker, one WARNING when a path steps aside, and defaults
that leave Celery and kombu as they are."""

from __future__ import annotations

import inspect
import logging
import os
import socket
import subprocess
import sys
import types
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from celery import Celery, Task, signals
from kombu.transport import redis as kombu_redis

from nen_celery.fastpath import direct_publish, selfcheck
from nen_celery.fastpath import gate as fastpath
from nen_celery.fastpath import kombu_redis as redis_transport
from nen_celery.fastpath.event_batches import EventBatches
from nen_celery.runtime.context import get_context
from nen_celery.settings import Settings
from nen_celery.web import receiver
from nen_celery.worker import ingest_webhook, submit_run
from tests.cluster import db_url
from tests.conftest import TEST_REDIS_URL, Stack, env
from tests.helpers import flushed_db

# a DB of its own (no other test's offset): the self-check's probes must leave it as they found it
SCRATCH_URL = db_url(TEST_REDIS_URL, 11)


@pytest.fixture(autouse=True)
def fresh_warnings() -> Iterator[None]:
    """Each test sees its own warnings, and probes afresh (a verdict is kept per app's id)."""
    fastpath.reset_warnings()
    direct_publish.forget_self_checks()
    yield
    fastpath.reset_warnings()


@pytest.fixture
def scratch() -> Iterator[redis.Redis]:
    with flushed_db(SCRATCH_URL) as client:
        yield client


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "nen_celery.fastpath" and r.levelno == logging.WARNING
    ]


# -- the version gate (pure) -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "spec", "inside"),
    [
        ("5.7.0", fastpath.CELERY_TESTED, True),
        ("5.5.0", fastpath.CELERY_TESTED, True),  # the lowest tested
        ("5.7.9", fastpath.CELERY_TESTED, True),
        ("5.7.0.post1", fastpath.CELERY_TESTED, True),  # a post-release of a tested release
        ("5.4.0", fastpath.CELERY_TESTED, False),  # below
        ("5.8.0", fastpath.CELERY_TESTED, False),  # above
        ("6.0.0", fastpath.CELERY_TESTED, False),
        ("5.8.0rc1", fastpath.CELERY_TESTED, False),  # pre-releases: never tested
        ("5.7.1b1", fastpath.CELERY_TESTED, False),
        ("5.5.0rc2", fastpath.CELERY_TESTED, False),
        ("5.6.0.dev3", fastpath.CELERY_TESTED, False),
        ("5.5.2", fastpath.KOMBU_TESTED, True),
        ("5.5.1", fastpath.KOMBU_TESTED, False),
        ("5.7.0", fastpath.KOMBU_TESTED, True),
        ("5.8.0", fastpath.KOMBU_TESTED, False),
        (None, fastpath.KOMBU_TESTED, False),  # not installed
        ("not a version", fastpath.KOMBU_TESTED, False),
        ("5.7.0", "not a specifier", False),
    ],
)
def test_the_version_gate(version: str | None, spec: str, inside: bool) -> None:
    assert fastpath.version_in_range(version, spec) is inside


def test_the_tested_ranges() -> None:
    assert fastpath.TESTED == {
        "direct_publish": (("celery", ">=5.5,<5.8"), ("kombu", ">=5.5.2,<5.8")),
        "redis_transport": (("kombu", ">=5.5.2,<5.8"),),
        "event_batches": (("celery", ">=5.5,<5.8"),),
    }
    # the libraries installed here are inside them: every gate is open
    for path in fastpath.TESTED:
        assert fastpath.version_gate(path) == (True, "")


def test_a_version_outside_the_range_is_named() -> None:
    tested = fastpath.TESTED["direct_publish"]
    assert fastpath.versions_problem({"celery": "5.7.0", "kombu": "5.7.0"}, tested) is None
    assert (
        fastpath.versions_problem({"celery": "5.7.0", "kombu": "5.8.0"}, tested)
        == "kombu 5.8.0 is outside the tested range kombu>=5.5.2,<5.8"
    )
    assert (
        fastpath.versions_problem({"celery": "5.8.0rc1", "kombu": "5.7.0"}, tested)
        == "celery 5.8.0rc1 is outside the tested range celery>=5.5,<5.8"
    )
    assert fastpath.versions_problem({"kombu": "5.7.0"}, tested) == (
        "celery (not installed) is outside the tested range celery>=5.5,<5.8"
    )


# -- the signature checks (pure, on fake classes) ------------------------------------------------


class _Channel:
    pool = None

    def conn_or_acquire(self, client: Any = None) -> None: ...

    def _create_client(self, asynchronous: bool = False) -> None: ...


class _Poller:
    def get(self, callback: Any, timeout: float | None = None) -> None: ...


class _QoS:
    def ack(self, delivery_tag: str) -> None: ...

    def reject(self, delivery_tag: str, requeue: bool = False) -> None: ...

    def can_consume(self) -> bool:
        return True


def _transport(**classes: type) -> types.SimpleNamespace:
    """A stand-in for kombu.transport.redis (kombu itself is never patched here)."""
    defaults: dict[str, type] = {"Channel": _Channel, "MultiChannelPoller": _Poller, "QoS": _QoS}
    return types.SimpleNamespace(__name__="fake.redis", **{**defaults, **classes})


def test_the_signatures_the_kombu_patches_rely_on() -> None:
    assert fastpath.redis_transport_problem(kombu_redis) is None  # this kombu
    assert fastpath.redis_transport_problem(_transport()) is None

    class ChangedGet:
        def get(self, callback: Any, timeout: float | None = None, deadline: float | None = None) -> None: ...

    class ReorderedReject(_QoS):
        def reject(self, requeue: bool, delivery_tag: str) -> None:  # type: ignore[override]
            ...

    class NoPool:
        def conn_or_acquire(self, client: Any = None) -> None: ...

        def _create_client(self) -> None: ...

    assert fastpath.redis_transport_problem(_transport(MultiChannelPoller=ChangedGet)) == (
        "fake.redis.MultiChannelPoller.get takes (self, callback, timeout, deadline), "
        "not (self, callback, timeout)"
    )
    assert fastpath.redis_transport_problem(_transport(QoS=ReorderedReject)) == (
        "fake.redis.QoS.reject takes (self, requeue, delivery_tag), not (self, delivery_tag, requeue)"
    )
    assert (
        fastpath.redis_transport_problem(_transport(Channel=NoPool)) == "fake.redis.Channel.pool is missing"
    )
    assert fastpath.redis_transport_problem(_transport(Channel=object)) == (
        "fake.redis.Channel.conn_or_acquire is missing"
    )
    ok, reason = fastpath.redis_transport_ok(_transport(MultiChannelPoller=ChangedGet))
    assert not ok and reason.startswith("fake.redis.MultiChannelPoller.get takes")


def test_signature_problem() -> None:
    def f(self: Any, client: Any = None) -> None: ...

    assert fastpath.signature_problem(f, ("self", "client"), "f") is None
    assert fastpath.signature_problem(f, ("self",), "f") == "f takes (self, client), not (self)"
    assert fastpath.signature_problem(None, ("self",), "g") == "g is missing"


def test_the_dispatcher_check() -> None:
    full = types.SimpleNamespace(buffer_group=frozenset(), on_send_buffered=None, flush=lambda: None)
    assert fastpath.dispatcher_problem(full) is None
    partial = types.SimpleNamespace(buffer_group=frozenset(), flush=lambda: None)
    assert (
        fastpath.dispatcher_problem(partial)
        == "the event dispatcher (SimpleNamespace) has no on_send_buffered"
    )
    assert "flush" in str(
        fastpath.dispatcher_problem(types.SimpleNamespace(buffer_group=1, on_send_buffered=1, flush=1))
    )


# -- the message comparison (pure) --------------------------------------------------------------


def test_first_difference() -> None:
    a = {
        "body": [[1], {}],
        "headers": {"id": "x", "retries": 0, "t": "1"},
        "properties": {"delivery_tag": "a"},
    }
    b = {
        "body": [[1], {}],
        "headers": {"id": "x", "retries": 0, "t": "2"},
        "properties": {"delivery_tag": "b"},
    }
    loose = {"properties.delivery_tag"}
    assert fastpath.first_difference(a, b, loose) == 'headers.t ("1" != "2")'
    assert fastpath.first_difference(a, b, loose | {"headers.t"}) is None
    # strict types: False is not 0 (Python's == would say it is)
    c = {**b, "headers": {"id": "x", "retries": False, "t": "2"}}
    assert fastpath.first_difference(b, c, loose) == "headers.retries (0 != false)"
    # a loose field must still be there on both sides
    d = {**b, "properties": {}}
    assert (
        fastpath.first_difference(b, d, loose) == "properties.delivery_tag (missing from the direct message)"
    )
    assert (
        fastpath.first_difference(d, b, loose)
        == "properties.delivery_tag (missing from apply_async's message)"
    )


# -- one WARNING -------------------------------------------------------------------------------


def test_a_path_steps_aside_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="nen_celery.fastpath")
    assert fastpath.step_aside("redis_transport", "NEN_PATCH_KOMBU_REDIS", "kombu 9 is outside")
    assert not fastpath.step_aside("redis_transport", "NEN_PATCH_KOMBU_REDIS", "kombu 9 is outside")
    assert _warnings(caplog) == [
        "redis_transport (NEN_PATCH_KOMBU_REDIS) steps aside, stock Celery behaviour kept: kombu 9 is outside"
    ]


def test_the_kombu_patches_step_aside_outside_the_tested_range(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="nen_celery.fastpath")
    own = kombu_redis.Channel.conn_or_acquire
    monkeypatch.setattr(fastpath, "installed_version", lambda dist: "5.8.0" if dist == "kombu" else "5.7.0")
    assert redis_transport.install() is False
    assert redis_transport.install() is False
    assert kombu_redis.Channel.conn_or_acquire is own and not redis_transport.installed()
    assert _warnings(caplog) == [
        "redis_transport (NEN_PATCH_KOMBU_REDIS) steps aside, stock Celery behaviour kept: "
        "kombu 5.8.0 is outside the tested range kombu>=5.5.2,<5.8"
    ]


def test_the_kombu_patches_install_and_uninstall() -> None:
    own = {
        (cls, name): cls.__dict__[name]
        for cls, name in [
            (kombu_redis.Channel, "conn_or_acquire"),
            (kombu_redis.MultiChannelPoller, "get"),
            (kombu_redis.QoS, "ack"),
            (kombu_redis.QoS, "reject"),
        ]
    }
    assert not redis_transport.installed()
    try:
        assert redis_transport.install() is True
        assert redis_transport.install() is False  # once
        assert all(cls.__dict__[name] is not fun for (cls, name), fun in own.items())
        # the wrapped methods keep kombu's signatures: a check after install still passes
        assert fastpath.redis_transport_problem(kombu_redis) is None
    finally:
        redis_transport.uninstall()
    assert all(cls.__dict__[name] is fun for (cls, name), fun in own.items())


def test_event_batches_step_aside_without_the_dispatchers_hooks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="nen_celery.fastpath")
    old = types.SimpleNamespace(buffer_group=frozenset(), flush=lambda: None)  # no on_send_buffered
    consumer = types.SimpleNamespace(event_dispatcher=old, hub=None, timer=None)
    step = EventBatches(consumer)
    for _ in range(2):
        step.start(consumer)
    assert old.buffer_group == frozenset() and not hasattr(old, "on_send_buffered") and not step.active
    step.shutdown(consumer)
    assert _warnings(caplog) == [
        "event_batches (NEN_EVENT_BATCHES) steps aside, stock Celery behaviour kept: "
        "the event dispatcher (SimpleNamespace) has no on_send_buffered"
    ]


def test_event_batches_take_over_a_celery_dispatcher() -> None:
    app = Celery("fastpath-events", set_as_current=False, broker="memory://")
    dispatcher = app.events.Dispatcher(enabled=False)
    consumer = types.SimpleNamespace(event_dispatcher=dispatcher, hub=None, timer=None)
    step = EventBatches(consumer)
    step.start(consumer)
    assert step.active and dispatcher.buffer_group == frozenset({"task"})
    assert dispatcher.on_send_buffered is not None


# -- the direct-publish self-check on a real broker ------------------------------------------------


def _scratch_app(**conf: Any) -> Celery:
    app = Celery(f"fastpath-{uuid.uuid4().hex[:6]}", set_as_current=False, broker=SCRATCH_URL)
    app.conf.update(task_ignore_result=True, **conf)
    return app


def _keys(client: redis.Redis) -> dict[bytes, Any]:
    """Every key with its contents (sets and lists: their members)."""
    out: dict[bytes, Any] = {}
    for key in client.keys("*"):
        kind = client.type(key)
        out[key] = (
            client.smembers(key) if kind == b"set" else client.lrange(key, 0, -1) if kind == b"list" else kind
        )
    return out


@pytest.mark.parametrize(
    "conf",
    [
        {},
        {"broker_transport_options": {"global_keyprefix": "tenant7:"}},
        {"task_default_delivery_mode": "transient"},
    ],
    ids=["plain", "key-prefix", "transient"],
)
def test_the_self_check_passes_and_leaves_the_broker_as_it_was(
    scratch: redis.Redis, conf: dict[str, Any]
) -> None:
    app = _scratch_app(**conf)

    @app.task(name="tests.fastpath.probed")
    def probed(run: dict[str, Any], tag: str, *, level: int) -> None:  # pragma: no cover - never run
        pass

    scratch.sadd("_kombu.binding.celery", "celery\x06\x16\x06\x16celery")  # a worker's binding
    scratch.lpush("celery", b"a message waiting")
    before = _keys(scratch)
    route, why = direct_publish.route_for(app, probed)
    assert route is not None, why
    assert direct_publish.self_check(probed, route, SCRATCH_URL, 2.0) == (True, "")
    assert _keys(scratch) == before


def test_the_self_check_passes_for_nens_own_tasks_on_the_suites_broker() -> None:
    client = redis.Redis.from_url(TEST_REDIS_URL)
    for task in (ingest_webhook, submit_run):
        route, why = direct_publish.route_for(task.app, task)
        assert route is not None, why
        direct_publish.forget_self_checks()
        assert direct_publish.self_check(task, route, TEST_REDIS_URL, 2.0) == (True, "")
    leftovers = [k for k in client.keys("*") if b"selfcheck" in k]
    tables = [k for k in client.keys("_kombu.binding*") if client.type(k) == b"set"]
    bindings = [m for k in tables for m in client.smembers(k) if b"selfcheck" in m]
    assert leftovers == [] and bindings == []


def test_the_self_check_passes_with_a_listener_adding_per_message_headers(scratch: redis.Redis) -> None:
    """A tracing hook puts a fresh id on every message: its value may differ, not its name."""
    app = _scratch_app()

    @app.task(name="tests.fastpath.traced")
    def traced() -> None:  # pragma: no cover - never run
        pass

    def trace(headers: dict[str, Any] | None = None, **_: Any) -> None:
        if headers is not None:
            headers["traceparent"] = f"00-{uuid.uuid4().hex}-01"

    signals.before_task_publish.connect(trace, weak=False)
    try:
        route, _ = direct_publish.route_for(app, traced)
        assert route is not None
        assert direct_publish.self_check(traced, route, SCRATCH_URL, 2.0) == (True, "")
    finally:
        signals.before_task_publish.disconnect(trace)
    assert scratch.dbsize() == 0


class _ExtraHeader(Task):  # type: ignore[misc]
    """A task class whose apply_async writes what the direct path does not: a header of its own."""

    def apply_async(
        self, args: Any = None, kwargs: Any = None, task_id: str | None = None, **options: Any
    ) -> Any:
        options["headers"] = {**(options.get("headers") or {}), "x_tenant": "t-1"}
        return super().apply_async(args, kwargs, task_id, **options)


def test_the_self_check_refuses_a_message_that_differs_with_one_warning(
    scratch: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="nen_celery.fastpath")
    app = _scratch_app()

    @app.task(name="tests.fastpath.tenant", base=_ExtraHeader)
    def tenant(x: str) -> None:  # pragma: no cover - never run
        pass

    route, _ = direct_publish.route_for(app, tenant)
    assert route is not None
    ok, reason = direct_publish.self_check(tenant, route, SCRATCH_URL, 2.0)
    assert (
        not ok
        and reason == "headers.x_tenant (missing from the direct message) differs from apply_async's message"
    )
    for _ in range(3):  # the verdict is kept, the warning logged once
        assert direct_publish.for_task(tenant, timeout=2.0, max_connections=5) is None
    assert _warnings(caplog) == [
        "direct_publish for tests.fastpath.tenant (NEN_DIRECT_PUBLISH) steps aside, stock Celery behaviour "
        f"kept: self-check failed: {reason}"
    ]
    assert scratch.dbsize() == 0


def test_direct_publish_steps_aside_outside_the_tested_range(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.WARNING, logger="nen_celery.fastpath")
    monkeypatch.setattr(fastpath, "installed_version", lambda dist: "5.8.0" if dist == "celery" else "5.7.0")
    for _ in range(2):
        assert direct_publish.for_task(ingest_webhook, 2.0, 5, "NEN_WEBHOOK_DIRECT_PUBLISH") is None
    assert _warnings(caplog) == [
        "direct_publish (NEN_WEBHOOK_DIRECT_PUBLISH) steps aside, stock Celery behaviour kept: "
        "celery 5.8.0 is outside the tested range celery>=5.5,<5.8"
    ]


def test_a_probe_that_cannot_run_steps_aside_and_is_tried_again() -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{sock.getsockname()[1]}/0"
    app = _scratch_app(broker_url=dead, broker_connection_timeout=0.5, broker_connection_max_retries=0)

    @app.task(name="tests.fastpath.unreachable")
    def unreachable() -> None:  # pragma: no cover - never run
        pass

    route, _ = direct_publish.route_for(app, unreachable)
    assert route is not None
    ok, reason = direct_publish.self_check(unreachable, route, dead, 0.5)
    assert not ok and reason.startswith("the probe could not run:"), reason
    # no verdict kept: the next publisher made tries again
    assert not [key for key in selfcheck._verdicts if key[1] == id(app)]


def test_the_probe_runs_outside_the_calling_task(scratch: redis.Redis) -> None:
    """Made inside a running task (a worker's first callback), the probe links no parent."""
    from celery._state import _task_stack

    app = _scratch_app()

    @app.task(name="tests.fastpath.child")
    def child() -> None:  # pragma: no cover - never run
        pass

    route, _ = direct_publish.route_for(app, child)
    assert route is not None
    parent = ingest_webhook
    parent.push_request(id="parent-1", root_id="root-1", called_directly=False)
    _task_stack.push(parent)
    try:
        assert direct_publish.self_check(child, route, SCRATCH_URL, 2.0) == (True, "")
        assert not parent.request.children  # no trail either
        # the same probe in this thread: apply_async links the running task, the probe does not
        ok, reason = selfcheck._probe(child, route, SCRATCH_URL, 2.0)
        assert not ok and reason.startswith("headers.root_id"), reason
    finally:
        _task_stack.pop()
        parent.pop_request()


# -- defaults: nothing is patched or bypassed --------------------------------------------------


def test_every_fast_path_is_off_by_default() -> None:
    for name in ("webhook_direct_publish", "direct_publish", "patch_kombu_redis", "event_batches"):
        assert Settings.model_fields[name].default is False, name


def test_with_no_settings_nothing_is_patched_and_everything_goes_through_apply_async(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The suite's worker started (NenWorkerStep ran) with the defaults."""
    from nen_celery.lifecycle import completion, submit
    from nen_celery.web import asgi
    from tests.callbacks import record

    with env(
        NEN_DIRECT_PUBLISH=None,
        NEN_WEBHOOK_DIRECT_PUBLISH=None,
        NEN_PATCH_KOMBU_REDIS=None,
        NEN_EVENT_BATCHES=None,
    ):
        assert not redis_transport.installed()
        assert not getattr(kombu_redis.Channel.conn_or_acquire, "_nen_shared", False)
        assert inspect.getmodule(kombu_redis.Channel.conn_or_acquire) is kombu_redis  # kombu's own
        assert not getattr(kombu_redis.MultiChannelPoller.get, "_nen_wakeup", False)
        ctx = get_context()
        asgi._direct_publisher()  # the standalone receiver's start-up: nothing made
        assert receiver.direct_publisher(ctx, create=False) is None
        assert receiver.direct_publisher(ctx) is None
        assert submit.submit_publisher() is None
        assert completion.direct_callback(dict(record.s())) is None
        applied: list[dict[str, Any]] = []
        monkeypatch.setattr(submit_run, "apply_async", lambda *a, **kw: applied.append(kw))
        submit.enqueue_submit("run-default", "wf")  # start_run's publish
        assert applied and applied[0]["args"] == ("run-default",)


def test_the_standalone_receiver_makes_its_publisher_at_start_up_when_asked() -> None:
    from nen_celery.web import asgi

    with env(NEN_WEBHOOK_DIRECT_PUBLISH="true"):
        ctx = get_context()
        assert receiver.direct_publisher(ctx, create=False) is None
        asgi._direct_publisher()
        assert receiver.direct_publisher(ctx, create=False) is not None


def test_importing_and_init_celery_change_nothing() -> None:
    """In a fresh process with every fast path asked for: import and init_celery patch nothing
    (the kombu patches wait for a worker's start, a publisher for the first publish)."""
    code = """
import threading
from celery import Celery
from kombu.transport import redis as k
own = (k.Channel.conn_or_acquire, k.MultiChannelPoller.get, k.QoS.ack, k.QoS.reject)
import nen_celery, nen_celery.worker, nen_celery.web.asgi
from nen_celery import init_celery
from nen_celery.fastpath import selfcheck
app = Celery("user", set_as_current=False)
init_celery(app)
assert (k.Channel.conn_or_acquire, k.MultiChannelPoller.get, k.QoS.ack, k.QoS.reject) == own
assert selfcheck._verdicts == {}
assert not [t for t in threading.enumerate() if t.name == "nen-selfcheck"]
print("unchanged")
"""
    settings = {
        "NEN_DIRECT_PUBLISH": "true",
        "NEN_WEBHOOK_DIRECT_PUBLISH": "true",
        "NEN_PATCH_KOMBU_REDIS": "true",
        "NEN_EVENT_BATCHES": "true",
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**os.environ, **settings},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout.strip() == "unchanged", done.stderr
