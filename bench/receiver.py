"""2. Webhook receiver: POST /webhooks/nen?nen_run=<run id>~0~<token> (HMAC verify, hint token
check, parse, seal, enqueue ingest_webhook; the run hint every run started by this package
carries, so no messageId lookup)
under uvicorn, against a bare Starlette endpoint doing one LPUSH of the body.
Same uvicorn settings (1 worker; httptools and uvloop, the [fast] extra), same Redis;
wrk drives both from its own process with the same signed body. Target: ours >= 0.7x bare
requests/s; p99 reported for both. The enqueue is the column's (bench/run.py): Celery's
apply_async in a thread (defaults, NEN_WEBHOOK_DIRECT_PUBLISH=false; until 2026-12 the
"apply_async" row) or one LPUSH of Celery's message from the event loop (fast paths).
More rows for comparison: without NEN_SECRETS_KEY (no seal), both sides on uvicorn's pure-Python
server (h11 parser, asyncio loop), where the server's own cost per request is three times
larger, and both sides driven one request at a time (one connection), where the receiver's
group commit (fastpath/group_push.py, fast paths) has nothing to group: the cost of one
webhook alone. The webhooks are terminal ones (queued); a last row sends `processing` ones,
which the receiver applies itself with one Lua call on a real run record instead of queueing
(web/apply.py).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from bench.common import (
    WEBHOOK_SECRET,
    WF,
    Result,
    configure,
    cpu_seconds,
    env_int,
    flush,
    free_port,
    processes,
)

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def hinted_path(nonce: str) -> str:
    """The path with the run hint and its token, as a worker with the bench's webhook secret
    writes it (hints.py), with the record's ``nonce`` (without it the hint names another record
    of the run id, and every webhook is queued for the ingest task to look it up)."""
    from nen_celery.domain.hints import hint_key, url_with_run

    return url_with_run("/webhooks/nen", "nen_run", "bench-run", 0, hint_key(WEBHOOK_SECRET), nonce)


def wrk_script(body: bytes, headers: dict[str, str]) -> Path:
    """A wrk script POSTing ``body`` (JSON) with ``headers`` on every request."""
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body.decode())}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    lua = "\n".join(lines) + "\n"
    path = Path(tempfile.mkdtemp(prefix="nen-bench-wrk-")) / "post.lua"
    path.write_text(lua)
    return path


def wrk(
    url: str, script: Path, seconds: int, connections: int, server_pid: int | None = None
) -> tuple[float, float, float]:
    """(requests/s, p99 ms, server CPU µs per request or 0); RuntimeError if any answer was
    not 2xx. CPU per request moves less with the machine's load than requests/s."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    before = cpu_seconds(server_pid) if server_pid else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    used = cpu_seconds(server_pid) - before if server_pid else 0.0
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    return rps, float(value) * _UNITS[unit], used / max(1, requests) * 1e6


