"""A new user's first hour (issue 26) on a project made by `django-admin startproject`.

The project is the README's: `mysite/celery.py` (Celery's Django guide plus `init_celery`),
nen's AppConfig, `NEN_CELERY` and the webhook URLconf, all written into the files startproject
made. Every NEN_* variable is removed from the processes' environment and nen's own defaults
(NEN_REDIS_URL, NEN_BROKER_URL) point at a closed port, so whatever works read `NEN_CELERY` and
the project's own `CELERY_BROKER_URL`. Everything runs as a user runs it: `nen-celery -A mysite`,
`manage.py check`, `manage.py runserver`, `celery -A mysite worker`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from nen_celery.checks.webhook_test import TEST_MESSAGE_PREFIX
from nen_celery.simulator import SimulatorServer
from tests.conftest import SIM_API_KEY, SIM_SIGNING_KEY, SIM_WEBHOOK_SECRET, TEST_REDIS_URL, sim_config
from tests.example_support import namespace
from tests.helpers import ROOT, free_port, stop_group, wait_for

pytestmark = pytest.mark.integration
__all__ = ["namespace"]  # the fixture, imported for pytest

BIN = Path(sys.executable).parent
WF = "12345678-1234-1234-1234-123456789abc"
CLOSED = "redis://127.0.0.1:9/0"  # nen's defaults would land here: nothing listens

CELERY_PY = """\
import os
from celery import Celery
import nen_celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
app = Celery("mysite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
nen_celery.init_celery(app)
"""

# Appended to the settings.py startproject wrote. SITE_* variables let one test vary a value.
SETTINGS = """
import os as _os

if not _os.environ.get("SITE_WITHOUT_NEN_APP"):
    INSTALLED_APPS += ["nen_celery.web.django.NenCeleryConfig"]
CELERY_BROKER_URL = {broker!r}
CELERY_BROKER_TRANSPORT_OPTIONS = {{"global_keyprefix": {prefix!r}}}
NEN_CELERY = {{
    "REDIS_URL": {redis!r},
    "KEY_PREFIX": {prefix!r},
    "API_URL": {api!r},
    "SIGNING_KEY": {signing!r},
    "WEBHOOK_URL": {webhook!r},
    "WEBHOOK_SECRET": _os.environ.get("SITE_WEBHOOK_SECRET", {secret!r}),
}}
if "SITE_API_KEY" in _os.environ:
    NEN_CELERY["API_KEY"] = _os.environ["SITE_API_KEY"]
"""


def run(site: Site, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        argv, cwd=site.root, env={**site.env, **env}, capture_output=True, text=True, timeout=120, check=False
    )
    (site.root.parent / "commands.log").open("a").write(
        f"$ {' '.join(argv)} {env}\n-> {done.returncode}\n{done.stdout}{done.stderr}\n"
    )
    return done


def cli(site: Site, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return run(site, [str(BIN / "nen-celery"), "-A", "mysite", *args], **env)


class Site:
    def __init__(self, root: Path, env: dict[str, str], prefix: str, port: int) -> None:
        self.root, self.env, self.prefix, self.port = root, env, prefix, port


@pytest.fixture
def sim() -> Iterator[SimulatorServer]:
    with SimulatorServer(sim_config()) as server:
        yield server


@pytest.fixture
def site(tmp_path: Path, sim: SimulatorServer, namespace: Any) -> Iterator[Site]:
    prefix, port = namespace("site"), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NEN_", "DJANGO_", "CELERY_", "SITE_"))}
    env.update(
        NEN_REDIS_URL=CLOSED,
        NEN_BROKER_URL=CLOSED,
        NEN_API_KEY=SIM_API_KEY,  # the workers' key, from the environment as the README says
        PYTHONPATH=str(ROOT / "src"),
        PYTHONDONTWRITEBYTECODE="1",
    )
    root = tmp_path / "mysite"
    root.mkdir()
    subprocess.run([str(BIN / "django-admin"), "startproject", "mysite", str(root)], check=True)
    (root / "mysite" / "celery.py").write_text(CELERY_PY)
    (root / "mysite" / "__init__.py").write_text("from .celery import app as celery_app\n")
    settings = SETTINGS.format(
        broker=TEST_REDIS_URL,
        prefix=prefix,
        redis=TEST_REDIS_URL,
        api=sim.url,
        signing=SIM_SIGNING_KEY,
        webhook=f"http://127.0.0.1:{port}/nen/webhooks/nen",
        secret=SIM_WEBHOOK_SECRET,
    )
    with (root / "mysite" / "settings.py").open("a") as out:
        out.write(settings)
    urls = (root / "mysite" / "urls.py").read_text()
    urls = urls.replace("from django.urls import path", "from django.urls import include, path")
    urls = urls.replace(
        "urlpatterns = [", 'urlpatterns = [\n    path("nen/", include("nen_celery.web.django")),'
    )
    (root / "mysite" / "urls.py").write_text(urls)
    yield Site(root, env, prefix, port)


@pytest.fixture
def web(site: Site) -> Iterator[str]:
    """`manage.py runserver`: the project's webhook view at /nen/webhooks/nen."""
    log = (site.root.parent / "web.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "runserver", f"127.0.0.1:{site.port}", "--noreload"],
        cwd=site.root,
        env=site.env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{site.port}/nen/healthz"

    def up() -> bool:
        assert proc.poll() is None, (site.root.parent / "web.log").read_text()
        try:
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "runserver")
        yield url
    finally:
        stop_group(proc)
        log.close()


def test_the_cli_reads_NEN_CELERY_and_the_projects_broker(site: Site, web: str, redis_client: Any) -> None:
    """Item 1 and item 3's CLI part: status, runs list, start, config check and webhook test
    read the project's settings; config check probes the project's own broker and the webhook."""
    started = cli(site, "start", WF, "--param", "A=1", "--json")
    assert started.returncode == 0, started.stderr
    run_id = json.loads(started.stdout)["run_id"]
    # the run is in NEN_CELERY's Redis under its prefix; submit_run in the project's broker
    assert redis_client.exists(*redis_client.keys(f"{site.prefix}*{run_id}*")) >= 1
    broker = redis.Redis.from_url(TEST_REDIS_URL)
    assert broker.llen(f"{site.prefix}nen.submit") == 1

    status = cli(site, "status", run_id, "--json")
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["status"] == "queued"
    listed = cli(site, "runs", "list", "--json")
    assert listed.returncode == 0 and run_id in [r["run_id"] for r in json.loads(listed.stdout)]

    check = cli(site, "config", "check", "--json")
    result = json.loads(check.stdout)
    details = {c["name"]: c for c in result["checks"]}
    assert check.returncode == 0 and result["ok"], result
    assert "the broker_url of the Celery app 'mysite'" in details["broker"]["detail"]
    assert details["run store"]["level"] == "ok"  # NEN_CELERY's REDIS_URL, not NEN_REDIS_URL
    assert details["nen api"]["level"] == "ok"
    assert details["webhook"]["level"] == "ok" and " 202 " in details["webhook"]["detail"]

    tested = cli(site, "webhook", "test", "--json")
    assert tested.returncode == 0, tested.stdout + tested.stderr
    answer = json.loads(tested.stdout)
    assert answer["status_code"] == 202 and answer["message_id"].startswith(TEST_MESSAGE_PREFIX)
    assert json.loads(cli(site, "status", run_id, "--json").stdout)["status"] == "queued"  # nothing moved

    refused = cli(site, "webhook", "test", SITE_WEBHOOK_SECRET="not-the-receivers-secret")
    assert refused.returncode == 2
    assert "401" in refused.stdout and "NEN_WEBHOOK_SECRET" in refused.stdout
    assert "not-the-receivers-secret" not in refused.stdout + refused.stderr


def test_misconfiguration_is_an_error(site: Site) -> None:
    """Item 2: NEN_CELERY without nen's AppConfig fails `manage.py check` (nen_celery.E001), the
    CLI and the worker; an empty secret is named at start; a worker without NEN_API_KEY that
    would submit refuses to start."""
    assert run(site, [sys.executable, "manage.py", "check"]).returncode == 0

    without = {"SITE_WITHOUT_NEN_APP": "1"}
    checked = run(site, [sys.executable, "manage.py", "check"], **without)
    assert checked.returncode != 0 and "nen_celery.E001" in checked.stderr, checked.stderr
    assert "NenCeleryConfig" in checked.stderr
    status = cli(site, "status", "some-run", **without)
    assert status.returncode == 2 and "nen_celery.E001" in status.stderr
    worker = run(site, [str(BIN / "celery"), "-A", "mysite", "worker", "-P", "solo"], **without)
    assert worker.returncode != 0 and "nen_celery.E001" in worker.stdout + worker.stderr

    empty = cli(site, "start", WF, SITE_API_KEY="")
    assert empty.returncode == 2 and "NEN_API_KEY is set but empty" in empty.stderr

    no_key = {k: v for k, v in site.env.items() if k != "NEN_API_KEY"}
    done = subprocess.run(
        [str(BIN / "celery"), "-A", "mysite", "worker", "-P", "solo"],
        cwd=site.root,
        env=no_key,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode != 0 and "NEN_API_KEY is not set" in output and "nen.submit" in output
