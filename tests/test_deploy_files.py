"""The deployment files (Dockerfile, docker-compose.yml, Procfile) run commands that exist here.

No Docker engine is needed: the files are parsed, and every command they name is checked against
this checkout - the executable resolves, the ``-A`` module has a Celery app, the uvicorn target is
an ASGI app, ``nen-celery`` subcommands exist, and celery / uvicorn / nen-celery accept the exact
options written in the files (``... --help`` exits 0; an unknown option would exit 2).
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import os
import re
import shlex
import shutil
import subprocess
import sysconfig
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
PROCFILE = ROOT / "Procfile"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"

# Console scripts of the interpreter running the tests (the project's venv).
VENV_BIN = Path(sysconfig.get_path("scripts"))
SEARCH_PATH = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])

COMPOSE_SERVICES = {"redis", "simulator", "worker", "beat", "receiver", "flower"}
APP_SERVICES = COMPOSE_SERVICES - {"redis"}
PROCFILE_TYPES = {"web", "worker", "beat", "flower"}
KNOWN_EXECUTABLES = {"celery", "uvicorn", "nen-celery", "redis-server"}
SECRET_ENV = ("NEN_API_KEY", "NEN_SIGNING_KEY", "NEN_WEBHOOK_SECRET", "NEN_SECRETS_KEY")
SHARED_ENV = {
    "NEN_REDIS_URL": "redis://redis:6379/0",
    "NEN_API_URL": "http://simulator:8700",
    "NEN_WEBHOOK_URL": "http://receiver:8000/webhooks/nen",
}
# Command-line options whose value is a secret: only an env-var reference is acceptable.
SECRET_OPTIONS = {
    "--api-key",
    "--signing-key",
    "--webhook-secret",
    "--secrets-key",
    "--basic-auth",
    "--password",
    "--cookie-secret",
    "--oauth2-secret",
}
# What the platform provides when a Procfile line runs (Heroku / honcho set PORT).
FAKE_ENV = {"PORT": "8000"}
HELP_TIMEOUT = 60


# --------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class Command:
    origin: str  # "compose:worker", "Procfile:web"
    argv: tuple[str, ...]  # after env-var expansion
    raw: tuple[str, ...]  # as written

    @property
    def exe(self) -> str:
        return self.argv[0]


_VAR = re.compile(r"\$(?:\{(\w+)(?::?[-?][^}]*)?\}|(\w+))")


def expand(word: str) -> str:
    """Expand $VAR / ${VAR} / ${VAR:-x} / ${VAR:?msg} with FAKE_ENV (unknown names -> "x")."""
    return _VAR.sub(lambda m: FAKE_ENV.get(m.group(1) or m.group(2), "x"), word)


def split(command: str | list[str]) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def load_compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict), "no services in compose"
    return data


def load_procfile() -> list[tuple[str, str]]:
    entries: list[tuple[str, str]] = []
    for number, line in enumerate(PROCFILE.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = re.fullmatch(r"([A-Za-z0-9_-]+):\s*(\S.*)", line)
        assert match, f"Procfile line {number} is not `name: command`: {line!r}"
        entries.append((match.group(1), match.group(2).strip()))
    return entries


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


COMPOSE = load_compose()
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROCESSES = load_procfile()


def make_command(origin: str, command: str | list[str]) -> Command:
    raw = split(command)
    return Command(origin, tuple(expand(w) for w in raw), tuple(raw))


def all_commands() -> list[Command]:
    out = [
        make_command(f"compose:{name}", svc["command"])
        for name, svc in sorted(SERVICES.items())
        if svc.get("command")
    ]
    out += [make_command(f"Procfile:{name}", cmd) for name, cmd in PROCESSES]
    return out


COMMANDS = all_commands()


def commands_of(exe: str) -> list[Any]:
    return [pytest.param(c, id=c.origin) for c in COMMANDS if c.exe == exe]


def option_value(argv: tuple[str, ...] | list[str], *names: str) -> str | None:
    for i, word in enumerate(argv):
        for name in names:
            if word == name and i + 1 < len(argv):
                return argv[i + 1]
            if word.startswith(name + "="):
                return word.split("=", 1)[1]
    return None


@functools.cache
def run_help(*argv: str) -> subprocess.CompletedProcess[str]:
    """``argv --help`` with the venv's executable; cached so compose and Procfile share a run."""
    exe = shutil.which(argv[0], path=SEARCH_PATH)
    assert exe, f"{argv[0]} not found"
    return subprocess.run(
        [exe, *argv[1:], "--help"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=dict(os.environ),
        timeout=HELP_TIMEOUT,
        check=False,
    )


# ------------------------------------------------------------------------------ names and shape


def test_compose_services_are_exactly_the_deployment() -> None:
    assert set(SERVICES) == COMPOSE_SERVICES


def test_procfile_process_types_are_exactly_the_deployment() -> None:
    names = [name for name, _ in PROCESSES]
    assert len(names) == len(set(names)), f"duplicate Procfile process types: {names}"
    assert set(names) == PROCFILE_TYPES


def test_every_service_and_process_has_a_command() -> None:
    missing = [name for name, svc in SERVICES.items() if not svc.get("command")]
    assert not missing, f"compose services without a command: {missing}"
    assert {c.origin for c in COMMANDS} >= {f"compose:{s}" for s in COMPOSE_SERVICES}


@pytest.mark.parametrize("command", [pytest.param(c, id=c.origin) for c in COMMANDS])
def test_executable_resolves(command: Command) -> None:
    assert command.exe in KNOWN_EXECUTABLES, f"{command.origin}: no check for {command.exe!r}"
    found = shutil.which(command.exe, path=SEARCH_PATH)
    if command.exe == "redis-server" and found is None:
        pytest.skip("redis-server is not installed on this machine (it comes from the redis:7 image)")
    assert found, f"{command.origin}: {command.exe!r} not found in {VENV_BIN} or on PATH"


# ------------------------------------------------------------------------------------- celery


@pytest.mark.parametrize("command", commands_of("celery"))
def test_celery_app_module_has_a_celery_app(command: Command) -> None:
    from celery import Celery

    target = option_value(command.argv, "-A", "--app")
    assert target, f"{command.origin}: celery without -A/--app"
    module_name, _, attr = target.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attr or "app", None)
    assert isinstance(app, Celery), f"{command.origin}: {target} has no Celery `app`"


