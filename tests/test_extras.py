"""Optional dependencies (issue 18): what works with the core dependencies alone, what asks for
an extra, and how.

The unit tests block packages in a subprocess of this venv (``sys.modules[name] = None``). The
integration test installs the package into a fresh venv with no extra, runs a real worker, beat
and ``start_run`` from it, then installs ``[receiver]`` and serves the webhook from it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from nen_celery.domain.signing import webhook_signature
from nen_celery.extras import MissingExtra, pip_command, requires_extra
from tests.cluster import db_url
from tests.conftest import SIM_WEBHOOK_SECRET, TEST_REDIS_URL, sim_config
from tests.helpers import ROOT, free_port, stop_group, wait_for

MAIN_BIN = Path(sys.executable).parent
WF = "12345678-1234-1234-1234-123456789abc"
# Not core dependencies: none may be importable after a plain `pip install nen-celery`. (h11 is
# not listed: httpx, a core dependency, brings it.)
NOT_CORE = ("starlette", "uvicorn", "rich", "flower", "uvloop", "httptools", "fastapi", "django", "flask")


# ------------------------------------------------------------------------------------ extras.py


def test_missing_extra_names_the_extra_and_the_pip_command_and_keeps_the_cause() -> None:
    cause = ModuleNotFoundError("No module named 'starlette'", name="starlette")
    exc = MissingExtra("nen_celery.web.asgi", "receiver", cause)
    assert str(exc) == (
        "nen_celery.web.asgi needs the 'receiver' extra: pip install 'nen-celery[receiver]' "
        "(No module named 'starlette')"
    )
    assert isinstance(exc, ImportError)
    assert exc.__cause__ is cause
    assert exc.name == "starlette"
    assert (exc.needed_by, exc.extra, exc.install) == (
        "nen_celery.web.asgi",
        "receiver",
        "pip install 'nen-celery[receiver]'",
    )
    assert pip_command("cli") == "pip install 'nen-celery[cli]'"


def test_requires_extra_turns_an_import_error_into_missing_extra() -> None:
    with pytest.raises(MissingExtra) as caught, requires_extra("simulator", "some.module"):
        import nen_celery_no_such_package  # type: ignore[import-not-found]  # noqa: F401
    exc = caught.value
    assert exc.extra == "simulator" and exc.needed_by == "some.module"
    assert isinstance(exc.__cause__, ModuleNotFoundError)
    assert exc.name == "nen_celery_no_such_package"
    assert str(exc).endswith("(No module named 'nen_celery_no_such_package')")


def test_requires_extra_passes_other_errors_and_nested_missing_extras_through() -> None:
    inner = MissingExtra("inner.module", "receiver", ImportError("x"))
    with pytest.raises(MissingExtra) as caught, requires_extra("fastapi", "outer.module"):
        raise inner
    assert caught.value is inner  # the nested module's own extra, not the outer one's
    with pytest.raises(ValueError), requires_extra("cli", "m"):
        raise ValueError("not an import problem")
    with requires_extra("cli", "m"):
        import json as _json  # an import that works: nothing happens
    assert _json is json


# ------------------------------------------------------------- the package, packages blocked


def _blocked(packages: tuple[str, ...], code: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter of this venv where ``packages`` cannot be imported."""
    prelude = "import sys\n" + "".join(f"sys.modules[{p!r}] = None\n" for p in packages)
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("module", "blocked", "extra"),
    [
        ("nen_celery.web.asgi", "starlette", "receiver"),
        ("nen_celery.web.metrics", "starlette", "receiver"),
        ("nen_celery.web.fastapi", "fastapi", "fastapi"),
        ("nen_celery.web.django", "django", "django"),
        ("nen_celery.web.flask", "flask", "flask"),
        ("nen_celery.simulator.app", "starlette", "simulator"),
        ("nen_celery.simulator.server", "uvicorn", "simulator"),
        ("nen_celery.simulator.sender", "h11", "simulator"),
        ("nen_celery.ops.demo", "rich", "demo"),
        ("nen_celery.ops.commands", "rich", "cli"),
    ],
)
def test_a_module_without_its_extra_raises_missing_extra(module: str, blocked: str, extra: str) -> None:
    result = _blocked(
        (blocked,),
        f"from nen_celery.extras import MissingExtra\n"
        f"try:\n"
        f"    import {module}\n"
        f"except MissingExtra as exc:\n"
        f"    print(exc.extra, exc.name, type(exc.__cause__).__name__, exc, sep='|')\n",
    )
    assert result.returncode == 0, result.stderr
    got_extra, name, cause, message = result.stdout.strip().split("|")
    assert (got_extra, cause) == (extra, "ModuleNotFoundError")
    assert name.split(".")[0] == blocked
    assert f"needs the '{extra}' extra: pip install 'nen-celery[{extra}]'" in message


