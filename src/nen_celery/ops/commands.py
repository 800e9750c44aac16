"""The ``nen-celery`` command (needs the ``cli`` extra; ``nen_celery.ops.cli`` is its entry point).

Exit codes: 0 ok; 1 the run ended failed/rejected/submit_failed (``start --wait``) or a
wait timed out; 2 bad input or configuration (``config check`` found an error); 3 run not found.
Every read command takes ``--json`` (``runs watch --json`` prints one JSON array per refresh).
"""

from __future__ import annotations

import json
import secrets as _secrets
import sys
from datetime import UTC, datetime
from typing import Any, NoReturn

from nen_celery.extras import MissingExtra, requires_extra

with requires_extra("cli", "the nen-celery command"):
    import click
    from rich.console import Console
    from rich.table import Table

from nen_celery.domain.models import Run
from nen_celery.errors import ConfigurationError

console = Console()


def _ts(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _kv(pairs: tuple[str, ...], label: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint=label)
        key, value = pair.split("=", 1)
        out[key] = value
    return out


def _missing(exc: MissingExtra) -> NoReturn:
    """A command whose extra is not installed: say which, exit 2 (bad configuration)."""
    click.echo(str(exc), err=True)
    sys.exit(2)


def _print_run(run: Run, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(run.to_dict(), indent=2))
        return
    table = Table(show_header=False, box=None)
    for key, value in [
        ("run_id", run.run_id),
        ("workflow_id", run.workflow_id),
        ("status", run.status),
        ("message_id", run.message_id or "-"),
        ("created", _ts(run.created_at)),
        ("finished", _ts(run.finished_at)),
        ("attempts", str(run.attempts)),
        ("history", " -> ".join(h["status"] for h in run.history)),
        ("error", json.dumps(run.error) if run.error else "-"),
        ("redrives", str(run.redrives)),
    ]:
        table.add_row(f"[bold]{key}[/]", value)
    console.print(table)


@click.group()
@click.option(
    "-A",
    "--app",
    "app_path",
    envvar="NEN_CELERY_APP",
    default=None,
    help="Your Celery app, as for `celery -A` (proj, proj.celery:app): runs started or redriven "
    "here are published through it. Default: nen's ready-made app (NEN_BROKER_URL).",
)
def main(app_path: str | None) -> None:
    """Run Nen workflows from Celery: start runs, inspect them, run the local simulator."""
    if app_path:
        from celery.app.utils import find_app

        from nen_celery.celery.install import init_celery
        from nen_celery.runtime.app import installed

        try:
            app = find_app(app_path)
        except Exception as exc:  # an import error of the user's module, or no app in it
            raise click.BadParameter(f"cannot load the Celery app {app_path!r}: {exc}") from None
        if installed() is not app:  # their module may have called init_celery itself
            try:
                init_celery(app)
            except (ConfigurationError, TypeError) as exc:
                raise click.UsageError(f"--app {app_path}: {exc}") from None


@main.command()
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
        raise click.ClickException(str(exc)) from None
    if not wait:
        click.echo(json.dumps({"run_id": handle.run_id}) if as_json else handle.run_id)
        return
    try:
        with console.status(f"waiting for run {handle.run_id}", spinner="dots"):
            run = handle.wait(timeout=timeout)
    except TimeoutError as exc:
        console.print(f"[red]{exc}[/]")
        sys.exit(1)
    _print_run(run, as_json)
    sys.exit(0 if run.status == "success" else 1)


@main.command()
@click.argument("run_id")
@click.option("--json", "as_json", is_flag=True)
def status(run_id: str, as_json: bool) -> None:
    """Show one run."""
    from nen_celery.lifecycle.api import get_run

    run = get_run(run_id)
    if run is None:
        console.print(f"[red]run {run_id} not found[/]")
        sys.exit(3)
    _print_run(run, as_json)


@main.group()
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
        console.print(f"[red]{exc}[/]")
        sys.exit(3 if "not found" in str(exc) else 2)
    console.print(f"run {run_id} redriven: a new attempt is queued")


@main.command(name="list")
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
        raise click.ClickException(str(exc)) from None


def _table(runs: list[Run]) -> Table:
    table = Table("run_id", "workflow_id", "status", "message_id", "created", "finished")
    for r in runs:
        table.add_row(
            r.run_id, r.workflow_id, r.status, r.message_id or "-", _ts(r.created_at), _ts(r.finished_at)
        )
    return table


def _list(status_: str | None, workflow: str | None, limit: int, as_json: bool) -> None:
    runs = _fetch(status_, workflow, limit)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in runs], indent=2))
        return
    console.print(_table(runs))


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
        with Live(_table(_fetch(status_, workflow, limit)), console=console, auto_refresh=False) as live:
            refreshes = 1
            while count == 0 or refreshes < count:
                time.sleep(interval)
                live.update(_table(_fetch(status_, workflow, limit)), refresh=True)
                refreshes += 1
    except KeyboardInterrupt:
        return


