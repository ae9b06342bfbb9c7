"""``FairHead``: the fair logistic head itself (fit and scores), without scikit-learn.

:class:`FairHead` validates its parameters and data, builds the problem
(:mod:`solvers.problem`), hands it to a backend (:mod:`solvers.backends`) or the rate reduction
(:mod:`solvers.reductions`), and keeps the certified solution. Importing it costs numpy only:
the command line fits with it. :class:`solvers.FairLogisticRegression` is the same head as a
scikit-learn estimator (``clone``, pipelines, metadata routing, scikit-learn's input checks).
"""

from __future__ import annotations

import dataclasses
import inspect
import numbers
import time

import numpy as np
from fairhead_errors import one_line

from ._linalg import x_dot
from ._validation import Interval, Options, validate_params
from ._warnings import warn_at_caller
from .backends import FitParams, WarmStart, get_backend
from .backends.common import check_penalty
from .certificate import Certificate, passes_lower_bound, score_certificate_numbers
from . import multinomial
from .constraints import CONSTRAINTS, MSG_BINARY_ONLY, MULTICLASS_NAMES, Constraint, make_constraint
from .errors import ConvergenceWarning, DataError, SolverError
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


#: the float dtypes ``fit`` keeps as stored (anything else is converted to float64)
_KEPT_DTYPES = (np.dtype(np.float64), np.dtype(np.float32), np.dtype(np.float16))


def _plain_fit_arrays(X, y) -> bool:
    """Whether ``validate_data`` would hand ``X, y`` back as they are, without a message: ``X`` an
    ndarray of a kept float dtype, 2-D, at least one row and one column, every value finite; ``y``
    a numeric 1-D ndarray, finite, one label per row. Those skip the conversions (scikit-learn's
    checks took 0.15 ms, a twentieth of a fit on a few thousand rows); anything else goes through
    them, for their messages.
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
MSG_OOC_FEATURES = ("X has {got} features, but {head} is expecting {want} features as input; "
                    "pass features from the backbone (and cache) the head was fitted on")


MSG_NOT_LABELS = ("Unknown label type: {kind}: y holds {kind} values such as {examples}, not class labels; pass "
                  "labels such as 0/1 or class names (threshold a continuous target first)")
MSG_NOT_FITTED = "this {head} is not fitted yet; call fit with appropriate arguments before using this estimator"
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


def _feature_matrix(X, *, predicting: bool = False) -> np.ndarray:
    """``X`` as a 2-D float array of a kept dtype (others become float64), with every value finite;
    anything else is a one-line :class:`DataError` that names the fix."""
    nonfinite_fix = MSG_FIX_PREDICT_NONFINITE if predicting else MSG_FIX_NONFINITE
    X = X if isinstance(X, np.ndarray) else np.asarray(X)
    if X.dtype not in _KEPT_DTYPES:
        if X.dtype.kind not in "biufO":  # strings, dates, complex numbers: no features
            raise DataError(f"X holds {X.dtype} values, not numbers; {MSG_FIX_SHAPE}")
        try:
            X = X.astype(np.float64)
        except (TypeError, ValueError) as err:
            raise DataError(f"X holds values that are not numbers ({one_line(err)}); {MSG_FIX_SHAPE}") from err
    if X.ndim != 2:
        raise DataError(f"X has shape {X.shape}, not 2-D (n_samples, n_features); {MSG_FIX_SHAPE}")
    if X.shape[0] < 1 or X.shape[1] < 1:
        raise DataError(f"X has shape {X.shape}: at least one row and one feature are needed; {MSG_FIX_SHAPE}")
    # NaN propagates through max and min, and an infinity is one of them
    if not (np.isfinite(X.max()) and np.isfinite(X.min())):
        row = int(np.flatnonzero(~np.isfinite(X).all(axis=1))[0])
        raise DataError(f"X has a NaN or infinite feature in row {row}; {nonfinite_fix}")
    return X


def _label_vector(y, n: int) -> np.ndarray:
    """``y`` as one label per row of an ``n``-row ``X`` (a column vector is flattened)."""
    y = y if isinstance(y, np.ndarray) else np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise DataError(f"y has shape {y.shape}, not one label per row; {MSG_FIX_SHAPE}")
    if y.shape[0] != n:
        raise DataError(MSG_OOC_LENGTH.format(n=n, m=y.shape[0]))
    if y.dtype.kind == "f" and not np.isfinite(y).all():
        raise DataError(f"y has a NaN or infinite label in row {int(np.flatnonzero(~np.isfinite(y))[0])}; "
                        "drop the rows without a label")
    return y


def _check_labels(y: np.ndarray) -> None:
    """Refuse targets that are not class labels: non-integral floats (a continuous target) or values
    that are neither numbers nor strings."""
    if y.dtype.kind == "f" and not np.array_equal(y, np.floor(y)):
        raise DataError(MSG_NOT_LABELS.format(kind="continuous", examples=y[:3].tolist()))
    if y.dtype.kind not in "biufOUS":
        raise DataError(MSG_NOT_LABELS.format(kind=str(y.dtype), examples=y[:3].tolist()))


def _target_kind(n_classes: int) -> str:
    """scikit-learn's name for a target of ``n_classes`` class labels (``type_of_target``)."""
    return "binary" if n_classes <= 2 else "multiclass"


