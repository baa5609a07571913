"""Fingerprints of every synthetic_set.pt (and continual.csv) under a directory.

A refactor that must not change behaviour runs the same commands before and after and compares
these lines (`diff`): equal fingerprints mean bit-identical synthetic images and labels.

    python benchmarks/hash_synthetic_sets.py outputs/before > before.txt
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch


def fingerprint(path: Path) -> str:
    saved = torch.load(path, map_location="cpu", weights_only=False)
    data = saved["images"].contiguous().numpy().tobytes() + saved["labels"].numpy().tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        raise SystemExit("usage: python benchmarks/hash_synthetic_sets.py DIR")
    root = Path(args[0])
    for path in sorted(root.rglob("synthetic_set.pt")):
        print(path.relative_to(root).parent, fingerprint(path))
    for path in sorted(root.rglob("continual.csv")):
        print(path.relative_to(root).parent, hashlib.sha256(path.read_bytes()).hexdigest()[:16])


if __name__ == "__main__":
    main()
