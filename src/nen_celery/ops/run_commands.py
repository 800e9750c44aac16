"""The commands about runs: ``start``, ``status``, ``list``, ``runs ...`` and ``deadletter list``.

They start, read and redrive runs in the run store; the commands that look after the
deployment itself are in ``operator_commands``. ``commands.main`` puts both under one group.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from nen_celery.extras import requires_extra

with requires_extra("cli", "the nen-celery command"):
    import click
    from rich.table import Table

from nen_celery.domain.models import Run
from nen_celery.errors import ConfigurationError
from nen_celery.ops.exit_codes import BAD_INPUT, NOT_FOUND, NOT_SUCCESS, OK, BadInput
from nen_celery.ops.output import console, print_run, runs_table, shown, ts


def _kv(pairs: tuple[str, ...], label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=label)
        key, value = pair.split("=", 1)
        out[key] = value
    return out


@click.command()
@click.argument("workflow_id")
@click.option("--param", "params", multiple=True, help="KEY=VALUE (repeatable)")
@click.option("--secure-param", "secure", multiple=True, help="KEY=VALUE, encrypted at rest")
@click.option("--wait/--no-wait", default=False, help="Wait until the run is finished")
@click.option("--timeout", default=300.0, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def start(
    workflow_id: str,
    params: tuple[str, ...],
    secure: tuple[str, ...],
    wait: bool,
    timeout: float,
    as_json: bool,
) -> None:
    """Start a run of WORKFLOW_ID (values are sent as strings)."""
    from nen_celery.errors import InvalidParams
    from nen_celery.lifecycle.api import start_run

    try:
        handle = start_run(
            workflow_id, _kv(params, "--param"), secure_params=_kv(secure, "--secure-param") or None
        )
    except (InvalidParams, ConfigurationError, ValueError) as exc:
        raise BadInput(str(exc)) from None
    if not wait:
        click.echo(json.dumps({"run_id": handle.run_id}) if as_json else handle.run_id)
        return
    try:
        with console.status(f"waiting for run {handle.run_id}", spinner="dots"):
            run = handle.wait(timeout=timeout)
    except TimeoutError as exc:
        console.print(f"[red]{shown(exc)}[/]")
        sys.exit(NOT_SUCCESS)
    print_run(run, as_json)
    sys.exit(OK if run.status == "success" else NOT_SUCCESS)


@click.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
def status(run_id: str, as_json: bool) -> None:
    """Show one run."""
    from nen_celery.lifecycle.api import get_run

    run = get_run(run_id)
    if run is None:
        console.print(f"[red]run {shown(run_id)} not found[/]")
        sys.exit(NOT_FOUND)
    print_run(run, as_json)


@click.group()
def runs() -> None:
    """List, inspect and redrive runs."""


@runs.command(name="list")
@click.option("--status", "status_", default=None, help="e.g. rejected, submit_failed, unknown")
@click.option("--workflow", default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def runs_list(status_: str | None, workflow: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first (dead letters: --status rejected|submit_failed|unknown)."""
    _list(status_, workflow, limit, as_json)


@runs.command(name="show")
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def runs_show(ctx: click.Context, run_id: str, as_json: bool) -> None:
    """Show one run (same as `status`)."""
    ctx.invoke(status, run_id=run_id, as_json=as_json)


@runs.command(name="redrive")
@click.argument("run_id")
@click.option(
    "--force",
    is_flag=True,
    help="Also a run that may have started in Nen (its POST got no usable answer): check Nen first.",
)
def runs_redrive(run_id: str, force: bool) -> None:
    """Resubmit a rejected / submit_failed / unknown run as a new attempt, keeping its history."""
    from nen_celery.lifecycle.api import redrive_run

    try:
        redrive_run(run_id, force=force)
    except ValueError as exc:
        console.print(f"[red]{shown(exc)}[/]")
        sys.exit(NOT_FOUND if "not found" in str(exc) else BAD_INPUT)
    console.print(f"run {shown(run_id)} redriven: a new attempt is queued")


@click.command(name="list")
@click.option("--status", "status_", default=None)
@click.option("--workflow", default=None)
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def list_runs(status_: str | None, workflow: str | None, limit: int, as_json: bool) -> None:
    """List recent runs, newest first (alias of `runs list`)."""
    _list(status_, workflow, limit, as_json)


def _fetch(status_: str | None, workflow: str | None, limit: int) -> list[Run]:
    from nen_celery.runtime.context import get_context

    try:
        return get_context().store.list(limit=limit, status=status_, workflow_id=workflow)
    except ConfigurationError as exc:
        raise BadInput(str(exc)) from None


def _list(status_: str | None, workflow: str | None, limit: int, as_json: bool) -> None:
    runs = _fetch(status_, workflow, limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    console.print(runs_table(runs))


@runs.command(name="watch")
@click.option("--status", "status_", default=None)
@click.option("--workflow", default=None)
@click.option("--limit", default=20, show_default=True)
@click.option("--interval", default=1.0, show_default=True, help="Seconds between refreshes")
@click.option("--count", default=0, help="Stop after this many refreshes (0: until Ctrl-C)")
@click.option("--json", "as_json", is_flag=True, help="One JSON array per refresh (NDJSON)")
def runs_watch(
    status_: str | None, workflow: str | None, limit: int, interval: float, count: int, as_json: bool
) -> None:
    """A live table of recent runs, refreshed every --interval seconds."""
    import time

    from rich.live import Live

    if interval <= 0:
        raise click.BadParameter("must be > 0", param_hint="--interval")
    refreshes = 0
    try:
        if as_json:
            while count == 0 or refreshes < count:
                runs = _fetch(status_, workflow, limit)
                click.echo(json.dumps([r.to_dict() for r in runs]))
                refreshes += 1
                if count == 0 or refreshes < count:
                    time.sleep(interval)
            return
        with Live(runs_table(_fetch(status_, workflow, limit)), console=console, auto_refresh=False) as live:
            refreshes = 1
            while count == 0 or refreshes < count:
                time.sleep(interval)
                live.update(runs_table(_fetch(status_, workflow, limit)), refresh=True)
                refreshes += 1
    except KeyboardInterrupt:
        return


@click.group(name="deadletter")
def deadletter_group() -> None:
    """Runs whose callback was never dispatched (runs Nen never ran: `runs list --status`)."""


@deadletter_group.command(name="list")
@click.option("--limit", default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def deadletter_list(limit: int, as_json: bool) -> None:
    """Runs whose on_complete / on_failure was given up, newest first, with the reason
    (its arguments do not fit the task's signature). Their completion is marked done: fix the
    task, then act on the run yourself (`status RUN_ID` shows it)."""
    from nen_celery.runtime.context import get_context

    try:
        entries = get_context().store.dead_letters(limit)
    except ConfigurationError as exc:
        raise BadInput(str(exc)) from None
    if as_json:
        click.echo(json.dumps(list(entries), indent=2))
        return
    table = Table("run_id", "status", "callback", "task", "attempts", "at", "reason")
    for e in entries:
        table.add_row(
            *map(shown, (e.get(k) for k in ("run_id", "status", "callback", "task", "attempts"))),
            ts(e.get("at")),
            shown(e.get("reason")),
        )
    console.print(table)
