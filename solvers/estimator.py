"""``FairLogisticRegression``: a scikit-learn classifier for fair linear heads."""

from __future__ import annotations

import copy
import dataclasses
import numbers
import time

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, column_or_1d, validate_data

from ._linalg import x_dot
from ._validation import Interval, Options, validate_params
from ._warnings import warn_at_caller
from .backends import FitParams, WarmStart, get_backend
from .backends.common import check_penalty
from .certificate import Certificate, passes_lower_bound, score_certificate_numbers
from . import multinomial
from .constraints import CONSTRAINTS, MSG_BINARY_ONLY, MULTICLASS_NAMES, Constraint, make_constraint
from .errors import DataError, SolverError
from .out_of_core import RowChunks, parse_memory
from .problem import build_problem, unique_values

#: ``backend="auto"`` uses the torch solver at every size (cvxpy only for ``l1`` / ``elasticnet``,
#: which torch does not solve): on a 3,694 x 7 public table cvxpy's problem building made each
#: default fit 220-273 ms against 4.6-5.0 ms on torch (scikit-learn: 2.6 ms), and Clarabel's
#: time grows superlinearly (230-390 s at 20,000 x 512). cvxpy stays the exact reference, on
#: request (``backend="cvxpy"``) and in the tests that hold the two backends to one optimum.

#: the largest feature magnitude the solvers take: rate constraints work in float32, whose products overflow
#: at about 1.8e19, and a logit of 1e15 is already beyond any probability's resolution
MAX_ABS_FEATURE = 1e15
MSG_TOO_LARGE = ("feature value {value:.3g} (row {row}, column {col}) is too large for the solvers (at most {most:g} "
                 "in magnitude: larger products overflow); rescale the features, e.g. with sklearn's StandardScaler")


#: the float dtypes ``fit`` keeps as stored (anything else is converted by ``validate_data``)
_KEPT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16))


def _plain_fit_arrays(X, y) -> bool:
    """Whether ``validate_data`` would hand ``X, y`` back as they are, without a message: ``X`` an
    ndarray of a kept float dtype, 2-D, at least one row and one column, every value finite; ``y``
    a numeric 1-D ndarray, finite, one label per row. Those skip scikit-learn's checks (0.15 ms, a
    twentieth of a fit on a few thousand rows); anything else goes through them, for their messages.
    """
    if not (type(X) is np.ndarray and X.dtype in _KEPT_DTYPES and X.ndim == 2 and X.shape[0] >= 1
            and X.shape[1] >= 1 and type(y) is np.ndarray and y.ndim == 1 and y.dtype.kind in "biuf"
            and y.shape[0] == X.shape[0]):
        return False
    # NaN propagates through max and min, and an infinity is one of them
    finite = bool(np.isfinite(X.max()) and np.isfinite(X.min()))
    return finite and (y.dtype.kind != "f" or bool(np.isfinite(y).all()))


def _check_magnitude(X) -> None:
    """Refuse features whose products overflow (a 1e308 cell), in one line instead of a raw linalg error."""
    # two reductions without a temporary (np.abs(X) was a copy of X: its time and its memory)
    if X.size and max(float(X.max()), -float(X.min())) > MAX_ABS_FEATURE:
        magnitude = np.abs(X)  # only to name the cell
        flat = int(np.argmax(magnitude))
        value = float(magnitude.flat[flat])
        if value > MAX_ABS_FEATURE:
            row, col = np.unravel_index(flat, X.shape)
            raise DataError(MSG_TOO_LARGE.format(value=float(X[row, col]), row=int(row), col=int(col),
                                                 most=MAX_ABS_FEATURE))


MSG_NOT_BINARY = (
    "Classification needs at least 2 classes. The type of the target is {kind}: y has {k} class(es) {classes}; "
    "pass labels with 2 or more classes"
)
MSG_TOO_MANY_CLASSES = (
    "y has {k} classes, more than the {most} a head supports (is it a continuous column?); "
    "pass class labels, or bin the values first"
)
#: the most classes a head accepts: a label column with more values is almost surely not a class
MAX_CLASSES = 1000
MSG_NOT_CONVERGED = (
    "FairLogisticRegression ({backend}/{solver}) did not reach tol={tol:g}: status={status}, "
    "stationarity={stat:.3g}, max_violation={viol:.3g} after {n_iter} iterations; "
    "increase max_iter, loosen tol, or standardise X"
)
MSG_EPS_NOT_MET = (
    "no head on the multiplier path meets {name} eps={eps:g} on the fit split "
    "(best achieved gap {gap:.4g}); raise eps, lower C, or use balance='group'"
)
MSG_CONSTRAINT_NEEDS_SF = ("constraint={name!r} needs sensitive_features in fit: pass fit(X, y, sensitive_features=s) "
                           "(in GridSearchCV: enable metadata routing with sklearn.set_config(enable_metadata_routing="
                           "True) and set_fit_request(sensitive_features=True)), or constraint=None for an "
                           "unconstrained head")
