"""The commands that look after a deployment rather than its runs: ``config check``,
``webhook test``, ``metrics ...``, ``simulate``, ``demo`` and the ``webhook-secret`` /
``secrets-key`` generators.

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
    from rich.markup import escape
    from rich.table import Table

from nen_celery.ops.exit_codes import BAD_INPUT, OK, BadInput
from nen_celery.ops.output import console


def _missing(exc: MissingExtra) -> NoReturn:
    """A command whose extra is not installed: say which, exit 2 (bad configuration)."""
    click.echo(str(exc), err=True)
    sys.exit(BAD_INPUT)


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
        for p in probes:  # details quote URLs, hosts and answers: shown as text, never markup
            table.add_row(escape(p.name), f"[{colour[p.level]}]{p.level}[/]", escape(p.detail))
        console.print(table)
    sys.exit(OK if result["ok"] else BAD_INPUT)


@click.group(name="webhook")
def webhook_group() -> None:
    """The webhook receiver, seen from outside."""


@webhook_group.command(name="test")
@click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for the answer")
@click.option("--json", "as_json", is_flag=True)
def webhook_test(timeout: float, as_json: bool) -> None:
    """POST a signed test webhook to NEN_WEBHOOK_URL, as Nen would, and say what came back
    (its messageId is no run's: the receiver parks it, no run changes). Exit 2 unless 2xx."""
    from dataclasses import asdict

    from nen_celery.checks.webhook_test import send_test_webhook
    from nen_celery.errors import ConfigurationError
    from nen_celery.settings import get_settings

    try:
        settings = get_settings()
    except ConfigurationError as exc:
        raise BadInput(str(exc)) from None
    result = send_test_webhook(settings, timeout)
    if as_json:
        click.echo(json.dumps(asdict(result), indent=2))
    else:
        colour = "green" if result.level == "ok" else "red"
        console.print(f"[{colour}]{result.level}[/]: {escape(result.detail)}")
    sys.exit(OK if result.level == "ok" else BAD_INPUT)


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


@click.command(
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True, "help_option_names": []},
    add_help_option=False,
)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def simulate(args: tuple[str, ...]) -> None:
    """Run the local Nen API simulator: the options of `python -m nen_celery.simulator` (--help)."""
    try:
        from nen_celery.simulator.cli import main as simulator_main
    except MissingExtra as exc:
        _missing(exc)

    sys.exit(simulator_main(list(args), prog="nen-celery simulate"))


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
