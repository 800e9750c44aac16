"""The run hint: our run id carried in the webhook URL each run is started with.

Nen calls back the exact URL it was given, so ``https://app/webhooks/nen?nen_run=<run id>`` comes
back with every webhook of that run. The receiver then needs no messageId lookup, the ingest
task touches one record in one script, and a run whose POST's fate was unknown (its 202 was
lost) is found by its own webhooks instead of ending submit_failed.

The value is the run id, plus ``~<attempt>`` once the run was redriven, so a late webhook of an
earlier attempt cannot land on the new one. ``~`` never occurs in a run id.

The query string is not covered by Nen's signature: the hint only says where to look. A webhook
is applied to the hinted run only if the run is bound to the body's (signed) messageId, or is
``unknown`` and so bound by it; a mismatch is refused.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
PARAM_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def url_with_run(url: str, param: str, run_id: str, attempt: int = 0) -> str:
    """``url`` with ``param=<run id>[~attempt]`` added to its query (other parameters kept)."""
    if not param:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != param]
    query.append((param, f"{run_id}~{attempt}" if attempt else run_id))
    return urlunsplit(parts._replace(query=urlencode(query)))


def run_from_query(query: str | bytes, param: str) -> tuple[str, int] | None:
    """(run id, attempt) a webhook's query string carries; None when absent, off or malformed."""
    if not param or not query:
        return None
    text = query.decode("latin-1") if isinstance(query, bytes) else query
    if "%" in text or "+" in text:
        values = [v for k, v in parse_qsl(text, keep_blank_values=True) if k == param]
    else:  # nothing to unquote: parse_qsl's split, without its per-pair cost
        values = [v for k, _, v in (pair.partition("=") for pair in text.split("&")) if k == param]
    if len(values) != 1:
        return None
    run_id, sep, attempt = values[0].partition("~")
    if not RUN_ID_RE.match(run_id) or (sep and not (attempt.isdigit() and len(attempt) < 7)):
        return None
    return run_id, int(attempt) if sep else 0
