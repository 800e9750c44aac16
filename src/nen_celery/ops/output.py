"""What the ``nen-celery`` commands print with: one rich console, timestamps, runs as tables.

Shared by the run commands and the operator commands, which is why it is neither of them. Text
that came from Nen or from users (ids, statuses, errors, reasons) is printed as text, never read
as rich markup: ``shown()`` escapes it (a ``[/]`` in an error message would otherwise raise, and
a ``[link=...]`` would render).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from nen_celery.extras import requires_extra

with requires_extra("cli", "the nen-celery command"):
    import click
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

from nen_celery.domain.models import Run

console = Console()


def shown(value: object) -> str:
    """``value`` as text for a table cell or a printed line: rich markup escaped."""
    return escape(str(value))


def ts(value: float | None) -> str:
    """A timestamp as the tables show it (UTC), or ``-`` for none."""
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def print_run(run: Run, as_json: bool) -> None:
    """One run: its JSON, or a two-column table of its fields."""
    if as_json:
        click.echo(json.dumps(run.to_dict(), indent=2))
        return
    table = Table(show_header=False, box=None)
    for key, value in [
        ("run_id", run.run_id),
        ("workflow_id", run.workflow_id),
        ("status", run.status),
        ("message_id", run.message_id or "-"),
        ("created", ts(run.created_at)),
        ("finished", ts(run.finished_at)),
        ("attempts", str(run.attempts)),
        ("history", " -> ".join(h["status"] for h in run.history)),
        ("error", json.dumps(run.error) if run.error else "-"),
        ("redrives", str(run.redrives)),
    ]:
        table.add_row(f"[bold]{key}[/]", shown(value))
    console.print(table)


def runs_table(runs: list[Run]) -> Table:
    """Many runs, one row each (``list``, ``runs list``, ``runs watch``)."""
    table = Table("run_id", "workflow_id", "status", "message_id", "created", "finished")
    for r in runs:
        table.add_row(
            *map(shown, (r.run_id, r.workflow_id, r.status, r.message_id or "-")),
            ts(r.created_at),
            ts(r.finished_at),
        )
    return table
