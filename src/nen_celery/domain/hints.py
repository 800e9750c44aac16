"""The run hint: our run id carried, with a token of ours, in the webhook URL each run starts with.

Nen calls back the exact URL it was given, so ``https://app/webhooks/nen?nen_run=<hint>`` comes
back with every webhook of that run. The receiver then needs no messageId lookup, the ingest
task touches one record in one script, and a run whose POST's fate was unknown (its 202 was
lost) is found by its own webhooks instead of ending submit_failed.

The value is ``<run id>~<attempt>~<nonce>~<token>``: the attempt counts redrives (a late webhook
of an earlier attempt cannot land on the new one; ``~`` never occurs in a run id), the nonce is
the record's own random value (``nonce``, set once by create: a run id used again after its
record expired has another, so an old webhook sent to the old URL cannot reach the new run), the
token is HMAC-SHA256 of ``<run id>~<attempt>~<nonce>`` under the hint key, its first 128 bits in
unpadded base64url. URLs made before records had a nonce carry ``<run id>~<attempt>~<token>``
and fit only a record without one. Nen's signature covers the body only, never the query string:
without the token anyone holding one genuine signed webhook could replay it onto the URL of
another run. The receiver checks the token in constant time (``verify``) before it uses the hint; a hint whose
token is missing or wrong is ignored (the webhook goes the messageId way, as if it named no
run), logged at WARNING and counted. The token never goes into a log line or a task message:
the receiver passes on only the verified run id and attempt.

Even a verified hint only says where to look: ingest.lua applies a webhook to the hinted run only
if the record's nonce is the hint's (else ``reused``: the ingest task looks the messageId up as
for an unhinted webhook), and the run is bound to the body's (signed) messageId, or is
``unknown`` and the body's workflow is the run's and its messageId is bound to no other run
(then it binds the run).

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
import secrets
from collections.abc import Iterable
from typing import NamedTuple
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from nen_celery.domain.run_ids import valid_run_id

PARAM_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
TOKEN_BYTES = 16  # 128 bits
_TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{22}$")  # 16 bytes in unpadded base64url
NONCE_BYTES = 12
_NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16}")  # 12 bytes in base64url
# ASCII digits only: str.isdigit() also takes "²" or "٣", which int() then refuses or reads.
_ATTEMPT_RE = re.compile(r"[0-9]{1,6}")
_KEY_LABEL = b"nen-celery run hint key v1"


class Hint(NamedTuple):
    """A run hint as read from a query string; ``token`` is "" when the hint carries none,
    ``nonce`` "" in URLs made before records had one."""

    run_id: str
    attempt: int
    token: str
    nonce: str = ""


class RunRef(NamedTuple):
    """What a verified hint names: one attempt of one record (``nonce``: the record's, see above)."""

    run_id: str
    attempt: int
    nonce: str = ""


def new_nonce() -> str:
    """A record's nonce (create): 96 random bits, base64url, never ``~``."""
    return secrets.token_urlsafe(NONCE_BYTES)


def hint_key(secret: str) -> bytes:
    """The hint key derived from one webhook secret entry (see the module docstring)."""
    return hmac.new(secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


def hint_keys(secrets: Iterable[str]) -> tuple[bytes, ...]:
    """One hint key per configured webhook secret, in order: the first signs, all verify."""
    return tuple(hint_key(secret) for secret in secrets)


def run_token(key: bytes, run_id: str, attempt: int, nonce: str = "") -> str:
    """The token of one run attempt: HMAC-SHA256(key, "<run id>~<attempt>~<nonce>") (no nonce:
    "<run id>~<attempt>"), 128 bits, base64url."""
    signed = f"{run_id}~{attempt}~{nonce}" if nonce else f"{run_id}~{attempt}"
    mac = hmac.new(key, signed.encode(), hashlib.sha256).digest()[:TOKEN_BYTES]
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def verify(keys: Iterable[bytes], hint: Hint) -> bool:
    """Whether ``hint.token`` is the token of its run attempt under one of ``keys`` (constant time
    per key)."""
    if not _TOKEN_RE.match(hint.token):
        return False
    given = hint.token.encode()
    ok = False
    for key in keys:  # every key, whichever matches: no early exit to time
        ok |= hmac.compare_digest(run_token(key, hint.run_id, hint.attempt, hint.nonce).encode(), given)
    return ok


def url_with_run(
    url: str, param: str, run_id: str, attempt: int = 0, key: bytes | None = None, nonce: str = ""
) -> str:
    """``url`` with ``param=<run id>~<attempt>~<nonce>~<token>`` in its query (other parameters
    kept; no ``nonce``, a record made before records had one: ``<run id>~<attempt>~<token>``).

    ``param`` empty (hints off): ``url`` unchanged. No ``key`` (this process has no webhook
    secret): no hint, a ``param`` already in ``url`` removed; the webhooks find the run by
    messageId.
    """
    if not param:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != param]
    if key is not None:
        middle = f"{attempt}~{nonce}" if nonce else str(attempt)
        query.append((param, f"{run_id}~{middle}~{run_token(key, run_id, attempt, nonce)}"))
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
    parts = values[0].split("~")
    if len(parts) > 4 or not valid_run_id(parts[0]):
        return None
    if len(parts) == 1:
        return Hint(parts[0], 0, "")
    if not _ATTEMPT_RE.fullmatch(parts[1]):
        return None
    nonce = parts[2] if len(parts) == 4 else ""
    if nonce and not _NONCE_RE.fullmatch(nonce):
        return None
    return Hint(parts[0], int(parts[1]), parts[-1] if len(parts) > 2 else "", nonce)


def run_from_query(query: str | bytes, param: str, keys: Iterable[bytes]) -> RunRef | None:
    """The run attempt a hint names, if its token checks out under ``keys``; else None."""
    hint = hint_from_query(query, param)
    if hint is None or not verify(keys, hint):
        return None
    return RunRef(hint.run_id, hint.attempt, hint.nonce)
