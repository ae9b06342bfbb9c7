"""Fairness constraints: one small class each, defined once for both backends.

Two families
------------
*Score* constraints bound functions of the linear score :math:`z = x^\\top w + b`. They are
convex; the cvxpy backend certifies them and the torch backend reaches the same optimum.

* linear ones (:class:`DemographicParityScore`, :class:`EqualOpportunityScore`,
  :class:`EqualizedOddsScore`, :class:`CovarianceConstraint`) expose
  :meth:`LinearScoreConstraint.linear_form` -> ``LinearForm(A, c0)`` meaning
  ``A @ [w; b] <= eps + c0`` (numpy only). Every linear form here is homogeneous in ``w``
  (``c0 = 0`` and ``A[:, -1] = 0``), so ``w = 0`` is feasible for every ``eps >= 0``.
* loss ones (:class:`GroupLoss`, :class:`MinimaxLoss`) hand over cell codes instead.

*Rate* constraints (:class:`DemographicParity`, :class:`EqualOpportunity`,
:class:`EqualizedOdds`, :class:`ErrorRateParity`) bound gaps in hard-prediction rates on
the fit split. They expose :meth:`RateConstraint.moments` -> ``RateMoments`` (a matrix ``M``
with ``gaps = M @ (a * yhat + b0)``), used by :mod:`solvers.reductions`.

*K classes* (the multinomial head, :mod:`solvers.multinomial`): ``dp``, ``eopp``, ``eo`` and
their score versions hold **per class** ``k`` and group ``g``, one-vs-rest: ``dp`` bounds
:math:`|P(\\hat y = k \\mid g) - P(\\hat y = k)|`, ``eopp`` the same given ``y = k``, ``eo`` given
``y = k`` and given ``y \\ne k``; the score versions bound the same means of the class-``k``
logit :math:`z_k = x^\\top w_k + b_k` (the centred logit: fitted heads have
:math:`\\sum_k w_k = 0`, :math:`\\sum_k b_k = 0`). ``cov``, ``group-loss``, ``minimax`` and
``error-rate`` are binary only (:attr:`Constraint.multiclass`).

This module imports neither cvxpy nor torch.

Examples
--------
>>> from solvers.constraints import CONSTRAINTS, make_constraint
>>> eo = make_constraint("eo")
>>> eo.name, eo.kind, eo.metric, type(eo) is CONSTRAINTS["eo"]
('eo', 'rate', 'equalized_odds_difference', True)
>>> make_constraint("dp-score").kind
'score'
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._linalg import cell_sums, xt_dot
from .errors import DataError

MSG_UNKNOWN_CONSTRAINT = (
    "unknown constraint {got!r}; use one of {names} or a solvers.constraints.Constraint object"
)
MSG_BINARY_ONLY = (
    "constraint {name!r} is defined for binary labels only, and y has {k} classes; "
    "pick one of {names} (per class, one-vs-rest) or binarise y"
)
MSG_MINIMAX_CELLS = "MinimaxLoss cells must be 'group' or 'label-group'; got {got!r}"


@dataclass(frozen=True)
class LinearForm:
    """``A @ [w; b] <= eps + c0`` with row names: a linear score constraint, in numpy.

    Parameters
    ----------
    A : numpy.ndarray of shape (R, n_params)
        One row per bounded quantity and sign, acting on the head's ``[w; b]``.
    c0 : numpy.ndarray of shape (R,)
        Offsets (zero for the constraints here).
    names : tuple of str
        A readable name per row.
    """

    A: np.ndarray
    c0: np.ndarray
    names: tuple


@dataclass(frozen=True)
class ClassRateMoments:
    """K-class rate gaps: ``gaps_r = M_r @ [yhat = classes_r]`` for class codes ``yhat``.

    The constraint is ``|gaps_r| <= eps`` for every row r.

    Parameters
    ----------
    M : numpy.ndarray of shape (R, n_samples)
        The gap rows.
    classes : numpy.ndarray of shape (R,)
        The class each row is about.
    n_classes : int
        K.
    names : tuple of str
        A readable name per row.
    """

    M: np.ndarray  # (R, n)
    classes: np.ndarray  # (R,) the class each row is about
    n_classes: int
    names: tuple

    def gaps(self, yhat: np.ndarray) -> np.ndarray:
        """Evaluate the gaps of given predictions.

        Parameters
        ----------
        yhat : numpy.ndarray of shape (n_samples,)
            Predicted class codes.

        Returns
        -------
        numpy.ndarray of shape (R,)
            The gaps.
        """
        yhat = np.asarray(yhat).astype(np.int64)
        out = np.empty(self.M.shape[0])
        for k in range(self.n_classes):
            rows = self.classes == k
            if rows.any():
                out[rows] = self.M[rows] @ (yhat == k).astype(np.float64)
        return out

    def costs(self, lam: np.ndarray) -> np.ndarray:
        """``C (n, K)``: what predicting class k for row i adds to ``lam @ gaps``.

        Parameters
        ----------
        lam : numpy.ndarray of shape (R,)
            One multiplier per gap row.

        Returns
        -------
        numpy.ndarray of shape (n_samples, n_classes)
            ``C[i, k]``: what predicting class k for row i adds to ``lam @ gaps``.
        """
        C = np.zeros((self.M.shape[1], self.n_classes))
        for k in range(self.n_classes):
            rows = self.classes == k
            if rows.any():
                C[:, k] = self.M[rows].T @ lam[rows]
        return C

    @property
    def resolution(self) -> float:
        """The largest change of a gap from one prediction (one row's weight over its group's)."""
        return float(np.abs(self.M).max()) if self.M.size else 0.0


@dataclass(frozen=True)
class RateMoments:
    """``gaps = M @ (a * yhat + b0)``; constraint ``|gaps_k| <= eps`` for every row k.

    Parameters
    ----------
    M : numpy.ndarray of shape (R, n_samples)
        The gap rows.
    a, b0 : numpy.ndarray of shape (n_samples,)
        The utility of a prediction, ``a * yhat + b0`` (``yhat`` itself, or the error ``[yhat != y]``).
    names : tuple of str
        A readable name per row.
    """

    M: np.ndarray  # (K, n)
    a: np.ndarray  # (n,)
    b0: np.ndarray  # (n,)
    names: tuple

    def gaps(self, yhat: np.ndarray) -> np.ndarray:
        """Evaluate the gaps of given predictions.

        Parameters
        ----------
        yhat : numpy.ndarray of shape (n_samples,)
            Predictions, 0/1.

        Returns
        -------
        numpy.ndarray of shape (R,)
            The gaps.
        """
        return self.M @ (self.a * yhat + self.b0)


@dataclass(frozen=True)
class RatioMoments(RateMoments):
    """One-sided ratio rows: ``sel_g >= (1 - eps) sel_h`` for every ordered pair of groups.

    ``rates @ yhat`` are the group selection rates ``sel`` (G,). The search's rows ``M`` are the
    linear form of the bound at its ``eps``, :math:`((1 - \\varepsilon) m_h - m_g)\\cdot\\hat y
    \\le 0`, which prices predictions in the reduction's weighted fits; its ``gaps`` are the
    pairs' **ratio shortfalls** :math:`[1 - sel_g / sel_h]_+` (0 where ``sel_h = 0``), which do
    not depend on eps and are at most eps exactly when the bound holds. Clamped at 0, a gap never
    binds from below, so the search's ``|gaps_k| <= eps`` is the one-sided bound.

    Parameters
    ----------
    M : numpy.ndarray of shape (R, n_samples)
        The bound's linear rows at its eps, one per ordered pair of groups.
    a, b0 : numpy.ndarray of shape (n_samples,)
        The utility of a prediction (``yhat`` itself: ``a = 1``, ``b0 = 0``).
    names : tuple of str
        A readable name per row.
    rates : numpy.ndarray of shape (n_groups, n_samples)
        ``rates @ yhat`` are the group selection rates.
    pairs : tuple of (int, int)
        The groups ``(g, h)`` of each row.
    """

    rates: np.ndarray = None  # (G, n)
    pairs: tuple = ()  # (g, h) of each row

    def shortfalls(self, sel: np.ndarray) -> np.ndarray:
        """The ratio shortfall ``[1 - sel_g / sel_h]_+`` of every row (0 where ``sel_h = 0``).

        Parameters
        ----------
        sel : numpy.ndarray of shape (n_groups,) or (m, n_groups)
            Group selection rates (one row per threshold).

        Returns
        -------
        numpy.ndarray of shape (R,) or (m, R)
            The shortfalls.
        """
        sel = np.asarray(sel, dtype=np.float64)
        g, h = (np.array([p[i] for p in self.pairs], dtype=np.int64) for i in (0, 1))
        num, den = sel[..., g], sel[..., h]
        out = np.zeros(np.broadcast(num, den).shape)
        np.divide(num, den, out=out, where=den > 0)
        return np.where(den > 0, np.maximum(1.0 - out, 0.0), 0.0)

    def gaps(self, yhat: np.ndarray) -> np.ndarray:
        """The ratio shortfalls of given predictions.

        Parameters
        ----------
        yhat : numpy.ndarray of shape (n_samples,)
            Predictions, 0/1.

        Returns
        -------
        numpy.ndarray of shape (R,)
            ``[1 - sel_g / sel_h]_+`` per ordered pair of groups.
        """
        return self.shortfalls(self.rates @ np.asarray(yhat, dtype=np.float64))

    @property
    def exclusive(self) -> tuple:
        """Row pairs that never bind together: ``(g, h)`` and ``(h, g)`` (both bound at once only
        where both rates are 0)."""
        index = {p: k for k, p in enumerate(self.pairs)}
        return tuple((k, index[(h, g)]) for k, (g, h) in enumerate(self.pairs) if g < h)

    @property
    def scan_moments(self) -> RateMoments:
        """The group rates as rate rows: a threshold scan of them gives ``sel`` at every threshold
        (:meth:`shortfalls` turns those into the gaps)."""
        return RateMoments(M=self.rates, a=np.ones(self.rates.shape[1]), b0=np.zeros(self.rates.shape[1]),
                           names=tuple(f"sel,{k}" for k in range(self.rates.shape[0])))


class Constraint:
    """Base class. Subclasses keep only their init parameters (so ``clone`` works)."""

    name: str = ""
    kind: str = ""  # "score" or "rate": how the backends solve it
    #: "score" (linear in the score), "loss" (group losses of the score) or "rate" (hard predictions)
    family: str = ""
    needs_label_cells: bool = False
    #: whether the constraint has a K-class (one-vs-rest, per class) version
    multiclass: bool = False
    #: whether ``eps`` bounds anything (``False``: the constraint is an objective, ``eps`` unused)
    bounded: bool = True
    #: the (unbounded) constraint whose head gives this one's tightest feasible bound (``None``: the
    #: bound can go to 0); a sweep's default grid starts its search there
    floor_from: str | None = None
    #: the between-groups difference (a key of :func:`solvers.metrics.evaluate`) reported for it
    metric: str = ""
    #: the unit of its own bounded value (``constraint_value``), for plot axes
    label: str = ""
    #: its fairlearn counterparts, as plain names (``solvers`` never imports fairlearn): the
    #: ``fairlearn.reductions`` moment class and ThresholdOptimizer's ``constraints=`` string
    #: (``None``: fairlearn has no such form)
    fairlearn_moment: str | None = None
    fairlearn_threshold: str | None = None
    #: the seed paper's penalty form of the same fairness notion (``None``: it has none)
    paper: str | None = None
    #: the :mod:`solvers.intervals` gap name for its hard-prediction gap and the group rates that
    #: gap compares (``None``: no interval of its own; its ``metric`` is another constraint's)
    gap: str | None = None
    group_rates: tuple = ()
    #: the rate constraint that bounds the hard-prediction gap a score constraint only approximates
    rate_form: str | None = None
    _param_names: tuple = ()

    def get_params(self, deep: bool = True) -> dict:
        """Return the init parameters, as scikit-learn's ``get_params``.

        Parameters
        ----------
        deep : bool, default=True
            Unused (a constraint holds no estimators); scikit-learn's signature.

        Returns
        -------
        dict
            Parameter name -> value.
        """
        return {k: getattr(self, k) for k in self._param_names}

    def set_params(self, **params):
        """Set init parameters, as scikit-learn's ``set_params``.

        Parameters
        ----------
        **params : dict
            Parameter name -> new value.

        Returns
        -------
        Constraint
            ``self``.
        """
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def to_dict(self) -> dict:
        """Return the name and parameters (what a head file stores; :func:`make_constraint` reads it).

        Returns
        -------
        dict
            ``{"name": ..., **params}``.
        """
        return {"name": self.name, **self.get_params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def __eq__(self, other) -> bool:
        return type(self) is type(other) and self.get_params() == other.get_params()

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(self.get_params().items()))))


def _event_masks(event: str, y: np.ndarray) -> list[tuple[str, np.ndarray]]:
    if event == "all":
        return [("all", np.ones(y.shape[0], dtype=bool))]
    if event == "y=1":
        return [("y=1", y == 1)]
    if event == "y=0":
        return [("y=0", y == 0)]
    if event == "label":
        return [("y=1", y == 1), ("y=0", y == 0)]
    raise ValueError(event)  # pragma: no cover - internal


def _class_event_masks(event: str, y: np.ndarray, k: int) -> list[tuple[str, np.ndarray]]:
    """The events of class k, one-vs-rest: all rows, ``y = k``, ``y != k``, or ``y = k`` and ``y != k``."""
    if event == "all":
        return [("all", np.ones(y.shape[0], dtype=bool))]
    if event == "y=1":
        return [(f"y={k}", y == k)]
    if event == "y=0":
        return [(f"y!={k}", y != k)]
    if event == "label":
        return [(f"y={k}", y == k), (f"y!={k}", y != k)]
    raise ValueError(event)  # pragma: no cover - internal


def _parity_matrix(event: str, y, groups, sw, n_groups, labels, masks=None):
    """Rows ``m_k`` with ``m_k @ u = mean_{E,g} u - mean_E u`` (v-weighted), one per (event E, group g)."""
    rows, names = [], []
    for ename, emask in (_event_masks(event, y) if masks is None else masks):
        ve = sw * emask
        VE = ve.sum()
        for g in range(n_groups):
            vg = ve * (groups == g)
            Vg = vg.sum()
            if Vg <= 0 or VE <= 0:
                raise DataError(
                    f"group {labels[g]!r} has no weight in event {ename}; "
                    "this constraint needs every group in every event; merge groups or pick another constraint"
                )
            rows.append(vg / Vg - ve / VE)
            names.append(f"{ename},g={labels[g]}")
    return np.asarray(rows), names


def _parity_cells(event: str, y, groups, sw, n_groups):
    """``(codes, B)``: the rows of :func:`_parity_matrix` as combinations of cell sums.

    Row ``i`` is in cell ``codes[i] = e G + g_i`` for the event ``E_e`` that holds it (-1: none;
    a constraint's events are disjoint); with ``U[c] = v [codes = c]`` the cells' weights, ``M =
    B @ U``: :math:`m_{E,g} = u_{E,g} / V_{E,g} - \\sum_h u_{E,h} / V_E`. Why: the rows
    ``B @ S`` from the cell sums ``S = U X`` stay exactly dependent
    (:math:`\\sum_g V_{E,g} m_{E,g} = 0`, to float64 rounding of ``B``) whatever rounding ``S``
    carries, so it cannot turn them into an extra independent row.
    """
    events = _event_masks(event, y)
    codes = np.full(len(y), -1, dtype=np.int64)
    for e, (_, emask) in enumerate(events):
        codes[emask] = e * n_groups + groups[emask]
    inside = codes >= 0
    Vc = np.bincount(codes[inside], weights=sw[inside], minlength=len(events) * n_groups)
    B = np.zeros((len(Vc), len(Vc)))
    for e in range(len(events)):
        cells = slice(e * n_groups, (e + 1) * n_groups)
        B[cells, cells] = np.diag(1.0 / Vc[cells]) - 1.0 / Vc[cells].sum()
    return codes, B


def _cells_are_faster(X, sample_weight, matmul) -> bool:
    """Whether the cells' sums beat the float64 product ``M @ X``: a given product, or float16/float32
    features with equal weights (:func:`~solvers._linalg.cell_sums` reads them without a float64
    copy; float64 features or weighted rows are one product either way)."""
    sw = np.asarray(sample_weight)
    return matmul is not None or (X.dtype != np.float64 and bool(sw.size) and bool(np.all(sw == sw[0])))


def _class_parity_matrix(event: str, y, groups, sw, labels, n_classes: int):
    """The parity rows of every class (one-vs-rest events); returns ``(M, classes, names)``."""
    rows, classes, names = [], [], []
    for k in range(n_classes):
        M, nm = _parity_matrix(event, y, groups, sw, len(labels), labels, masks=_class_event_masks(event, y, k))
        rows.append(M)
        classes += [k] * len(nm)
        names += [f"class={k},{s}" for s in nm]
    return np.vstack(rows), np.asarray(classes, dtype=np.int64), names


class ScoreConstraint(Constraint):
    """Base of score constraints: they bound functions of the linear score ``z = x @ w + b``."""

    kind = "score"
    family = "score"


class LinearScoreConstraint(ScoreConstraint):
    """Base of linear score constraints: ``|m_k(z)| <= eps`` for linear functionals m_k."""

    event = "all"
    multiclass = True

    def _functionals(self, y, groups, sw, labels):
        """Rows of shape (K, n): the linear functionals of z to bound."""
        return _parity_matrix(self.event, y, groups, sw, len(labels), labels)

    def _cells(self, y, groups, sw, labels):
        """``(codes, B)``: each row's cell (-1: none) and the rows' coefficients ``B`` (R, C) on the
        cells' weights ``U[c] = v [codes = c]``: ``M = B @ U``."""
        return _parity_cells(self.event, y, groups, sw, len(labels))

    def linear_form(self, X, y, groups, sample_weight, labels, *, matmul=None, n_classes=2,
                    from_cells=False) -> LinearForm:
        """Return ``LinearForm(A, c0)``: ``A @ [w; b] <= eps + c0`` (both signs of each row).

        ``matmul(X, R)`` computes ``X.T @ R`` (default: float64 numpy in blocks). With
        ``from_cells`` (the torch backend), on float16/float32 features with equal weights, the
        binary rows are ``B @ S`` from the cells' float64 sums ``S = U X`` (``M = B @ U``;
        :func:`~solvers._linalg.cell_sums`, without a float64 copy of ``X``, unless ``matmul`` is
        given): the same rows to float64 rounding, exactly dependent where they are in exact
        arithmetic. Elsewhere the float64 product is as fast and the rows are its own. With ``n_classes`` K > 2 the rows act on the
        class-by-class ``theta`` of :mod:`solvers.multinomial`: row ``m`` of class k bounds
        ``m @ (z_k - mean_j z_j)``, the centred class-k logit (so a common shift of every class,
        which leaves the softmax unchanged, leaves the rows unchanged too).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features) or RowChunks
            The features.
        y : numpy.ndarray of shape (n_samples,)
            Label codes (0/1; class codes ``0 .. K-1`` for K classes).
        groups : numpy.ndarray of shape (n_samples,)
            Group codes ``0 .. len(labels) - 1``.
        sample_weight : numpy.ndarray of shape (n_samples,)
            Row weights (the fit's, after ``balance``).
        labels : sequence
            The group labels, in code order (they name the rows).
        matmul : callable, optional
            ``matmul(X, R)`` computes ``X.T @ R``.
        n_classes : int, default=2
            Classes of the head; K > 2 gives the class-by-class rows.
        from_cells : bool, default=False
            Build the binary rows from the cells' sums where that is faster.

        Returns
        -------
        LinearForm
            Both signs of every bounded row, ``c0 = 0``.
        """
        if n_classes > 2:
            return self._class_linear_form(X, y, groups, sample_weight, labels, matmul, n_classes)
        M, names = self._functionals(y, groups, sample_weight, labels)  # checks every cell has weight
        if from_cells and _cells_are_faster(X, sample_weight, matmul):
            codes, B = self._cells(y, groups, sample_weight, labels)
            if matmul is None:
                S = cell_sums(X, codes, sample_weight, B.shape[1])
            else:
                U = np.zeros((len(codes), B.shape[1]))
                U[np.flatnonzero(codes >= 0), codes[codes >= 0]] = sample_weight[codes >= 0]
                S = matmul(X, U).T
            Aw = B @ S  # (R, d): m_k @ X
        else:
            Aw = (xt_dot if matmul is None else matmul)(X, M.T).T  # (R, d): m_k @ X
        Ab = M.sum(axis=1)  # ~0 for parity rows
        A1 = np.hstack([Aw, Ab[:, None]])
        A1[:, -1] = np.where(np.abs(A1[:, -1]) < 1e-12, 0.0, A1[:, -1])
        A = np.vstack([A1, -A1])
        names2 = tuple(f"+({s})" for s in names) + tuple(f"-({s})" for s in names)
        return LinearForm(A=A, c0=np.zeros(A.shape[0]), names=names2)

    def _class_linear_form(self, X, y, groups, sw, labels, matmul, K) -> LinearForm:
        M, classes, names = _class_parity_matrix(self.event, y, groups, sw, labels, K)
        Mx = (xt_dot if matmul is None else matmul)(X, M.T).T  # (R, d)
        Mb = M.sum(axis=1)
        Mb = np.where(np.abs(Mb) < 1e-12, 0.0, Mb)
        row = np.hstack([Mx, Mb[:, None]])  # the row on [w_k; b_k] of one class's logit
        C = np.eye(K)[classes] - 1.0 / K  # centring: class j's block gets [j = k] - 1/K
        A1 = (C[:, :, None] * row[:, None, :]).reshape(M.shape[0], -1)
        A = np.vstack([A1, -A1])
        names2 = tuple(f"+({s})" for s in names) + tuple(f"-({s})" for s in names)
        return LinearForm(A=A, c0=np.zeros(A.shape[0]), names=names2)

    def values(self, z, y, groups, sample_weight, labels) -> np.ndarray:
        """The bounded quantities ``m_k(z)`` for given scores (diagnostics); scores of shape
        (n, K) give the K-class rows (on the centred logits).

        Parameters
        ----------
        z : numpy.ndarray of shape (n_samples,) or (n_samples, n_classes)
            Scores (logits).
        y : numpy.ndarray of shape (n_samples,)
            Label codes (0/1; class codes ``0 .. K-1`` for K classes).
        groups : numpy.ndarray of shape (n_samples,)
            Group codes ``0 .. len(labels) - 1``.
        sample_weight : numpy.ndarray of shape (n_samples,)
            Row weights (the fit's, after ``balance``).
        labels : sequence
            The group labels, in code order (they name the rows).

        Returns
        -------
        numpy.ndarray
            One value per bounded row (``|value| <= eps`` when the constraint holds).
        """
        z = np.asarray(z, dtype=np.float64)
        if z.ndim == 2:
            if not self.multiclass:
                raise DataError(MSG_BINARY_ONLY.format(name=self.name, k=z.shape[1], names=", ".join(MULTICLASS_NAMES)))
            M, classes, _ = _class_parity_matrix(self.event, y, groups, sample_weight, labels, z.shape[1])
            zc = z - z.mean(axis=1, keepdims=True)
            return np.einsum("rn,nr->r", M, zc[:, classes])
        M, _ = self._functionals(y, groups, sample_weight, labels)
        return M @ z

    def functionals(self, y, groups, sample_weight, labels) -> tuple[np.ndarray, list]:
        """``(M, names)``: the rows ``m_k`` (K, n) with ``m_k(z) = M[k] @ z``, bounded as ``|M z| <= eps``.

        For callers whose scores are not linear in their parameters (a whole network, in
        :mod:`fairhead.full_objectives`), so that they bound the same quantities as the heads.

        Parameters
        ----------
        y : numpy.ndarray of shape (n_samples,)
            Label codes (0/1; class codes ``0 .. K-1`` for K classes).
        groups : numpy.ndarray of shape (n_samples,)
            Group codes ``0 .. len(labels) - 1``.
        sample_weight : numpy.ndarray of shape (n_samples,)
            Row weights (the fit's, after ``balance``).
        labels : sequence
            The group labels, in code order (they name the rows).

        Returns
        -------
        tuple of (numpy.ndarray, list)
            ``M`` of shape (R, n_samples) and the rows' names.
        """
        return self._functionals(y, groups, sample_weight, labels)


class DemographicParityScore(LinearScoreConstraint):
    """Mean-score parity (score constraint, ``"dp-score"``).

    .. math::

        \\Bigl|\\, \\frac{\\sum_{i \\in g} v_i z_i}{\\sum_{i \\in g} v_i}
        - \\frac{\\sum_{i} v_i z_i}{\\sum_{i} v_i} \\Bigr| \\le \\varepsilon
        \\quad \\text{for every group } g.

    Bounds the weighted mean score of each group against the overall mean. Linear in
    ``(w, b)``; the intercept cancels.

    With K > 2 classes, for every class ``k`` and group ``g``, on the class-``k`` logit
    :math:`z_k = x^\\top w_k + b_k` (centred: :math:`\\sum_k w_k = 0`, :math:`\\sum_k b_k = 0`):

    .. math::

        \\bigl| \\bar z_{k; g} - \\bar z_{k} \\bigr| \\le \\varepsilon.
    """

    name = "dp-score"
    event = "all"
    metric = "demographic_parity_difference"
    fairlearn_moment = "DemographicParity"
    fairlearn_threshold = "demographic_parity"
    paper = "DI"
    label = "mean-score gap, logits"
    rate_form = "dp"


class EqualOpportunityScore(LinearScoreConstraint):
    """Mean-score parity on the positives (score constraint, ``"eopp-score"``).

    .. math::

        \\bigl| \\bar z_{g, y=1} - \\bar z_{y=1} \\bigr| \\le \\varepsilon
        \\quad \\text{for every group } g,

    where :math:`\\bar z_{S}` is the ``v``-weighted mean score over the set ``S``.
    With K > 2 classes: :math:`|\\bar z_{k; g, y=k} - \\bar z_{k; y=k}| \\le \\varepsilon` for every
    class ``k`` and group ``g`` (the class-``k`` logit among the rows of class ``k``).
    """

    name = "eopp-score"
    event = "y=1"
    needs_label_cells = True
    metric = "equal_opportunity_difference"
    fairlearn_moment = "TruePositiveRateParity"
    fairlearn_threshold = "true_positive_rate_parity"
    paper = "EOpp"
    label = "mean-score gap on y=1, logits"
    rate_form = "eopp"


class EqualizedOddsScore(LinearScoreConstraint):
    """Mean-score parity on both labels (score constraint, ``"eo-score"``).

    .. math::

        \\bigl| \\bar z_{g, y=c} - \\bar z_{y=c} \\bigr| \\le \\varepsilon
        \\quad \\text{for every group } g \\text{ and } c \\in \\{0, 1\\}.

    With K > 2 classes, one-vs-rest on the class-``k`` logit ``z_k``, for every class ``k``,
    group ``g`` and event :math:`E \\in \\{y = k,\\ y \\ne k\\}`:

    .. math::

        \\bigl| \\bar z_{k; g, E} - \\bar z_{k; E} \\bigr| \\le \\varepsilon.
    """

    name = "eo-score"
    event = "label"
    needs_label_cells = True
    metric = "equalized_odds_difference"
    fairlearn_moment = "EqualizedOdds"
    fairlearn_threshold = "equalized_odds"
    paper = "EO"
    label = "mean-score gap per label, logits"
    rate_form = "eo"


class CovarianceConstraint(LinearScoreConstraint):
    """Decision-boundary covariance (score constraint, ``"cov"``; Zafar et al. 2017).

    .. math::

        \\Bigl| \\frac{1}{V} \\sum_i v_i (s_{ig} - \\bar s_g)\\, z_i \\Bigr| \\le \\varepsilon,
        \\qquad s_{ig} = [\\,g_i = g\\,],\\ \\bar s_g = \\tfrac{1}{V}\\textstyle\\sum_i v_i s_{ig},

    for every group ``g`` (for two groups the single row of group 1, as in Zafar's binary
    ``s``). Equals ``p_g (\\bar z_g - \\bar z)`` with ``p_g`` the group's weight share.
    """

    name = "cov"
    multiclass = False
    metric = "demographic_parity_difference"
    fairlearn_moment = "DemographicParity"
    fairlearn_threshold = "demographic_parity"
    paper = "DI"
    label = "cov(s, z), logits"
    rate_form = "dp"

    def _functionals(self, y, groups, sw, labels):
        V = sw.sum()
        G = len(labels)
        which = [1] if G == 2 else list(range(G))
        rows, names = [], []
        for g in which:
            s = (groups == g).astype(np.float64)
            sbar = (sw * s).sum() / V
            rows.append(sw * (s - sbar) / V)
            names.append(f"cov,g={labels[g]}")
        return np.asarray(rows), names

    def _cells(self, y, groups, sw, labels):
        # the cells are the groups, u_h = v [g_i = h]; row g is (u_g - sbar_g sum_h u_h) / V
        G, V = len(labels), sw.sum()
        Vg = np.bincount(groups, weights=sw, minlength=G)
        which = [1] if G == 2 else list(range(G))
        B = np.asarray([(np.eye(G)[g] - Vg[g] / V) / V for g in which])
        return np.asarray(groups, dtype=np.int64), B


class GroupLoss(ScoreConstraint):
    """Bounded group loss (score constraint, ``"group-loss"``).

    .. math::

        L_g(w, b) = \\frac{\\sum_{i \\in g} v_i \\log(1 + e^{-s_i z_i})}{\\sum_{i\\in g} v_i}
        \\le \\varepsilon \\quad \\text{for every group } g.

    Convex but not linear; the backends receive cell codes (:meth:`cells`).
    """

    name = "group-loss"
    floor_from = "minimax"  # no head has a smaller largest group loss than the minimax head
    family = "loss"
    metric = "accuracy_equality_difference"
    fairlearn_moment = "ErrorRateParity"
    paper = "MMF"
    label = "worst group log-loss, nats"

    def cells_codes(self, y, groups, labels):
        """Give the cells whose losses are bounded: here the groups.

        Parameters
        ----------
        y : numpy.ndarray of shape (n_samples,)
            Label codes.
        groups : numpy.ndarray of shape (n_samples,)
            Group codes.
        labels : sequence
            The group labels, in code order.

        Returns
        -------
        tuple of (numpy.ndarray, tuple)
            The cell code of every row and the cells' labels.
        """
        return groups, tuple(labels)


class MinimaxLoss(ScoreConstraint):
    """Minimax group loss as the objective (score family, ``"minimax"``; ``eps`` unused).

    .. math::

        \\min_{w, b}\\; \\max_{c} L_c(w, b) + \\frac{\\lVert w \\rVert^2}{2 C V},

    where the cells ``c`` are the groups (``cells="group"``) or the (label, group) cells
    (``cells="label-group"``, the max-min fairness of the seed paper).

    Parameters
    ----------
    cells : {"group", "label-group"}, default="group"
        The cells whose largest loss is minimised.
    """

    name = "minimax"
    family = "loss"
    bounded = False
    metric = "accuracy_equality_difference"
    fairlearn_moment = "ErrorRateParity"
    paper = "MMF"
    label = "worst group log-loss, nats"
    _param_names = ("cells",)

    def __init__(self, cells: str = "group"):
        self.cells = cells

    def cells_codes(self, y, groups, labels):
        """Give the cells whose largest loss is minimised: the groups or the (label, group) cells.

        Parameters
        ----------
        y : numpy.ndarray of shape (n_samples,)
            Label codes (0/1).
        groups : numpy.ndarray of shape (n_samples,)
            Group codes.
        labels : sequence
            The group labels, in code order.

        Returns
        -------
        tuple of (numpy.ndarray, tuple)
            The cell code of every row and the cells' labels (``(label, group)`` pairs for
            ``cells="label-group"``).
        """
        if self.cells not in ("group", "label-group"):
            raise DataError(MSG_MINIMAX_CELLS.format(got=self.cells))
        if self.cells == "group":
            return groups, tuple(labels)
        code = groups * 2 + y.astype(np.int64)
        uniq, inv = np.unique(code, return_inverse=True)
        cell_labels = tuple((int(u % 2), labels[u // 2]) for u in uniq)
        return inv.reshape(-1), cell_labels


class RateConstraint(Constraint):
    """Base of rate constraints: ``|E_w[u(yhat) | E, g] - E_w[u(yhat) | E]| <= eps``."""

    kind = "rate"
    family = "rate"
    event = "all"
    utility = "selection"  # u = yhat ; "error": u = [yhat != y]
    multiclass = True
    #: its moments' rows depend on eps (``moments(..., eps=)``; ``None``: the rows at eps = 0)
    rows_depend_on_eps = False

    def moments(self, y, groups, sample_weight, labels, n_classes=2) -> RateMoments | ClassRateMoments:
        """The gaps as linear functions of the predictions: ``RateMoments`` (binary) or, with
        ``n_classes`` K > 2, ``ClassRateMoments`` (rows per class, one-vs-rest events).

        Parameters
        ----------
        y : numpy.ndarray of shape (n_samples,)
            Label codes (0/1; class codes ``0 .. K-1`` for K classes).
        groups : numpy.ndarray of shape (n_samples,)
            Group codes ``0 .. len(labels) - 1``.
        sample_weight : numpy.ndarray of shape (n_samples,)
            Row weights (the fit's, after ``balance``).
        labels : sequence
            The group labels, in code order (they name the rows).
        n_classes : int, default=2
            Classes of the head; K > 2 gives per-class rows.

        Returns
        -------
        RateMoments or ClassRateMoments
            The gaps as linear functions of the predictions.
        """
        if n_classes > 2:
            if not self.multiclass:
                raise DataError(MSG_BINARY_ONLY.format(name=self.name, k=n_classes, names=", ".join(MULTICLASS_NAMES)))
            M, classes, names = _class_parity_matrix(self.event, y, groups, sample_weight, labels, n_classes)
            return ClassRateMoments(M=M, classes=classes, n_classes=n_classes, names=tuple(names))
        M, names = _parity_matrix(self.event, y, groups, sample_weight, len(labels), labels)
        if self.utility == "selection":
            a, b0 = np.ones_like(y), np.zeros_like(y)
        else:  # [yhat != y] = yhat (1 - 2y) + y
            a, b0 = 1.0 - 2.0 * y, y.astype(np.float64)
        return RateMoments(M=M, a=a, b0=b0, names=tuple(names))


class DemographicParity(RateConstraint):
    """Demographic parity of hard predictions (rate constraint, ``"dp"``).

    .. math::

        \\bigl| P_v(\\hat y = 1 \\mid g) - P_v(\\hat y = 1) \\bigr| \\le \\varepsilon
        \\quad \\text{for every group } g,

    measured on the fit split with the sample weights ``v``. With K > 2 classes, for every
    class ``k`` and group ``g``: :math:`|P_v(\\hat y = k \\mid g) - P_v(\\hat y = k)| \\le \\varepsilon`,
    with :math:`\\hat y = \\arg\\max_k z_k`.
    """

    name = "dp"
    event = "all"
    metric = "demographic_parity_difference"
    fairlearn_moment = "DemographicParity"
    fairlearn_threshold = "demographic_parity"
    paper = "DI"
    label = "selection-rate gap"
    gap = "dp"
    group_rates = ("selection_rate",)


class EqualOpportunity(RateConstraint):
    """True-positive-rate parity (rate constraint, ``"eopp"``).

    .. math::

        \\bigl| P_v(\\hat y = 1 \\mid g, y=1) - P_v(\\hat y = 1 \\mid y=1) \\bigr| \\le \\varepsilon.

    With K > 2 classes: :math:`|P_v(\\hat y = k \\mid g, y=k) - P_v(\\hat y = k \\mid y=k)| \\le
    \\varepsilon` for every class ``k`` (the one-vs-rest TPR of class ``k``).
    """

    name = "eopp"
    event = "y=1"
    needs_label_cells = True
    metric = "equal_opportunity_difference"
    fairlearn_moment = "TruePositiveRateParity"
    fairlearn_threshold = "true_positive_rate_parity"
    paper = "EOpp"
    label = "TPR gap"
    gap = "eopp"
    group_rates = ("true_positive_rate",)


class EqualizedOdds(RateConstraint):
    """TPR and FPR parity (rate constraint, ``"eo"``).

    .. math::

        \\bigl| P_v(\\hat y = 1 \\mid g, y=c) - P_v(\\hat y = 1 \\mid y=c) \\bigr| \\le \\varepsilon
        \\quad c \\in \\{0, 1\\}.

    With K > 2 classes, one-vs-rest for every class ``k`` and group ``g``: the same for
    :math:`\\hat y = k` given :math:`y = k` (TPR of class k) and given :math:`y \\ne k` (FPR of class k).
    """

    name = "eo"
    event = "label"
    needs_label_cells = True
    metric = "equalized_odds_difference"
    fairlearn_moment = "EqualizedOdds"
    fairlearn_threshold = "equalized_odds"
    paper = "EO"
    label = "TPR/FPR gap"
    gap = "eo"
    group_rates = ("true_positive_rate", "false_positive_rate")


class FalsePositiveRateParity(RateConstraint):
    """False-positive-rate parity (rate constraint, ``"fpr"``; the FPR half of ``"eo"``).

    .. math::

        \\bigl| P_v(\\hat y = 1 \\mid g, y=0) - P_v(\\hat y = 1 \\mid y=0) \\bigr| \\le \\varepsilon
        \\quad \\text{for every group } g.

    With K > 2 classes, one-vs-rest for every class ``k`` and group ``g``:
    :math:`|P_v(\\hat y = k \\mid g, y \\ne k) - P_v(\\hat y = k \\mid y \\ne k)| \\le \\varepsilon`
    (the FPR of class ``k``). Reported under the equalized-odds difference, which includes the
    FPR difference; it has no interval gap of its own.
    """

    name = "fpr"
    event = "y=0"
    needs_label_cells = True
    metric = "equalized_odds_difference"
    label = "FPR gap"
    fairlearn_moment = "FalsePositiveRateParity"
    fairlearn_threshold = "false_positive_rate_parity"


class ErrorRateParity(RateConstraint):
    """Error-rate parity (rate constraint, ``"error-rate"``).

    .. math::

        \\bigl| P_v(\\hat y \\ne y \\mid g) - P_v(\\hat y \\ne y) \\bigr| \\le \\varepsilon.
    """

    name = "error-rate"
    event = "all"
    utility = "error"
    multiclass = False
    metric = "accuracy_equality_difference"
    fairlearn_moment = "ErrorRateParity"
    paper = "AE"
    label = "error-rate gap"
    gap = "ae"
    group_rates = ("accuracy",)


class DemographicParityRatio(RateConstraint):
    """The four-fifths rule: a ratio of selection rates (rate constraint, ``"dp-ratio"``).

    .. math::

        P_v(\\hat y = 1 \\mid g) \\ge (1 - \\varepsilon) \\max_h P_v(\\hat y = 1 \\mid h)
        \\quad \\text{for every group } g,

    i.e. the smallest selection rate is at least ``r = 1 - eps`` times the largest (``eps = 0.2``:
    the four-fifths rule). Its value (the certificate's gap) is the ratio shortfall
    :math:`1 - \\min_g P_v(\\hat y = 1 \\mid g) / \\max_h P_v(\\hat y = 1 \\mid h)`. One-sided
    rows whose coefficients depend on eps (:class:`RatioMoments`); binary heads only.
    """

    name = "dp-ratio"
    event = "all"
    multiclass = False
    rows_depend_on_eps = True
    metric = "demographic_parity_difference"
    label = "selection-rate ratio shortfall"
    #: what eps bounds, in words (``fairhead.measure.describe_bounded_gap``)
    bounded_value = ("1 - min over groups of P(yhat=1)(group) / max over groups of P(yhat=1)(group) "
                     "(eps = 0.2: the four-fifths rule)")

    def moments(self, y, groups, sample_weight, labels, n_classes=2, eps=None) -> RatioMoments:
        """The ratio rows at ``eps`` as a :class:`RatioMoments` (binary heads only).

        Parameters
        ----------
        y : numpy.ndarray of shape (n_samples,)
            Label codes (0/1).
        groups : numpy.ndarray of shape (n_samples,)
            Group codes ``0 .. len(labels) - 1``.
        sample_weight : numpy.ndarray of shape (n_samples,)
            Row weights (the fit's, after ``balance``).
        labels : sequence
            The group labels, in code order (they name the rows).
        n_classes : int, default=2
            Classes of the head; K > 2 is refused (no K-class ratio rows).
        eps : float, optional
            The bound the rows are priced at (``None``: eps = 0; the gaps do not depend on it).

        Returns
        -------
        RatioMoments
            The rows and the ratio shortfalls of the predictions.
        """
        if n_classes > 2:
            raise DataError(MSG_BINARY_ONLY.format(name=self.name, k=n_classes, names=", ".join(MULTICLASS_NAMES)))
        sw = np.asarray(sample_weight, dtype=np.float64)
        rates = []
        for g in range(len(labels)):
            vg = sw * (groups == g)
            if vg.sum() <= 0:
                raise DataError(f"group {labels[g]!r} has no weight; this constraint needs every group; "
                                "merge groups or pick another constraint")
            rates.append(vg / vg.sum())
        rates = np.asarray(rates)
        r = 1.0 - (0.0 if eps is None else float(eps))
        pairs = tuple((g, h) for g in range(len(labels)) for h in range(len(labels)) if g != h)
        M = np.asarray([r * rates[h] - rates[g] for g, h in pairs]).reshape(len(pairs), -1)
        n = rates.shape[1]
        return RatioMoments(M=M, a=np.ones(n), b0=np.zeros(n), rates=rates, pairs=pairs,
                            names=tuple(f"g={labels[g]} vs {labels[h]}" for g, h in pairs))


CONSTRAINTS = {
    c.name: c
    for c in (
        DemographicParityScore,
        EqualOpportunityScore,
        EqualizedOddsScore,
        CovarianceConstraint,
        GroupLoss,
        MinimaxLoss,
        DemographicParity,
        EqualOpportunity,
        EqualizedOdds,
        ErrorRateParity,
        FalsePositiveRateParity,
        DemographicParityRatio,
    )
}
MULTICLASS_NAMES = tuple(k for k, c in CONSTRAINTS.items() if c.multiclass)


def make_constraint(spec) -> Constraint | None:
    """``None`` -> ``None``; a name -> a fresh constraint; a Constraint -> itself; a dict -> from_dict.

    Parameters
    ----------
    spec : str, Constraint, dict or None
        A name (a key of ``CONSTRAINTS``), a constraint (returned as is), a ``to_dict()`` dict, or ``None``.

    Returns
    -------
    Constraint or None
        A fresh constraint for a name or a dict; ``None`` for ``None``.
    """
    if spec is None:
        return None
    if isinstance(spec, Constraint):
        return spec
    if isinstance(spec, dict):
        spec = dict(spec)
        name = spec.pop("name")
        return CONSTRAINTS[name](**spec) if name in CONSTRAINTS else make_constraint(name)
    if isinstance(spec, str) and spec in CONSTRAINTS:
        return CONSTRAINTS[spec]()
    raise DataError(MSG_UNKNOWN_CONSTRAINT.format(got=spec, names=sorted(CONSTRAINTS)))
