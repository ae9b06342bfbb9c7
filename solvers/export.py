"""Export a fitted head to the models other libraries run: scikit-learn and ``torch.nn.Linear``.

A fair head is a plain logistic model: the score is ``z = X @ coef_.T + intercept_`` and
``P(y = classes_[1] | x) = sigmoid(z)`` (K > 2 classes: one score per class and the softmax).
Only the fit differs (the fairness constraint), so the exported models carry the same
coefficients and give the same scores, probabilities and predictions. Anything that also
holds a backbone lives in :mod:`fairhead.export`.

Examples
--------
>>> import numpy as np
>>> from solvers import FairLogisticRegression
>>> from solvers.synthetic import make_fair_classification
>>> X, y, s = make_fair_classification(200, 3, seed=0)
>>> head = FairLogisticRegression(constraint="dp-score", eps=0.05).fit(X, y, sensitive_features=s)
>>> bool(np.array_equal(to_sklearn(head).predict(X), head.predict(X)))
True
"""

from __future__ import annotations

import numpy as np

from .errors import DataError

MSG_NOT_FITTED = "{what} needs a fitted FairLogisticRegression; call fit (or solvers.load_head) first"


def _check_fitted(head, what: str) -> None:
    if getattr(head, "coef_", None) is None or getattr(head, "intercept_", None) is None:
        raise DataError(MSG_NOT_FITTED.format(what=what))


def to_sklearn(head):
    """A fitted :class:`sklearn.linear_model.LogisticRegression` with the head's coefficients.

    Its ``decision_function``, ``predict_proba`` and ``predict`` equal the head's (the same
    float64 coefficients, the same ``classes_``). The regularisation strength is copied too, but
    refitting it would drop the fairness constraint: use it to predict, not to fit.

    Parameters
    ----------
    head : FairLogisticRegression
        A fitted head.

    Returns
    -------
    sklearn.linear_model.LogisticRegression
    """
    from sklearn.linear_model import LogisticRegression

    _check_fitted(head, "to_sklearn")
    model = LogisticRegression(C=float(getattr(head, "C", 1.0)), fit_intercept=True)
    model.intercept_ = np.asarray(head.intercept_, dtype=np.float64).reshape(-1).copy()  # (1,) or (K,)
    model.coef_ = np.asarray(head.coef_, dtype=np.float64).reshape(model.intercept_.shape[0], -1).copy()
    model.classes_ = np.asarray(head.classes_).copy()
    model.n_features_in_ = int(model.coef_.shape[1])
    model.n_iter_ = np.array([int(getattr(head, "n_iter_", 1))], dtype=np.int32)
    if hasattr(head, "feature_names_in_"):
        model.feature_names_in_ = np.asarray(head.feature_names_in_, dtype=object).copy()
    return model


def to_torch_linear(head, *, dtype=None):
    """A ``torch.nn.Linear(d, 1)`` whose output is the head's score ``z`` (shape (N, 1)); for a
    K-class head ``torch.nn.Linear(d, K)``, the K class scores (softmax: the probabilities).

    Parameters
    ----------
    head : FairLogisticRegression
        A fitted head.
    dtype : torch.dtype, default torch.float64
        Parameter dtype. float64 keeps the head's scores exactly (to rounding); with float32 the
        scores move by about 1e-7 times their size. Inputs must have this dtype (``x.double()``).

    Returns
    -------
    torch.nn.Linear
        In eval mode with ``requires_grad_(False)``; ``torch.sigmoid`` of its output is
        ``P(y = classes_[1] | x)``.
    """
    import torch

    _check_fitted(head, "to_torch_linear")
    dtype = torch.float64 if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise DataError(f"to_torch_linear: dtype must be a torch floating dtype (torch.float64, torch.float32, ...); "
                        f"got {dtype!r}")
    bias = np.asarray(head.intercept_, dtype=np.float64).reshape(-1)
    coef = np.asarray(head.coef_, dtype=np.float64).reshape(bias.shape[0], -1)
    linear = torch.nn.Linear(coef.shape[1], coef.shape[0], bias=True, dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(coef))
        linear.bias.copy_(torch.from_numpy(bias))
    return linear.eval().requires_grad_(False)


__all__ = ["to_sklearn", "to_torch_linear"]
