"""The shared token bucket towards Nen (nen_celery.nen.ratelimit), against real Redis.

The arithmetic with an explicit clock; threads sharing one bucket; worker processes sharing it,
measured by the simulator's arrival times; a 429 pausing every worker, not only the one that
got it; bad settings refused with their name.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from nen_celery.errors import ConfigurationError
from nen_celery.nen.ratelimit import RateLimited, RateLimiter, new_limiter
from nen_celery.settings import Settings, get_settings, reset_settings
from nen_celery.simulator import SimulatorServer
from nen_celery.simulator.config import PlannedError
from tests.cluster import Cluster, db_url, logs_on_failure
from tests.conftest import TEST_REDIS_URL, env, sim_config


@pytest.fixture
def client() -> Iterator[redis.Redis]:
    """The test DB; buckets made here are deleted after the test (left behind, their expiry
    would show up in a later test's proof that nothing changed)."""
    client = redis.Redis.from_url(TEST_REDIS_URL, decode_responses=True)
    yield client
    for key in client.scan_iter(match="nentest:rl:*"):
        client.delete(key)


def bucket(client: redis.Redis, rate: float = 2.0, burst: float = 3.0, **kw: float) -> RateLimiter:
    return RateLimiter(client, f"nentest:rl:{uuid.uuid4().hex}", rate, burst, **kw)


def test_bucket_arithmetic(client: redis.Redis) -> None:
    b = bucket(client, rate=2.0, burst=3.0)
    t = 1000.0
    assert [b.take(now=t, max_wait=1).wait for _ in range(3)] == [0, 0, 0]  # the burst
    assert b.take(now=t, max_wait=1).wait == pytest.approx(0.5)  # then one per 1/rate
    assert b.take(now=t, max_wait=1).wait == pytest.approx(1.0)
    refused = b.take(now=t, max_wait=1)
    assert not refused.allowed and refused.wait == pytest.approx(1.5)
    again = b.take(now=t, max_wait=1)  # a refusal reserves nothing
    assert not again.allowed and again.wait == pytest.approx(1.5)
    assert not b.take(now=t + 1.25, max_wait=0.2).allowed  # the 1.5 s slot is 0.25 s away now
    assert b.take(now=t + 1.25, max_wait=0.3).wait == pytest.approx(0.25)
    # refills to the burst, never above
    assert [b.take(now=t + 100, max_wait=0).allowed for _ in range(4)] == [True, True, True, False]
    assert 0 < client.pttl(b.key) <= 62_000  # a full bucket is the same as no key: it expires


def test_pause_holds_every_token_back_then_restarts_at_the_rate(client: redis.Redis) -> None:
    b = bucket(client, rate=2.0, burst=3.0)
    t = 2000.0
    before = b.take(now=t, max_wait=0).epoch
    assert b.pause(3.0, now=t) == pytest.approx(t + 3)
    first = b.take(now=t, max_wait=10)
    assert first.wait == pytest.approx(3.0) and first.epoch == before + 1
    assert b.take(now=t, max_wait=10).wait == pytest.approx(3.5)
    assert b.pause(1.0, now=t + 0.5) == pytest.approx(t + 3)  # shorter pause: changes nothing
    assert b.epoch() == before + 1
    assert not b.take(now=t + 1, max_wait=2).allowed  # the next slot is t + 4


def test_bad_limits_are_refused_with_their_name(client: redis.Redis) -> None:
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(client, "k", 0, 1)
    with pytest.raises(ValueError, match="burst"):
        RateLimiter(client, "k", 1, 0.5)
    for name, value in [
        ("NEN_RATE_LIMIT", "-1"),
        ("NEN_RATE_LIMIT", "fast"),
        ("NEN_RATE_LIMIT_BURST", "0"),
        ("NEN_RATE_LIMIT_MAX_WAIT", "30"),
        ("NEN_RATE_LIMIT_PAUSE", "0"),
        ("NEN_BROKER_QUEUE_TYPE", "stream"),
    ]:
        with env(**{name: value}), pytest.raises(ConfigurationError, match=f"{name}: "):
            get_settings()
    reset_settings()
    assert new_limiter(Settings(rate_limit=0)) is None  # off: no Redis call per request
    assert Settings(rate_limit=0.5).rate_burst == 1 and Settings(rate_limit=8).rate_burst == 8


def test_acquire_blocks_only_briefly_then_hands_back_a_countdown(client: redis.Redis) -> None:
    slept: list[float] = []
    b = bucket(client, rate=1.0, burst=1.0, max_wait=0.5)
    b._sleep = slept.append  # record instead of sleeping
    assert b.acquire() == 0
    with pytest.raises(RateLimited) as caught:
        b.acquire()  # the next token is ~1 s away: more than max_wait
    assert 0.5 < caught.value.retry_in <= 1.0 and slept == []
    assert caught.value.maybe_sent is False
    b.pause(600)
    with pytest.raises(RateLimited) as long_pause:
        b.acquire()
    assert long_pause.value.retry_in == 60  # never a long countdown


def test_a_pause_while_waiting_voids_the_reserved_slot(client: redis.Redis) -> None:
    b = bucket(client, rate=4.0, burst=1.0, max_wait=1.0)
    b.acquire()

    def sleep_through_a_429(seconds: float) -> None:
        b.pause(5.0)  # another worker got a 429 while this one waited for its slot

    b._sleep = sleep_through_a_429
    with pytest.raises(RateLimited) as caught:
        b.acquire()
    assert caught.value.retry_in > 4


def max_excess(times: list[float], rate: float, burst: float, jitter: float) -> float:
    """Largest (requests in any window) - (rate * window + burst); <= 0 means within budget.
    ``jitter`` widens each window for the spread between taking a token and arriving."""
    times = sorted(times)
    worst = float("-inf")
    for i in range(len(times)):
        for j in range(i, len(times)):
            worst = max(worst, (j - i + 1) - (rate * (times[j] - times[i] + jitter) + burst))
    return worst


def test_threads_sharing_one_bucket_stay_within_rate_and_burst(client: redis.Redis) -> None:
    rate, burst = 100.0, 5.0
    key = f"nentest:rl:{uuid.uuid4().hex}"
    stamps: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = RateLimiter(redis.Redis.from_url(TEST_REDIS_URL), key, rate, burst, max_wait=2.0)
        for _ in range(20):
            mine.acquire()
            with lock:
                stamps.append(time.time())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    started = time.time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(stamps) == 160
    assert time.time() - started >= (160 - burst) / rate * 0.95  # it really was held back
    assert max_excess(stamps, rate, burst, jitter=0.02) <= 1e-9


# -- worker processes sharing the bucket --------------------------------------------------------


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config()) as server:
        yield server


