"""``import nen_celery`` is cheap (PEP 562): pytest imports it for the ``nen_celery.testing``
plugin in every session of a user's project, used or not."""

from __future__ import annotations

import subprocess
import sys

import nen_celery

HEAVY = ("celery", "kombu", "redis", "pydantic", "cryptography", "httpx")


def test_importing_the_package_imports_nothing_heavy() -> None:
    code = (
        "import sys, nen_celery\n"
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_every_public_name_resolves_to_its_object() -> None:
    from nen_celery.lifecycle.api import start_run

    for name in nen_celery.__all__:
        assert getattr(nen_celery, name) is not None, name
    assert nen_celery.start_run is start_run
    assert set(nen_celery.__all__) <= set(dir(nen_celery))
    try:
        nen_celery.no_such_name  # noqa: B018
    except AttributeError as exc:
        assert "no_such_name" in str(exc)
    else:
        raise AssertionError("an unknown name must raise AttributeError")
