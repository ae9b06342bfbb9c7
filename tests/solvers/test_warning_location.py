"""ConvergenceWarnings name the user's line (the call to fit, or the loop over iter_path), not library code."""

from __future__ import annotations

import warnings
from pathlib import Path

from sklearn.exceptions import ConvergenceWarning

from solvers import FairLogisticRegression, iter_path
from solvers.synthetic import make_fair_classification


def _unreachable():
    """eps = 0 on hard-prediction rates: out of reach for a linear head, so the fit warns."""
    return make_fair_classification(800, 6, seed=5)


def test_an_unmet_bound_warns_at_the_line_that_called_fit():
    X, y, a = _unreachable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _line() + 1  # the next line calls fit
        FairLogisticRegression(constraint="dp", eps=0.0, backend="torch").fit(X, y, sensitive_features=a)
    found = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert found, [str(w.message) for w in caught]
    assert all(Path(w.filename) == Path(__file__) and w.lineno == line for w in found), \
        [(w.filename, w.lineno) for w in found]


def test_iter_path_warns_at_the_loop_that_advances_it():
    X, y, a = _unreachable()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _line() + 1  # the next line advances the generator
        for _head in iter_path(X, y, sensitive_features=a, eps_grid=[0.0], constraint="dp", backend="torch"):
            pass
    found = [w for w in caught if issubclass(w.category, ConvergenceWarning)]
    assert found and all(Path(w.filename) == Path(__file__) and w.lineno == line for w in found), \
        [(w.filename, w.lineno) for w in found]


def _line() -> int:
    import sys

    return sys._getframe(1).f_lineno
