"""What the webhook receiver answers Nen: one value per outcome, shared by every adapter."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: dict[str, Any] = field(default_factory=dict)
    # the word that names it, its error or its status: what observers hear (``answer``); made
    # once, since most answers are the constants below
    word: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "word", str(self.body.get("error") or self.body.get("status") or ""))


HEALTHY = Answer(200, {"status": "ok"})
NOT_CONFIGURED = Answer(503, {"error": "not_configured", "message": "receiver is misconfigured"})
QUEUED = Answer(200, {"status": "queued"})
APPLIED = Answer(200, {"status": "applied"})  # a processing webhook applied by the receiver
IGNORED = Answer(200, {"status": "ignored"})  # ... whose run hint does not fit it: nothing changed
NOT_QUEUED = Answer(503, {"error": "unavailable", "message": "could not queue the webhook; retry"})
# applied or queued, but not confirmed durable in time (store/durable.py): Nen redelivers, and the
# redelivery is a duplicate for whatever did survive
NOT_DURABLE = Answer(503, {"error": "unavailable", "message": "webhook not stored durably yet; retry"})


def too_large(limit: int) -> Answer:
    return Answer(413, {"error": "body_too_large", "message": f"limit is {limit} bytes"})


def body_timeout(seconds: float) -> Answer:
    """The body did not arrive within NEN_WEBHOOK_BODY_TIMEOUT: the reader stops, the
    connection is closed (a trickled body must not hold it, nor a thread, for longer)."""
    return Answer(408, {"error": "body_timeout", "message": f"body not received within {seconds:g} s"})
