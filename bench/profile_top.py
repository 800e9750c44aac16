"""Summarise py-spy collapsed stacks (BENCH_PROFILE=1 runs): where the samples went.

    python bench/profile_top.py <file.folded> [--match nen_celery] [--top 25]

Prints the frames with the most self samples, and the frames matching --match with the most
inclusive samples (a frame counted once per stack).
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("path", type=Path)
    parser.add_argument("--match", default="nen_celery")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in args.path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            if args.match in frame:
                inclusive[frame] += n
    print(f"{total} samples\n-- self")
    for frame, n in own.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {frame}")
    print(f"-- inclusive, frames matching {args.match!r}")
    for frame, n in inclusive.most_common(args.top):
        print(f"{100 * n / total:5.1f}%  {frame}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
