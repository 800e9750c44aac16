"""CPU per webhook in the receiver's process, without HTTP: the ASGI receiver's handler
(``asgi._answer``: check, then the delivery) called in a loop on one event loop, against the
bench's Redis. What the ``receiver`` rows cost beyond the HTTP server's own work, per case:

- duplicate: a hinted terminal webhook to a run that already ended (Nen's redeliveries; what the
  receiver benchmark sends);
- processing: a hinted processing webhook (applied once, then noop);
- ends: the hinted terminal webhook that ends its run: ingest.lua, the callback (bench.done,
  registered here) published with Celery's ``apply_async`` to the broker's DB, finish_completion.

CPU is this process's, all threads (the thread pool's hops included), per webhook; the least of
``--rounds`` (the machine may be shared). The defaults column (no fast path). It uses only names
older checkouts have too, so two are compared by putting each one's ``src`` first on PYTHONPATH::

    PYTHONPATH=src NEN_TEST_REDIS_URL=redis://127.0.0.1:6393/13 python -m bench.receiver_cpu
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from bench.common import BROKER_URL, WEBHOOK_SECRET, WF, configure, flush

Call = tuple[bytes, Any, bytes]  # body, headers, query
Answer = Any  # nen_celery.web.answers.Answer, of whichever checkout runs


def _run(store: Any, callback: dict[str, Any] | None) -> tuple[str, str, bytes]:
    """A run Nen accepted: (run id, messageId, the query of its hinted webhook URL)."""
    from nen_celery.domain.hints import hint_key, url_with_run

    run_id, message_id = f"cpu-{uuid.uuid4().hex}", str(uuid.uuid4())
    assert store.create(run_id, WF, {}, None, callback, None)
    store.bind(run_id, message_id, {"messageId": message_id})
    nonce = str(store.redis.hget(store.run_key(run_id), "nonce") or "")
    url = url_with_run("/webhooks/nen", "nen_run", run_id, 0, hint_key(WEBHOOK_SECRET), nonce)
    return run_id, message_id, url.split("?", 1)[1].encode()


def _call(message_id: str, status: str, query: bytes) -> Call:
    from starlette.datastructures import Headers

    from nen_celery.domain.signing import webhook_signature

    body = json.dumps(
        {"workflow_id": WF, "message_id": message_id, "status": status, "expires_at": 1730319600},
        separators=(",", ":"),
    ).encode()
    signature = webhook_signature(WEBHOOK_SECRET, body)
    headers = {"content-type": "application/json", "x-hmac-signature": signature}
    return body, Headers(headers=headers), query


async def _answers(warmup: list[Call], calls: list[Call]) -> tuple[list[Answer], float]:
    """Each call through the ASGI handler, in order, on this loop after ``warmup`` (its clients
    made); (answers, CPU seconds of the process for ``calls``)."""
    from nen_celery.web.asgi import _answer

    def reader(body: bytes) -> Callable[[int, float], Awaitable[bytes | None]]:
        async def read(limit: int, timeout: float) -> bytes | None:
            return body

        return read

    for body, headers, query in warmup:
        await _answer(reader(body), headers, query)
    answers = []
    started = time.process_time()
    for body, headers, query in calls:
        answers.append(await _answer(reader(body), headers, query))
    return answers, time.process_time() - started


def _case(name: str, n: int, warm: int) -> tuple[list[Call], list[Call], list[str]]:
    """(warm-up calls, measured calls, the runs the measured calls end) for one case."""
    from nen_celery.runtime.context import get_context

    store = get_context().store
    if name in ("duplicate", "processing"):
        _, message_id, query = _run(store, None)
        status = "success" if name == "duplicate" else "processing"
        first = [_call(message_id, status, query)]  # the duplicates' run ends with the first
        return first * (warm + 1), [_call(message_id, status, query)] * n, []
    from bench.tasks import done

    callback = dict(done.s(key="receiver-cpu"))
    runs = [_run(store, callback) for _ in range(warm + n)]
    calls = [_call(message_id, "success", query) for _, message_id, query in runs]
    return calls[:warm], calls[warm:], [run_id for run_id, _, _ in runs[warm:]]


def measure(name: str, n: int, warm: int) -> float:
    """µs of CPU per webhook for ``n`` webhooks of the case, after ``warm`` not counted."""
    import redis

    from nen_celery.runtime.context import get_context

    warmup, calls, ended = _case(name, n, warm)
    answers, cpu = asyncio.run(_answers(warmup, calls))
    codes = {(a.status_code, a.body.get("status")) for a in answers}
    assert codes == {(200, "applied")}, codes
    store = get_context().store
    for run_id in ended:  # the callback out and marked sent by the receiver itself
        assert store.raw(run_id)["completion"] == "sent", store.raw(run_id)
    if ended:
        assert redis.Redis.from_url(BROKER_URL).llen("celery") >= len(ended)
    return cpu / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=2000, help="webhooks measured per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cases", default="duplicate,processing,ends", help="comma-separated")
    args = parser.parse_args()
    flush()
    configure(NEN_WEBHOOK_DIRECT_PUBLISH="false", NEN_DIRECT_PUBLISH="false", NEN_DURABILITY="auto")
    import nen_celery
    from nen_celery.runtime.app import nen_task
    from nen_celery.runtime.context import get_context
    from nen_celery.web.resources import durability

    nen_task("ingest_webhook")  # as the standalone receiver's start does
    barrier = durability(get_context()).barrier.mode
    gc.collect()
    gc.freeze()
    cases = [name for name in args.cases.split(",") if name]
    best = {name: float("inf") for name in cases}
    for _ in range(args.rounds):
        for name in cases:  # alternated, each round
            best[name] = min(best[name], measure(name, args.n, max(50, args.n // 20)))
    print(f"nen_celery from {nen_celery.__file__}; barrier {barrier}; n={args.n}, least of {args.rounds}")
    for name in cases:
        print(f"  {name:<10} {best[name]:7.0f} µs CPU per webhook")
    flush()


if __name__ == "__main__":
    main()
