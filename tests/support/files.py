"""Files in the formats users hand to fairhead (CSV tables of features), and a digest of a folder to prove nothing
on disk changed."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest): equal digests mean nothing on disk changed."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def write_csv(path: Path, header, rows) -> Path:
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_feature_table(path: Path, n: int = 600, d: int = 6, seed: int = 0, *, scale: float = 1.0) -> Path:
    """A features table in the `fairhead import` CSV format, two groups with different base rates."""
    from solvers.synthetic import make_fair_classification

    X, y, a = make_fair_classification(n, d, seed=seed)
    splits = np.array(["train", "train", "train", "valid", "test"])[np.arange(n) % 5]
    header = ["id", *[f"f{j}" for j in range(d)], "label", "group", "split"]
    rows = [[f"r{i}", *[f"{v * scale:.17g}" for v in X[i]], int(y[i]), "ab"[a[i]], splits[i]] for i in range(n)]
    return write_csv(path, header, rows)