def run() -> list[Result]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    seconds = env_int("BENCH_RECEIVER_SECONDS", 10)
    conns = env_int("BENCH_RECEIVER_CONNECTIONS", 32)
    flush()
    env = configure()
    from nen_celery.runtime.context import get_context

    message_id = str(uuid.uuid4())
    store = get_context().store
    # a run Nen accepted as message_id, so the processing rows apply (then no-op) on a real record
    assert store.create("bench-run", WF, {}, None, None, None)
    store.bind("bench-run", message_id, {"messageId": message_id})
    nonce = str(store.redis.hget(store.run_key("bench-run"), "nonce") or "")
    from nen_celery.domain.signing import webhook_signature

    def script_for(status: str) -> Path:
        body = json.dumps(
            {"workflow_id": WF, "message_id": message_id, "status": status, "expires_at": 1730319600},
            separators=(",", ":"),
        ).encode()
        return wrk_script(body, {"X-Hmac-Signature": webhook_signature(WEBHOOK_SECRET, body)})

    # terminal webhooks are queued (the target's "verify + enqueue"); processing ones the
    # receiver applies itself (one Lua script on the run store, web/apply.py)
    scripts = {"success": script_for("success"), "processing": script_for("processing")}
    pure = ("--http", "h11", "--loop", "asyncio")  # uvicorn without httptools and uvloop
    # (env, server, connections, webhook status), alternating
    variants: dict[str, tuple[dict[str, str | None], tuple[str, ...], int, str]] = {
        # NEN_SECRETS_KEY set (configure()): webhook bodies encrypted in the broker
        "sealed": ({}, (), conns, "success"),
        "clear": ({"NEN_SECRETS_KEY": None}, (), conns, "success"),  # no key: bodies in clear
        "sealed, h11 + asyncio": ({}, pure, conns, "success"),
        "sealed, 1 connection": ({}, (), 1, "success"),
        "processing, applied by the receiver": ({}, (), conns, "processing"),
    }
    ours: dict[str, list[tuple[float, float, float]]] = {name: [] for name in variants}
    bare: dict[tuple[str, ...], list[tuple[float, float, float]]] = {(): [], pure: []}
    bare_single: list[tuple[float, float, float]] = []  # bare on (), one connection
    with processes(env, "receiver") as procs:

        def serve(
            name: str, target: str, path: str, server: tuple[str, ...], **extra: str | None
        ) -> tuple[str, int]:
            url = procs.uvicorn(name, target, free_port(), 1, server, **extra)
            return url + path, procs.procs[-1].pid

        urls = {
            name: serve(f"receiver-{i}", "nen_celery.web.asgi:app", hinted_path(nonce), server, **extra)
            for i, (name, (extra, server, _, _)) in enumerate(variants.items())
        }
        bare_urls = {
            server: serve(f"bare-{i}", "bench.bare_web:app", "/webhooks/nen", server)
            for i, server in enumerate(bare)
        }
        for url, _ in [*urls.values(), *bare_urls.values()]:
            wrk(url, scripts["success"], 2, conns)  # warm up
        for _ in range(3):  # alternate, keep each side's best: the machine is shared
            for server, (url, pid) in bare_urls.items():
                bare[server].append(wrk(url, scripts["success"], seconds, conns, pid))
            single_url, single_pid = bare_urls[()]
            bare_single.append(wrk(single_url, scripts["success"], seconds, 1, single_pid))
            for name, (url, pid) in urls.items():
                _, _, connections, status = variants[name]
                ours[name].append(wrk(url, scripts[status], seconds, connections, pid))
    flush()

    # since issue 28 a hinted terminal webhook is applied by the receiver (ingest.lua from the
    # event loop, the barrier; only the one that ends the run hops to a thread, to publish the
    # callback): the run here ended with the first request, so the rest are duplicates (noop,
    # nothing published, no thread)
    enqueue = "ingest.lua from the event loop (the run already ended: a duplicate, nothing published)"
    notes = {
        "sealed": f"HMAC + AES-GCM seal + {enqueue}; hinted URL",
        "clear": "as above without NEN_SECRETS_KEY",
        "sealed, h11 + asyncio": "as sealed, both sides on `uvicorn --http h11 --loop asyncio`",
        "sealed, 1 connection": "as sealed, both sides driven one request at a time: nothing to group",
        "processing, applied by the receiver": "a processing webhook: HMAC + one ingest.lua call on "
        "the run store from the event loop, no task queued (the bare side still LPUSHes)",
    }
    results = []
    for name, (_, server, connections, _) in variants.items():
        base = bare[server] if connections == conns else bare_single
        o, b = max(ours[name]), max(base)
        ratio = o[0] / b[0]
        cpu = min(r[2] for r in ours[name]), min(r[2] for r in base)
        line = f"ours {o[0]:.0f} req/s p99 {o[1]:.1f} ms; bare {b[0]:.0f} req/s p99 {b[1]:.1f} ms"
        line += f"; server CPU per request {cpu[0]:.0f} vs {cpu[1]:.0f} µs ({cpu[1] / cpu[0]:.2f}x)"
        print(f"receiver ({name}): {line}")
        results.append(
            Result(
                f"2. webhook receiver, {name} (wrk, {connections} connections, 1 uvicorn worker)",
                f"{o[0]:.0f} req/s, p99 {o[1]:.1f} ms",
                f"{b[0]:.0f} req/s, p99 {b[1]:.1f} ms (bare LPUSH)",
                ratio,
                ">= 0.7x" if name == "sealed" else "(for comparison)",
                ratio >= 0.7,
                f"{notes[name]}; server CPU per request {cpu[0]:.0f} µs vs {cpu[1]:.0f} µs "
                f"({cpu[1] / cpu[0]:.2f}x, least of 3)",
            )
        )
    return results
