"""The validated fitting problem shared by every backend.

A :class:`FairProblem` holds plain numpy arrays only:

* ``X`` (n, d) in its stored floating dtype (float16 / float32 / float64 are kept),
* ``y`` (n,) in {0, 1} as float64 (a K-class head: the class codes ``0 .. K-1``),
* ``groups`` (n,) integer codes ``0 .. G-1`` of the (possibly intersectional) groups,
* ``group_labels`` the label of each code (a value for one attribute, a tuple for several),
* ``sample_weight`` ``v`` (n,) float64, positive, after the ``balance`` reweighting.

The objective every backend minimises is the sklearn one written on mean form:

.. math::

    f(w, b) = \\frac{1}{V} \\sum_i v_i \\log(1 + e^{-s_i z_i}) + \\frac{\\lVert w \\rVert^2}{2 C V},
    \\quad z_i = x_i^\\top w + b,\\; s_i = 2 y_i - 1,\\; V = \\sum_i v_i,

whose argmin is that of scikit-learn's ``C \\sum_i v_i \\ell_i + \\tfrac12 \\lVert w\\rVert^2``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field

import numpy as np

from .errors import DataError

BALANCE_OPTIONS = (None, "group", "label-group")

MSG_SF_LENGTH = (
    "sensitive_features has {got} rows but y has {n}; pass one sensitive value per sample"
)
MSG_SF_ONE_GROUP = (
    "sensitive_features has only {k} group ({labels}) in the fitting rows; "
    "a fairness constraint needs at least 2 groups"
)
MSG_SF_NAN = "sensitive_features contains missing values (NaN/None); encode them as their own category or drop those rows"
MSG_SF_NDIM = "sensitive_features must be 1-D, 2-D (n, k), a DataFrame or a dict of 1-D arrays; got an array with {ndim} dimensions"
MSG_SMALL_GROUP = (
    "group {label!r} has {count} samples{where}, fewer than `min_group_size={min_size}`; "
    "merge small categories, drop that attribute, or lower `min_group_size`"
)
MSG_SW_SHAPE = "sample_weight has shape {got}; expected ({n},) with one weight per sample"
MSG_SW_NONFINITE = "sample_weight has a non-finite value ({value}) at row {row}; pass finite, non-negative weights"
MSG_SW_NEG = "sample_weight has a negative value ({value}) at row {row}; pass finite, non-negative weights"
MSG_SW_ZERO = "sample_weight sums to {s} (every weight is zero); pass finite, non-negative weights with a positive sum"
MSG_BALANCE = "balance must be one of None, 'group', 'label-group'; got {got!r}"
MSG_BALANCE_NO_GROUPS = "balance={balance!r} needs sensitive_features; pass sensitive_features or set balance=None"


@dataclass(frozen=True)
class FairProblem:
    """Validated arrays of one fit (see module docstring for the objective).

    Attributes
    ----------
    X : ndarray of shape (n, d)
        Features in their stored floating dtype.
    y : ndarray of shape (n,)
        Labels in {0., 1.}, or class codes ``0 .. K-1`` (float64) when ``n_classes > 2``.
    groups : ndarray of shape (n,) or None
        Integer group codes, ``None`` for an unconstrained fit.
    group_labels : tuple
        Label of each group code.
    sample_weight : ndarray of shape (n,)
        Positive weights after the balance reweighting.
    n_classes : int
        2 for the binary head; K > 2 for the multinomial head (:mod:`solvers.multinomial`).
    """

    X: np.ndarray
    y: np.ndarray
    groups: np.ndarray | None
    group_labels: tuple = ()
    sample_weight: np.ndarray = field(default=None)
    n_classes: int = 2

    @property
    def n(self) -> int:
        return self.X.shape[0]

    @property
    def d(self) -> int:
        return self.X.shape[1]

    @property
    def n_groups(self) -> int:
        return len(self.group_labels)

    @property
    def V(self) -> float:
        return float(self.sample_weight.sum())


def _to_2d_columns(sensitive_features):
    """Return a list of 1-D object/numeric arrays, one per attribute, and their names."""
    # a DataFrame or Series exists only where pandas was imported: never import it here (0.2-0.5 s)
    pd = sys.modules.get("pandas")
    if isinstance(sensitive_features, dict):
        names = list(sensitive_features)
        cols = [np.asarray(sensitive_features[k]) for k in names]
        return cols, names
    if pd is not None and isinstance(sensitive_features, pd.DataFrame):
        names = [str(c) for c in sensitive_features.columns]
        cols = [sensitive_features[c].to_numpy() for c in sensitive_features.columns]
        return cols, names
    if pd is not None and isinstance(sensitive_features, pd.Series):
        return [sensitive_features.to_numpy()], [str(sensitive_features.name)]
    arr = np.asarray(sensitive_features)
    if arr.ndim == 1:
        return [arr], ["sensitive_feature_0"]
    if arr.ndim == 2:
        return [arr[:, j] for j in range(arr.shape[1])], [f"sensitive_feature_{j}" for j in range(arr.shape[1])]
    raise DataError(MSG_SF_NDIM.format(ndim=arr.ndim))


def _is_missing(col: np.ndarray) -> bool:
    if col.dtype.kind == "f":
        return bool(np.isnan(col).any())
    if col.dtype.kind == "O":
        # elementwise in numpy's loop (a Python generator here cost seconds per sweep): None,
        # and NaN, the one value unequal to itself
        try:
            return bool(np.equal(col, None).any() or np.not_equal(col, col).any())
        except TypeError:  # pandas' NA: its comparisons are NA (it is missing itself)
            return True
    return False


class EncodedGroups(np.ndarray):
    """A read-only 1-D array of group values that carries its own :func:`encode_groups` result.

    A sweep evaluates every head with dozens of metric calls on the same rows; each call used to
    re-encode the same group names (an object array of strings sorted by ``np.unique``: 825
    encodings and 1.5-2.9 s of a 7.6 s Adult sweep). :func:`encoded_groups` encodes once and
    attaches the result; ``encode_groups`` returns it unchanged for this exact array. Slices
    and copies are plain again (``__array_finalize__`` drops the encoding), and the data are
    read-only, so an attached encoding cannot go stale.
    """

    _encoding = None

    def __array_finalize__(self, obj) -> None:
        self._encoding = None


def encoded_groups(values) -> EncodedGroups:
    """``values`` (1-D group values) as an :class:`EncodedGroups`, encoded once now."""
    arr = np.array(values, copy=True)
    encoding = encode_groups(arr, arr.shape[0])
    out = arr.view(EncodedGroups)
    out.flags.writeable = False
    out._encoding = encoding
    return out


def encode_groups(sensitive_features, n: int):
    """Encode one or several sensitive attributes into intersectional group codes.

    Parameters
    ----------
    sensitive_features : array-like (n,) or (n, k), DataFrame or dict name -> (n,)
        Several attributes combine into intersectional groups (one group per observed
        combination of values).
    n : int
        Number of samples, checked against each attribute.

    Returns
    -------
    codes : ndarray of int64, shape (n,)
    labels : tuple
        One label per code: the value for one attribute, a tuple of values for several.
    names : list of str
        Attribute names.
    """
    encoding = getattr(sensitive_features, "_encoding", None)
    if encoding is not None and sensitive_features.shape == (n,):
        return encoding
    cols, names = _to_2d_columns(sensitive_features)
    per_col_codes = []
    per_col_uniques = []
    for col in cols:
        col = np.asarray(col).reshape(-1) if np.ndim(col) != 1 else np.asarray(col)
        if col.shape[0] != n:
            raise DataError(MSG_SF_LENGTH.format(got=col.shape[0], n=n))
        if _is_missing(col):
            raise DataError(MSG_SF_NAN)
        if col.dtype.kind == "O":
            col = col.astype(str)
        uniq, inv = unique_values(col, return_inverse=True)
        per_col_codes.append(inv.reshape(-1))
        per_col_uniques.append(uniq)
    if len(cols) == 1:
        codes = per_col_codes[0].astype(np.int64)
        labels = tuple(_py(u) for u in per_col_uniques[0])
    else:
        stacked = np.stack(per_col_codes, axis=1)
        uniq_rows, inv = np.unique(stacked, axis=0, return_inverse=True)
        codes = inv.reshape(-1).astype(np.int64)
        labels = tuple(
            tuple(_py(per_col_uniques[j][r[j]]) for j in range(len(cols))) for r in uniq_rows
        )
    return codes, labels, names


def unique_values(values: np.ndarray, return_inverse: bool = False):
    """``np.unique(values)`` (with ``return_inverse``: and the codes), the same arrays.

    Non-negative integers of a range at most ``len(values)`` (labels 0/1, group codes) are counted
    instead of sorted: O(n), about a sixth of the sort's time on a few thousand rows, which is a
    fortieth of a small table's fit.
    """
    small = (values.dtype.kind in "iu" and values.ndim == 1 and values.size
             and 0 <= int(values.min()) and int(values.max()) <= values.size)
    if not small:
        return np.unique(values, return_inverse=return_inverse)
    present = np.flatnonzero(np.bincount(values))
    uniq = present.astype(values.dtype)
    if not return_inverse:
        return uniq
    code_of = np.zeros(int(present[-1]) + 1, dtype=np.intp)
    code_of[present] = np.arange(len(present))
    return uniq, code_of[values]


def _py(v):
    """numpy scalar -> plain python (so labels are JSON-able)."""
    return v.item() if isinstance(v, np.generic) else v


def check_sample_weight(sample_weight, n: int) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n, dtype=np.float64)
    sw = np.asarray(sample_weight, dtype=np.float64)
    if sw.ndim == 0:
        sw = np.full(n, float(sw))
    if sw.shape != (n,):
        raise DataError(MSG_SW_SHAPE.format(got=sw.shape, n=n))
    bad = np.flatnonzero(~np.isfinite(sw))
    if bad.size:
        raise DataError(MSG_SW_NONFINITE.format(value=float(sw[bad[0]]), row=int(bad[0])))
    bad = np.flatnonzero(sw < 0)
    if bad.size:
        raise DataError(MSG_SW_NEG.format(value=float(sw[bad[0]]), row=int(bad[0])))
    if sw.sum() <= 0:
        raise DataError(MSG_SW_ZERO.format(s=float(sw.sum())))
    return sw


def balance_weights(sw: np.ndarray, y: np.ndarray, groups: np.ndarray, balance, n_classes: int = 2) -> np.ndarray:
    """Reweight so every group (or every (label, group) cell) has equal total weight.

    The total ``V = sum(v)`` is unchanged, so the weights keep their average.
    """
    if balance is None:
        return sw
    if balance == "group":
        cell = groups
    else:
        cell = groups * max(2, n_classes) + y.astype(np.int64)
    uniq, inv = np.unique(cell, return_inverse=True)
    totals = np.bincount(inv, weights=sw, minlength=len(uniq))
    if np.any(totals <= 0):
        raise DataError("a group has zero total sample_weight; balance cannot reweight it; drop that group or its zero weights")
    factor = sw.sum() / (len(uniq) * totals)
    return sw * factor[inv]


def build_problem(
    X: np.ndarray,
    y01: np.ndarray,
    sensitive_features=None,
    sample_weight=None,
    *,
    balance=None,
    min_group_size: int = 1,
    need_label_cells: bool = False,
    n_classes: int = 2,
) -> FairProblem:
    """Assemble and validate a :class:`FairProblem`.

    ``X`` and ``y01`` are already validated by the estimator (finite, 2-D; binary, or class
    codes ``0 .. n_classes-1`` for a K-class head).
    ``need_label_cells`` asks that every (group, label) cell reaches ``min_group_size``
    (conditional constraints such as equal opportunity need it).
    """
    n = X.shape[0]
    if balance not in BALANCE_OPTIONS:
        raise DataError(MSG_BALANCE.format(got=balance))
    sw = check_sample_weight(sample_weight, n)
    y = np.asarray(y01, dtype=np.float64)
    if sensitive_features is None:
        if balance is not None:
            raise DataError(MSG_BALANCE_NO_GROUPS.format(balance=balance))
        return FairProblem(X=X, y=y, groups=None, group_labels=(), sample_weight=sw, n_classes=n_classes)
    codes, labels, _ = encode_groups(sensitive_features, n)
    if len(labels) < 2:
        raise DataError(MSG_SF_ONE_GROUP.format(k=len(labels), labels=list(labels)))
    counts = np.bincount(codes, minlength=len(labels))
    for g, c in enumerate(counts):
        if c < min_group_size:
            raise DataError(MSG_SMALL_GROUP.format(label=labels[g], count=int(c), where="", min_size=min_group_size))
    if need_label_cells:
        for lab in range(max(2, n_classes)):
            cnt = np.bincount(codes[y == lab], minlength=len(labels))
            for g, c in enumerate(cnt):
                if c < max(1, min_group_size):
                    raise DataError(
                        MSG_SMALL_GROUP.format(
                            label=labels[g], count=int(c), where=f" with y={lab}", min_size=max(1, min_group_size)
                        )
                    )
    sw = balance_weights(sw, y, codes, balance, n_classes)
    return FairProblem(X=X, y=y, groups=codes, group_labels=labels, sample_weight=sw, n_classes=n_classes)
