"""The run hint: our run id carried, with a token of ours, in the webhook URL each run starts with.

Nen calls back the exact URL it was given, so ``https://app/webhooks/nen?nen_run=<hint>`` comes
back with every webhook of that run. The receiver then needs no messageId lookup, the ingest
task touches one record in one script, and a run whose POST's fate was unknown (its 202 was
lost) is found by its own webhooks instead of ending submit_failed.

The value is ``<run id>~<attempt>~<token>``: the attempt counts redrives (a late webhook of an
earlier attempt cannot land on the new one; ``~`` never occurs in a run id), the token is
HMAC-SHA256 of ``<run id>~<attempt>`` under the hint key, its first 128 bits in unpadded
base64url. Nen's signature covers the body only, never the query string: without the token
anyone holding one genuine signed webhook could replay it onto the URL of another run. The
receiver checks the token in constant time (``verify``) before it uses the hint; a hint whose
token is missing or wrong is ignored (the webhook goes the messageId way, as if it named no
run), logged at WARNING and counted. The token never goes into a log line or a task message:
the receiver passes on only the verified run id and attempt.

Even a verified hint only says where to look: ingest.lua applies a webhook to the hinted run only
if the run is bound to the body's (signed) messageId, or is ``unknown`` and the body's workflow is
the run's and its messageId is bound to no other run (then it binds the run).

The hint key is derived from each ``NEN_WEBHOOK_SECRET`` entry (``hint_key``), not configured
on its own, because:

- it must be the same on the workers, which build the URL, and on the receivers, which check it,
  and that secret is the one every receiver holds (it verifies nothing without it) and workers
  hold it too (a worker started with ``NEN_WEBHOOK_URL`` but no secret reports a configuration
  error, and sends URLs without a hint); ``NEN_SECRETS_KEY`` is optional on the receiver
  (webhook bodies then travel in clear), so hints derived from it would silently stop there;
- the token then protects exactly as much as the webhook signature does: whoever can mint a token
  (Nen, or someone who stole the secret) can sign any webhook body anyway; everyone else can
  neither mint a token nor learn one of another run from the deliveries they captured;
- it is not the secret itself but HMAC-SHA256(entry, a fixed label): a token is never a
  signature under the webhook secret, nor the other way round;
- rotation comes with the secret's own: the first entry signs, every entry verifies, so during a
  rotation (``<new>,<old>`` on the receivers first, then on the workers) tokens under either key
  are accepted. Runs whose URL was signed under a key since dropped lose their hint only: their
  webhooks still find them by messageId.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
PARAM_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TOKEN_BYTES = 16  # 128 bits
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")  # 16 bytes in unpadded base64url
# ASCII digits only: str.isdigit() also takes "²" or "٣", which int() then refuses or reads.
_ATTEMPT_RE = re.compile(r"[0-9]{1,6}")
_KEY_LABEL = b"nen-celery run hint key v1"


class Hint(NamedTuple):
    """A run hint as read from a query string; ``token`` is "" when the hint carries none."""

    run_id: str
    attempt: int
    token: str


def hint_key(secret: str) -> bytes:
    """The hint key derived from one webhook secret entry (see the module docstring)."""
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def hint_keys(secrets: Iterable[str]) -> tuple[bytes, ...]:
    """One hint key per configured webhook secret, in order: the first signs, all verify."""
    return tuple(hint_key(secret) for secret in secrets)


def run_token(key: bytes, run_id: str, attempt: int) -> str:
    """The token of one run attempt: HMAC-SHA256(key, "<run id>~<attempt>"), 128 bits, base64url."""
    mac = hmac.new(key, f"{run_id}~{attempt}".encode(), hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(keys: Iterable[bytes], hint: Hint) -> bool:
    """Whether ``hint.token`` is the token of its run attempt under one of ``keys`` (constant time
    per key)."""
    if not _TOKEN_RE.match(hint.token):
        return False
    given = hint.token.encode()
    ok = False
    for key in keys:  # every key, whichever matches: no early exit to time
        ok |= hmac.compare_digest(run_token(key, hint.run_id, hint.attempt).encode(), given)
    return ok


def url_with_run(url: str, param: str, run_id: str, attempt: int = 0, key: bytes | None = None) -> str:
    """``url`` with ``param=<run id>~<attempt>~<token>`` in its query (other parameters kept).

    ``param`` empty (hints off): ``url`` unchanged. No ``key`` (this process has no webhook
    secret): no hint, a ``param`` already in ``url`` removed; the webhooks find the run by
    messageId.
    """
    if not param:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != param]
    if key is not None:
        query.append((param, f"{run_id}~{attempt}~{run_token(key, run_id, attempt)}"))
    return urlunsplit(parts._replace(query=urlencode(query)))


def hint_from_query(query: str | bytes, param: str) -> Hint | None:
    """The hint a webhook's query string carries, token not checked yet (``verify``); None when
    absent, off or malformed. ``<run id>`` or ``<run id>~<attempt>`` (URLs made before hints
    carried a token) come back with an empty token."""
    if not param or not query:
        return None
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if "%" in text or "+" in text:
        values = [v for k, v in parse_qsl(text, keep_blank_values=True) if k == param]
    else:  # nothing to unquote: parse_qsl's split, without its per-pair cost
        values = [v for k, _, v in (pair.partition("=") for pair in text.split("&")) if k == param]
    if len(values) != 1:
        return None
    run_id, sep, rest = values[0].partition("~")
    attempt, _, token = rest.partition("~")
    if not RUN_ID_RE.match(run_id) or (sep and not _ATTEMPT_RE.fullmatch(attempt)):
        return None
    return Hint(run_id, int(attempt) if sep else 0, token)


def run_from_query(query: str | bytes, param: str, keys: Iterable[bytes]) -> tuple[str, int] | None:
    """(run id, attempt) of a hint whose token checks out under ``keys``; else None."""
    hint = hint_from_query(query, param)
    if hint is None or not verify(keys, hint):
        return None
    return hint.run_id, hint.attempt
