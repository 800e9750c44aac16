"""The run record as users see it: never carries secure params or internal bookkeeping."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from typing import Any

from nen_celery.domain.status import is_terminal


def _float(value: str | None) -> float | None:
    return float(value) if value not in (None, "") else None


def _json_copy(value: Any) -> Any:
    """A deep copy of JSON-shaped data (dicts, lists, scalars): ``dataclasses.asdict`` deep-copies
    through ``copy.deepcopy``, 100 µs per terminal run, paid on every callback dispatch."""
    if isinstance(value, dict):
        return {k: _json_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_copy(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_json_copy(v) for v in value)
    return value


@dataclass(frozen=True)
class Run:
    """One run as ``get_run`` / ``RunHandle.get`` / ``RunHandle.wait`` return it (a frozen,
    typed dataclass; README, "The run record"). ``as_dict()`` (also ``to_dict()`` and, for
    pydantic-style code, ``model_dump()``) is the JSON-serialisable dict the callbacks receive.

    Fields: ``run_id`` (ours: correlation key and Idempotency-Key), ``workflow_id``, ``status``
    (README, "Run statuses"), ``message_id`` (Nen's, once bound, else None), ``params``,
    ``created_at`` / ``updated_at`` / ``submitted_at`` / ``finished_at`` (Unix seconds, or None),
    ``attempts`` (POSTs sent), ``history`` (each status with ``at`` and ``source``), ``payload``
    (the terminal webhook or retrieval body), ``error`` (why it failed, or None), ``completion``
    (the callback's dispatch: "" not due yet, "pending", "sending", "sent"), ``redrives``,
    ``previous_errors`` (of earlier attempts), ``nen_status`` (Nen's word after the run had
    ended, or None). Never the secure params.
    """

    run_id: str
    workflow_id: str
    status: str
    message_id: str | None
    params: dict[str, Any]
    created_at: float
    updated_at: float
    submitted_at: float | None = None
    finished_at: float | None = None
    attempts: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    payload: Any = None
    error: dict[str, Any] | None = None
    completion: str = ""
    redrives: int = 0
    previous_errors: list[dict[str, Any]] = field(default_factory=list)
    # Nen's own word when it came after the run had ended (a "may have started in Nen" run that
    # Nen did start): kept apart, because ``status`` is the end its callback was dispatched for
    nen_status: str | None = None

    @property
    def terminal(self) -> bool:
        return is_terminal(self.status)

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form: what on_complete / on_failure receive (nested values copied, so
        changing the dict leaves the Run as it was)."""
        return {name: _json_copy(getattr(self, name)) for name in _FIELDS}

    def as_dict(self) -> dict[str, Any]:
        """The run as a JSON-serialisable dict (``to_dict``): what the callbacks receive."""
        return self.to_dict()

    def model_dump(self, *, mode: str = "python") -> dict[str, Any]:
        """``as_dict()`` under pydantic's name; every value is JSON-shaped, so ``mode`` ("python"
        or "json") gives the same dict."""
        if mode not in ("python", "json"):
            raise ValueError(f"mode must be 'python' or 'json', got {mode!r}")
        return self.to_dict()

    @classmethod
    def from_hash(cls, data: dict[str, str], payload: Any) -> Run:
        return cls(
            run_id=data["run_id"],
            workflow_id=data["workflow_id"],
            status=data["status"],
            message_id=data.get("message_id") or None,
            params=json.loads(data.get("params") or "{}"),
            created_at=float(data["created_at"]),
            updated_at=float(data.get("updated_at") or data["created_at"]),
            submitted_at=_float(data.get("submitted_at")),
            finished_at=_float(data.get("finished_at")),
            attempts=int(data.get("attempts") or 0),
            history=json.loads(data.get("history") or "[]"),
            payload=payload,
            error=json.loads(data["error"]) if data.get("error") else None,
            completion=data.get("completion", ""),
            redrives=int(data.get("redrives") or 0),
            previous_errors=json.loads(data.get("previous_errors") or "[]"),
            nen_status=data.get("nen_status") or None,
        )


_FIELDS = tuple(f.name for f in fields(Run))
