"""Prometheus metrics and structured logs, observed from outside: /metrics over HTTP and the
log files of real worker processes."""

from __future__ import annotations

import io
import json
import logging
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from nen_celery import start_run
from nen_celery.logs import runlog
from nen_celery.simulator import SimulatorServer
from tests.callbacks import calls, record
from tests.cluster import Cluster, db_url
from tests.conftest import TEST_REDIS_URL, Stack, env, sim_config
from tests.helpers import wait_for

pytestmark = pytest.mark.integration

WF = "12345678-1234-1234-1234-123456789abc"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    answer = httpx.get(url, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    out: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


@pytest.fixture
def metrics_on() -> Iterator[None]:
    with env(NEN_RECEIVER_METRICS="true"):  # /metrics is opt-in on the receiver
        yield


def test_metrics_count_a_mixed_batch_of_runs_and_refusals(stack: Stack, metrics_on: None) -> None:
    metrics_url = stack.receiver_url + "/metrics"
    failing, unknown = str(uuid.uuid4()), str(uuid.uuid4())
    stack.sim.state.config.fail_workflows.add(failing)
    stack.sim.state.config.unknown_workflows.add(unknown)
    stack.counter.wait_idle()
    before = scrape(metrics_url)
    try:
        handles = [
            start_run(wf, {"A": "1"}, on_complete=record.s(tag="c"), on_failure=record.s(tag="f"))
            for wf in (WF, WF, WF, failing, unknown)
        ]
        forged = httpx.post(
            stack.webhook_url,
            content=json.dumps({"message_id": "m", "status": "success"}),
            headers={"content-type": "application/json", "x-hmac-signature": "sha256=" + "0" * 64},
        )
        assert forged.status_code == 401
        for h in handles:
            wait_for(lambda h=h: len(calls(h.run_id)) == 1, 30, f"callback of {h.run_id}")
        stack.counter.wait_idle()
    finally:
        stack.sim.state.config.fail_workflows.discard(failing)
        stack.sim.state.config.unknown_workflows.discard(unknown)
    after = scrape(metrics_url)

    assert delta(before, after, "nen_runs_started_total") == 5
    assert delta(before, after, "nen_runs_accepted_total") == 4
    assert delta(before, after, "nen_runs_completed_total", status="success") == 3
    assert delta(before, after, "nen_runs_completed_total", status="failed") == 1
    assert delta(before, after, "nen_runs_completed_total", status="rejected") == 1
    assert delta(before, after, "nen_submit_seconds_count", outcome="accepted") == 4
    assert delta(before, after, "nen_submit_seconds_count", outcome="http_4xx") == 1
    assert delta(before, after, "nen_webhooks_total", result="invalid_signature") == 1
    # the receiver applies both webhooks of each run itself (it ends the run with the terminal
    # one): nothing queued for them
    assert delta(before, after, "nen_webhooks_total", result="applied") >= 8
    # the four runs Nen finished came back by webhook: each latency observed once
    assert delta(before, after, "nen_webhook_to_callback_seconds_count") == 4
    assert value(after, "nen_store_up") == 1
    assert ("nen_runs_pending", ()) in after
    # labels never carry ids
    for _name, labels in after:
        for _, label_value in labels:
            assert label_value not in {h.run_id for h in handles}


@pytest.fixture(scope="module")
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config()) as server:
        yield server


def test_prefork_workers_metrics_and_json_logs(tmp_path: Path, sim: SimulatorServer) -> None:
    """Counters from a prefork worker's children are summed on the receiver's /metrics, and
    NEN_LOG_FORMAT=json gives JSON lines that carry the run's ids in every process."""
    url = db_url(TEST_REDIS_URL, 7)
    redis.Redis.from_url(url).flushdb()
    sim.reset()
    prom = tmp_path / "prom"
    prom.mkdir()
    cluster = Cluster(tmp_path, url, sim)
    cluster.env["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    cluster.env["NEN_LOG_FORMAT"] = "json"
    try:
        cluster.env["NEN_RECEIVER_METRICS"] = "true"  # /metrics is opt-in on the receiver
        cluster.receiver()
        cluster.worker(concurrency=2)
        runs = [cluster.start() for _ in range(6)]
        cluster.settle(runs)
        samples = scrape(f"http://127.0.0.1:{cluster.receiver_port}/metrics")
        assert value(samples, "nen_runs_accepted_total") == 6
        assert value(samples, "nen_runs_completed_total", status="success") == 6
        assert value(samples, "nen_webhook_to_callback_seconds_count") == 6
        # from the receiver process: 6 terminal and 6 processing webhooks, all applied there
        assert value(samples, "nen_webhooks_total", result="applied") >= 12
        writers = {p.name.rsplit("_", 1)[1] for p in prom.glob("counter_*.db")}
        assert len(writers) >= 2, writers  # the receiver and at least one pool child wrote counters

        lines = (tmp_path / "worker1.log").read_text().splitlines()
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert records, lines[:20]
        for run_id in runs:
            mine = [r for r in records if r.get("run_id") == run_id]
            loggers = {r["logger"] for r in mine}
            assert {"nen_celery.lifecycle", "tests.callbacks"} <= loggers, (run_id, mine)
            # the message id rides along once it is known (ingest and completion lines)
            message_id = cluster.store.raw(run_id)["message_id"]
            assert any(r.get("message_id") == message_id for r in mine)
            assert all(r.get("workflow_id") in (None, WF) for r in mine)
        # lines that are not about a run carry no stale ids from an earlier task
        for r in records:
            if r["logger"] == "celery.worker.strategy":
                assert "run_id" not in r
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop_all()


def test_json_formatter_and_id_binding_are_per_context() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("tests.runlog")
    logger.addHandler(handler)
    runlog.configure("json", logger)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        with runlog.bound(run_id="r1", workflow_id="w1"):
            logger.info("one %s", "x")
            with runlog.bound(message_id="m1"):
                logger.info("two")
        logger.info("three", extra={"run_id": "explicit"})
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            logger.exception("four")
    finally:
        logger.removeHandler(handler)
    one, two, three, four = (json.loads(line) for line in stream.getvalue().splitlines())
    assert one["message"] == "one x" and one["run_id"] == "r1" and one["workflow_id"] == "w1"
    assert "message_id" not in one
    assert two["message_id"] == "m1" and two["run_id"] == "r1"
    assert three["run_id"] == "explicit" and "workflow_id" not in three
    assert four["level"] == "ERROR" and "RuntimeError: boom" in four["exc"]