def cluster_with(tmp: Path, sim: SimulatorServer, **settings: str) -> Cluster:
    url = db_url(TEST_REDIS_URL, 5)
    redis.Redis.from_url(url).flushdb()
    sim.reset()
    return Cluster(tmp, url, sim, **settings)


@pytest.mark.integration
def test_worker_processes_share_one_budget(tmp_path: Path, sim: SimulatorServer) -> None:
    rate, burst = 10.0, 3.0
    settings = {
        "NEN_RATE_LIMIT": str(rate),
        "NEN_RATE_LIMIT_BURST": str(burst),
        "NEN_RATE_LIMIT_MAX_WAIT": "0.3",  # most waits are longer: tasks re-queue themselves
    }
    with logs_on_failure(cluster_with(tmp_path, sim, **settings)) as c:
        c.receiver()
        for _ in range(3):
            c.worker(concurrency=2)
        run_ids = [c.start() for _ in range(40)]
        c.settle(run_ids, timeout=90)
        times = sim.stats()["post_times"]
        assert len(times) == 40 and all(c.posts(r) == 1 for r in run_ids)
        assert max(times) - min(times) >= (40 - burst) / rate * 0.95
        # Arrival times, as Nen sees them: a process may be descheduled between taking its token
        # and sending (measured up to ~0.2 s on a loaded 2-core box), which bunches arrivals by
        # that much. Without the shared bucket the 40 POSTs land within about a second: an
        # excess of ~25 requests, far above this allowance.
        assert max_excess(times, rate, burst, jitter=0.25) <= 1e-9
        assert all([x["tag"] for x in c.calls(r)] == ["complete"] for r in run_ids)


@pytest.mark.integration
@pytest.mark.parametrize("retry_after", [3, None])
def test_a_429_pauses_every_worker(tmp_path: Path, sim: SimulatorServer, retry_after: int | None) -> None:
    """One worker gets the 429; the shared bucket stops all three for Retry-After (or
    NEN_RATE_LIMIT_PAUSE), then they go on at the rate."""
    pause = 3.0
    settings = {
        "NEN_RATE_LIMIT": "20",
        "NEN_RATE_LIMIT_BURST": "2",
        "NEN_RATE_LIMIT_MAX_WAIT": "0.5",
        "NEN_RATE_LIMIT_PAUSE": str(pause),
    }
    with logs_on_failure(cluster_with(tmp_path, sim, **settings)) as c:
        c.receiver()
        for _ in range(3):
            c.worker(concurrency=2)
        sim.state.config.post_errors = [PlannedError(429, retry_after=retry_after)]
        run_ids = [c.start() for _ in range(30)]
        c.settle(run_ids, timeout=90)
        times = sorted(sim.stats()["post_times"])
        first = times[0]  # the 429 (planned errors answer the first POSTs)
        during = [t - first for t in times if first + 0.3 < t < first + pause - 0.1]
        assert during == [], f"POSTs during the pause at +{during}s"
        assert len(times) == 31  # 30 runs, one of them twice (after its 429)
        assert sorted(c.posts(r) for r in run_ids) == [1] * 29 + [2]
        assert all([x["tag"] for x in c.calls(r)] == ["complete"] for r in run_ids)


def test_the_scripts_header_names_the_arguments_in_order() -> None:
    """ratelimit.lua reads its ARGV by position: BucketArgs names them once, in the order of the
    script's header, and sends no more than the script reads."""
    import dataclasses
    from importlib import resources

    from nen_celery.nen.ratelimit import BucketArgs
    from tests.test_store_scripts import header, highest

    text = (resources.files("nen_celery.nen") / "ratelimit.lua").read_text()
    names = [f.name for f in dataclasses.fields(BucketArgs)]
    assert header(text, "ARGV") == names
    assert highest(text, "ARGV") == len(names) == len(BucketArgs("take", 1.0, 2.0, None, 0.5).argv())
    assert BucketArgs("take", 1.0, 2.0, None, 0.5).argv() == ["take", "1.0", "2.0", "", "0.5"]
    assert header(text, "KEYS") == ["bucket"] and highest(text, "KEYS") == 1
