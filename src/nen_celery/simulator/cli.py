"""Command line of the simulator (``python -m nen_celery.simulator``), reusable by ``nen-celery simulate``.

Secrets default from the same environment variables the package reads (NEN_API_KEY,
NEN_SIGNING_KEY, NEN_WEBHOOK_SECRET), so they need not appear in ``ps`` output.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence

from nen_celery.simulator.config import SimulatorConfig
from nen_celery.simulator.server import serve


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The argument parser; defaults come from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog="python -m nen_celery.simulator",
        description="A local, honest simulation of the Nen workflow-run API.",
    )
    parser.add_argument("--host", default=env.get("NEN_SIM_HOST", "127.0.0.1"), help="bind address")
    parser.add_argument(
        "--port",
        type=int,
        default=env.get("NEN_SIM_PORT", "8700"),
        help="port (env NEN_SIM_PORT, default 8700)",
    )
    parser.add_argument(
        "--api-key",
        default=env.get("NEN_API_KEY") or defaults.api_key,
        help="expected x-api-key (env NEN_API_KEY)",
    )
    parser.add_argument(
        "--signing-key",
        default=env.get("NEN_SIGNING_KEY") or defaults.signing_key,
        help="request signing key (env NEN_SIGNING_KEY)",
    )
    parser.add_argument(
        "--webhook-secret",
        default=env.get("NEN_WEBHOOK_SECRET") or defaults.webhook_secret,
        help="secret that signs webhooks (env NEN_WEBHOOK_SECRET)",
    )
    parser.add_argument(
        "--processing-delay", type=float, default=defaults.processing_delay, help="seconds until 'processing'"
    )
    parser.add_argument(
        "--terminal-delay",
        type=float,
        default=defaults.terminal_delay,
        help="seconds from 'processing' to the end",
    )
    parser.add_argument(
        "--fail-workflow",
        action="append",
        default=[],
        metavar="ID",
        help="runs of this workflow fail (repeatable)",
    )
    parser.add_argument(
        "--unknown-workflow",
        action="append",
        default=[],
        metavar="ID",
        help="POST /runs answers 404 (repeatable)",
    )
    parser.add_argument(
        "--webhook-field", default=defaults.webhook_field, help="body field holding the callback URL"
    )
    parser.add_argument(
        "--delivery-attempts",
        type=int,
        default=defaults.delivery_attempts,
        help="attempts per webhook delivery",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """A SimulatorConfig from parsed arguments."""
    return SimulatorConfig(
        api_key=args.api_key,
        signing_key=args.signing_key,
        webhook_secret=args.webhook_secret,
        processing_delay=args.processing_delay,
        terminal_delay=args.terminal_delay,
        fail_workflows=set(args.fail_workflow),
        unknown_workflows=set(args.unknown_workflow),
        webhook_field=args.webhook_field,
        delivery_attempts=args.delivery_attempts,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted."""
    args = build_parser().parse_args(argv)
    serve(config_from_args(args), host=args.host, port=args.port)
    return 0
