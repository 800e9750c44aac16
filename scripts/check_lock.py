"""Hold a venv to its lock: every installed distribution is pinned there, at that version.

pip treats a constraints file as a ceiling on what it may pick, not a list it must install: a
dependency added to pyproject.toml without `make lock` would install at whatever is newest on the
day, which is what the lock exists to prevent. This fails the install step instead, naming it.

    check_lock.py LOCK       check, then print the installed versions on one line
    check_lock.py --versions print the installed versions only (the newest-releases run)
"""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

# What `python -m venv` seeds before anything is installed (setuptools on Python < 3.12).
VENV_SEEDS = {"setuptools"}
OURS = "nen-celery"


def installed() -> dict[str, str]:
    found = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    found.pop(OURS, None)
    return dict(sorted(found.items()))


def pins(lock: Path) -> dict[str, str]:
    """name -> version for the lines of the lock whose marker holds on this interpreter."""
    out: dict[str, str] = {}
    for raw in lock.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        requirement, _, marker = line.partition(";")
        if marker.strip() and not Marker(marker.strip()).evaluate():
            continue
        name, sep, version = requirement.partition("==")
        if not sep:
            raise SystemExit(f"{lock}: not an exact pin: {raw!r}")
        out[canonicalize_name(name.strip())] = version.strip()
    return out


def problems(lock: Path) -> list[str]:
    wanted = pins(lock)
    found = []
    for name, version in installed().items():
        if name in VENV_SEEDS:
            continue
        if name not in wanted:
            found.append(f"{name}=={version} is installed but not in {lock}")
        elif wanted[name] != version:
            found.append(f"{name}=={version} is installed, {lock} pins {wanted[name]}")
    return found


def main(argv: list[str]) -> int:
    if argv[:1] != ["--versions"]:
        if len(argv) != 1:
            print(__doc__, file=sys.stderr)
            return 2
        bad = problems(Path(argv[0]))
        if bad:
            for line in bad:
                print(f"check_lock: {line}", file=sys.stderr)
            print("check_lock: run `make lock` and commit the lock with the change", file=sys.stderr)
            return 1
    print("installed: " + " ".join(f"{n}=={v}" for n, v in installed().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
