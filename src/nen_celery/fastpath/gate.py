"""The opt-in fast paths that bypass or patch Celery and kombu internals, and their gates.

Each is off by default (stock Celery behaviour), installed only in a process that asked for it
(a worker at start-up, the standalone receiver, the first publish of a process whose setting
asked for it: never on import or ``init_celery``), and used only where it was tested:

- ``direct_publish`` (``NEN_WEBHOOK_DIRECT_PUBLISH``, ``NEN_DIRECT_PUBLISH``): task messages
  written onto a Redis broker with one LPUSH instead of ``apply_async`` (direct_publish.py).
  Checked once per task and process by a probe: one message published through ``apply_async``
  to a throwaway queue, compared field by field with the message the direct path builds
  (selfcheck.py).
- ``redis_transport`` (``NEN_PATCH_KOMBU_REDIS``): kombu's Redis ``Channel.conn_or_acquire``
  replaced, ``MultiChannelPoller.get`` and ``QoS.ack`` / ``QoS.reject`` wrapped
  (kombu_redis.py). Checked against the signatures the patches rely on.
- ``event_batches`` (``NEN_EVENT_BATCHES``): the worker's event dispatcher's ``buffer_group``
  and ``on_send_buffered`` set (event_batches.py). Checked for those attributes and ``flush``.

Outside the tested range of Celery / kombu below, or when a check fails, the path steps aside
(stock behaviour) with one WARNING on the ``nen_celery.fastpath.gate`` logger naming the path, its
setting and why. Pre-releases count as untested.
"""

from __future__ import annotations

import inspect
import json
import logging
import threading
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

log = logging.getLogger("nen_celery.fastpath")

DIRECT_PUBLISH = "direct_publish"
REDIS_TRANSPORT = "redis_transport"
EVENT_BATCHES = "event_batches"

CELERY_TESTED = ">=5.5,<5.8"
KOMBU_TESTED = ">=5.5.2,<5.8"

#: path -> (distribution, tested version specifier) for every library it reaches into
TESTED: dict[str, tuple[tuple[str, str], ...]] = {
    DIRECT_PUBLISH: (("celery", CELERY_TESTED), ("kombu", KOMBU_TESTED)),
    REDIS_TRANSPORT: (("kombu", KOMBU_TESTED),),
    EVENT_BATCHES: (("celery", CELERY_TESTED),),
}

#: path -> the settings that ask for it
SETTINGS: dict[str, tuple[str, ...]] = {
    DIRECT_PUBLISH: ("NEN_WEBHOOK_DIRECT_PUBLISH", "NEN_DIRECT_PUBLISH"),
    REDIS_TRANSPORT: ("NEN_PATCH_KOMBU_REDIS",),
    EVENT_BATCHES: ("NEN_EVENT_BATCHES",),
}

#: kombu.transport.redis: (class, method, the parameters the patches call it with, in order)
REDIS_TRANSPORT_SIGNATURES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("Channel", "conn_or_acquire", ("self", "client")),  # replaced: (self, client=None)
    ("MultiChannelPoller", "get", ("self", "callback", "timeout")),  # wrapped, called positionally
    ("QoS", "ack", ("self", "delivery_tag")),  # wrapped
    ("QoS", "reject", ("self", "delivery_tag", "requeue")),  # wrapped
)
#: ... and what the replacements use besides
REDIS_TRANSPORT_ATTRIBUTES: tuple[tuple[str, str], ...] = (
    ("Channel", "_create_client"),
    ("Channel", "pool"),
    ("QoS", "can_consume"),
)
#: what event_batches.py sets and calls on Celery's EventDispatcher
DISPATCHER_ATTRIBUTES = ("buffer_group", "on_send_buffered", "flush")


# -- pure checks -------------------------------------------------------------------------------


def version_in_range(version: str | None, spec: str) -> bool:
    """``version`` is a release inside ``spec`` (PEP 440); pre-releases, dev releases, unknown
    or unparsable versions are not: nothing was tested on them."""
    if not version:
        return False
    try:
        parsed = Version(version)
        specifier = SpecifierSet(spec)
    except (InvalidVersion, InvalidSpecifier):
        return False
    if parsed.is_prerelease or parsed.is_devrelease:
        return False
    return specifier.contains(parsed, prereleases=False)


def versions_problem(versions: Mapping[str, str | None], tested: Iterable[tuple[str, str]]) -> str | None:
    """None when every library is inside its tested range, else why not (the first outside)."""
    for dist, spec in tested:
        version = versions.get(dist)
        if not version_in_range(version, spec):
            shown = version if version else "(not installed)"
            return f"{dist} {shown} is outside the tested range {dist}{spec}"
    return None


