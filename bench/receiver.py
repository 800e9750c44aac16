"""2. Webhook receiver: POST /webhooks/nen?nen_run=<run id> (HMAC verify, parse, seal, enqueue
ingest_webhook; the run hint every run started by this package carries, so no messageId lookup)
under uvicorn, against a bare Starlette endpoint doing one LPUSH of the body.
Same uvicorn settings (1 worker), same Redis; wrk drives both from its own process with the
same signed body. Target: ours >= 0.7x bare requests/s; p99 reported for both. Two more rows
for comparison: without NEN_SECRETS_KEY (no seal) and with NEN_WEBHOOK_DIRECT_PUBLISH=false.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from bench.common import WEBHOOK_SECRET, WF, Result, configure, env_int, flush, free_port, processes

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
HINTED = "/webhooks/nen?nen_run=bench-run"


def wrk_script(body: bytes, headers: dict[str, str]) -> Path:
    """A wrk script POSTing ``body`` (JSON) with ``headers`` on every request."""
    lines = ['wrk.method = "POST"', f"wrk.body = {json.dumps(body.decode())}"]
    for name, value in {"Content-Type": "application/json", **headers}.items():
        lines.append(f"wrk.headers[{json.dumps(name)}] = {json.dumps(value)}")
    lua = "\n".join(lines) + "\n"
    path = Path(tempfile.mkdtemp(prefix="nen-bench-wrk-")) / "post.lua"
    path.write_text(lua)
    return path


def wrk(url: str, script: Path, seconds: int, connections: int) -> tuple[float, float]:
    """(requests/s, p99 ms); RuntimeError if any answer was not 2xx."""
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script), url]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"wrk saw errors against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    value, unit = re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    return rps, float(value) * _UNITS[unit]


def run() -> list[Result]:
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install -y wrk)")
    seconds = env_int("BENCH_RECEIVER_SECONDS", 10)
    conns = env_int("BENCH_RECEIVER_CONNECTIONS", 32)
    flush()
    env = configure()
    from nen_celery.context import get_context

    message_id = str(uuid.uuid4())
    store = get_context().store
    store.redis.set(store.msg_key(message_id), "bench-run")  # a bound messageId: the 200 path
    body = json.dumps(
        {"workflow_id": WF, "message_id": message_id, "status": "processing", "expires_at": 1730319600},
        separators=(",", ":"),
    ).encode()
    from nen_celery.signing import webhook_signature

    script = wrk_script(body, {"X-Hmac-Signature": webhook_signature(WEBHOOK_SECRET, body)})
    variants = {  # each ours variant against the same bare endpoint, alternating
        "sealed": {},  # NEN_SECRETS_KEY set (configure()): webhook bodies encrypted in the broker
        "clear": {"NEN_SECRETS_KEY": ""},  # no key: bodies queued in clear
        "apply_async": {"NEN_WEBHOOK_DIRECT_PUBLISH": "false"},  # Celery's publish, in a thread
    }
    ours: dict[str, list[tuple[float, float]]] = {name: [] for name in variants}
    bare: list[tuple[float, float]] = []
    with processes(env, "receiver") as procs:
        urls = {
            name: procs.uvicorn(f"receiver-{name}", "nen_celery.web.asgi:app", free_port(), **extra)
            for name, extra in variants.items()
        }
        bare_url = procs.uvicorn("bare", "bench.bare_web:app", free_port())
        for url in urls.values():
            wrk(url + HINTED, script, 2, conns)  # warm up
        wrk(bare_url + "/webhooks/nen", script, 2, conns)
        for _ in range(2):  # alternate, keep each side's best: the machine is shared
            bare.append(wrk(bare_url + "/webhooks/nen", script, seconds, conns))
            for name, url in urls.items():
                ours[name].append(wrk(url + HINTED, script, seconds, conns))
    flush()
    b = max(bare)
    notes = {
        "sealed": "HMAC + AES-GCM seal + one LPUSH of Celery's message from the event loop; hinted URL",
        "clear": "as above without NEN_SECRETS_KEY: the body is queued unencrypted",
        "apply_async": "NEN_WEBHOOK_DIRECT_PUBLISH=false: Celery's apply_async in a thread (sealed)",
    }
    results = []
    for name in variants:
        o = max(ours[name])
        ratio = o[0] / b[0]
        line = f"ours {o[0]:.0f} req/s p99 {o[1]:.1f} ms; bare {b[0]:.0f} req/s p99 {b[1]:.1f} ms"
        print(f"receiver ({name}): {line}")
        results.append(
            Result(
                f"2. webhook receiver, {name} (wrk, {conns} connections, 1 uvicorn worker)",
                f"{o[0]:.0f} req/s, p99 {o[1]:.1f} ms",
                f"{b[0]:.0f} req/s, p99 {b[1]:.1f} ms (bare LPUSH)",
                ratio,
                ">= 0.7x" if name == "sealed" else "(for comparison)",
                ratio >= 0.7,
                notes[name],
            )
        )
    return results
