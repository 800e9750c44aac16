"""What a run id may be: the caller's own id (``start_run(run_id=...)``) is part of Redis keys.

A run's keys are ``<run key>`` and ``<run key>:<suffix>`` (store/keys.py: ``:secure``,
``:kept``, ``:callback:<attempt>:...``). Were ``X:secure`` a valid id, its run key would be run
``X``'s secure key: a start_run could overwrite another run's sealed params, and a run named
``X:callback:0:done`` would mark ``X``'s callback done. So no ``:``-separated part of an id after
the first may be a suffix's first word; ``order:42`` and ``tenant:7:job`` stay valid. The store
holds its key layout to ``KEY_SUFFIXES`` (tests/test_run_ids.py).
"""

from __future__ import annotations

import re

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# the first word of every suffix the store appends to a run key (store/keys.py)
KEY_SUFFIXES = ("secure", "kept", "callback")
RULE = (
    "must be 1-128 characters of A-Z a-z 0-9 . _ : -, starting with a letter or digit, with no "
    f"':'-separated part after the first named {', '.join(repr(s) for s in KEY_SUFFIXES)} "
    "(those name a run's own keys)"
)


def valid_run_id(run_id: str) -> bool:
    """Whether ``run_id`` can name a run: reaches only its own keys (see the module docstring)."""
    if not RUN_ID_RE.fullmatch(run_id):
        return False
    return not any(part in KEY_SUFFIXES for part in run_id.split(":")[1:])