MSG_OOC_CVXPY = ("an out-of-core X ({what}) is solved by the torch backend only, and backend={backend!r}"
                 "{why}; pass backend='torch' (or 'auto') and penalty='l2'")
MSG_OOC_NONFINITE = "X has a NaN or infinite feature in row {row}; drop or impute the non-finite feature values before fitting"
MSG_OOC_LENGTH = "X has {n} rows but y has {m}; pass one row of X per label (and per sensitive value)"
MSG_OOC_FEATURES = ("X has {got} features, but FairLogisticRegression is expecting {want} features as input; "
                    "pass features from the backbone (and cache) the head was fitted on")


MSG_FIX_NONFINITE = "drop or impute the non-finite feature values before fitting"
MSG_FIX_LENGTHS = "pass one row of X per label (and per sensitive value)"
MSG_FIX_SHAPE = "pass X as a 2-D numeric array (n_samples, n_features) and y as a 1-D array of labels"
MSG_FIX_PREDICT_NONFINITE = "drop or impute the non-finite feature values before predicting"
MSG_FIX_PREDICT_FEATURES = "pass features from the backbone (and cache) the head was fitted on"
MSG_HEAD_DIM = ("this head has {k} coefficients but n_features_in_={d}; it was built or edited by hand: "
                "refit it, or load a head saved by solvers.save_head")


def _bad_arrays_message(err: ValueError, *, predicting: bool = False) -> str:
    problem = " ".join(str(err).split())
    problem = problem if len(problem) <= 240 else problem[:237] + "..."
    if "NaN" in problem or "infinity" in problem:
        fix = MSG_FIX_PREDICT_NONFINITE if predicting else MSG_FIX_NONFINITE
    elif predicting and "features" in problem:
        fix = MSG_FIX_PREDICT_FEATURES
    elif "inconsistent numbers of samples" in problem:
        fix = MSG_FIX_LENGTHS
    else:
        fix = MSG_FIX_SHAPE
    return f"{problem.rstrip('.')}; {fix}"


def probabilities_from_scores(z: np.ndarray) -> np.ndarray:
    """:meth:`FairLogisticRegression.predict_proba` from the scores ``z`` of ``decision_function``:
    ``[1 - s(z), s(z)]`` with the sigmoid ``s(z) = (1 + tanh(z / 2)) / 2`` (no overflow), or the
    softmax of the rows of a K-class ``z`` (n, K)."""
    if z.ndim == 2:
        return multinomial.softmax(z)
    p1 = 0.5 * (1.0 + np.tanh(0.5 * z))
    return np.column_stack([1.0 - p1, p1])


