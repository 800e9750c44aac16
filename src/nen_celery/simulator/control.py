"""``/_sim/config``: what it shows and how it validates an update (strictly, all-or-nothing)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from nen_celery.simulator.config import PlannedError, SimulatorConfig

JSONDict = dict[str, Any]

WEBHOOK_STATUSES = ("processing", "success", "failed")
MAX_WEBHOOK_DUPLICATES = 50
_PLANNED_ERROR_KEYS = ("status", "retry_after", "error", "message")
_HEADER_TEXT_RE = re.compile(r"^[\x20-\x7e]+$")


class InvalidConfig(ValueError):
    """A rejected ``/_sim/config`` value; the message names the key."""


def _number(value: object) -> float | None:
    """``value`` as a finite float, or None when it is not a JSON number (booleans are not)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _integer(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _seconds(key: str, value: object) -> float:
    number = _number(value)
    if number is None or number < 0:
        raise InvalidConfig(f"{key} must be a non-negative number of seconds")
    return number


def _probability(key: str, value: object) -> float:
    number = _number(value)
    if number is None or not 0 <= number <= 1:
        raise InvalidConfig(f"{key} must be a number from 0 to 1")
    return number


def _count(key: str, value: object, maximum: int | None = None) -> int:
    number = _integer(value)
    if number is None or number < 0 or (maximum is not None and number > maximum):
        bound = f" up to {maximum}" if maximum is not None else ""
        raise InvalidConfig(f"{key} must be a non-negative integer{bound}")
    return number


def _flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidConfig(f"{key} must be true or false")
    return value


def _error_status(key: str, value: object) -> int:
    status = _integer(value)
    if status is None or not 400 <= status <= 599:
        raise InvalidConfig(f"{key} must be an HTTP error status (400-599)")
    return status


def _string_set(key: str, value: object) -> set[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidConfig(f"{key} must be a list of workflow id strings")
    return set(value)


def _seed(key: str, value: object) -> int | None:
    seed = _integer(value)
    if value is not None and seed is None:
        raise InvalidConfig(f"{key} must be an integer or null")
    return seed


def _statuses(key: str, value: object) -> set[str]:
    if not isinstance(value, list) or not all(item in WEBHOOK_STATUSES for item in value):
        raise InvalidConfig(f"{key} must be a list of webhook statuses ({', '.join(WEBHOOK_STATUSES)})")
    return {str(item) for item in value}


def _bad_accept_body(key: str, value: object) -> bool | int:
    if isinstance(value, bool):
        return value
    return _count(key, value)


def _never_terminal(key: str, value: object) -> bool | set[str]:
    if isinstance(value, bool):
        return value
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InvalidConfig(f"{key} must be true, false or a list of workflow id strings")
    return set(value)


def planned_error_from_json(key: str, value: object) -> PlannedError:
    """``{"status": 429, "retry_after": 2, "error": "...", "message": "..."}`` -> PlannedError."""
    if not isinstance(value, dict):
        raise InvalidConfig(f"{key} must be an object with a status")
    unknown = sorted(set(value) - set(_PLANNED_ERROR_KEYS))
    if unknown:
        raise InvalidConfig(f"{key} has unknown key(s): {', '.join(unknown)}")
    if "status" not in value:
        raise InvalidConfig(f"{key}.status is required")
    status = _error_status(f"{key}.status", value["status"])
    retry_after = value.get("retry_after")
    seconds = _integer(retry_after)
    if retry_after is not None and not (
        (seconds is not None and seconds >= 0)
        or (isinstance(retry_after, str) and _HEADER_TEXT_RE.match(retry_after))
    ):
        raise InvalidConfig(f"{key}.retry_after must be a non-negative integer or printable header text")
    texts: dict[str, str | None] = {}
    for name in ("error", "message"):
        text = value.get(name)
        if text is not None and not isinstance(text, str):
            raise InvalidConfig(f"{key}.{name} must be a string")
        texts[name] = text
    return PlannedError(status, retry_after, texts["error"], texts["message"])


def planned_error_to_json(planned: PlannedError) -> JSONDict:
    shown: JSONDict = {"status": planned.status}
    for name in ("retry_after", "error", "message"):
        value = getattr(planned, name)
        if value is not None:
            shown[name] = value
    return shown


def _statuses_list(key: str, value: object) -> list[int]:
    if not isinstance(value, list):
        raise InvalidConfig(f"{key} must be a list of HTTP error statuses (400-599)")
    return [_error_status(f"{key}[{index}]", item) for index, item in enumerate(value)]


def _post_errors(key: str, value: object) -> list[PlannedError]:
    if not isinstance(value, list):
        raise InvalidConfig(f"{key} must be a list of {{status, retry_after?, error?, message?}} objects")
    return [planned_error_from_json(f"{key}[{index}]", item) for index, item in enumerate(value)]


_PARSERS: dict[str, Callable[[str, object], Any]] = {
    "processing_delay": _seconds,
    "terminal_delay": _seconds,
    "fail_workflows": _string_set,
    "unknown_workflows": _string_set,
    "seed": _seed,
    "post_errors": _post_errors,
    "post_error_rate": _probability,
    "post_error_status": _error_status,
    "post_latency": _seconds,
    "get_latency": _seconds,
    "bad_accept_body": _bad_accept_body,
    "drop_after_accept": _count,
    "error_after_accept": lambda key, value: _statuses_list(key, value),
    "webhook_duplicates": lambda key, value: _count(key, value, MAX_WEBHOOK_DUPLICATES),
    "webhook_drop": _statuses,
    "webhook_drop_rate": _probability,
    "webhook_reorder": _flag,
    "webhook_delay": _seconds,
    "never_terminal": _never_terminal,
    "honour_idempotency_key": _flag,
    "lookup_by_idempotency_key": _flag,
}

#: Every key ``POST /_sim/config`` accepts, in the order ``GET /_sim/config`` shows them.
CONFIG_KEYS = tuple(_PARSERS)


def config_view(config: SimulatorConfig) -> JSONDict:
    """The JSON shape of ``GET /_sim/config`` (sets as sorted lists)."""
    view: JSONDict = {}
    for key in CONFIG_KEYS:
        value = getattr(config, key)
        if key == "post_errors":
            value = [planned_error_to_json(planned) for planned in value]
        elif isinstance(value, set | frozenset):
            value = sorted(value)
        view[key] = value
    return view


def parse_config_update(update: Mapping[str, Any]) -> JSONDict:
    """Validate every key of ``update``; return the converted values. InvalidConfig on the first bad one."""
    unknown = sorted(set(update) - set(CONFIG_KEYS))
    if unknown:
        raise InvalidConfig(f"unknown key(s): {', '.join(unknown)}")
    return {key: _PARSERS[key](key, value) for key, value in update.items()}


#: The terminal statuses ``POST /_sim/outcomes`` can script.
OUTCOME_STATUSES = ("success", "failed")
_OUTCOME_KEYS = ("workflow_id", "status", "result", "error")


@dataclass(frozen=True)
class ScriptedOutcome:
    """How runs of one workflow end (``POST /_sim/outcomes``): the terminal status, and the
    ``result`` (a success's) or ``error`` (a failure's) its webhook and retrieval body carry.
    None keeps the simulator's own body for that field."""

    status: str
    result: Any = None
    error: Any = None


def parse_outcome(body: Mapping[str, Any]) -> tuple[str, ScriptedOutcome]:
    """``{"workflow_id", "status", "result"?, "error"?}`` -> (workflow id, outcome); InvalidConfig."""
    unknown = sorted(set(body) - set(_OUTCOME_KEYS))
    if unknown:
        raise InvalidConfig(f"unknown key(s): {', '.join(unknown)}")
    workflow_id = body.get("workflow_id")
    if not isinstance(workflow_id, str) or not workflow_id:
        raise InvalidConfig("workflow_id must be a non-empty string")
    status = body.get("status")
    if status not in OUTCOME_STATUSES:
        raise InvalidConfig(f"status must be one of {', '.join(OUTCOME_STATUSES)}")
    if status == "success" and body.get("error") is not None:
        raise InvalidConfig("error is for a failed outcome; a success carries result")
    if status == "failed" and body.get("result") is not None:
        raise InvalidConfig("result is for a success; a failed outcome carries error")
    return workflow_id, ScriptedOutcome(str(status), body.get("result"), body.get("error"))


def outcome_to_json(workflow_id: str, outcome: ScriptedOutcome) -> JSONDict:
    shown: JSONDict = {"workflow_id": workflow_id, "status": outcome.status}
    if outcome.result is not None:
        shown["result"] = outcome.result
    if outcome.error is not None:
        shown["error"] = outcome.error
    return shown
