"""The Django recipe of docs/testing.md without pytest-django: Django set up once, on a SQLite file
of the session's own (the worker's threads write to it too), tables made by the migrations."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

_DB = Path(tempfile.mkdtemp(prefix="shop-tests-")) / "db.sqlite3"
os.environ["DJANGO_SETTINGS_MODULE"] = "proj.settings"
os.environ["DJANGO_DB_PATH"] = str(_DB)
os.environ.setdefault("DJANGO_EMAIL_BACKEND", "django.core.mail.backends.locmem.EmailBackend")

import django  # noqa: E402

django.setup()


@pytest.fixture(scope="session", autouse=True)
def database() -> Iterator[None]:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    yield
    _DB.unlink(missing_ok=True)