def labels_from_scores(z: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """:meth:`FairLogisticRegression.predict` from the scores ``z``: ``classes[1]`` where ``z > 0``,
    else ``classes[0]``; for K classes, the class of the largest score (ties to the first)."""
    if z.ndim == 2:
        return classes[np.argmax(z, axis=1)]
    return classes[(z > 0).astype(int)]


class FairLogisticRegression(ClassifierMixin, BaseEstimator):
    """Logistic regression head under a fairness constraint (deterministic; binary or K classes).

    Minimises the sklearn objective on mean form

    .. math::

        \\frac{1}{V}\\sum_i v_i \\log(1 + e^{-s_i (x_i^\\top w + b)}) + \\frac{\\lVert w\\rVert^2}{2 C V},
        \\qquad V = \\sum_i v_i,

    subject to the chosen constraint with bound ``eps`` (see :mod:`solvers.constraints`).
    Without a constraint the argmin is scikit-learn's ``LogisticRegression(C=C)``.

    With K > 2 classes the head is **multinomial** (softmax), as scikit-learn's: one
    ``(w_k, b_k)`` per class and the loss :math:`\\log \\sum_k e^{z_{ik}} - z_{i y_i}`, with the
    same L2 penalty :math:`\\lVert W\\rVert_F^2 / (2 C V)`. The penalty makes ``W`` unique and the
    intercepts are fixed by :math:`\\sum_k b_k = 0` (see :mod:`solvers.multinomial`); ``dp``,
    ``eopp``, ``eo`` and their score versions then hold per class, one-vs-rest. Two classes
    keep the single-logit binary head.

    Parameters
    ----------
    constraint : str, Constraint or None, default=None
        Score constraints ``"dp-score"``, ``"eopp-score"``, ``"eo-score"``, ``"cov"``,
        ``"group-loss"``, ``"minimax"``; rate constraints ``"dp"``, ``"eopp"``, ``"eo"``,
        ``"error-rate"``, ``"fpr"``; or a constraint object (the names are the keys of
        ``solvers.constraints.CONSTRAINTS``). ``None`` (the default) fits an unconstrained
        head; the command line's ``fairhead fit`` defaults to ``--constraint dp`` instead.
    eps : float >= 0, default=0.05
        The bound (unused by ``"minimax"``).
    C : float > 0, default=1.0
        Inverse regularisation strength, scikit-learn's meaning.
    penalty : {"l2", "l1", "elasticnet"} or None, default="l2"
        ``"l1"`` / ``"elasticnet"`` need the cvxpy backend.
    l1_ratio : float in [0, 1] or None, default=None
        Elastic-net mixing (``penalty="elasticnet"``).
    balance : {None, "group", "label-group"}, default=None
        Reweight so every group, or every (label, group) cell, has equal total weight.
        The same weights enter the loss **and the constraint**: ``eps`` then bounds the gap
        under the balanced weights (``"group"``: each group's rate against the plain mean of
        the group rates; ``"label-group"``: each group's rate is the mean of its per-label
        rates), and ``certificate_.achieved_gap`` is that gap. Measure it elsewhere with
        ``fairhead.measure.constraint_value(..., balance=...)``.
    backend : {"auto", "cvxpy", "torch"}, default="auto"
        ``auto`` picks torch at every size, cvxpy for the ``l1`` / ``elasticnet`` penalties
        (the exact reference: ask for it with ``"cvxpy"``). Rate constraints always run their weighted
        fits on the torch solver (the reduction needs dozens of warm-started fits).
    tol : float > 0, default=1e-4
        KKT tolerance: the inf-norm of the projected gradient of the mean-normalised
        objective and the constraint violation (linear score constraints are kept feasible
        exactly by the active set whatever ``tol``). scikit-learn's default. Chosen from what
        it buys (``benchmarks/bench_defaults.py``, Adult and 20,000 x 512): at 1e-4 the fit is
        0.76x / 0.97x scikit-learn's time at its defaults and still closer to the optimum
        (objective within 1e-6 of the best; scikit-learn's default fit 3e-6 / 1.5e-5), and
        0.02-0.05% of predictions differ from the exact optimum's; 1e-6 cost 1.7-1.8x
        scikit-learn's time and moved those predictions only. Use 1e-6 for tight comparisons
        and 1e-9 or less with float64 data to compare backends. Rate constraints (``dp``,
        ``eo``, ...) search their multipliers with weighted fits stopped at ``max(tol, 1e-4)``
        (``max(tol, 1e-3)`` for binary heads under rates not conditioned on the label: ``dp``,
        ``dp-ratio``), since the chosen head's intercept is chosen again and its bound checked
        on hard predictions; ``tol`` (at least 1e-6) polishes a chosen fit that stopped at ``max_iter``.
    max_iter : int >= 1, default=2000
    min_group_size : int >= 1, default=10
        Groups (and label cells, for conditional constraints) smaller than this are an error.
    device : str, default="cpu"
        torch device for ``backend="torch"``.
    warm_start : bool, default=False
        Start from the previous solution (torch backend and the rate reduction).
    fit_intercept : bool, default=True
    strict : bool, default=False
        Rate constraints: raise :class:`~solvers.errors.SolverError` instead of warning when
        no head on the multiplier path meets ``eps``.
    max_memory : int, str or None, default=None
        Fit out of core: ``X`` is streamed in row chunks in every pass and the fit holds at
        most this much of it at once (bytes, or ``"2GB"``, ``"512MiB"``; see
        :mod:`solvers.out_of_core`). ``X`` is then a :class:`~solvers.out_of_core.RowChunks`
        (a cache split on disk; this budget replaces its own) or an array (a ``np.memmap``).
        ``None``: an array is fitted in memory, a RowChunks under its own budget. Torch
        backend, L2 penalty; on the CPU the head is bit for bit the in-memory head, and the
        certificate says how it was streamed.

        .. versionadded:: 0.1

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        One row for two classes, one per class for K > 2 (then summing to 0 over classes).
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    n_iter_ : int
    groups_ : list
        Group labels (tuples for intersectional groups); empty when unconstrained.
    certificate_ : Certificate
    constraint_violation_ : float

    See Also
    --------
    solvers.fit_path : a sweep over ``eps`` with warm starts.

    Notes
    -----
    The fit is deterministic: rate constraints return one head (never a randomized mixture).

    .. versionadded:: 0.1
       Binary and K > 2 classes (the multinomial head).

    Examples
    --------
    >>> import numpy as np
    >>> from solvers import FairLogisticRegression
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(400, 3)); a = rng.integers(0, 2, 400)
    >>> y = (X[:, 0] + a + rng.normal(size=400) > 0.5).astype(int)
    >>> clf = FairLogisticRegression(constraint="dp-score", eps=0.1).fit(X, y, sensitive_features=a)
    >>> clf.certificate_.status
    'optimal'
    """

    _parameter_constraints = {
        "constraint": [None, Options(str, frozenset(CONSTRAINTS)), Constraint, dict],
        "eps": [Interval(numbers.Real, 0, None, "left")],
        "C": [Interval(numbers.Real, 0, None, "neither")],
        "penalty": [None, Options(str, frozenset({"l2", "l1", "elasticnet"}))],
        "l1_ratio": [None, Interval(numbers.Real, 0, 1, "both")],
        "balance": [None, Options(str, frozenset({"group", "label-group"}))],
        "backend": [Options(str, frozenset({"auto", "cvxpy", "torch"}))],
        "tol": [Interval(numbers.Real, 0, None, "neither")],
        "max_iter": [Interval(numbers.Integral, 1, None, "left")],
        "min_group_size": [Interval(numbers.Integral, 1, None, "left")],
        "device": [str],
        "warm_start": [bool],
        "fit_intercept": [bool],
        "strict": [bool],
        "max_memory": [None, str, Interval(numbers.Integral, 1, None, "left")],
    }

    def __init__(
        self,
        *,
        constraint=None,
        eps=0.05,
        C=1.0,
        penalty="l2",
        l1_ratio=None,
        balance=None,
        backend="auto",
        tol=1e-4,
        max_iter=2000,
        min_group_size=10,
        device="cpu",
        warm_start=False,
        fit_intercept=True,
        strict=False,
        max_memory=None,
    ):
        self.constraint = constraint
        self.eps = eps
        self.C = C
        self.penalty = penalty
        self.l1_ratio = l1_ratio
        self.balance = balance
        self.backend = backend
        self.tol = tol
        self.max_iter = max_iter
        self.min_group_size = min_group_size
        self.device = device
        self.warm_start = warm_start
        self.fit_intercept = fit_intercept
        self.strict = strict
        self.max_memory = max_memory

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.input_tags.allow_nan = False
        return tags

    # ------------------------------------------------------------------ fit
    def _resolve_backend(self, n, d, constraint) -> str:
        if self.backend != "auto":
            return self.backend
        return "cvxpy" if self.penalty in ("l1", "elasticnet") else "torch"

    def fit(self, X, y, *, sensitive_features=None, sample_weight=None):
        """Fit the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or RowChunks
            float16 / float32 / float64 are kept as stored (torch backend). A
            :class:`~solvers.out_of_core.RowChunks` is streamed from disk (see ``max_memory``).
        y : array-like of shape (n_samples,)
            Two classes (``classes_[1]`` is the positive one) or K > 2 (a multinomial head).
        sensitive_features : array-like (n,), (n, k), DataFrame, dict or None
            Several attributes combine into intersectional groups. ``None`` fits without a
            constraint (balance needs groups).
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        self
        """
        problem, constraint, backend = self._prepare(X, y, sensitive_features, sample_weight)
        init = self._warm_init() if self.warm_start else None
        eps = float(self.eps)
        if constraint is not None and constraint.kind == "rate":
            from .reductions import fit_rate_constraint

            sol, cert = fit_rate_constraint(self, problem, constraint, eps=eps, backend=backend, init=init)
        else:
            sol, cert = _fit_score(self, problem, constraint, eps=eps, backend=backend, init=init)
        self._set_fitted(sol, with_stream_note(cert, problem.X, self.device), eps=eps)
        return self

    def _check_X_y(self, X, y):
        """``validate_data`` for arrays; for an out-of-core fit, the same checks done by streaming."""
        if self.max_memory is not None:
            parse_memory(self.max_memory)  # a bad size string: one line before any work
        if not isinstance(X, RowChunks):
            if _plain_fit_arrays(X, y):  # what validate_data would pass through as it is
                self.n_features_in_ = X.shape[1]
                if hasattr(self, "feature_names_in_"):
                    del self.feature_names_in_
            else:
                try:
                    X, y = validate_data(self, X, y, dtype=[np.float64, np.float32, np.float16], reset=True)
                except ValueError as err:  # sklearn's wording names the problem; add the fix, keep one line
                    raise DataError(_bad_arrays_message(err)) from err
            _check_magnitude(X)
            return (X, y) if self.max_memory is None else (RowChunks(X, max_memory=self.max_memory), y)
        if self.max_memory is not None:
            X = X.with_budget(self.max_memory)
        try:
            y = column_or_1d(y)
        except ValueError as err:
            raise DataError(_bad_arrays_message(err)) from err
        if len(y) != X.shape[0]:
            raise DataError(MSG_OOC_LENGTH.format(n=X.shape[0], m=len(y)))
        bad = X.first_nonfinite()
        if bad is not None:
            raise DataError(MSG_OOC_NONFINITE.format(row=bad))
        self.n_features_in_ = X.shape[1]
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_
        return X, y

    def _prepare(self, X, y, sensitive_features, sample_weight):
        """Validate everything; return ``(FairProblem, constraint or None, backend name)``."""
        validate_params(self)
        if self.penalty == "elasticnet" and self.l1_ratio is None:
            raise DataError("penalty='elasticnet' needs l1_ratio in [0, 1]; pass l1_ratio")
        X, y = self._check_X_y(X, y)
        try:
            if np.asarray(y).dtype.kind not in "biu":  # integer labels are class labels: nothing to find
                check_classification_targets(y)
        except ValueError as err:  # sklearn's wording (checks match "Unknown label type"), plus the fix
            raise DataError(f"{str(err).splitlines()[0].split('. Maybe')[0]}: y holds "
                            f"{type_of_target(y, input_name='y')} values such as {np.asarray(y).ravel()[:3].tolist()}, "
                            "not class labels; pass labels such as 0/1 or class names (threshold a "
                            "continuous target first)") from err
        self.classes_ = unique_values(np.asarray(y))
        K = self.classes_.shape[0]
        if K < 2:
            kind = type_of_target(y, input_name="y")
            raise DataError(MSG_NOT_BINARY.format(kind=kind, k=K,
                                                  classes=[c.item() if hasattr(c, "item") else c for c in self.classes_]))
        if K > MAX_CLASSES:
            raise DataError(MSG_TOO_MANY_CLASSES.format(k=K, most=MAX_CLASSES))
        if K == 2:
            y01 = (y == self.classes_[1]).astype(np.float64)
        else:  # class codes 0 .. K-1 in classes_ order
            y01 = np.searchsorted(self.classes_, y).astype(np.float64)
        constraint = make_constraint(self.constraint)
        if sensitive_features is None and constraint is not None:
            # never a silent unconstrained head under a constrained name (GridSearchCV without metadata routing)
            raise DataError(MSG_CONSTRAINT_NEEDS_SF.format(name=constraint.name))
        if K > 2 and constraint is not None and not constraint.multiclass:
            raise DataError(MSG_BINARY_ONLY.format(name=constraint.name, k=K, names=", ".join(MULTICLASS_NAMES)))
        if K > 2:  # the multinomial head has the L2 penalty only, on either backend
            check_penalty(self.penalty, backend=self.backend, n_classes=K)
        problem = build_problem(
            X, y01, sensitive_features, sample_weight, balance=self.balance,
            min_group_size=self.min_group_size,
            need_label_cells=bool(constraint is not None and constraint.needs_label_cells),
            n_classes=K,
        )
        self.groups_ = list(problem.group_labels)
        backend = self._resolve_backend(problem.n, problem.d, constraint)
        if isinstance(X, RowChunks):  # the torch backend, whatever the size
            if self.backend == "cvxpy" or self.penalty not in ("l2", None):
                why = f" with penalty={self.penalty!r} needs cvxpy" if self.penalty not in ("l2", None) else ""
                raise DataError(MSG_OOC_CVXPY.format(what=f"{X.shape[0]} x {X.shape[1]}", backend=self.backend,
                                                     why=why))
            backend = "torch"
        return problem, constraint, backend

    def _fit_params(self) -> FitParams:
        """The parameters a backend needs (:class:`~solvers.backends.FitParams`)."""
        return FitParams(C=float(self.C), penalty=self.penalty, l1_ratio=self.l1_ratio,
                         fit_intercept=self.fit_intercept, tol=float(self.tol), max_iter=int(self.max_iter),
                         device=self.device)

    def _set_fitted(self, sol, cert, *, eps=None, report=True):
        if np.ndim(sol.intercept) == 0:
            self.coef_ = np.asarray(sol.coef, dtype=np.float64).reshape(1, -1)
            self.intercept_ = np.array([float(sol.intercept)])
        else:  # multinomial: one row per class
            self.intercept_ = np.asarray(sol.intercept, dtype=np.float64).reshape(-1).copy()
            self.coef_ = np.asarray(sol.coef, dtype=np.float64).reshape(self.intercept_.shape[0], -1).copy()
        self.n_iter_ = max(1, int(sol.n_iter))
        self.certificate_ = cert
        self.constraint_violation_ = float(cert.max_violation)
        # warm-start state (a WarmStart of numpy arrays, private): the solution, its working set and
        # multipliers, plus up to two earlier heads with the same working set so that the next eps
        # along a sweep starts from an extrapolation (see solvers.backends.torch._start_theta)
        prev = getattr(self, "_solver_state", None)
        state = dataclasses.replace(sol.state if sol.state is not None else WarmStart(), eps=eps)
        if (prev is not None and prev.theta is not None and prev.eps is not None and eps is not None
                and prev.eps != eps and state.theta is not None and len(prev.theta) == len(state.theta)
                and sorted(prev.working) == sorted(state.working)):
            state.prev = tuple((list(prev.prev) + [(prev.theta, prev.eps, prev.z)])[-2:])
        self._solver_state = state
        if report:  # a path reports its heads when it yields them (it may replace an unmet one)
            self._report(cert)

    def _warm_init(self):
        state = getattr(self, "_solver_state", None)
        if state is not None and state.theta is not None and getattr(self, "coef_", None) is not None:
            # a refit may see other rows: scores of X (the path's shortcut) must be recomputed
            return dataclasses.replace(state, z=None, row_scores={}, prev=tuple(entry[:2] for entry in state.prev))
        return None

    def _report(self, cert: Certificate) -> None:
        if cert.eps_met is False:
            msg = MSG_EPS_NOT_MET.format(name=cert.constraint, eps=cert.eps, gap=cert.achieved_gap)
            if self.strict:
                raise SolverError(msg)
            warn_at_caller(msg, ConvergenceWarning)  # at the user's fit / iter_path line
        elif not cert.converged:
            warn_at_caller(
                MSG_NOT_CONVERGED.format(backend=cert.backend, solver=cert.solver, tol=cert.tol, status=cert.status,
                                         stat=cert.stationarity, viol=cert.max_violation, n_iter=cert.n_iter),
                ConvergenceWarning,
            )

    # -------------------------------------------------------------- predict
    def decision_function(self, X):
        """Scores ``X @ coef_.T + intercept_``, the logits of the head.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or RowChunks
            Features from the backbone (and cache) the head was fitted on.

        Returns
        -------
        ndarray of shape (n_samples,) or (n_samples, n_classes)
            One score per row for two classes (positive: ``classes_[1]``), one per class for
            K > 2 (the centred logits ``z_k = log p_k - mean_j log p_j``).
        """
        check_is_fitted(self)
        if isinstance(X, RowChunks):  # streamed: the same checks, then one pass
            if X.shape[1] != self.n_features_in_:
                raise DataError(MSG_OOC_FEATURES.format(got=X.shape[1], want=self.n_features_in_))
            bad = X.first_nonfinite()
            if bad is not None:
                raise DataError(MSG_OOC_NONFINITE.format(row=bad).replace("before fitting", "before predicting"))
        else:
            try:
                X = validate_data(self, X, dtype=[np.float64, np.float32, np.float16], reset=False)
            except ValueError as err:  # NaN, or another feature dimension: one line with the fix
                raise DataError(_bad_arrays_message(err, predicting=True)) from err
        if np.ndim(self.coef_) == 2 and np.shape(self.coef_)[0] > 1:  # K classes: one score per class
            coef = np.asarray(self.coef_, dtype=np.float64)
            if coef.shape[1] != X.shape[1]:
                raise DataError(MSG_HEAD_DIM.format(k=coef.shape[1], d=self.n_features_in_))
            return x_dot(X, coef.T) + self.intercept_
        coef = np.asarray(self.coef_).ravel()
        if coef.shape[0] != X.shape[1]:
            raise DataError(MSG_HEAD_DIM.format(k=coef.shape[0], d=self.n_features_in_))
        return x_dot(X, coef) + self.intercept_[0]

    def predict_proba(self, X):
        """Class probabilities, columns in ``classes_`` order.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or RowChunks
            Features from the backbone (and cache) the head was fitted on.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            The sigmoid of the score for two classes, the softmax of the scores for K > 2.
        """
        return probabilities_from_scores(self.decision_function(X))

    def predict_log_proba(self, X):
        """Logarithms of the class probabilities, computed without underflow.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or RowChunks
            Features from the backbone (and cache) the head was fitted on.

        Returns
        -------
        ndarray of shape (n_samples, n_classes)
            ``log(predict_proba(X))``, columns in ``classes_`` order.
        """
        z = self.decision_function(X)
        if z.ndim == 2:
            return multinomial.log_softmax(z)
        return np.column_stack([-np.logaddexp(0.0, z), -np.logaddexp(0.0, -z)])

    def predict(self, X):
        """Hard labels from ``classes_``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or RowChunks
            Features from the backbone (and cache) the head was fitted on.

        Returns
        -------
        ndarray of shape (n_samples,)
            ``classes_[1]`` where the score is positive, else ``classes_[0]`` (K > 2: the class
            of the largest score, ties to the first class).
        """
        return labels_from_scores(self.decision_function(X), self.classes_)


class PathFitter:
    """Heads of one problem at several bounds: validated and prepared once, one head per :meth:`fit`.

    :func:`solvers.iter_path` drives it. The data are validated as by
    :meth:`FairLogisticRegression.fit` with ``estimator``'s parameters, once; the backend model
    (:mod:`solvers.backends`: the cvxpy problem with ``eps`` a DPP parameter, or the torch
    design and constraint rows) or a rate head's design is built at the first :meth:`fit` and
    kept. Each head starts from the previous head's :class:`~solvers.backends.WarmStart` (score
    heads also from the extrapolation of the last heads in ``eps``).

    Parameters
    ----------
    estimator : FairLogisticRegression
        The parameters of every head (its ``eps`` is the first bound's, for validation only).
    X, y, sensitive_features, sample_weight : as in :meth:`FairLogisticRegression.fit`.
    init_head : FairLogisticRegression, optional
        A head already fitted on the same data: the first head starts from its coefficients.

    Attributes
    ----------
    problem : FairProblem
    constraint : Constraint or None
    backend : str
        The resolved backend name (``"torch"`` or ``"cvxpy"``).

    Examples
    --------
    >>> import numpy as np
    >>> from solvers.estimator import FairLogisticRegression, PathFitter
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200)
    >>> y = (X[:, 0] + s + rng.normal(size=200) > 0.5).astype(int)
    >>> fitter = PathFitter(FairLogisticRegression(constraint="dp-score"), X, y, sensitive_features=s)
    >>> [fitter.fit(e).certificate_.eps for e in (0.2, 0.1)]
    [0.2, 0.1]
    """

    def __init__(self, estimator, X, y, *, sensitive_features=None, sample_weight=None, init_head=None):
        self.estimator = estimator
        self.problem, self.constraint, self.backend = estimator._prepare(X, y, sensitive_features, sample_weight)
        self._warm = _head_state(init_head, self.problem.d, self.problem.n_classes)
        self._model = None  # a score path's backend model, or a rate path's design

    @property
    def rate(self) -> bool:
        """Whether the constraint is a rate constraint (heads from the reduction)."""
        return self.constraint is not None and self.constraint.kind == "rate"

    def fit(self, eps: float, *, report: bool = True) -> FairLogisticRegression:
        """A new head at bound ``eps``, warm-started from the previous one (its warning, or
        with ``strict`` its error, raised now only with ``report``; see :meth:`report`)."""
        base, problem, constraint = self.estimator, self.problem, self.constraint
        est = _fresh(base, eps)
        validate_params(est)  # the estimator's own rule for eps (a bad bound: one line before any work)
        if self.rate:
            from .reductions import fit_rate_constraint, rate_design

            if self._model is None:
                self._model = rate_design(problem.X, base.device, center=base.fit_intercept)
            sol, cert = fit_rate_constraint(est, problem, constraint, eps=eps, backend=self.backend, init=self._warm,
                                            design=self._model)
        else:
            if self._model is None:
                self._model = get_backend(self.backend, problem.n_classes).prepare(problem, constraint,
                                                                                   base._fit_params())
            sol, cert = _fit_score(est, problem, constraint, eps=eps, backend=self.backend, init=self._warm,
                                   model=self._model)
            est._solver_state = self._warm  # the previous head's state: the extrapolation chain continues
        est._set_fitted(sol, with_stream_note(cert, problem.X, base.device), eps=eps, report=report)
        self._warm = est._solver_state
        return est

    @staticmethod
    def report(head: FairLogisticRegression) -> FairLogisticRegression:
        """Raise ``head``'s warning about its certificate (or, ``strict``, its error); return it."""
        head._report(head.certificate_)
        return head

    @staticmethod
    def stand_in(head: FairLogisticRegression, best: FairLogisticRegression, certificate) -> FairLogisticRegression:
        """A copy of ``best`` standing for ``head``'s bound: ``certificate`` (its ``eps`` is the
        bound), no violation, and ``head``'s warm state (the path continues from its own search)."""
        out = copy.copy(best)  # coefficients and certificate are replaced, never mutated: a shallow copy will do
        out.set_params(eps=certificate.eps)
        out.certificate_ = certificate
        out.constraint_violation_ = 0.0
        out._solver_state = head._solver_state
        return out


def _head_state(head, d, n_classes=2):
    """The warm start of a fitted head given by its coefficients alone (or ``None``)."""
    if head is None:
        return None
    if n_classes > 2:
        coef = np.asarray(head.coef_, dtype=np.float64)
        if coef.shape != (n_classes, d):
            raise ValueError(f"init_head has coefficients of shape {coef.shape} for {n_classes} classes and {d} "
                             "features; fit it on the same X and y")
        return WarmStart(theta=multinomial.stack(coef, head.intercept_))
    coef = np.asarray(head.coef_, dtype=np.float64).ravel()
    if coef.shape[0] != d:
        raise ValueError(f"init_head has {coef.shape[0]} coefficients for {d} features; fit it on the same X")
    return WarmStart(theta=np.concatenate([coef, np.asarray(head.intercept_, dtype=np.float64).ravel()[:1]]))


def _fresh(base, eps):
    # what clone(base) makes (the same parameters, unfitted), without re-validating and deep-copying
    # the parameters once per head: the constraint (a name or an object holding only its init
    # parameters) is cloned once per head only when it is an object
    params = base.get_params(deep=False)
    if not isinstance(params.get("constraint"), (str, type(None))):
        params["constraint"] = clone(params["constraint"])
    est = type(base)(**params).set_params(eps=eps)
    for attr in ("classes_", "n_features_in_", "groups_", "feature_names_in_"):
        if hasattr(base, attr):
            setattr(est, attr, getattr(base, attr))
    return est


def with_stream_note(cert: Certificate, X, device) -> Certificate:
    """``cert`` with a note on how an out-of-core ``X`` was streamed (unchanged for arrays)."""
    if not isinstance(X, RowChunks):
        return cert
    from .distributed import RowShard

    if isinstance(X, RowShard):
        same = ("the single-process fit's blocks and arithmetic: the same iterates" if str(device) == "cpu" else
                f"on {device}, the single-process fit's iterates up to float32 summation order")
        return dataclasses.replace(cert, notes=tuple(cert.notes) + (f"{X.describe()}; {same}",))
    same = ("the in-memory fit's blocks and arithmetic: the same iterates" if str(device) == "cpu" else
            f"on {device}, the in-memory fit's iterates up to float32 summation order")
    return dataclasses.replace(cert, notes=tuple(cert.notes) + (f"{X.describe()}; {same}",))


def _fit_score(est, problem, constraint, *, eps, backend, init=None, model=None):
    """A score (or unconstrained) head through the backend contract (:mod:`solvers.backends`):
    ``model`` (a prepared backend model, e.g. a path's) or one prepared here; ``init`` a
    :class:`~solvers.backends.WarmStart`. Returns ``(Solution, Certificate)``."""
    build = 0.0
    if model is None:
        model = get_backend(backend, problem.n_classes).prepare(problem, constraint, est._fit_params())
        build = model.build_time  # the head's own problem building counts in its time
    design = model.design
    passes0 = design.passes if design is not None else None
    t0 = time.perf_counter()
    sol = model.solve(eps, init)
    wall = time.perf_counter() - t0 + build
    cert = make_score_certificate(est, problem, constraint, sol, eps=eps, backend=backend,
                                  linear_form=model.linear_form, cells=model.cells, wall=wall,
                                  ops=model.certificate_ops())
    if design is not None:
        cert = dataclasses.replace(cert, passes=design.passes - passes0,
                                   passes_lower_bound=passes_lower_bound(init is not None and init.theta is not None))
    return sol, cert


def make_score_certificate(est, problem, constraint, sol, *, eps, backend, linear_form, cells, wall, ops=None):
    if problem.n_classes > 2:
        obj, viol, stat = multinomial.certificate_numbers(
            problem, sol.coef, sol.intercept, sol.multipliers, eps=eps, C=float(est.C), penalty=est.penalty,
            linear_form=linear_form, ops=ops, fit_intercept=est.fit_intercept)
    else:
        obj, viol, stat = score_certificate_numbers(
            problem, constraint, sol.coef, sol.intercept, sol.multipliers, eps=eps, C=float(est.C),
            penalty=est.penalty, l1_ratio=est.l1_ratio, linear_form=linear_form, cells=cells, ops=ops,
            fit_intercept=est.fit_intercept, products=getattr(sol, "products", None),
        )
    status = sol.status
    tol = float(est.tol)
    # the reference solvers stop on their own criteria; judge both backends by ours, loosely
    # for cvxpy (interior point duals are accurate to ~sqrt of its gap tolerance)
    accept = tol if backend == "torch" else max(tol, 1e-5)
    # interior-point duals leave KKT residuals ~sqrt(gap) on ill-conditioned data, so cvxpy heads are
    # judged by the solver's own gap certificate plus our violation check; torch heads by both
    stat_bad = backend == "torch" and stat > 10 * accept
    if status == "optimal" and (viol > max(accept, 1e-9) or stat_bad):
        status = "optimal_inaccurate"
    name = None if constraint is None else constraint.name
    cert = Certificate(
        backend=backend, solver=sol.solver, status=status, constraint=name,
        eps=None if constraint is None or name == "minimax" else float(eps),
        objective=obj, max_violation=viol, stationarity=stat, n_iter=int(sol.n_iter), wall_time=float(wall),
        tol=tol, multipliers=tuple(float(x) for x in np.asarray(sol.multipliers).ravel()), notes=tuple(sol.notes),
    )
    return cert
