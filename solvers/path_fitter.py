"""``PathFitter``: the heads of one problem at several bounds, validated and prepared once.

:func:`solvers.iter_path` drives it; it works for :class:`~solvers.head.FairHead` and
:class:`~solvers.FairLogisticRegression` alike (each head is a fresh copy of the template's class).
"""

from __future__ import annotations

import copy

import numpy as np

from ._validation import validate_params
from . import multinomial
from .backends import WarmStart, get_backend
from .head import FairHead, _fit_score, with_stream_note


class PathFitter:
    """Heads of one problem at several bounds: validated and prepared once, one head per :meth:`fit`.

    :func:`solvers.iter_path` drives it. The data are validated as by
    :meth:`FairHead.fit` with ``estimator``'s parameters, once; the backend model
    (:mod:`solvers.backends`: the cvxpy problem with ``eps`` a DPP parameter, or the torch
    design and constraint rows) or a rate head's design is built at the first :meth:`fit` and
    kept. Each head starts from the previous head's :class:`~solvers.backends.WarmStart` (score
    heads also from the extrapolation of the last heads in ``eps``).

    Parameters
    ----------
    estimator : FairHead or FairLogisticRegression
        The template of every head: its class and parameters (its ``eps`` is the first bound's,
        for validation only).
    X, y, sensitive_features, sample_weight : as in :meth:`FairHead.fit`.
    init_head : FairHead or FairLogisticRegression, optional
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
    >>> from solvers.head import FairHead
    >>> from solvers.path_fitter import PathFitter
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200)
    >>> y = (X[:, 0] + s + rng.normal(size=200) > 0.5).astype(int)
    >>> fitter = PathFitter(FairHead(constraint="dp-score"), X, y, sensitive_features=s)
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

    def fit(self, eps: float, *, report: bool = True) -> FairHead:
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
    def report(head: FairHead) -> FairHead:
        """Raise ``head``'s warning about its certificate (or, ``strict``, its error); return it."""
        head._report(head.certificate_)
        return head

    @staticmethod
    def stand_in(head: FairHead, best: FairHead, certificate) -> FairHead:
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
    # what sklearn's clone(base) makes (the same parameters, unfitted), without re-validating and
    # deep-copying the parameters once per head: the constraint (a name or an object holding only
    # its init parameters) is copied once per head only when it is an object
    params = base.get_params(deep=False)
    if not isinstance(params.get("constraint"), (str, type(None))):
        params["constraint"] = _copy_constraint(params["constraint"])
    est = type(base)(**params).set_params(eps=eps)
    for attr in ("classes_", "n_features_in_", "groups_", "feature_names_in_"):
        if hasattr(base, attr):
            setattr(est, attr, getattr(base, attr))
    return est


def _copy_constraint(constraint):
    """A new constraint object from ``constraint``'s init parameters (what ``clone`` does with it),
    or a deep copy of a constraint given as a dict."""
    if hasattr(constraint, "get_params") and not isinstance(constraint, dict):
        params = {k: copy.deepcopy(v) for k, v in constraint.get_params(deep=False).items()}
        return type(constraint)(**params)
    return copy.deepcopy(constraint)
