"""Pinned heads: the backend refactor (issue 24 item 2) must leave every head where it was.

The torch heads are pinned bit for bit (sha256 of the float64 bytes of ``coef_`` and
``intercept_``) on the CPU: the solver's arithmetic is deterministic there (fixed row blocks,
one thread, float64 reductions in a fixed order). A platform whose BLAS, CPU or torch rounds
differently gets other bits, so their pins are kept per platform (``tests/support/pins.py``).
cvxpy's heads are pinned only to the tolerance its interior-point solvers guarantee (Clarabel's gap tolerance 1e-8 relative:
the coefficients within sqrt(1e-8) = 1e-4 of their scale), since their bits depend on the platform.

The pins (``data/backend_pins.json``) were made with the code before the refactor; ``PYTHONPATH=.:tests
python tests/solvers/test_backend_pins.py --record`` records this platform's torch pins, from code
known to be right.
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from solvers import FairLogisticRegression, fit_path
from solvers.synthetic import make_fair_classification
from support.pins import UNPINNED, load_sets, pins_for_this_platform, record_this_platform, skip_message

# what cvxpy guarantees: Clarabel stops at a relative duality gap of 1e-8 (tol_gap_rel), which
# moves a well-conditioned head by about sqrt(1e-8) = 1e-4 of its scale in the worst case, on any
# platform (its bits depend on the BLAS). Coefficients are compared at that: 1e-4 of the largest
# coefficient (at least 1). A machine whose BLAS rounds otherwise moved one eo-score coefficient by
# 4.8e-7 (0.0033453 against 0.0033448), past a per-entry rtol of 1e-6 that no bound gave.
CVXPY_COEF_TOL = 1e-4


BINARY_EPS = {None: 0.05, "dp-score": 0.05, "eo-score": 0.05, "cov": 0.02, "group-loss": 0.6, "minimax": 0.0}
MULTI_EPS = {None: 0.05, "dp-score": 0.05, "eo-score": 0.08}


def binary_data():
    return make_fair_classification(300, 5, seed=11)


def multiclass_data(n=300, d=4, K=3, seed=5):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2, n)
    y = (rng.integers(0, K, n) + a) % K
    X = rng.normal(size=(n, d))
    X[:, :K] += 1.2 * np.eye(K)[y] * (1.0 - 0.4 * a)[:, None]
    X[:, K] += 0.7 * a
    return X, y, a


def digest(head) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(head.coef_, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(head.intercept_, dtype=np.float64).tobytes())
    return h.hexdigest()


def values(head) -> list:
    return [float(x) for x in np.concatenate([np.ravel(head.coef_), np.ravel(head.intercept_)])]


def _single(kind, backend, constraint):
    X, y, a = binary_data() if kind == "binary" else multiclass_data()
    eps = (BINARY_EPS if kind == "binary" else MULTI_EPS)[constraint]
    clf = FairLogisticRegression(constraint=constraint, eps=eps, backend=backend, tol=1e-8, max_iter=5000)
    return [clf.fit(X, y, sensitive_features=a)]


def _path(kind, backend, constraint):
    X, y, a = binary_data() if kind == "binary" else multiclass_data()
    grid = {"group-loss": [0.7, 0.65, 0.62, 0.6], "dp": [0.1, 0.06, 0.03]}.get(constraint, [0.2, 0.1, 0.05, 0.02])
    init_head = None
    if constraint == "dp-score" and backend == "torch" and kind == "binary":  # the sweep's start
        init_head = FairLogisticRegression(backend=backend, tol=1e-8).fit(X, y)
    tol = 1e-4 if constraint == "dp" else 1e-8
    return fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint=constraint, backend=backend, tol=tol,
                    max_iter=5000, init_head=init_head)


def _warm_refit(kind, backend, constraint):
    """The estimator's own warm start: one head refitted along three bounds (each refit pinned)."""
    X, y, a = binary_data() if kind == "binary" else multiclass_data()
    clf = FairLogisticRegression(constraint=constraint, backend=backend, tol=1e-8, max_iter=5000, warm_start=True)
    coefs, intercepts = [], []
    for e in (0.2, 0.1, 0.05):
        clf.set_params(eps=e).fit(X, y, sensitive_features=a)
        coefs.append(np.ravel(clf.coef_))
        intercepts.append(clf.intercept_.copy())
    # one digest over the three refits, in order
    return [SimpleNamespace(coef_=np.concatenate(coefs), intercept_=np.concatenate(intercepts))]


CASES = (
    [("single", "binary", b, c) for b in ("torch", "cvxpy") for c in BINARY_EPS]
    + [("single", "multi", b, c) for b in ("torch", "cvxpy") for c in MULTI_EPS]
    + [("path", "binary", "torch", "dp-score"), ("path", "binary", "cvxpy", "dp-score"),
       ("path", "multi", "torch", "dp-score"), ("path", "multi", "cvxpy", "eo-score"),
       ("path", "binary", "torch", "group-loss"), ("path", "binary", "torch", "dp"),
       ("path", "multi", "torch", "dp"),
       ("warm", "binary", "torch", "dp-score"), ("warm", "binary", "torch", "eo-score"),
       ("warm", "multi", "torch", "dp-score"), ("warm", "binary", "torch", "dp")]
)
RUN = {"single": _single, "path": _path, "warm": _warm_refit}


def case_id(case) -> str:
    return "-".join(str(x) for x in case)


def heads_of(case):
    how, kind, backend, constraint = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a rate bound below the data's resolution warns; the head is pinned anyway
        return RUN[how](kind, backend, constraint)


def pin(case):
    heads = heads_of(case)
    if case[2] == "torch":
        return [digest(h) for h in heads]
    return [values(h) for h in heads]


PINS_FILE = Path(__file__).parent / "data" / "backend_pins.json"
# cvxpy's pins hold to its tolerance anywhere: the first set's
CVXPY_PINS = load_sets(PINS_FILE)[0]["pins"]


@pytest.fixture(scope="module")
def torch_pins():
    reference = CASES[0]
    found = pins_for_this_platform(PINS_FILE, case_id(reference), lambda: pin(reference))
    if found is None:
        pytest.skip(skip_message(PINS_FILE, "tests/solvers/test_backend_pins.py"))
    return found


@pytest.mark.parametrize("case", [c for c in CASES if c[2] == "torch"], ids=case_id)
def test_torch_heads_are_bitwise_pinned(case, torch_pins):
    if case_id(case) not in torch_pins:
        pytest.skip(UNPINNED)
    assert pin(case) == torch_pins[case_id(case)]


@pytest.mark.parametrize("case", [c for c in CASES if c[2] == "cvxpy"], ids=case_id)
def test_cvxpy_heads_are_pinned_to_the_solver_tolerance(case):
    got, want = pin(case), CVXPY_PINS[case_id(case)]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        w = np.asarray(w)
        np.testing.assert_allclose(g, w, rtol=0, atol=CVXPY_COEF_TOL * max(1.0, float(np.abs(w).max())))


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:  # this platform's pins (only from code known to be right)
    record_this_platform(PINS_FILE, {case_id(c): pin(c) for c in CASES if c[2] == "torch"})
