"""A sweep over ``eps`` with warm starts.

* cvxpy: the problem is built once with ``eps`` as a ``cp.Parameter`` and re-solved (DPP).
* torch (score constraints): each point starts from the previous head, shrunk toward
  ``w = 0`` until it is feasible for the new bound, with the previous working set; the
  design (``X`` on the device) and the constraint rows are built once.
* rate constraints: the design is built once; each point starts from the previous head, its
  multipliers, rate gaps and L-BFGS pairs, probes first where the multipliers of the last heads
  extrapolate to, and accepts a converged fit that lands just inside the bound. A point whose
  warm search misses the bound gets exactly the cold search (so it never ends worse than a
  cold solve); see :func:`solvers.reductions.fit_rate_constraint`.
* torch certificates reuse the solver's last scores and ``X^T r`` at the returned head.

:func:`iter_path` drives :class:`solvers.path_fitter.PathFitter` (validate and prepare once, one
head per bound through the backend contract of :mod:`solvers.backends`). Heads are
:class:`~solvers.FairLogisticRegression` unless a :class:`~solvers.FairHead` template is passed
(``estimator=``): then nothing here imports scikit-learn.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ._validation import validate_params
from .errors import DataError
from .head import FairHead
from .path_fitter import PathFitter, _fresh

#: how the note of a head that a path replaced starts (:func:`replacement_note` finds it)
REPLACED_PREFIX = "this bound's own search ended at"
#: a head whose own search missed its bound takes a path head that meets it
UNMET_NOTE = (REPLACED_PREFIX + " gap {gap:.4g}; the head of eps={eps:g} meets it (feasibility is monotone along "
              "the path)")
#: a head that met its bound takes a more accurate path head that meets it too
REPLACED_NOTE = (REPLACED_PREFIX + " 0-1 error {error:.4g}; the head of eps={eps:g} meets it at {best_error:.4g} "
                 "(the front is monotone)")


def fit_path(X, y, *, sensitive_features, eps_grid, sample_weight=None, init_head=None, estimator=None,
             **estimator_params):
    r"""Fit one head per ``eps`` in ``eps_grid`` (in the given order), warm-starting each.

    Each head solves :class:`FairLogisticRegression`'s problem at its own bound,

    .. math::

        \min_{w, b}\ \frac{1}{V}\sum_i v_i \ell(y_i, x_i^\top w + b) + \frac{\lVert w\rVert^2}{2 C V}
        \quad\text{s.t.}\quad c(w, b) \le \varepsilon_k, \qquad k = 1, \dots, K,

    where ``c`` is the constraint's own bounded quantity. Tighter bounds give heads with a
    smaller gap and (weakly) lower accuracy on the fit data.

    The list form of :func:`iter_path`; see there. Rate constraints: with every head solved, the
    front is made monotone too: a head is replaced by a copy of the path's most accurate head (on
    the fit split) that meets its bound, when that head is more accurate (a tighter bound's head
    meets every looser bound; the searches of two bounds may end in different places).

    Parameters
    ----------
    X : array-like of shape (n_samples, n_features) or RowChunks
    y : array-like of shape (n_samples,)
    sensitive_features : array-like of shape (n_samples,) or (n_samples, n_attributes)
    eps_grid : sequence of float
        The bounds, fitted in the given order (loosest first is fastest: warm starts).
    sample_weight : array-like of shape (n_samples,), optional
    init_head : FairLogisticRegression, optional
        A head already fitted on the same data (see :func:`iter_path`).
    estimator : FairHead or FairLogisticRegression, optional
        The template of every head (see :func:`iter_path`).
    **estimator_params : parameters of :class:`FairLogisticRegression` (``constraint``, ``C``, ...).

    Returns
    -------
    list of FairLogisticRegression (or of the template's class)
        One fitted head per ``eps``, each with its ``certificate_``.

    Examples
    --------
    >>> import numpy as np
    >>> from solvers import fit_path
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 3)); s = rng.integers(0, 2, 200)
    >>> y = (X[:, 0] + s + rng.normal(size=200) > 0.5).astype(int)
    >>> heads = fit_path(X, y, sensitive_features=s, eps_grid=[0.2, 0.1], constraint="dp-score")
    >>> [h.eps for h in heads]
    [0.2, 0.1]
    """
    heads = list(iter_path(X, y, sensitive_features=sensitive_features, eps_grid=eps_grid,
                           sample_weight=sample_weight, init_head=init_head, estimator=estimator,
                           **estimator_params))
    take = monotone_front([h.certificate_ for h in heads])
    return [head if i == j else _replaced(head, heads[i]) for j, (head, i) in enumerate(zip(heads, take))]


def monotone_front(certificates) -> list[int]:
    """Which solved head each bound of a rate path takes, so that its front is monotone.

    ``certificates`` are the certificates of a path's heads, in grid order (as
    :func:`iter_path` yields them). Entry ``j`` of the result is ``j`` itself, or the index of
    the path's most accurate head on the fit split (least 0-1 error; ties: the smaller gap, then
    the earlier head) among those that meet bound ``j``, when that head is more accurate than
    head ``j``. Only a rate head that meets its own bound is replaced (a tighter bound's head
    meets every looser bound; the searches of two bounds may end in different places). Score
    heads (no 0-1 error) keep their own.

    :func:`fit_path` applies it to its heads, and ``fairhead sweep`` to its records (whose
    certificates come back from the progress file), so that both give the same heads.
    """
    certs = list(certificates)
    take = []
    for j, cert in enumerate(certs):
        if cert.zero_one_error is None or not cert.eps_met:
            take.append(j)
            continue
        ok = [i for i, c in enumerate(certs)
              if c.achieved_gap is not None and c.zero_one_error is not None and c.achieved_gap <= cert.eps]
        best = min(ok, key=lambda i: (certs[i].zero_one_error, certs[i].achieved_gap), default=j)
        take.append(best if certs[best].zero_one_error < cert.zero_one_error else j)
    return take


def replaced_certificate(own, best):
    """The certificate of bound ``own.eps`` when it takes the head of ``best`` (see
    :func:`monotone_front`): ``best``'s head and gaps, this bound's own search cost, and a note
    (the last one) saying so."""
    note = REPLACED_NOTE.format(error=own.zero_one_error, eps=best.eps, best_error=best.zero_one_error)
    return dataclasses.replace(
        best, eps=own.eps, status="eps_met", eps_met=True, max_violation=0.0, notes=tuple(best.notes) + (note,),
        wall_time=own.wall_time, n_iter=own.n_iter, passes=own.passes, aimed_at=own.aimed_at,
        resolution=own.resolution)


def replacement_note(certificate) -> str:
    """The note saying that a path replaced this bound's own head (see :func:`monotone_front` and
    :func:`iter_path`), or ``""``."""
    notes = tuple(certificate.notes)
    return notes[-1] if notes and notes[-1].startswith(REPLACED_PREFIX) else ""


def rate_resolution(y, *, sensitive_features, sample_weight=None, **estimator_params) -> float | None:
    r"""The resolution of a rate constraint's gaps on this data, or ``None`` for a score constraint.

    A gap :math:`\gamma_k = \sum_i M_{ki} (a_i \hat y_i + b_i)` moves by at most
    :math:`\max_{k,i} |M_{ki} a_i|` when one prediction flips: one row's weight over its group's
    (less its share of the overall rate). The search aims at ``max(eps, resolution)``, so a bound
    below it is met, if at all, by a (near) constant head; the heads' certificates record the same
    number (``resolution``). It depends on the labels, groups and weights only (``balance`` changes
    the weights), not on the features: ``y`` and ``sensitive_features`` are validated as by
    :meth:`FairHead.fit` with ``estimator_params``, and no pass over ``X`` is made.
    """
    estimator_params.pop("eps", None)
    estimator_params.pop("max_memory", None)
    no_features = np.zeros((len(y), 1), dtype=np.float32)  # stands for X: one column, never read
    fitter = PathFitter(FairHead(**estimator_params), no_features, y,
                        sensitive_features=sensitive_features, sample_weight=sample_weight)
    problem, constraint = fitter.problem, fitter.constraint
    if constraint is None or constraint.kind != "rate":
        return None
    mom = constraint.moments(problem.y, problem.groups, problem.sample_weight, problem.group_labels,
                             n_classes=problem.n_classes)
    if problem.n_classes > 2:
        return mom.resolution
    Ma = mom.M * mom.a
    return float(np.abs(Ma).max()) if Ma.size else 0.0


def iter_path(X, y, *, sensitive_features, eps_grid, sample_weight=None, init_head=None, estimator=None,
              **estimator_params):
    """Yield one fitted head per ``eps`` in ``eps_grid`` (in the given order), warm-starting each.

    A generator, so a caller can record each head as soon as it is solved (``fairhead
    sweep`` writes its progress file this way and resumes after an interruption).

    Rate constraints: feasibility is monotone along the path. A head that meets a bound meets
    every looser one, so a head whose search misses its bound is replaced by the best head of
    the path (least weighted error on the fit split) that meets it, whether solved before or
    after it; heads are still yielded in grid order (an unmet head waits for the later ones).
    A head that meets its bound is yielded as solved: the monotone front (a more accurate head
    of a tighter bound taking its place) needs the whole path, so :func:`fit_path` and
    ``fairhead sweep`` apply :func:`monotone_front` once every head is solved.

    Parameters
    ----------
    X, y, sensitive_features, sample_weight : as in :meth:`FairLogisticRegression.fit`.
    eps_grid : sequence of float
        The bounds, fitted in the given order (loosest first is fastest: warm starts).
    init_head : FairLogisticRegression, optional
        A head already fitted on the same data (``fairhead sweep`` passes the unconstrained
        one): the first point starts from its coefficients instead of from scratch, so a bound
        that head already meets costs one check instead of a refit.
    estimator : FairHead or FairLogisticRegression, optional
        The template of every head: each is a fresh copy of its class with its parameters
        (``estimator_params`` override them; its ``eps`` is ignored). The default is
        ``FairLogisticRegression(**estimator_params)``; a :class:`~solvers.FairHead` gives the
        same heads without importing scikit-learn (the command line's sweep).
    **estimator_params : parameters of :class:`FairLogisticRegression` (``eps`` is ignored).

    Yields
    ------
    FairLogisticRegression (or the template's class)
        Fitted heads, one per ``eps`` (each with its own ``certificate_``).

    Examples
    --------
    >>> from solvers import iter_path
    >>> from solvers.synthetic import make_fair_classification
    >>> X, y, a = make_fair_classification(300, 4, seed=0)
    >>> for head in iter_path(X, y, sensitive_features=a, eps_grid=[0.2, 0.05], constraint="dp-score"):
    ...     print(head.eps, head.certificate_.max_violation <= 1e-6)
    0.2 True
    0.05 True
    """
    estimator_params.pop("eps", None)
    base = _template(estimator, estimator_params)
    grid = list(eps_grid)
    if not grid:
        return
    for e in grid:  # the estimator's own rule for eps, on every bound, before any fit
        validate_params(_fresh(base, e))
    grid = [float(e) for e in grid]
    from .constraints import make_constraint

    unbounded = make_constraint(base.constraint)
    if unbounded is not None and unbounded.name == "minimax" and len(set(grid)) > 1:
        raise DataError("constraint 'minimax' minimises the largest group loss and has no bound: every eps of the "
                        f"grid ({len(set(grid))} values) would give the same head; pass one eps (e.g. eps_grid=[0])")
    base.set_params(eps=grid[0])
    fitter = PathFitter(base, X, y, sensitive_features=sensitive_features, sample_weight=sample_weight,
                        init_head=init_head)
    if not fitter.rate:
        for e in grid:
            yield fitter.fit(e)
        return
    solved, queue = [], []
    for e in grid:
        est = fitter.fit(e, report=False)
        solved.append(est)
        queue.append(est)
        # a head whose bound is unmet waits: a later (tighter) head may meet it
        queue = [_best_meeting(h, solved) for h in queue]
        while queue and queue[0].certificate_.eps_met is not False:
            yield PathFitter.report(queue.pop(0))
    for head in queue:
        yield PathFitter.report(head)


def _template(estimator, params: dict):
    """The base head of a path: ``estimator``'s class and parameters updated by ``params``, or a
    :class:`~solvers.FairLogisticRegression` of ``params``."""
    if estimator is None:
        from .estimator import FairLogisticRegression  # deferred: scikit-learn (about 1 s)

        return FairLogisticRegression(**params)
    if not isinstance(estimator, FairHead):
        raise DataError(f"estimator is a {type(estimator).__name__}; pass a solvers.FairHead or "
                        "FairLogisticRegression (its parameters are every head's), or leave it out")
    return type(estimator)(**{**estimator.get_params(deep=False), **params})


def _fit_error(cert) -> float:
    """What a head minimised on the fit split: the 0-1 error for rate heads, else the logistic objective."""
    return cert.zero_one_error if cert.zero_one_error is not None else cert.objective


def _best_meeting(head, solved):
    """``head``, or when its bound is unmet, a copy of the best solved head that meets that bound."""
    cert = head.certificate_
    if cert.eps_met is not False:
        return head
    ok = [h for h in solved if h.certificate_.achieved_gap is not None and h.certificate_.achieved_gap <= cert.eps]
    if not ok:
        return head
    best = min(ok, key=lambda h: (_fit_error(h.certificate_), h.certificate_.achieved_gap))
    note = UNMET_NOTE.format(gap=cert.achieved_gap, eps=best.certificate_.eps)
    return PathFitter.stand_in(head, best, dataclasses.replace(
        best.certificate_, eps=cert.eps, status="eps_met", eps_met=True, max_violation=0.0,
        notes=tuple(best.certificate_.notes) + (note,),
        # the cost is this bound's own search
        wall_time=cert.wall_time, n_iter=cert.n_iter, passes=cert.passes, aimed_at=cert.aimed_at))


def _replaced(head, best):
    """A copy of ``best`` standing for ``head``'s bound (see :func:`monotone_front`)."""
    return PathFitter.stand_in(head, best, replaced_certificate(head.certificate_, best.certificate_))


__all__ = ["fit_path", "iter_path", "monotone_front", "rate_resolution", "replaced_certificate",
           "replacement_note"]
