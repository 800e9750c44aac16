"""The commands that look after a deployment rather than its runs: ``config check``,
``metrics ...``, ``simulate``, ``demo`` and the ``webhook-secret`` / ``secrets-key`` generators.

Several need an extra beyond ``cli`` (the simulator, the receiver, the demo's): they import it
when run, so that ``nen-celery`` itself works without it and the command says what to install.
"""

from __future__ import annotations

import json
import secrets as _secrets
import sys
from typing import NoReturn

from nen_celery.extras import MissingExtra, requires_extra

with requires_extra("cli", "the nen-celery command"):
    import click
    from rich.table import Table

from nen_celery.ops.output import console


def _missing(exc: MissingExtra) -> NoReturn:
    """A command whose extra is not installed: say which, exit 2 (bad configuration)."""
    click.echo(str(exc), err=True)
    sys.exit(2)


@click.group(name="config")
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


@click.group(name="metrics")
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


@click.command()
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


@click.command()
@click.option("--runs", default=20, show_default=True)
@click.option("--timeout", default=120.0, show_default=True)
def demo(runs: int, timeout: float) -> None:
    """Start simulator, worker and receiver locally and push runs through them."""
    try:
        from nen_celery.ops.demo import run_demo
    except MissingExtra as exc:
        _missing(exc)

    sys.exit(run_demo(runs=runs, timeout=timeout))


@click.group(name="webhook-secret")
def webhook_secret() -> None:
    """Webhook secret helpers."""


@webhook_secret.command(name="generate")
def webhook_secret_generate() -> None:
    """Print a new random webhook secret (32 bytes, hex) to give to Nen."""
    click.echo(_secrets.token_hex(32))


@click.group(name="secrets-key")
def secrets_key() -> None:
    """NEN_SECRETS_KEY helpers."""


@secrets_key.command(name="generate")
def secrets_key_generate() -> None:
    """Print a new Fernet key for NEN_SECRETS_KEY."""
    from nen_celery.store.sealer import generate_key

    click.echo(generate_key())
