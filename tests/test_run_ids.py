"""Issue 29, finding 1: a run id reaches only its own keys (domain/run_ids.py, store/keys.py)."""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from nen_celery.domain.run_ids import KEY_SUFFIXES, RULE, valid_run_id
from nen_celery.store.keys import KeyLayout
from tests.conftest import env

LAYOUT = KeyLayout("p", 16)


def run_keys_of(run_id: str) -> list[str]:
    """Every key KeyLayout builds from a run id, whichever method builds it (found, not listed)."""
    keys: list[str] = []
    for name, method in inspect.getmembers(LAYOUT, inspect.ismethod):
        params = list(inspect.signature(method).parameters)
        if not params or params[0] != "run_id" or name.startswith("_"):
            continue
        extra = ["0"] * (len(params) - 1)  # callback_keys' attempt
        built = method(run_id, *extra)
        keys += [built] if isinstance(built, str) else list(built)
    return keys


def own_suffixes(run_id: str) -> list[str]:
    """The part after ``<run key>:`` of each of the run's keys in its own slot."""
    base = LAYOUT.run_key(run_id)
    return [key[len(base) + 1 :] for key in run_keys_of(run_id) if key.startswith(base + ":")]


def test_every_key_of_a_run_is_its_run_key_or_a_suffix_the_ids_may_not_hold() -> None:
    base = LAYOUT.run_key("X")
    suffixes = own_suffixes("X")
    assert {"secure", "kept", "callback:0:lease", "callback:0:done", "callback:0:fence"} <= set(suffixes)
    for key in run_keys_of("X"):
        if key.startswith(f"{LAYOUT.prefix}:run:"):
            assert key == base or key[len(base) + 1 :].split(":")[0] in KEY_SUFFIXES, key


@pytest.mark.parametrize("suffix", own_suffixes("X"))
def test_an_id_that_mimics_a_key_suffix_is_refused(suffix: str) -> None:
    for other in ("X", "tenant:7"):
        assert not valid_run_id(f"{other}:{suffix}")
        assert valid_run_id(other)


@pytest.mark.parametrize(
    ("run_id", "ok"),
    [
        ("order:42", True),
        ("tenant:7:job", True),
        ("secure", True),  # the first part names no suffix of another run
        ("secure:1", True),
        ("run:7", True),
        ("X:secure", False),
        ("X:kept", False),
        ("X:callback:0:done", False),
        ("a:b:callback", False),
        ("X:Secure", True),  # keys are case-sensitive
        ("X:securely", True),
        ("", False),
        (":x", False),
        ("x" * 128, True),
        ("x" * 129, False),
    ],
)
def test_valid_run_id(run_id: str, ok: bool) -> None:
    assert valid_run_id(run_id) is ok


def test_the_rule_names_every_reserved_word() -> None:
    assert all(f"'{word}'" in RULE for word in KEY_SUFFIXES)


# -- finding 2: one bad entry never stops a sweep or a listing -------------------------------------
@pytest.fixture
def poisoned(stack: Any, store: Any) -> Iterator[tuple[str, str, str]]:
    """A foreign entry (a string under a run's key, as `X:secure` made before the fix), a damaged
    record, and a good queued run, all due on the timers and in the runs index."""
    foreign, damaged, good = (f"poison-{kind}-{uuid.uuid4()}" for kind in ("foreign", "damaged", "good"))
    store.redis.set(store.run_key(foreign), "sealed-bytes")
    store.redis.hset(
        store.run_key(damaged),
        mapping={"run_id": damaged, "status": "submitted", "created_at": "not-a-time", "workflow_id": "wf"},
    )
    assert store.create(good, "12345678-1234-1234-1234-123456789abc", {"A": 1}, None, None, None)
    stack.counter.wait_idle()
    later = time.time() + 3600  # earlier tests' timers out of the way: only these three are due
    store.set_timers({rid: later for rid in store.timers()}, [])
    store.set_timers({foreign: 0, damaged: 0, good: 0}, [])
    for rid in (foreign, damaged):
        store.redis.zadd(store.runs_key(rid), {rid: time.time()})
    yield foreign, damaged, good
    stack.counter.wait_idle()
    for rid in (foreign, damaged, good):
        store.redis.delete(store.run_key(rid))
        store.redis.zrem(store.runs_key(rid), rid)
        store.redis.zrem(store.timers_key(rid), rid)


@pytest.mark.integration
def test_a_sweep_skips_a_foreign_entry_and_a_damaged_record_and_goes_on(
    poisoned: tuple[str, str, str], store: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Before: one WRONGTYPE failed the sweep's pipeline, every tick, for every run (c89bfbc)."""
    from nen_celery.worker import reconcile_runs

    foreign, damaged, _ = poisoned
    with env(NEN_QUEUED_GRACE="60"), caplog.at_level(logging.ERROR, logger="nen_celery"):
        counts = reconcile_runs.apply().get()
    assert counts.get("bad_entry") == 2 and counts.get("resubmit") == 1, counts
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert store.run_key(foreign) in logged and damaged in logged
    timers = dict(store.redis.zrange(store.timers_key(foreign), 0, -1, withscores=True))
    assert foreign not in timers  # nothing to watch: logged once
    damaged_at = store.redis.zscore(store.timers_key(damaged), damaged)
    assert damaged_at is not None and damaged_at > time.time() + 3000  # looked at again in an hour


@pytest.mark.integration
def test_a_listing_skips_a_foreign_entry_and_a_damaged_record(
    poisoned: tuple[str, str, str], store: Any
) -> None:
    foreign, damaged, good = poisoned
    listed = [run.run_id for run in store.list(limit=10_000)]
    assert good in listed and foreign not in listed and damaged not in listed
