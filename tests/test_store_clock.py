"""Finding 13 of issue 25: leases, ``unknown_at`` and timers are on the run store's clock
(store/clock.py), never on the wall clock of the host that happened to write or compare them."""

from __future__ import annotations

import importlib
import pkgutil
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from nen_celery.lifecycle import reconcile
from nen_celery.store.clock import StoreClock
from nen_celery.store.runs import RunStore
from tests.helpers import wait_for

WF = "12345678-1234-1234-1234-123456789abc"
HOUR = 3600.0


class Reads:
    """A TIME that counts its calls and can fail."""

    def __init__(self, at: float = 1_000_000.0) -> None:
        self.at, self.calls, self.fail = at, 0, False

    def __call__(self) -> tuple[int, int]:
        self.calls += 1
        if self.fail:
            raise ConnectionError("down")
        return int(self.at), round((self.at % 1) * 1e6)


class Monotonic:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_the_clock_reads_time_once_per_resync_and_counts_on_the_monotonic_clock() -> None:
    mono, reads = Monotonic(), Reads()
    clock = StoreClock(reads, resync=30.0, monotonic=mono)
    assert clock.time() == 1_000_000.0 and reads.calls == 1
    mono.now += 12.5
    assert clock.time() == 1_000_012.5 and reads.calls == 1
    mono.now += 20.0  # past the resync: read again
    reads.at = 1_000_040.0  # the store's clock ran a little fast meanwhile
    assert clock.time() == 1_000_040.0 and reads.calls == 2


def test_a_failed_reading_carries_the_last_one_forward_but_none_at_all_raises() -> None:
    mono, reads = Monotonic(), Reads()
    reads.fail = True
    clock = StoreClock(reads, resync=30.0, monotonic=mono)
    with pytest.raises(ConnectionError):
        clock.time()
    reads.fail = False
    assert clock.time() == 1_000_000.0
    reads.fail = True
    mono.now += 31.0
    assert clock.time() == 1_000_031.0 and reads.calls == 3
    assert clock.time() == 1_000_031.0 and reads.calls == 3  # not again before the next resync


@pytest.mark.integration
def test_the_run_stores_clock_is_redis_time(store: Any) -> None:
    seconds, micros = store.redis.time()
    assert abs(store.clock.time() - (seconds + micros / 1e6)) < 1.0


class SkewedTime:
    """``time`` as a host whose wall clock is ``skew`` seconds off sees it (monotonic is not)."""

    def __init__(self, skew: float) -> None:
        self.skew = skew

    def time(self) -> float:
        return time.time() + self.skew

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)


@contextmanager
def _host_clock_off_by(monkeypatch: pytest.MonkeyPatch, skew: float) -> Iterator[None]:
    """Every store module's ``time`` (whichever reads it) skewed; nothing process-wide, so the
    suite's worker threads keep the real clock."""
    import nen_celery.store as store_package

    skewed = SkewedTime(skew)
    with monkeypatch.context() as patch:
        for info in pkgutil.iter_modules(store_package.__path__):
            module = importlib.import_module(f"nen_celery.store.{info.name}")
            if getattr(module, "time", None) is time:
                patch.setattr(module, "time", skewed)
        yield


def _fresh_store(store: Any) -> RunStore:
    """Another process's store (its own clock reading), on the same run store."""
    return RunStore(store.redis, store.settings, store.sealer)


def _forget(store: Any, run_id: str) -> None:
    store.redis.zrem(store.timers_key(run_id), run_id)
    store.redis.delete(store.run_key(run_id))


@pytest.mark.integration
def test_finding_13_a_lease_taken_on_a_host_an_hour_ahead_lapses_on_time(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: the lease was `now + lease` by the writer's clock; a worker an hour ahead held a
    1 s lease for an hour against every other worker (tried on c89bfbc: busy 3601 s)."""
    run_id = f"clock-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, None)
    try:
        with _host_clock_off_by(monkeypatch, HOUR):
            ahead = _fresh_store(store)
            assert ahead.claim_submit(run_id, 1.0, "submit-1", "x1").verdict == "ok"
        other = _fresh_store(store)
        claim = other.claim_submit(run_id, 30.0, "submit-2", "x2")
        assert claim.verdict == "busy" and float(claim.detail) <= 1.0
        wait_for(
            lambda: other.claim_submit(run_id, 30.0, "submit-2", "x2").verdict == "ok",
            timeout=10,
            what="the 1 s lease to lapse",
        )
    finally:
        _forget(store, run_id)


@pytest.mark.integration
def test_finding_13_unknown_at_written_an_hour_behind_is_not_an_hour_old(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before: a worker an hour behind wrote unknown_at an hour in the past, and beat's next sweep
    ended the run submit_failed at once (NEN_UNKNOWN_TIMEOUT long passed by its own clock)."""
    run_id = f"clock-{uuid.uuid4()}"
    assert store.create(run_id, WF, {"A": 1}, None, None, None)
    try:
        with _host_clock_off_by(monkeypatch, -HOUR):
            behind = _fresh_store(store)
            assert behind.apply(run_id, "unknown", source="submit:ambiguous")[0] == "applied"
        beat = _fresh_store(store)
        decision = reconcile.decide(beat.raw(run_id), beat.clock.time(), store.settings)
        assert decision.action != reconcile.EXPIRE_UNKNOWN
        assert abs(float(beat.raw(run_id)["unknown_at"]) - beat.clock.time()) < 5.0
    finally:
        _forget(store, run_id)