@main.group(name="deadletter")
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
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(list(entries), indent=2))
        return
    table = Table("run_id", "status", "callback", "task", "attempts", "at", "reason")
    for e in entries:
        table.add_row(
            str(e.get("run_id")),
            str(e.get("status")),
            str(e.get("callback")),
            str(e.get("task")),
            str(e.get("attempts")),
            _ts(e.get("at")),
            str(e.get("reason")),
        )
    console.print(table)


@main.group(name="config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command(name="check")
@click.option("--json", "as_json", is_flag=True)
def config_check(as_json: bool) -> None:
    """Validate NEN_* settings and reach Redis, the broker and Nen (no secret is printed)."""
    from nen_celery.checks.probes import run_probes, summary

    probes = run_probes()
    result = summary(probes)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        colour = {"ok": "green", "warning": "yellow", "error": "red"}
        table = Table("check", "result", "detail")
        for p in probes:
            table.add_row(p.name, f"[{colour[p.level]}]{p.level}[/]", p.detail)
        console.print(table)
    sys.exit(0 if result["ok"] else 2)


@main.group(name="metrics")
def metrics_group() -> None:
    """Prometheus metrics."""


@metrics_group.command(name="serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=9808, show_default=True)
def metrics_serve(host: str, port: int) -> None:
    """Serve /metrics for this host's worker processes (PROMETHEUS_MULTIPROC_DIR)."""
    from nen_celery.runtime.metrics import multiprocess_dir

    try:
        from nen_celery.web.metrics import serve_metrics
    except MissingExtra as exc:
        _missing(exc)

    if not multiprocess_dir():
        raise click.UsageError("set PROMETHEUS_MULTIPROC_DIR to the directory the workers write to")
    try:
        serve_metrics(host, port)
    except MissingExtra as exc:  # starlette without uvicorn (the fastapi extra)
        _missing(exc)


@metrics_group.command(name="show")
def metrics_show() -> None:
    """Print the current exposition once (this host's processes and the run store gauges)."""
    from nen_celery.runtime.metrics import render

    click.echo(render()[0].decode(), nl=False)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8700, show_default=True, envvar="NEN_SIM_PORT")
@click.option("--api-key", envvar="NEN_API_KEY", default="sim-api-key")
@click.option("--signing-key", envvar="NEN_SIGNING_KEY", default="sim-signing-key")
@click.option("--webhook-secret", envvar="NEN_WEBHOOK_SECRET", default="sim-webhook-secret")
@click.option("--processing-delay", default=0.05, show_default=True)
@click.option("--terminal-delay", default=0.1, show_default=True)
@click.option("--fail-workflow", "fail_workflows", multiple=True)
def simulate(
    host: str,
    port: int,
    api_key: str,
    signing_key: str,
    webhook_secret: str,
    processing_delay: float,
    terminal_delay: float,
    fail_workflows: tuple[str, ...],
) -> None:
    """Run the local Nen API simulator."""
    try:
        from nen_celery.simulator import SimulatorConfig, serve
    except MissingExtra as exc:
        _missing(exc)

    secret = webhook_secret.split(",")[0].strip()
    config = SimulatorConfig(
        api_key=api_key,
        signing_key=signing_key,
        webhook_secret=secret,
        processing_delay=processing_delay,
        terminal_delay=terminal_delay,
        fail_workflows=set(fail_workflows),
    )
    serve(config, host=host, port=port)


@main.command()
@click.option("--runs", default=20, show_default=True)
@click.option("--timeout", default=120.0, show_default=True)
def demo(runs: int, timeout: float) -> None:
    """Start simulator, worker and receiver locally and push runs through them."""
    try:
        from nen_celery.ops.demo import run_demo
    except MissingExtra as exc:
        _missing(exc)

    sys.exit(run_demo(runs=runs, timeout=timeout))


@main.group(name="webhook-secret")
def webhook_secret() -> None:
    """Webhook secret helpers."""


@webhook_secret.command(name="generate")
def webhook_secret_generate() -> None:
    """Print a new random webhook secret (32 bytes, hex) to give to Nen."""
    click.echo(_secrets.token_hex(32))


@main.group(name="secrets-key")
def secrets_key() -> None:
    """NEN_SECRETS_KEY helpers."""


@secrets_key.command(name="generate")
def secrets_key_generate() -> None:
    """Print a new Fernet key for NEN_SECRETS_KEY."""
    from nen_celery.store.sealer import generate_key

    click.echo(generate_key())


if __name__ == "__main__":  # pragma: no cover
    main()
