"""Optional dependencies: which extra a module needs, and the error that says so.

``pip install nen-celery`` brings what every process needs (the app that calls ``start_run``, a
worker, beat, the Django and Flask adapters). The rest are extras (pyproject.toml): a module that
needs one imports it inside ``requires_extra``, so that without it the import fails with
``MissingExtra``, an ``ImportError`` naming the extra and the pip command::

    with requires_extra("receiver", __name__):
        from starlette.applications import Starlette

    # nen_celery.web.asgi needs the 'receiver' extra: pip install 'nen-celery[receiver]'
    # (No module named 'starlette')
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

DISTRIBUTION = "nen-celery"


def pip_command(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]'"


class MissingExtra(ImportError):
    """An optional dependency is not installed: ``extra`` names what to install.

    The original ``ImportError`` is kept as ``__cause__`` (and its text is in the message);
    ``name`` is the missing module's, as on the original.
    """

    def __init__(self, needed_by: str, extra: str, cause: ImportError) -> None:
        self.needed_by = needed_by
        self.extra = extra
        self.install = pip_command(extra)
        message = f"{needed_by} needs the {extra!r} extra: {self.install} ({cause})"
        super().__init__(message, name=cause.name, path=cause.path)
        self.__cause__ = cause


@contextmanager
def requires_extra(extra: str, needed_by: str) -> Iterator[None]:
    """Turn an ``ImportError`` raised in the block into ``MissingExtra(needed_by, extra)``.

    Put only the optional packages' imports in the block. A ``MissingExtra`` from a nested
    module passes through unchanged: it already names the extra that module needs.
    """
    try:
        yield
    except MissingExtra:
        raise
    except ImportError as exc:
        raise MissingExtra(needed_by, extra, exc) from exc