def signature_problem(func: Any, expected: Sequence[str], name: str) -> str | None:
    """None when ``func`` takes exactly the parameters ``expected`` (names, in order), else why."""
    if func is None:
        return f"{name} is missing"
    try:
        params = tuple(inspect.signature(func).parameters)
    except (TypeError, ValueError):
        return f"{name} has no readable signature"
    if params != tuple(expected):
        return f"{name} takes ({', '.join(params)}), not ({', '.join(expected)})"
    return None


def redis_transport_problem(module: Any) -> str | None:
    """None when ``module`` (kombu.transport.redis) has the methods redis_transport.py patches
    with the signatures it relies on, and what its replacements use; else the first problem."""
    prefix = getattr(module, "__name__", "kombu.transport.redis")
    for cls_name, method, params in REDIS_TRANSPORT_SIGNATURES:
        cls = getattr(module, cls_name, None)
        problem = signature_problem(getattr(cls, method, None), params, f"{prefix}.{cls_name}.{method}")
        if problem:
            return problem
    for cls_name, attr in REDIS_TRANSPORT_ATTRIBUTES:
        if not hasattr(getattr(module, cls_name, None), attr):
            return f"{prefix}.{cls_name}.{attr} is missing"
    return None


def dispatcher_problem(dispatcher: Any) -> str | None:
    """None when Celery's event dispatcher has what event_batches.py sets and calls."""
    for attr in DISPATCHER_ATTRIBUTES:
        if not hasattr(dispatcher, attr):
            return f"the event dispatcher ({type(dispatcher).__name__}) has no {attr}"
    if not callable(dispatcher.flush):
        return f"the event dispatcher's flush ({type(dispatcher).__name__}) is not callable"
    return None


def first_difference(
    expected: Mapping[str, Any], actual: Mapping[str, Any], loose: Iterable[str] = (), path: str = ""
) -> str | None:
    """The first field (dotted path, in ``expected``'s order, then fields only in ``actual``)
    whose value differs, or None. Values are compared as JSON (``True`` is not ``1``).
    ``loose``: dotted paths that must be present on both sides, whatever their values."""
    loose = frozenset(loose)
    for key in [*expected, *(k for k in actual if k not in expected)]:
        where = f"{path}{key}"
        if key not in expected or key not in actual:
            side = "apply_async's message" if key not in expected else "the direct message"
            return f"{where} (missing from {side})"
        a, b = expected[key], actual[key]
        if where in loose:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            inner = first_difference(a, b, loose, where + ".")
            if inner:
                return inner
        elif _canonical(a) != _canonical(b):
            return f"{where} ({_short(a)} != {_short(b)})"
    return None


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def _short(value: Any, limit: int = 60) -> str:
    text = _canonical(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# -- the gates, with their one warning ---------------------------------------------------------


def installed_version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def version_gate(path: str) -> tuple[bool, str]:
    """(True, "") when the installed libraries of ``path`` are inside its tested range."""
    tested = TESTED[path]
    problem = versions_problem({dist: installed_version(dist) for dist, _ in tested}, tested)
    return (False, problem) if problem else (True, "")


def direct_publish_ok() -> tuple[bool, str]:
    """The version gate of direct publishing (the probe, selfcheck.self_check, follows)."""
    return version_gate(DIRECT_PUBLISH)


def redis_transport_ok(module: Any = None) -> tuple[bool, str]:
    """The version gate and the signature checks of redis_transport.py's patches."""
    ok, reason = version_gate(REDIS_TRANSPORT)
    if not ok:
        return ok, reason
    if module is None:
        from kombu.transport import redis as module
    problem = redis_transport_problem(module)
    return (False, problem) if problem else (True, "")


def event_batches_ok(dispatcher: Any) -> tuple[bool, str]:
    """The version gate, and ``dispatcher`` has what event_batches.py uses."""
    ok, reason = version_gate(EVENT_BATCHES)
    if not ok:
        return ok, reason
    problem = dispatcher_problem(dispatcher)
    return (False, problem) if problem else (True, "")


_warned: set[tuple[str, str, str]] = set()
_warned_lock = threading.Lock()


def step_aside(path: str, setting: str, reason: str, subject: str = "") -> bool:
    """Log why ``path`` stays off (once per path, setting and subject in this process); True
    when this call logged it."""
    key = (path, setting, subject)
    with _warned_lock:
        if key in _warned:
            return False
        _warned.add(key)
    what = f"{path} for {subject}" if subject else path
    log.warning("%s (%s) steps aside, stock Celery behaviour kept: %s", what, setting, reason)
    return True


def reset_warnings() -> None:
    """Forget which warnings were logged (tests)."""
    with _warned_lock:
        _warned.clear()
