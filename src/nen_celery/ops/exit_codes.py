"""The ``nen-celery`` command's exit codes, one table: docs/operations.md shows it, and
tests/test_docs_true.py holds the page to ``MEANINGS`` and runs the command for each code."""

from __future__ import annotations

from nen_celery.extras import requires_extra

with requires_extra("cli", "the nen-celery command"):
    import click

OK = 0
NOT_SUCCESS = 1
BAD_INPUT = 2
NOT_FOUND = 3

MEANINGS = {
    OK: "ok",
    NOT_SUCCESS: "the run ended other than `success` (`start --wait`), or the wait timed out; "
    "`demo`: a run did not get exactly one callback",
    BAD_INPUT: "bad input or configuration: a usage error, invalid params or settings, a project "
    "`-A` cannot load, `config check` found an error, `webhook test` got no 2xx, a run that "
    "cannot be redriven, a missing extra, `demo` could not start",
    NOT_FOUND: "run not found (`status`, `runs show`, `runs redrive`)",
}


class BadInput(click.ClickException):
    """Bad input or configuration, said in one line: exit 2 (click's own usage errors exit 2)."""

    exit_code = BAD_INPUT
