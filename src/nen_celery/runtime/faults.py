"""Failpoints: named places where a test can freeze a task, so it can kill the worker exactly there.

Off unless NEN_FAILPOINTS names the point (testing only). An enabled point fires once per
arming (``arm(name)``): the task writes ``<prefix>:failpoint:<name>`` = its pid and waits until
that key is deleted. The fault tests wait for the key, SIGKILL that pid (or the whole worker),
and check that the redelivered task (which passes the now disarmed point) finishes the run.
"""

from __future__ import annotations

import logging
import os
import time

from nen_celery.runtime.context import get_context
from nen_celery.store.keys import KeyLayout

log = logging.getLogger("nen_celery.runtime.faults")


def failpoint(name: str) -> None:
    ctx = get_context()
    if name not in ctx.settings.failpoint_names:
        return
    key = KeyLayout(ctx.settings.key_prefix, ctx.settings.store_shards).failpoint_key(name)
    if not ctx.redis.delete(f"{key}:armed"):
        return
    ctx.redis.set(key, os.getpid())
    log.warning("failpoint %s reached (pid %d); waiting for %s to be deleted", name, os.getpid(), key)
    while ctx.redis.exists(key):
        time.sleep(0.02)