def test_the_simulator_package_imports_without_its_extra_and_its_names_say_what_is_missing() -> None:
    # `python -m` imports the package before __main__: the package itself needs nothing optional
    result = _blocked(
        ("starlette",),
        "import nen_celery.simulator\n"
        "from nen_celery.extras import MissingExtra\n"
        "try:\n"
        "    from nen_celery.simulator import SimulatorServer\n"
        "except MissingExtra as exc:\n"
        "    print(exc.extra, exc.name.split('.')[0], sep='|')\n",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "simulator|starlette"


@pytest.mark.parametrize("blocked", ["starlette", "uvicorn", "h11"])
def test_python_m_simulator_without_its_extra_says_so_in_one_line_and_exits_2(blocked: str) -> None:
    # runpy.run_module is what `python -m` calls: the package first, then its __main__
    result = _blocked(
        (blocked,),
        "import runpy\n"
        "sys.argv = ['nen_celery.simulator', '--port', '1']\n"
        "runpy.run_module('nen_celery.simulator', run_name='__main__', alter_sys=True)\n",
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        "python -m nen_celery.simulator needs the 'simulator' extra: pip install 'nen-celery[simulator]'"
    ]


def test_the_simulator_names_resolve_lazily_to_their_homes() -> None:
    import nen_celery.simulator as simulator
    from nen_celery.simulator.server import SimulatorServer

    assert simulator.SimulatorServer is SimulatorServer
    assert sorted(simulator.__all__) == sorted(simulator._HOMES)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        simulator.nope  # noqa: B018


@pytest.mark.parametrize(
    ("argv", "blocked", "extra"),
    [
        (["simulate", "--port", "1"], "starlette", "simulator"),
        (["demo", "--runs", "1"], "uvicorn", "demo"),
        (["metrics", "serve", "--port", "1"], "starlette", "receiver"),
    ],
)
def test_a_command_without_its_extra_names_it_and_exits_2(argv: list[str], blocked: str, extra: str) -> None:
    result = _blocked(
        (blocked,), f"from nen_celery.ops.cli import main\nmain({argv!r}, prog_name='nen-celery')\n"
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"needs the '{extra}' extra: pip install 'nen-celery[{extra}]'" in result.stderr


def test_core_modules_and_the_web_adapters_import_without_any_extra() -> None:
    # django and flask stay importable: their adapters run inside the user's own framework
    not_core = ("starlette", "uvicorn", "rich", "fastapi", "flower", "uvloop", "httptools", "gevent")
    result = _blocked(
        not_core,
        "import nen_celery, nen_celery.worker, nen_celery.celery.tasks, nen_celery.ops.demo_tasks\n"
        "import nen_celery.web.receiver, nen_celery.web.apply, nen_celery.web.host\n"
        "import nen_celery.web.django, nen_celery.web.flask\n"
        "from nen_celery import get_run, init_celery, start_run\n"
        "import nen_celery.ops.cli\n"
        "nen_celery.ops.cli.main()\n",
    )
    # the console script's entry point imports, and says which extra its commands need
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "the nen-celery command needs the 'cli' extra: pip install 'nen-celery[cli]'" in result.stderr


# ------------------------------------------------------------------- a venv with no extra


START = """
import json, sys
from celery import signature
import nen_celery

callback = signature("nen_celery.demo.record", kwargs={"tag": "on_complete"})
failure = signature("nen_celery.demo.record", kwargs={"tag": "on_failure"})
handle = nen_celery.start_run(sys.argv[1], {"PATIENT_NAME": "Jane Doe"}, on_complete=callback,
                              on_failure=failure)
run = handle.wait(timeout=float(sys.argv[2]))
print(json.dumps({"file": nen_celery.__file__, "run": run.to_dict()}))
"""


class SlimVenv:
    """A venv in ``tmp`` holding the package as ``pip install`` puts it there, from a wheel
    built from this checkout."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.path = tmp / "venv"
        self.bin = self.path / "bin"
        self.python = self.bin / "python"
        self.wheel: Path | None = None
        self.timings: dict[str, float] = {}

    def _timed(self, what: str, argv: list[str], timeout: float) -> None:
        started = time.monotonic()
        result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        self.timings[what] = round(time.monotonic() - started, 2)
        assert result.returncode == 0, f"{what} failed:\n{result.stdout}\n{result.stderr}"

    def create(self) -> None:
        # no pip of its own (ensurepip costs seconds): this venv's pip installs into it (--python)
        self._timed("venv", [sys.executable, "-m", "venv", "--without-pip", str(self.path)], 60)
        wheels = self.tmp / "wheels"
        # the wheel is built once, in pip's isolated build environment, as `pip install .` does
        self._timed(
            "wheel",
            [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(ROOT)],
            120,
        )
        (self.wheel,) = wheels.glob("nen_celery-*.whl")
        self.install("")

    def install(self, extras: str) -> None:
        assert self.wheel is not None
        target = f"{self.wheel}[{extras}]" if extras else str(self.wheel)
        # --no-compile: byte-compiling every installed file is most of an install's time; the
        # processes compile what they import
        self._timed(
            f"install[{extras}]",
            [
                sys.executable,
                "-m",
                "pip",
                "--python",
                str(self.python),
                "install",
                "--quiet",
                "--no-compile",
                target,
            ],
            180,
        )

    def run(
        self, argv: list[str], env: dict[str, str], timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            argv,
            env=env,
            cwd=self.tmp,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )

    def importable(self, env: dict[str, str]) -> dict[str, bool]:
        code = (
            "import importlib.util, json, sys\n"
            "print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))"
        )
        result = self.run([str(self.python), "-c", code, *NOT_CORE], env)
        assert result.returncode == 0, result.stderr
        loaded: dict[str, bool] = json.loads(result.stdout)
        return loaded


class Processes:
    """Processes in sessions of their own, logged to ``tmp``; all stopped (by pid) on exit, their
    logs printed if the block failed."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is not None:
            print(self.dump())
        for proc in self.procs.values():
            stop_group(proc)

    def spawn(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        with (self.tmp / f"{name}.log").open("ab") as out:
            self.procs[name] = subprocess.Popen(
                argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, start_new_session=True
            )

    def log(self, name: str) -> str:
        path = self.tmp / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self, name: str) -> None:
        stop_group(self.procs[name])

    def dump(self) -> str:
        return "\n".join(f"--- {name}.log\n{self.log(name)[-4000:]}" for name in self.procs)


def healthy(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.integration
def test_a_venv_without_extras_runs_workflows_and_the_receiver_extra_serves_webhooks(tmp_path: Path) -> None:
    from nen_celery.simulator import SimulatorServer

    started = time.monotonic()
    venv = SlimVenv(tmp_path)
    venv.create()

    url = db_url(TEST_REDIS_URL, 10)  # a DB of its own (no other test's offset)
    broker = redis.Redis.from_url(url, decode_responses=True)
    broker.flushdb()
    prefix = f"nenextras{uuid.uuid4().hex[:8]}"
    receiver_port = free_port()
    with SimulatorServer(sim_config()) as sim, Processes(tmp_path) as processes:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        env.update(
            PATH=f"{venv.bin}{os.pathsep}{env.get('PATH', '')}",
            VIRTUAL_ENV=str(venv.path),
            NEN_REDIS_URL=url,
            NEN_BROKER_URL=url,
            NEN_KEY_PREFIX=prefix,
            NEN_API_URL=sim.url,
            NEN_WEBHOOK_URL=f"http://127.0.0.1:{receiver_port}/webhooks/nen",
            NEN_RECONCILE_INTERVAL="0.5",
        )
        # 1. No extra: the optional packages are absent, and the modules that need them say so.
        assert venv.importable(env) == dict.fromkeys(NOT_CORE, False)
        asgi = venv.run([str(venv.python), "-c", "import nen_celery.web.asgi"], env)
        assert asgi.returncode == 1
        assert (
            "nen_celery.web.asgi needs the 'receiver' extra: pip install 'nen-celery[receiver]' "
            "(No module named 'starlette')" in asgi.stderr
        )
        cli = venv.run([str(venv.bin / "nen-celery"), "--help"], env)
        assert cli.returncode == 2 and "Traceback" not in cli.stderr, cli.stderr
        assert "needs the 'cli' extra: pip install 'nen-celery[cli]'" in cli.stderr

        # 2. A worker and beat from that venv; the receiver (for now) from the project's venv.
        worker_argv = [
            str(venv.bin / "celery"), "-A", "nen_celery.worker", "worker", "-I", "nen_celery.ops.demo_tasks",
            "-c", "2", "--loglevel", "INFO", "--without-mingle", "--without-gossip",
            "-n", f"extras-{os.getpid()}@%h",
        ]  # fmt: skip
        processes.spawn("worker", worker_argv, env, tmp_path)
        beat_argv = [
            str(venv.bin / "celery"), "-A", "nen_celery.worker", "beat", "--loglevel", "INFO",
            "-s", str(tmp_path / "beat-schedule"),
        ]  # fmt: skip
        processes.spawn("beat", beat_argv, env, tmp_path)
        receiver_argv = [
            str(MAIN_BIN / "uvicorn"), "nen_celery.web.asgi:app", "--port", str(receiver_port),
            "--log-level", "warning",
        ]  # fmt: skip
        main_env = {**env, "PATH": os.environ.get("PATH", ""), "VIRTUAL_ENV": str(MAIN_BIN.parent)}
        processes.spawn("main-receiver", receiver_argv, main_env, ROOT)

        def start(timeout: float = 40) -> dict[str, Any]:
            result = venv.run([str(venv.python), "-c", START, WF, str(timeout)], env, timeout + 20)
            assert result.returncode == 0, result.stderr
            out: dict[str, Any] = json.loads(result.stdout)
            assert Path(out["file"]).is_relative_to(venv.path)  # the installed package, not src/
            return out

        def callbacks(run_id: str) -> list[dict[str, Any]]:
            entries = broker.lrange(f"{prefix}:demo:callbacks", 0, -1)
            return [e for e in map(json.loads, entries) if e["run_id"] == run_id]

        def delivered(message_id: str) -> list[str]:
            return sorted(sim.state.stats()["deliveries"].get(message_id, []))

        first = start()
        run = first["run"]
        assert run["status"] == "success" and run["message_id"]
        assert [h["status"] for h in run["history"]] == ["queued", "submitted", "processing", "success"]
        wait_for(lambda: callbacks(run["run_id"]), 20, "the on_complete callback (no extra)")
        assert callbacks(run["run_id"]) == [
            {"run_id": run["run_id"], "tag": "on_complete", "status": "success"}
        ]
        # beat's sweep reached the worker
        swept = re.compile(r"Task nen_celery\.reconcile_runs\[[\w-]+\] succeeded")
        wait_for(
            lambda: swept.search(processes.log("worker")), 20, "beat's reconcile_runs to run on the worker"
        )

        # 3. `pip install "nen-celery[receiver]"` into the same venv: its uvicorn serves the webhook.
        processes.stop("main-receiver")
        venv.install("receiver")
        assert venv.importable(env) == {m: m in ("starlette", "uvicorn") for m in NOT_CORE}
        receiver_argv[0] = str(venv.bin / "uvicorn")
        processes.spawn("receiver", receiver_argv, env, tmp_path)
        base = f"http://127.0.0.1:{receiver_port}"
        wait_for(lambda: healthy(base + "/healthz"), 30, "the receiver from the venv")

        forged = httpx.post(
            base + "/webhooks/nen",
            content=json.dumps({"workflow_id": WF, "message_id": "x", "status": "success"}).encode(),
            headers={"Content-Type": "application/json", "X-Hmac-Signature": "0" * 64},
        )
        assert forged.status_code == 401

        second = start()
        run = second["run"]
        assert run["status"] == "success" and run["message_id"]
        # the simulator's signed webhooks were answered 2xx by that receiver, the only one listening
        wait_for(
            lambda: delivered(run["message_id"]) == ["processing", "success"],
            20,
            "both webhooks delivered to the receiver from the venv",
        )
        wait_for(lambda: callbacks(run["run_id"]), 20, "the on_complete callback (receiver extra)")

        # a webhook signed here, for the same run: a duplicate, accepted and ignored
        body = json.dumps({"workflow_id": WF, "message_id": run["message_id"], "status": "success"}).encode()
        signed = httpx.post(
            base + "/webhooks/nen",
            content=body,
            headers={
                "Content-Type": "application/json",
                "X-Hmac-Signature": webhook_signature(SIM_WEBHOOK_SECRET, body),
            },
        )
        assert signed.status_code == 200, signed.text

    print(f"{time.monotonic() - started:.1f}s in all; {venv.timings}")
