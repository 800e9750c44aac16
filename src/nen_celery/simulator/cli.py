"""Command line of the simulator: ``python -m nen_celery.simulator`` and ``nen-celery simulate``
share this one option set (the latter passes its arguments here). At start it prints its URL and
the ``export`` lines that point an app at it.

Secrets default from the same environment variables the package reads (NEN_API_KEY,
NEN_SIGNING_KEY, NEN_WEBHOOK_SECRET), so they need not appear in ``ps`` output.

The options are tables of (flag, kind, help), in the order ``--help`` lists them. A kind turns the
option's config key (the flag's name with underscores) and the default config into argparse's
keywords, so that fault values are checked exactly as ``POST /_sim/config`` checks them and default
to what ``SimulatorConfig`` says.
"""

from __future__ import annotations

import argparse
import os
import shlex
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from nen_celery.simulator.config import PlannedError, SimulatorConfig
from nen_celery.simulator.control import (
    WEBHOOK_STATUSES,
    InvalidConfig,
    parse_config_update,
    planned_error_from_json,
)
from nen_celery.simulator.server import _url_host, serve

PROG = "python -m nen_celery.simulator"

#: An option kind: (config key, default config) -> keyword arguments of ``add_argument``.
_Kind = Callable[[str, SimulatorConfig], dict[str, Any]]


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


