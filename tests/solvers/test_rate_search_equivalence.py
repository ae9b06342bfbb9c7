"""Bitwise pins of the rate search (issue 19 item 4: the search's refactor changes no head).

Each case fits rate heads on small synthetic data and compares, bit for bit, the head's
coefficients and intercept (sha256 of their float64 bytes), its multipliers, and the
certificate's ``eps_met``, ``achieved_gap``, ``n_iter`` and ``passes`` (the L-BFGS iterations and the
passes over X: a fingerprint of the path the search took) with values computed on the code before
the refactor. The search is deterministic (one thread, fixed order of every reduction), so the same code gives the same
bits on the same platform; a different BLAS, CPU or torch may round differently, so the pins
(``data/rate_search_pins.json``) are kept per platform (``tests/support/pins.py``): they guard a
refactor, not a port. ``PYTHONPATH=.:tests python tests/solvers/test_rate_search_equivalence.py --record``
records this
platform's set, from code known to be right.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from solvers import FairLogisticRegression, iter_path
from solvers.synthetic import make_fair_classification, make_fair_multiclass
from support.pins import UNPINNED, plain, pins_for_this_platform, record_this_platform, skip_message


@dataclass(frozen=True)
class Case:
    id: str
    constraint: str
    eps: tuple
    path: bool = False  # one path along ``eps`` (warm starts; :func:`iter_path`: each head as solved)
    n_groups: int = 2
    n_classes: int = 2
    fit_intercept: bool = True
    data: str = "synthetic"  # or "embedding": 800 x 12 embedding-like, 4 groups (sign steps, stalls)
    max_iter: int = 2000  # the estimator's default; 3: the search's fits stop early, the chosen one is polished
    from_free: bool = False  # the path starts from the unconstrained head (as ``fairhead sweep``)


CASES = [
    Case("dp", "dp", (0.1, 0.05, 0.02)),
    Case("eopp", "eopp", (0.1, 0.03)),
    Case("eo", "eo", (0.1, 0.05, 0.02)),
    Case("error-rate", "error-rate", (0.01, 0.004)),
    Case("fpr", "fpr", (0.03, 0.015)),
    Case("dp-no-intercept", "dp", (0.05,), fit_intercept=False),
    Case("dp-3-groups", "dp", (0.05, 0.02), n_groups=3),
    Case("eo-3-groups", "eo", (0.05,), n_groups=3),
    Case("eo-path", "eo", (0.1, 0.05, 0.02, 0.01), path=True),
    Case("dp-path", "dp", (0.1, 0.05, 0.02, 0.0), path=True),
    Case("eo-3-groups-path", "eo", (0.08, 0.04, 0.02, 0.01), path=True, n_groups=3),
    Case("K3-dp", "dp", (0.08, 0.04), n_classes=3),
    Case("K3-eo", "eo", (0.1, 0.05), n_classes=3),
    Case("K3-dp-path", "dp", (0.1, 0.05, 0.03), path=True, n_classes=3),
    Case("dp-max-iter", "dp", (0.05,), max_iter=3),
    Case("eo-max-iter", "eo", (0.02,), max_iter=3),
    Case("dp-embedding", "dp", (0.02, 0.005), data="embedding"),
    Case("dp-embedding-path", "dp", (0.05, 0.02, 0.005, 0.002), path=True, data="embedding", from_free=True),
    Case("dp-embedding-path-stall", "dp", (0.01, 0.007, 0.006), path=True, data="embedding", from_free=True),
    Case("K4-eo-3-groups", "eo", (0.02,), n_classes=4, n_groups=3),
]


def _data(case: Case):
    if case.data == "embedding":
        return make_fair_classification(800, 12, n_groups=4, embedding_like=True, seed=4)
    if case.n_classes > 2:
        seed = 5 if case.n_groups == 2 else 6
        return make_fair_multiclass(600, 6, n_classes=case.n_classes, n_groups=case.n_groups, seed=seed)
    if case.n_groups == 2:  # every rate binds: dp 0.27, TPR 0.16, FPR 0.05 unconstrained
        return make_fair_classification(600, 6, base_rates=(0.2, 0.6), group_shift=1.0, seed=3)
    return make_fair_classification(600, 6, n_groups=case.n_groups, seed=3)


def _sha(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def fingerprints(case: Case) -> list:
    """Per bound: ``(sha of coef and intercept, sha of the multipliers, eps_met, achieved_gap, n_iter,
    passes over X, number of notes)``."""
    X, y, a = _data(case)
    params = dict(constraint=case.constraint, backend="torch", fit_intercept=case.fit_intercept,
                  max_iter=case.max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tight bound may stay unmet (it warns)
        if case.path:
            free = FairLogisticRegression(backend="torch").fit(X, y) if case.from_free else None
            heads = list(iter_path(X, y, sensitive_features=a, eps_grid=list(case.eps), init_head=free, **params))
        else:
            heads = [FairLogisticRegression(eps=e, **params).fit(X, y, sensitive_features=a) for e in case.eps]
    out = []
    for h in heads:
        c = h.certificate_
        out.append((_sha(h.coef_, h.intercept_), _sha(c.multipliers), bool(c.eps_met), float(c.achieved_gap),
                    int(c.n_iter), int(c.passes), len(c.notes)))
    return out


PINS_FILE = Path(__file__).parent / "data" / "rate_search_pins.json"


#: the case that tells an unkeyed platform's set (one whose heads no later change has moved)
REFERENCE = next(c for c in CASES if c.id == "dp")


@pytest.fixture(scope="module")
def pins():
    found = pins_for_this_platform(PINS_FILE, REFERENCE.id, lambda: fingerprints(REFERENCE))
    if found is None:
        pytest.skip(skip_message(PINS_FILE, "tests/solvers/test_rate_search_equivalence.py"))
    return found


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rate_heads_are_bitwise_those_before_the_refactor(case, pins):
    if case.id not in pins:
        pytest.skip(UNPINNED)
    assert plain(fingerprints(case)) == pins[case.id]


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:  # this platform's pins (only from code known to be right)
    record_this_platform(PINS_FILE, {c.id: fingerprints(c) for c in CASES})
