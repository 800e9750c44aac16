"""``python -m nen_celery.simulator``: see ``nen_celery.simulator.cli``."""

from nen_celery.simulator.cli import main

raise SystemExit(main())
