"""Command line of the simulator (``python -m nen_celery.simulator``), reusable by ``nen-celery simulate``.

Secrets default from the same environment variables the package reads (NEN_API_KEY,
NEN_SIGNING_KEY, NEN_WEBHOOK_SECRET), so they need not appear in ``ps`` output.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nen_celery.simulator.config import PlannedError, SimulatorConfig
from nen_celery.simulator.control import (
    WEBHOOK_STATUSES,
    InvalidConfig,
    parse_config_update,
    planned_error_from_json,
)
from nen_celery.simulator.server import serve


def _checked(key: str, convert: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type: convert the text, then validate it as ``POST /_sim/config`` would."""

    def parse(text: str) -> Any:
        try:
            return parse_config_update({key: convert(text)})[key]
        except (InvalidConfig, ValueError) as exc:
            raise argparse.ArgumentTypeError(str(exc) or f"invalid {key}: {text!r}") from None

    parse.__name__ = key  # argparse names the type in its error message
    return parse


def _planned_error(text: str) -> PlannedError:
    """``503`` or ``429:2`` (status, optional Retry-After seconds or text)."""
    status, _, retry_after = text.partition(":")
    try:
        entry: dict[str, Any] = {"status": int(status)}
        if retry_after:
            entry["retry_after"] = int(retry_after) if retry_after.isdigit() else retry_after
        return planned_error_from_json("--post-error", entry)
    except (InvalidConfig, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"{exc} (expected STATUS or STATUS:RETRY_AFTER)") from None


def _bad_accept_body(text: str) -> bool | int:
    if text == "always":
        return True
    value = _checked("bad_accept_body", int)(text)
    assert isinstance(value, bool | int)
    return value


def _add_fault_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SimulatorConfig()
    faults = parser.add_argument_group("fault injection (all off by default; POST /_sim/config changes them)")
    faults.add_argument(
        "--seed", type=_checked("seed", int), default=defaults.seed, help="seed of the fault RNG"
    )
    faults.add_argument(
        "--post-error",
        type=_planned_error,
        action="append",
        default=[],
        metavar="STATUS[:RETRY_AFTER]",
        help="answer the next POST /runs with this error, no run created (repeatable, in order)",
    )
    faults.add_argument(
        "--post-error-rate",
        type=_checked("post_error_rate", float),
        default=defaults.post_error_rate,
        help="probability (0..1) of a random error on POST /runs",
    )
    faults.add_argument(
        "--post-error-status",
        type=_checked("post_error_status", int),
        default=defaults.post_error_status,
        help="status of those random errors (default 503)",
    )
    faults.add_argument(
        "--post-latency",
        type=_checked("post_latency", float),
        default=defaults.post_latency,
        help="seconds before answering POST /runs (the run starts before the wait)",
    )
    faults.add_argument(
        "--get-latency",
        type=_checked("get_latency", float),
        default=defaults.get_latency,
        help="seconds before answering GET /runs/{id}",
    )
    faults.add_argument(
        "--bad-accept-body",
        type=_bad_accept_body,
        nargs="?",
        const=True,
        default=defaults.bad_accept_body,
        metavar="N",
        help="answer 202 with a non-JSON body: always, or for the next N accepted POSTs",
    )
    faults.add_argument(
        "--drop-after-accept",
        type=_checked("drop_after_accept", int),
        default=defaults.drop_after_accept,
        metavar="N",
        help="for the next N POSTs: create the run, then close the connection unanswered",
    )
    faults.add_argument(
        "--error-after-accept",
        type=_checked("error_after_accept", lambda text: [int(s) for s in text.split(",") if s]),
        default=list(defaults.error_after_accept),
        metavar="S[,S...]",
        help="for the next POSTs: create the run, then answer each status in turn as a gateway "
        "would (HTML body, not Nen's error shape), e.g. 502,504",
    )
    faults.add_argument(
        "--webhook-duplicates",
        type=_checked("webhook_duplicates", int),
        default=defaults.webhook_duplicates,
        metavar="N",
        help="deliver every webhook N extra times, concurrently",
    )
    faults.add_argument(
        "--webhook-drop",
        action="append",
        choices=WEBHOOK_STATUSES,
        default=[],
        help="never deliver webhooks of this status (repeatable)",
    )
    faults.add_argument(
        "--webhook-drop-rate",
        type=_checked("webhook_drop_rate", float),
        default=defaults.webhook_drop_rate,
        help="probability (0..1) that a webhook is never delivered",
    )
    faults.add_argument(
        "--webhook-reorder", action="store_true", help="deliver the terminal webhook before 'processing'"
    )
    faults.add_argument(
        "--webhook-delay",
        type=_checked("webhook_delay", float),
        default=defaults.webhook_delay,
        help="extra seconds before each webhook delivery",
    )
    faults.add_argument("--never-terminal", action="store_true", help="every run stays 'processing' forever")
    faults.add_argument(
        "--never-terminal-workflow",
        action="append",
        default=[],
        metavar="ID",
        help="runs of this workflow stay 'processing' forever (repeatable)",
    )
    faults.add_argument(
        "--honour-idempotency-key",
        action="store_true",
        help="a repeated Idempotency-Key gets the original 202, no second run",
    )
    faults.add_argument(
        "--lookup-by-idempotency-key",
        action="store_true",
        help="serve GET /runs?idempotency_key=K",
    )


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
    _add_fault_arguments(parser)
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
        seed=args.seed,
        post_errors=list(args.post_error),
        post_error_rate=args.post_error_rate,
        post_error_status=args.post_error_status,
        post_latency=args.post_latency,
        get_latency=args.get_latency,
        bad_accept_body=args.bad_accept_body,
        drop_after_accept=args.drop_after_accept,
        error_after_accept=list(args.error_after_accept),
        webhook_duplicates=args.webhook_duplicates,
        webhook_drop=set(args.webhook_drop),
        webhook_drop_rate=args.webhook_drop_rate,
        webhook_reorder=args.webhook_reorder,
        webhook_delay=args.webhook_delay,
        never_terminal=True if args.never_terminal else (set(args.never_terminal_workflow) or False),
        honour_idempotency_key=args.honour_idempotency_key,
        lookup_by_idempotency_key=args.lookup_by_idempotency_key,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and serve until interrupted."""
    args = build_parser().parse_args(argv)
    serve(config_from_args(args), host=args.host, port=args.port)
    return 0