def _same_value(value, default) -> bool:
    """Whether a parameter still holds its default (what ``repr`` leaves out)."""
    try:
        return type(value) is type(default) and bool(value == default)
    except (TypeError, ValueError):  # an object without a truthy ==
        return False


#: the parameters and fitted attributes of :class:`FairHead` and :class:`~solvers.FairLogisticRegression`
#: (one text in both docstrings)
PARAMETERS_DOC = """    Parameters
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

"""


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


class FairHead:
    """The fair logistic head without scikit-learn: :class:`solvers.FairLogisticRegression`'s
    parameters, fit and scores, for code that must not pay scikit-learn's import (about 1 s, with
    scipy.stats and pandas): the command line fits with it.

    It minimises, over a binary head ``(w, b)`` (or a multinomial one, ``(W, b)``),

    .. math::

        \\frac{1}{V}\\sum_i v_i \\log(1 + e^{-s_i (x_i^\\top w + b)}) + \\frac{\\lVert w\\rVert^2}{2 C V}
        \\quad\\text{s.t.}\\quad c(w, b) \\le \\varepsilon,

    with ``c`` the constraint's bounded quantity (:mod:`solvers.constraints`). Every parameter,
    fitted attribute and method is :class:`~solvers.FairLogisticRegression`'s (see there); the
    two heads are equal bit for bit on the same data. What this one lacks is scikit-learn's
    machinery: ``clone``, ``score``, metadata routing, feature names of a DataFrame, and its
    input checks (arrays are converted by numpy here, with one-line errors). Its warnings are
    :class:`~solvers.errors.ConvergenceWarning`.

    {parameters}
    Examples
    --------
    >>> from solvers import FairHead
    >>> from solvers.synthetic import make_fair_classification
    >>> X, y, a = make_fair_classification(300, 4, seed=0)
    >>> head = FairHead(constraint="dp-score", eps=0.05).fit(X, y, sensitive_features=a)
    >>> head
    FairHead(constraint='dp-score')
    >>> head.certificate_.status, head.predict(X[:3]).tolist()
    ('optimal', [0, 0, 1])
    """

    #: the warning class of a missed bound or tolerance (scikit-learn's subclass adds its own base)
    _convergence_warning = ConvergenceWarning

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

    # ------------------------------------------------------------ parameters
    def get_params(self, deep=True) -> dict:
        """Return the constructor's parameters by name, as scikit-learn's ``get_params``.

        Parameters
        ----------
        deep : bool, default=True
            Unused (a head holds no estimators); scikit-learn's signature.

        Returns
        -------
        dict
            Parameter name -> value.
        """
        return {name: getattr(self, name) for name in self._parameter_constraints}

    def set_params(self, **params):
        """Set constructor parameters by name, as scikit-learn's ``set_params``.

        Parameters
        ----------
        **params : dict
            Parameter name -> new value (checked at the next ``fit``).

        Returns
        -------
        FairHead
            ``self``.
        """
        for name, value in params.items():
            if name not in self._parameter_constraints:
                raise DataError(f"invalid parameter {name!r} for {type(self).__name__}; valid parameters are "
                                f"{sorted(self._parameter_constraints)}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        defaults = {name: p.default for name, p in inspect.signature(FairHead.__init__).parameters.items()}
        changed = [f"{k}={v!r}" for k, v in self.get_params().items() if not _same_value(v, defaults.get(k))]
        return f"{type(self).__name__}({', '.join(changed)})"

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
        """The arrays checked and converted (:meth:`_validated_arrays`); for an out-of-core fit, the
        same checks done by streaming."""
        if self.max_memory is not None:
            parse_memory(self.max_memory)  # a bad size string: one line before any work
        if not isinstance(X, RowChunks):
            X, y = self._validated_arrays(X, y)
            _check_magnitude(X)
            return (X, y) if self.max_memory is None else (RowChunks(X, max_memory=self.max_memory), y)
        if self.max_memory is not None:
            X = X.with_budget(self.max_memory)
        y = _label_vector(y, X.shape[0])
        bad = X.first_nonfinite()
        if bad is not None:
            raise DataError(MSG_OOC_NONFINITE.format(row=bad))
        self._forget_feature_names(X.shape[1])
        return X, y

    def _forget_feature_names(self, n_features: int) -> None:
        """Record a refit's width; names of an earlier DataFrame no longer apply."""
        self.n_features_in_ = n_features
        if hasattr(self, "feature_names_in_"):
            del self.feature_names_in_

    def _validated_arrays(self, X, y):
        """``(X, y)`` as a finite float matrix and one label per row; plain float ndarrays as they are."""
        if not _plain_fit_arrays(X, y):
            X = _feature_matrix(X)
            y = _label_vector(y, X.shape[0])
        self._forget_feature_names(X.shape[1])
        return X, y

    def _check_targets(self, y) -> None:
        """Refuse targets that are not class labels (a continuous ``y``), one line with the fix."""
        _check_labels(np.asarray(y))

    def _validated_features(self, X):
        """``X`` to score: a finite float matrix as wide as the fitted one."""
        X = _feature_matrix(X, predicting=True)
        if X.shape[1] != self.n_features_in_:
            raise DataError(MSG_OOC_FEATURES.format(got=X.shape[1], head=type(self).__name__, want=self.n_features_in_))
        return X

    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise DataError(MSG_NOT_FITTED.format(head=type(self).__name__))

    def _prepare(self, X, y, sensitive_features, sample_weight):
        """Validate everything; return ``(FairProblem, constraint or None, backend name)``."""
        validate_params(self)
        if self.penalty == "elasticnet" and self.l1_ratio is None:
            raise DataError("penalty='elasticnet' needs l1_ratio in [0, 1]; pass l1_ratio")
        X, y = self._check_X_y(X, y)
        if np.asarray(y).dtype.kind not in "biu":  # integer labels are class labels: nothing to find
            self._check_targets(y)
        try:
            self.classes_ = unique_values(np.asarray(y))
        except TypeError as err:  # labels of several types (numbers and strings) do not sort
            raise DataError(f"y mixes label types ({one_line(err)}); pass labels of one type") from err
        K = self.classes_.shape[0]
        if K < 2:
            raise DataError(MSG_NOT_BINARY.format(kind=_target_kind(K), k=K,
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
            warn_at_caller(msg, self._convergence_warning)  # at the user's fit / iter_path line
        elif not cert.converged:
            warn_at_caller(
                MSG_NOT_CONVERGED.format(backend=cert.backend, solver=cert.solver, tol=cert.tol, status=cert.status,
                                         stat=cert.stationarity, viol=cert.max_violation, n_iter=cert.n_iter),
                self._convergence_warning,
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
        self._check_fitted()
        if isinstance(X, RowChunks):  # streamed: the same checks, then one pass
            if X.shape[1] != self.n_features_in_:
                raise DataError(MSG_OOC_FEATURES.format(got=X.shape[1], head=type(self).__name__,
                                                        want=self.n_features_in_))
            bad = X.first_nonfinite()
            if bad is not None:
                raise DataError(MSG_OOC_NONFINITE.format(row=bad).replace("before fitting", "before predicting"))
        else:
            X = self._validated_features(X)
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


FairHead.__doc__ = FairHead.__doc__.replace("    {parameters}\n", PARAMETERS_DOC)


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
