"""Logging you can add to your own handlers: redaction of secrets and the run ids of a record.

Nothing here is installed on import: ``RedactingFilter`` and ``RunIdFilter`` are filters you add
(``handler.addFilter(...)`` or ``"()": "nen_celery.logs.RedactingFilter"`` in ``dictConfig``);
``JsonFormatter`` writes one JSON object per record with the run ids.
"""

from nen_celery.logs.redaction import RedactingFilter, add_redaction
from nen_celery.logs.runlog import JsonFormatter, RunIdFilter

__all__ = ["JsonFormatter", "RedactingFilter", "RunIdFilter", "add_redaction"]
