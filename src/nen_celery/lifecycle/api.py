"""The public entry points: start_run, get_run, RunHandle. They only touch Redis and the broker,
so calling them from a web request never waits on Nen."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from celery.canvas import Signature

from nen_celery import observe
from nen_celery.domain.models import Run
from nen_celery.domain.params import utf8_problem, validate_params
from nen_celery.domain.run_ids import RULE, valid_run_id
from nen_celery.errors import ConfigurationError, InvalidCallback, InvalidParams
from nen_celery.lifecycle.callback_args import check_callback_args
from nen_celery.runtime.context import Context, get_context
from nen_celery.settings import get_settings


class RunConflict(ValueError):
    """start_run was given an existing run_id with a different workflow or params."""


class MayHaveStarted(ValueError):
    """redrive_run refused: Nen may already run this run's workflow (pass force=True)."""


def _signature_dict(name: str, sig: object) -> dict[str, Any] | None:
    if sig is None:
        return None
    if not isinstance(sig, Signature):
        raise TypeError(f"{name} must be a Celery signature (e.g. my_task.s()), got {type(sig).__name__}")
    data = dict(sig)
    try:
        text = json.dumps(data, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be JSON-serialisable to travel through the broker: {exc}") from None
    if (problem := utf8_problem(text)) is not None:
        raise InvalidCallback([(name, f"its arguments: a string {problem}")])
    check_callback_args(name, data)
    return data


class RunHandle:
    """A reference to one run; cheap to create from a stored run_id."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id

    def __repr__(self) -> str:
        return f"RunHandle(run_id={self.run_id!r})"

    def get(self) -> Run | None:
        return get_run(self.run_id)

    def wait(self, timeout: float = 60.0, interval: float = 0.05) -> Run:
        """Block until the run is terminal; TimeoutError naming its last status otherwise."""
        deadline = time.monotonic() + timeout
        delay = interval
        while True:
            run = self.get()
            if run is not None and run.terminal:
                return run
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                status = run.status if run else "missing"
                raise TimeoutError(f"run {self.run_id} not finished after {timeout}s (status {status})")
            time.sleep(min(delay, remaining))
            delay = min(delay * 1.5, 1.0)


def start_run(
    workflow_id: str,
    params: dict[str, Any] | None = None,
    *,
    secure_params: dict[str, str] | None = None,
    on_complete: Signature | None = None,
    on_failure: Signature | None = None,
    run_id: str | None = None,
) -> RunHandle:
    """Validate, record and queue a Nen workflow run; returns at once.

    Raises InvalidParams (nothing recorded or queued) for bad params, a bad ``run_id``, strings
    that cannot be encoded as UTF-8, or params over NEN_MAX_PARAMS_BYTES; InvalidCallback (an
    InvalidParams) for a callback whose arguments do not fit its task's signature, when the task
    is registered in this process; TypeError for a callback that is not a JSON-serialisable
    signature; ConfigurationError when secure params cannot be encrypted; RunConflict when
    ``run_id`` exists with other inputs. The same run_id with the same inputs is idempotent.
    """
    from nen_celery.lifecycle.submit import (
        enqueue_submit,  # the Celery app is only needed once inputs are valid
    )

    wid, clean_params, clean_secure = validate_params(
        workflow_id, params, secure_params, max_bytes=get_settings().max_params_bytes
    )
    complete_sig = _signature_dict("on_complete", on_complete)
    failure_sig = _signature_dict("on_failure", on_failure)
    if run_id is None:
        run_id = str(uuid.uuid4())
    elif not isinstance(run_id, str) or not valid_run_id(run_id):
        if not isinstance(run_id, str):
            shown = f"of type {type(run_id).__name__}"
        else:  # repr: ASCII-safe even for a lone surrogate
            shown = repr(run_id) if len(run_id) <= 128 else f"of {len(run_id)} characters"
        raise InvalidParams([("run_id", f"{shown} {RULE}")])

    ctx = get_context()
    sealed: str | None = None
    if clean_secure:
        if not ctx.sealer.enabled:
            raise ConfigurationError(
                "secure_params need NEN_SECRETS_KEY (they are encrypted before leaving this process)"
            )
        sealed = ctx.sealer.seal(json.dumps(clean_secure).encode())

    creator = uuid.uuid4().hex
    if not _create_or_adopt(ctx, run_id, wid, clean_params, sealed, complete_sig, failure_sig, creator):
        return RunHandle(run_id)  # another start_run of the same run created it: this one adopted it
    try:
        enqueue_submit(run_id, wid)
    except Exception:
        # nothing was queued: remove the record, unless another start_run adopted it meanwhile (its
        # caller holds a handle; the sweep resubmits a queued run whose submit never came)
        ctx.store.uncreate(run_id, creator)
        raise
    if ctx.settings.durable_start:  # NotDurable (a redis TimeoutError): the run may still go on
        ctx.durable()
    observe.run_started(run_id, wid)
    return RunHandle(run_id)


def _create_or_adopt(
    ctx: Context,
    run_id: str,
    wid: str,
    params: dict[str, Any],
    sealed: str | None,
    on_complete: dict[str, Any] | None,
    on_failure: dict[str, Any] | None,
    creator: str,
) -> bool:
    """True: this call created the record; False: it adopted the same run another call created
    (same workflow and params). RunConflict otherwise. A record removed between the two reads (its
    creator could not queue it) is created again."""
    for _ in range(3):
        if ctx.store.create(run_id, wid, params, sealed, on_complete, on_failure, creator=creator):
            return True
        existing = ctx.store.raw(run_id)
        if not existing:
            continue
        if existing.get("workflow_id") != wid or json.loads(existing.get("params") or "{}") != params:
            raise RunConflict(f"run_id {run_id!r} already exists with a different workflow or params")
        if ctx.store.adopt(run_id, wid, existing.get("params") or ""):
            return False
    raise RunConflict(f"run_id {run_id!r} is being created and removed by other start_run calls")


def get_run(run_id: str) -> Run | None:
    """The run's record (never its secure params), or None if unknown or expired."""
    return get_context().store.get(run_id)


def redrive_run(run_id: str, *, force: bool = False) -> RunHandle:
    """Start a new attempt of a run Nen never ran (rejected / submit_failed / unknown).

    Keeps the run's history and earlier errors; its callback fires again for the new attempt.
    Raises ValueError naming why a run cannot be redriven. A run that may have started in Nen
    (its POST got no usable answer) is refused unless ``force``: check Nen first.
    """
    from nen_celery.lifecycle.submit import enqueue_submit

    ctx = get_context()
    verdict, detail = ctx.store.redrive(run_id, force=force)
    if verdict == "missing":
        raise ValueError(f"run {run_id} not found (unknown id, or expired after retention)")
    if verdict == "refused":
        raise ValueError(
            f"run {run_id} is {detail}: only rejected, submit_failed or unknown runs can be redriven"
        )
    if verdict == "may_have_started":
        raise MayHaveStarted(
            f"run {run_id} may have started in Nen (its POST /runs got no usable answer, status "
            f"{detail}): a new attempt could start the workflow twice. Check Nen for its "
            "Idempotency-Key first, then redrive with force=True (CLI: --force)"
        )
    if verdict == "no_secure":
        raise ValueError(
            f"run {run_id} had secure params, deleted when Nen refused it: start a new run instead"
        )
    data = ctx.store.raw(run_id)
    enqueue_submit(run_id, data["workflow_id"])
    return RunHandle(run_id)
