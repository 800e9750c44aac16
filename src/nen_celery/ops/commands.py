"""The ``nen-celery`` command (needs the ``cli`` extra; ``nen_celery.ops.cli`` is its entry point).

Exit codes: ``exit_codes.MEANINGS`` (0 ok; 1 the run ended other than success or a wait timed
out; 2 bad input or configuration; 3 run not found), the table docs/operations.md shows.
Every read command takes ``--json`` (``runs watch --json`` prints one JSON array per refresh).

This module holds the top group and its ``--app`` option; the commands are defined in
``run_commands`` (runs) and ``operator_commands`` (the deployment) and added to it here.
"""

from __future__ import annotations

from nen_celery.extras import requires_extra

with requires_extra("cli", "the nen-celery command"):
    import click

from nen_celery.errors import ConfigurationError
from nen_celery.ops.operator_commands import (
    config_group,
    demo,
    metrics_group,
    secrets_key,
    simulate,
    webhook_group,
    webhook_secret,
)
from nen_celery.ops.run_commands import deadletter_group, list_runs, runs, start, status


@click.group()
@click.option(
    "-A",
    "--app",
    "app_path",
    envvar="NEN_CELERY_APP",
    default=None,
    help="Your Celery app, as for `celery -A` (proj, proj.celery:app, a Flask factory): loaded as "
    "celery loads it (Django's settings and NEN_CELERY included), every command reads the settings "
    "it reads and publishes through it. Default: nen's ready-made app (NEN_BROKER_URL).",
)
def main(app_path: str | None) -> None:
    """Run Nen workflows from Celery: start runs, inspect them, run the local simulator."""
    if app_path:
        from nen_celery.ops.app_loading import AppNotLoaded, install_app

        try:
            install_app(app_path)
        except AppNotLoaded as exc:
            raise click.BadParameter(str(exc), param_hint="'-A' / '--app'") from None
        except ConfigurationError as exc:
            raise click.UsageError(f"--app {app_path}: {exc}") from None


for _command in (
    start,
    status,
    runs,
    list_runs,
    deadletter_group,
    config_group,
    metrics_group,
    simulate,
    demo,
    webhook_group,
    webhook_secret,
    secrets_key,
):
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    main()