def _statuses(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def _plain(convert: Callable[[str], Any] | None = None) -> _Kind:
    """A run setting: ``convert`` (if any) reads the text; the default config's value is the default."""

    def kind(key: str, defaults: SimulatorConfig) -> dict[str, Any]:
        options: dict[str, Any] = {"default": getattr(defaults, key)}
        if convert is not None:
            options["type"] = convert
        return options

    return kind


def _fault(convert: Callable[[str], Any], metavar: str | None = None) -> _Kind:
    """A fault value, checked as ``POST /_sim/config`` checks it; defaults to the default config's value."""

    def kind(key: str, defaults: SimulatorConfig) -> dict[str, Any]:
        options: dict[str, Any] = {"type": _checked(key, convert), "default": getattr(defaults, key)}
        if metavar is not None:
            options["metavar"] = metavar
        return options

    return kind


def _repeated(**options: Any) -> _Kind:
    """A repeatable option, collected into a new list per parser."""
    return lambda key, defaults: {"action": "append", "default": [], **options}


def _switch(key: str, defaults: SimulatorConfig) -> dict[str, Any]:
    return {"action": "store_true"}


def _optional_count(key: str, defaults: SimulatorConfig) -> dict[str, Any]:
    """``--bad-accept-body`` alone means always, ``--bad-accept-body N`` the next N."""
    return {
        "type": _bad_accept_body,
        "nargs": "?",
        "const": True,
        "default": getattr(defaults, key),
        "metavar": "N",
    }


#: How runs progress and end, and how webhooks are addressed and retried.
_RUN_OPTIONS: tuple[tuple[str, _Kind, str], ...] = (
    ("--processing-delay", _plain(float), "seconds until 'processing'"),
    ("--terminal-delay", _plain(float), "seconds from 'processing' to the end"),
    ("--fail-workflow", _repeated(metavar="ID"), "runs of this workflow fail (repeatable)"),
    ("--unknown-workflow", _repeated(metavar="ID"), "POST /runs answers 404 (repeatable)"),
    ("--webhook-field", _plain(), "body field holding the callback URL"),
    ("--delivery-attempts", _plain(int), "attempts per webhook delivery"),
)

#: Fault injection; all off by default.
_FAULT_OPTIONS: tuple[tuple[str, _Kind, str], ...] = (
    ("--seed", _fault(int), "seed of the fault RNG"),
    (
        "--post-error",
        _repeated(type=_planned_error, metavar="STATUS[:RETRY_AFTER]"),
        "answer the next POST /runs with this error, no run created (repeatable, in order)",
    ),
    ("--post-error-rate", _fault(float), "probability (0..1) of a random error on POST /runs"),
    ("--post-error-status", _fault(int), "status of those random errors (default 503)"),
    (
        "--post-latency",
        _fault(float),
        "seconds before answering POST /runs (the run starts before the wait)",
    ),
    ("--get-latency", _fault(float), "seconds before answering GET /runs/{id}"),
    (
        "--bad-accept-body",
        _optional_count,
        "answer 202 with a non-JSON body: always, or for the next N accepted POSTs",
    ),
    (
        "--drop-after-accept",
        _fault(int, "N"),
        "for the next N POSTs: create the run, then close the connection unanswered",
    ),
    (
        "--error-after-accept",
        _fault(_statuses, "S[,S...]"),
        "for the next POSTs: create the run, then answer each status in turn as a gateway "
        "would (HTML body, not Nen's error shape), e.g. 502,504",
    ),
    ("--webhook-duplicates", _fault(int, "N"), "deliver every webhook N extra times, concurrently"),
    (
        "--webhook-drop",
        _repeated(choices=WEBHOOK_STATUSES),
        "never deliver webhooks of this status (repeatable)",
    ),
    ("--webhook-drop-rate", _fault(float), "probability (0..1) that a webhook is never delivered"),
    ("--webhook-reorder", _switch, "deliver the terminal webhook before 'processing'"),
    ("--webhook-delay", _fault(float), "extra seconds before each webhook delivery"),
    ("--never-terminal", _switch, "every run stays 'processing' forever"),
    (
        "--never-terminal-workflow",
        _repeated(metavar="ID"),
        "runs of this workflow stay 'processing' forever (repeatable)",
    ),
    (
        "--honour-idempotency-key",
        _switch,
        "a repeated Idempotency-Key gets the original 202, no second run",
    ),
    ("--lookup-by-idempotency-key", _switch, "serve GET /runs?idempotency_key=K"),
)

#: The secrets: (flag, environment variable, help); the variable wins over the default config's value.
_SECRET_OPTIONS = (
    ("--api-key", "NEN_API_KEY", "expected x-api-key (env NEN_API_KEY)"),
    ("--signing-key", "NEN_SIGNING_KEY", "request signing key (env NEN_SIGNING_KEY)"),
    ("--webhook-secret", "NEN_WEBHOOK_SECRET", "secret that signs webhooks (env NEN_WEBHOOK_SECRET)"),
)


def _add_options(
    group: argparse._ActionsContainer,
    table: tuple[tuple[str, _Kind, str], ...],
    defaults: SimulatorConfig,
) -> None:
    for flag, kind, help_text in table:
        group.add_argument(flag, help=help_text, **kind(flag[2:].replace("-", "_"), defaults))


def _first_entry(value: str | None) -> str | None:
    """NEN_WEBHOOK_SECRET may list several secrets (rotation): the simulator signs with the first."""
    entries = [part.strip() for part in (value or "").split(",") if part.strip()]
    return entries[0] if entries else None


def build_parser(environ: Mapping[str, str] | None = None, prog: str = PROG) -> argparse.ArgumentParser:
    """The argument parser (``python -m nen_celery.simulator`` and ``nen-celery simulate`` alike);
    defaults come from ``environ`` (default: ``os.environ``)."""
    env = os.environ if environ is None else environ
    defaults = SimulatorConfig()
    parser = argparse.ArgumentParser(
        prog=prog,
        description="A local, honest simulation of the Nen workflow-run API. It prints its URL and the "
        "NEN_* settings an app needs to use it.",
    )
    parser.add_argument("--host", default=env.get("NEN_SIM_HOST", "127.0.0.1"), help="bind address")
    parser.add_argument(
        "--port",
        type=int,
        default=env.get("NEN_SIM_PORT", "8700"),
        help="port (env NEN_SIM_PORT, default 8700)",
    )
    for flag, variable, help_text in _SECRET_OPTIONS:
        key = flag[2:].replace("-", "_")
        parser.add_argument(
            flag, default=_first_entry(env.get(variable)) or getattr(defaults, key), help=help_text
        )
    _add_options(parser, _RUN_OPTIONS, defaults)
    faults = parser.add_argument_group("fault injection (all off by default; POST /_sim/config changes them)")
    _add_options(faults, _FAULT_OPTIONS, defaults)
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


def app_settings(config: SimulatorConfig, host: str, port: int, environ: Mapping[str, str]) -> list[str]:
    """The ``export`` lines that point an app at this simulator. A key the simulator took from the
    environment is not printed (it may be a real one): the app's environment has it already."""
    url = f"http://{_url_host(host)}:{port}"
    lines = [f"export NEN_API_URL={url}"]
    for flag, variable, _ in _SECRET_OPTIONS:
        value = getattr(config, flag[2:].replace("-", "_"))
        if _first_entry(environ.get(variable)) == value:
            lines.append(f"# {variable}: as in this environment (not printed)")
        else:
            lines.append(f"export {variable}={shlex.quote(value)}")
    return lines


def main(
    argv: Sequence[str] | None = None, prog: str = PROG, environ: Mapping[str, str] | None = None
) -> int:
    """Parse ``argv``, print the URL and the settings an app needs, and serve until interrupted."""
    env = os.environ if environ is None else environ
    args = build_parser(env, prog).parse_args(argv)
    config = config_from_args(args)
    print(
        f"Nen simulator on http://{_url_host(args.host)}:{args.port}; point your app at it with:", flush=True
    )
    print("\n".join(app_settings(config, args.host, args.port, env)), flush=True)
    serve(config, host=args.host, port=args.port)
    return 0
