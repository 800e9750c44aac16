"""Workflow params registry and validation, run in the caller's process before anything is sent."""

from __future__ import annotations

import json
import math
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from nen_celery.errors import InvalidParams

Scalar = str | int | float | bool


def utf8_problem(text: str) -> str | None:
    """Why ``text`` cannot be encoded as UTF-8 (a lone surrogate such as ``"\\ud800"``), or None.

    The answer names only the position, never the text: secure values go through here too.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"cannot be encoded as UTF-8 (lone surrogate at position {exc.start})"
    return None


def json_size(values: Mapping[str, Any]) -> int:
    """Bytes of ``values`` as compact UTF-8 JSON: the size it has in the request sent to Nen."""
    return len(json.dumps(values, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))


@dataclass(frozen=True)
class WorkflowSpec:
    workflow_id: str
    params: type[BaseModel] | None
    secure_params: type[BaseModel] | None


_registry: dict[str, WorkflowSpec] = {}
_lock = threading.Lock()


def validate_workflow_id(workflow_id: object) -> str:
    """The canonical lowercase UUID string; InvalidParams naming ``workflow_id`` otherwise."""
    if not isinstance(workflow_id, str):
        raise InvalidParams([("workflow_id", f"must be a UUID string, got {type(workflow_id).__name__}")])
    try:
        parsed = uuid.UUID(workflow_id)
    except ValueError:
        raise InvalidParams([("workflow_id", f"{workflow_id!r} is not a UUID")]) from None
    if str(parsed) != workflow_id.lower():
        raise InvalidParams([("workflow_id", f"{workflow_id!r} is not a hyphenated UUID")])
    return str(parsed)


def register_workflow(
    workflow_id: str,
    params: type[BaseModel] | None = None,
    secure_params: type[BaseModel] | None = None,
) -> WorkflowSpec:
    """Declare a workflow's Params/SecureParams pydantic models (as defined on the Nen side)."""
    wid = validate_workflow_id(workflow_id)
    for name, model in (("params", params), ("secure_params", secure_params)):
        if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"register_workflow: {name} must be a pydantic BaseModel subclass")
    spec = WorkflowSpec(wid, params, secure_params)
    with _lock:
        _registry[wid] = spec
    return spec


def unregister_workflow(workflow_id: str) -> None:
    with _lock:
        _registry.pop(validate_workflow_id(workflow_id), None)


def get_workflow(workflow_id: str) -> WorkflowSpec | None:
    return _registry.get(workflow_id)


def _is_scalar(value: object) -> bool:
    if isinstance(value, bool | str | int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def _generic(values: object, label: str, *, strings_only: bool) -> list[tuple[str, str]]:
    if not isinstance(values, Mapping):
        return [(label, f"must be a dict, got {type(values).__name__}")]
    errors: list[tuple[str, str]] = []
    for key, value in values.items():
        if not isinstance(key, str) or not key:
            errors.append((f"{label}[{key!r}]", "keys must be non-empty strings"))
            continue
        if (problem := utf8_problem(key)) is not None:
            errors.append((f"{label}[{key!r}]", f"key {problem}"))  # repr: an ASCII-safe name
            continue
        if isinstance(value, str) and (problem := utf8_problem(value)) is not None:
            errors.append((f"{label}.{key}", problem))
        elif strings_only and not isinstance(value, str):
            errors.append((f"{label}.{key}", f"must be a string, got {type(value).__name__}"))
        elif not _is_scalar(value):
            errors.append(
                (f"{label}.{key}", f"must be a string, number or boolean, got {type(value).__name__}")
            )
    return errors


def _field_names(model: type[BaseModel]) -> set[str]:
    return {f.alias or name for name, f in model.model_fields.items()}


def _with_model(
    values: Mapping[str, Any], model: type[BaseModel], label: str, *, strings_only: bool
) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    allowed = _field_names(model)
    errors = [
        (f"{label}.{key}", f"not a field of {model.__name__} (names are case-sensitive)")
        for key in values
        if key not in allowed
    ]
    if errors:
        return {}, errors
    try:
        instance = model.model_validate(dict(values))
    except ValidationError as exc:
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"]) or "(model)"
            errors.append((f"{label}.{where}", err["msg"]))
        return {}, errors
    dumped = instance.model_dump(mode="json", by_alias=True, exclude_none=True)
    errors = _generic(dumped, label, strings_only=strings_only)
    return dumped, errors


def validate_params(
    workflow_id: object,
    params: object = None,
    secure_params: object = None,
    *,
    max_bytes: int | None = None,
) -> tuple[str, dict[str, Scalar], dict[str, str] | None]:
    """Validate everything for one run; return what will be sent, or raise InvalidParams.

    Collects every problem before raising so one error names all bad fields. ``max_bytes``
    (NEN_MAX_PARAMS_BYTES): the largest size of params, and separately of secure params, as
    compact UTF-8 JSON (``json_size``).
    """
    wid = validate_workflow_id(workflow_id)
    spec = get_workflow(wid)
    errors: list[tuple[str, str]] = []
    out_params: dict[str, Any] = {}
    out_secure: dict[str, Any] | None = None

    raw_params = {} if params is None else params
    errors += _generic(raw_params, "params", strings_only=False)
    if not errors and spec is not None and spec.params is not None:
        assert isinstance(raw_params, Mapping)
        out_params, model_errors = _with_model(raw_params, spec.params, "params", strings_only=False)
        errors += model_errors
    elif not errors:
        assert isinstance(raw_params, Mapping)
        out_params = dict(raw_params)

    if secure_params is not None:
        secure_errors = _generic(secure_params, "secure_params", strings_only=True)
        errors += secure_errors
        if not secure_errors:
            assert isinstance(secure_params, Mapping)
            if spec is not None and spec.secure_params is not None:
                out_secure, model_errors = _with_model(
                    secure_params, spec.secure_params, "secure_params", strings_only=True
                )
                errors += model_errors
            else:
                out_secure = dict(secure_params)
            if out_secure == {}:
                out_secure = None
    elif spec is not None and spec.secure_params is not None:
        required = [n for n, f in spec.secure_params.model_fields.items() if f.is_required()]
        if required:
            errors.append(("secure_params", f"required by this workflow: {', '.join(required)}"))

    if not errors and max_bytes is not None:
        for label, values in (("params", out_params), ("secure_params", out_secure or {})):
            size = json_size(values)
            if size > max_bytes:
                errors.append(
                    (label, f"{size} bytes as JSON, over the limit of {max_bytes} (NEN_MAX_PARAMS_BYTES)")
                )

    if errors:
        raise InvalidParams(errors)
    return wid, out_params, out_secure
