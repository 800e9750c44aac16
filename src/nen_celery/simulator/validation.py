"""What the simulated Nen rejects before a run exists: a wrong API key, a bad body, a bad signature.

Stricter than the real API is documented to be, so that client bugs show up locally. Takes headers and
bytes, not a request, so it needs no web framework.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from nen_celery.domain.signing import verify_request
from nen_celery.simulator.config import SimulatorConfig
from nen_celery.simulator.errors import ApiError
from nen_celery.simulator.runs import JSONDict, RunRequest

#: Accepted as the callback field besides ``SimulatorConfig.webhook_field``.
ALTERNATE_WEBHOOK_FIELD = "webhook_url"

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")


def _invalid(message: str) -> ApiError:
    return ApiError(422, "invalid_request", message)


def check_api_key(headers: Mapping[str, str], config: SimulatorConfig) -> None:
    """ApiError(401) unless ``x-api-key`` is the configured key (compared in constant time)."""
    presented = headers.get("x-api-key")
    if presented is None:
        raise ApiError(401, "unauthorized", "missing x-api-key header")
    if not hmac.compare_digest(presented.encode(), config.api_key.encode()):
        raise ApiError(401, "unauthorized", "invalid x-api-key")


def _is_scalar(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)  # 1e999 parses to inf, which is not a JSON number
    return isinstance(value, str | int | bool)


def _check_params(body: Mapping[str, Any]) -> None:
    """``workflow_params`` holds scalars; ``secure_workflow_params`` holds strings."""
    params = body.get("workflow_params", {})
    if not isinstance(params, dict):
        raise _invalid("workflow_params must be an object")
    for key, value in params.items():
        if not _is_scalar(value):
            raise _invalid(
                f"workflow_params.{key} must be a string, number or boolean, not {type(value).__name__}"
            )
    secure = body.get("secure_workflow_params", {})
    if not isinstance(secure, dict):
        raise _invalid("secure_workflow_params must be an object")
    for key, value in secure.items():
        if not isinstance(value, str):
            # Name the key, never echo the value: it is a secret.
            raise _invalid(f"secure_workflow_params.{key} must be a string")


def _callback_url(body: Mapping[str, Any], fields: list[str]) -> str | None:
    """The callback URL from the first of ``fields`` present; every one present must be an http(s) URL."""
    callback_url: str | None = None
    for field_name in fields:
        if field_name not in body:
            continue
        value = body[field_name]
        parts = urlsplit(value) if isinstance(value, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise _invalid(f"{field_name} must be an http(s) URL")
        if callback_url is None:
            callback_url = value
    return callback_url


def validate_run_body(body: Mapping[str, Any], config: SimulatorConfig) -> RunRequest:
    """Check a parsed ``POST /runs`` body; raise ApiError(422) naming the first bad field."""
    workflow_id = body.get("workflow_id")
    if "workflow_id" not in body:
        raise _invalid("workflow_id is required")
    if not isinstance(workflow_id, str) or not _UUID_RE.match(workflow_id):
        raise _invalid("workflow_id must be a UUID string")
    _check_params(body)
    callback_fields = [config.webhook_field]
    if config.webhook_field != ALTERNATE_WEBHOOK_FIELD:
        callback_fields.append(ALTERNATE_WEBHOOK_FIELD)
    callback_url = _callback_url(body, callback_fields)
    allowed = {"workflow_id", "workflow_params", "secure_workflow_params", *callback_fields}
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _invalid(f"unknown field(s): {', '.join(unknown)}")
    return RunRequest(
        workflow_id=workflow_id,
        callback_url=callback_url,
        has_secure_params="secure_workflow_params" in body,
        secure_param_keys=tuple(sorted(body.get("secure_workflow_params", {}))),
    )


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_object(raw: bytes) -> JSONDict:
    """Strict JSON (no NaN/Infinity) that must be an object; raise ApiError(400) otherwise."""
    try:
        parsed = json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "invalid_json", f"body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise ApiError(400, "invalid_json", "body must be a JSON object")
    return parsed


def check_signature(
    headers: Mapping[str, str], raw: bytes, run_request: RunRequest, config: SimulatorConfig
) -> None:
    """Secure params need a signature, and any signature sent must verify; ApiError(403/401) otherwise."""
    signature = headers.get("x-signature")
    if run_request.has_secure_params and signature is None:
        raise ApiError(
            403,
            "hmac_required_for_secure_params",
            "secure_workflow_params require x-timestamp and x-signature headers",
        )
    if signature is None:
        return
    timestamp = headers.get("x-timestamp")
    if timestamp is None:
        raise ApiError(401, "invalid_signature", "missing x-timestamp header")
    reason = verify_request(
        config.signing_key,
        "POST",
        "/runs",
        timestamp,
        signature,
        raw,
        time.time(),
        config.timestamp_tolerance,
    )
    if reason is not None:
        raise ApiError(401, "invalid_signature", reason)