@pytest.mark.parametrize("command", commands_of("celery"))
def test_celery_subcommand_accepts_the_options(command: Command) -> None:
    # Every option as written, plus --help: unknown subcommand/option or a broken -A exits non-zero.
    result = run_help(*command.argv)
    assert result.returncode == 0, f"{command.origin}: {shlex.join(command.argv)} --help\n{result.stderr}"
    assert "Usage" in result.stdout
    app_target = option_value(command.argv, "-A", "--app")
    subcommand = next(w for w in command.argv[1:] if not w.startswith("-") and w != app_target)
    assert subcommand in {"worker", "beat", "flower"}, f"{command.origin}: unexpected {subcommand!r}"
    if subcommand == "flower":
        # `celery flower` passes unknown options through to tornado: check them by name.
        import flower.options  # noqa: F401  (defines Flower's tornado options)
        from tornado.options import options

        for word in command.argv[command.argv.index("flower") + 1 :]:
            if word.startswith("--"):
                name = word[2:].split("=", 1)[0]
                assert name in options, f"{command.origin}: flower has no option --{name}"


# ------------------------------------------------------------------------------------ uvicorn


def uvicorn_target(command: Command) -> str:
    for word in command.argv[1:]:
        if re.fullmatch(r"[\w.]+:[\w.]+", word):
            return word
    raise AssertionError(f"{command.origin}: uvicorn without a module:attr APP argument")


async def asgi_get(app: Any, path: str) -> int:
    """One GET through the raw ASGI interface; the response status."""
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"test")],
        "client": ("127.0.0.1", 1),
        "server": ("test", 80),
    }
    await app(scope, receive, send)
    return next(m["status"] for m in sent if m["type"] == "http.response.start")


@pytest.mark.parametrize("command", commands_of("uvicorn"))
def test_uvicorn_target_is_an_asgi_app(command: Command) -> None:
    target = uvicorn_target(command)
    module_name, sep, attr = target.partition(":")
    assert sep and attr, f"{command.origin}: uvicorn target {target!r} is not module:attr"
    app = getattr(importlib.import_module(module_name), attr, None)
    assert callable(app), f"{command.origin}: {module_name}.{attr} is missing or not callable"
    call = app if inspect.isfunction(app) else type(app).__call__
    assert inspect.iscoroutinefunction(call), f"{command.origin}: {target} is not an ASGI callable"
    assert len(inspect.signature(app).parameters) == 3, f"{command.origin}: not (scope, receive, send)"
    assert asyncio.run(asgi_get(app, "/healthz")) == 200, f"{command.origin}: GET /healthz failed"

    result = run_help(*command.argv)  # the options as written (--host, --port ...) are accepted
    assert result.returncode == 0, f"{command.origin}: {shlex.join(command.argv)} --help\n{result.stderr}"


# --------------------------------------------------------------------------------- nen-celery


