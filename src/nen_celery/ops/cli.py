"""The ``nen-celery`` console script's entry point; the commands are in ``nen_celery.ops.commands``.

They need the ``cli`` extra (rich, click). Without it, ``nen-celery`` says which extra to install
and exits 2, where an import error's traceback would otherwise be all it printed.
"""

from __future__ import annotations

import sys
from typing import NoReturn

from nen_celery.extras import MissingExtra

try:
    from nen_celery.ops.commands import main
except MissingExtra as _exc:
    _reason = str(_exc)

    def _unavailable(*args: object, **kwargs: object) -> NoReturn:
        print(_reason, file=sys.stderr)
        raise SystemExit(2)

    main = _unavailable  # type: ignore[assignment]

__all__ = ["main"]

if __name__ == "__main__":  # pragma: no cover
    main()
