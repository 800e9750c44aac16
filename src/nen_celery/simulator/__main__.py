"""``python -m nen_celery.simulator``: see ``nen_celery.simulator.cli``."""

import sys

from nen_celery.extras import MissingExtra

try:
    from nen_celery.simulator.cli import main
except MissingExtra as exc:
    print(f"python -m nen_celery.simulator needs the {exc.extra!r} extra: {exc.install}", file=sys.stderr)
    raise SystemExit(2) from None

raise SystemExit(main())