@pytest.mark.parametrize("command", commands_of("nen-celery"))
def test_nen_celery_subcommand_exists(command: Command) -> None:
    from click.testing import CliRunner

    from nen_celery.ops.cli import main

    subcommand = command.argv[1]
    assert subcommand in main.commands, f"{command.origin}: `nen-celery {subcommand}` does not exist"
    result = CliRunner().invoke(main, [*command.argv[1:], "--help"])
    assert result.exit_code == 0, f"{command.origin}: {result.output}"


# -------------------------------------------------------------------------------------- redis


def test_redis_is_durable_and_never_evicts() -> None:
    redis_svc = SERVICES["redis"]
    assert str(redis_svc["image"]).split(":")[0] == "redis"
    argv = split(redis_svc["command"])
    assert argv[0] == "redis-server"
    assert option_value(argv, "--appendonly") == "yes"
    assert option_value(argv, "--appendfsync") == "everysec"
    assert option_value(argv, "--maxmemory-policy") == "noeviction"

    mounts = [str(v).split(":") for v in redis_svc.get("volumes", [])]
    named = [src for src, dst, *_ in mounts if dst == "/data"]
    assert named and named[0] in (COMPOSE.get("volumes") or {}), "redis /data must be a named volume"
    test = redis_svc["healthcheck"]["test"]
    assert "redis-cli" in split(test) and "ping" in split(test)


# ------------------------------------------------------------------------ compose app services


def test_app_services_share_build_environment_and_wait_for_redis() -> None:
    anchor = COMPOSE.get("x-app")
    assert isinstance(anchor, dict), "expected one `x-app` anchor for the app services"
    for name in APP_SERVICES:
        svc = SERVICES[name]
        assert svc.get("build") == anchor["build"], f"{name}: not built from the shared Dockerfile"
        assert svc["depends_on"]["redis"]["condition"] == "service_healthy", name
        env = environment(svc)
        assert env == environment(anchor), f"{name}: environment differs from x-app"
        for key, value in SHARED_ENV.items():
            assert env.get(key) == value, f"{name}: {key}={env.get(key)!r}"
        assert set(SECRET_ENV) <= set(env), f"{name}: missing {set(SECRET_ENV) - set(env)}"


def test_service_urls_point_at_the_services() -> None:
    from nen_celery.web.asgi import app as receiver_app

    api = urlsplit(SHARED_ENV["NEN_API_URL"])
    assert api.hostname == "simulator"
    assert str(api.port) == option_value(split(SERVICES["simulator"]["command"]), "--port")

    hook = urlsplit(SHARED_ENV["NEN_WEBHOOK_URL"])
    assert hook.hostname == "receiver"
    assert str(hook.port) == option_value(split(SERVICES["receiver"]["command"]), "--port")
    routes = {getattr(r, "path", None): getattr(r, "methods", set()) for r in receiver_app.routes}
    assert "POST" in routes.get(hook.path, set()), f"receiver has no POST {hook.path}"


def published(service: str) -> set[str]:
    """Container ports a service publishes ("8000:8000", "127.0.0.1:5555:5555", long form)."""
    out = set()
    for entry in SERVICES[service].get("ports", []):
        if isinstance(entry, dict):
            out.add(str(entry["target"]))
        else:
            out.add(str(entry).split("/")[0].rsplit(":", 1)[-1])
    return out


def test_receiver_and_flower_ports_are_published() -> None:
    assert "8000" in published("receiver")
    assert "5555" in published("flower")


# -------------------------------------------------------------------------------------- secrets


def test_secret_env_values_are_host_references() -> None:
    places = {"x-app": COMPOSE.get("x-app") or {}, **SERVICES}
    for place, svc in places.items():
        for key, value in environment(svc).items():
            if re.fullmatch(r"NEN_\w*(KEY|SECRET)\w*", key) or re.search(r"PASSWORD|TOKEN|AUTH", key):
                match = re.fullmatch(r"\$\{(\w+):\?[^}]+\}", value)
                assert match, f"{place}: {key} must be ${{{key}:?...}}, not a literal"
                assert match.group(1) == key, f"{place}: {key} reads ${match.group(1)}"


@pytest.mark.parametrize("command", [pytest.param(c, id=c.origin) for c in COMMANDS])
def test_no_secret_on_command_lines(command: Command) -> None:
    for option in SECRET_OPTIONS:
        value = option_value(command.raw, option)
        assert value is None or value.startswith("$"), f"{command.origin}: {option} has a literal value"


def test_no_secret_literal_in_any_deploy_file() -> None:
    suspicious = [
        re.compile(r"\b[0-9a-fA-F]{32,}\b"),  # hex tokens (webhook secrets, API keys)
        re.compile(r"[A-Za-z0-9_-]{43}="),  # Fernet keys
        re.compile(r"(?i)\b(sk|pk|key|secret|token)[_-][A-Za-z0-9]{16,}"),
        re.compile(r"(?i)(test|sim)-(api-key|signing-key|webhook-secret)"),  # the dev defaults
    ]
    for path in (COMPOSE_FILE, PROCFILE, DOCKERFILE, DOCKERIGNORE):
        text = path.read_text()
        for pattern in suspicious:
            assert not pattern.search(text), f"{path.name}: looks like a secret: {pattern.pattern}"


# ------------------------------------------------------------------------------------ Procfile


def test_procfile_runs_the_same_commands_as_compose() -> None:
    procs = {name: split(cmd) for name, cmd in PROCESSES}
    for name in ("worker", "beat", "flower"):
        assert procs[name] == split(SERVICES[name]["command"]), name
    web = procs["web"]
    assert option_value(web, "--port") in ("$PORT", "${PORT}"), "web must listen on $PORT"
    receiver = split(SERVICES["receiver"]["command"])
    assert [w for w in web if "PORT" not in w] == [w for w in receiver if w != "8000"]


# ----------------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def extras_needed(command: Command) -> set[str]:
    """The extras (pyproject.toml) a process needs beyond the core dependencies."""
    words = [w for w in command.argv[1:] if not w.startswith("-")]
    if command.exe == "uvicorn":
        return {"receiver"}
    if command.exe == "celery":
        return {"flower"} if "flower" in words else set()
    if command.exe == "nen-celery":
        by_subcommand = {"simulate": {"simulator"}, "demo": {"demo"}, "metrics": {"receiver"}}
        return {"cli"} | by_subcommand.get(words[0] if words else "", set())
    raise AssertionError(f"{command.origin}: which extras does {command.exe} need?")


def test_extras_needed_by_each_process() -> None:
    assert extras_needed(make_command("t", "celery -A nen_celery.worker worker")) == set()
    assert extras_needed(make_command("t", "celery -A nen_celery.worker flower --port 5555")) == {"flower"}
    assert extras_needed(make_command("t", "uvicorn nen_celery.web.asgi:app")) == {"receiver"}
    assert extras_needed(make_command("t", "nen-celery simulate --port 1")) == {"cli", "simulator"}
    assert extras_needed(make_command("t", "nen-celery --help")) == {"cli"}


def test_dockerfile() -> None:
    steps = dockerfile_instructions()
    keywords = [k for k, _ in steps]
    assert steps[0] == ("FROM", "python:3.11-slim")
    copied = " ".join(rest for k, rest in steps if k == "COPY").split()
    for needed in ("pyproject.toml", "README.md"):
        assert needed in copied, f"Dockerfile does not copy {needed}"
    assert any(w.rstrip("/") == "src" for w in copied), "Dockerfile does not copy src/"
    # the package with the extras of every process the image runs, and the receiver's fast path
    # (uvloop/httptools: the [fast] extra)
    pattern = r"\bpip install (?:--\S+ )*[\"']?\.\[([\w,-]+)\][\"']?(?:\s|$)"
    installs = [m.group(1) for k, rest in steps if k == "RUN" for m in re.finditer(pattern, rest)]
    assert installs, "Dockerfile does not `pip install '.[extras]'`"
    installed = {extra.strip() for group in installs for extra in group.split(",")}
    declared = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"])
    assert installed <= declared, f"not extras of the package: {installed - declared}"
    cmd = [rest for k, rest in steps if k == "CMD"][-1]
    image_commands = [c for c in COMMANDS if c.origin.startswith("compose:") and c.exe != "redis-server"]
    image_commands.append(make_command("Dockerfile:CMD", yaml.safe_load(cmd)))
    for command in image_commands:
        missing = extras_needed(command) - installed
        assert not missing, f"{command.origin}: the image lacks the extras {missing}"
    assert "fast" in installed

    users = [rest for k, rest in steps if k == "USER"]
    assert users, "the image must not run as root"
    assert users[-1].split(":")[0] not in ("root", "0")
    last = {k: i for i, k in enumerate(keywords)}
    assert last["USER"] < last["CMD"], "USER must be set before CMD"
    assert split(yaml.safe_load(cmd)) == ["nen-celery", "--help"]  # exec-form JSON
    assert "ENTRYPOINT" not in keywords, "compose/Procfile commands are full command lines"
    assert shutil.which("nen-celery", path=SEARCH_PATH)

    for keyword, rest in steps:
        if keyword in ("ENV", "ARG"):
            assert not re.search(r"(?i)(KEY|SECRET|PASSWORD|TOKEN)\w*\s*=", rest), f"{keyword} {rest}"


def test_dockerignore_keeps_local_secrets_and_venv_out() -> None:
    patterns = {line.strip() for line in DOCKERIGNORE.read_text().splitlines()}
    assert {".git", ".venv", ".env"} <= patterns
