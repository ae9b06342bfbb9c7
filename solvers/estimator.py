"""``FairLogisticRegression``: the fair head as a scikit-learn classifier.

:class:`~solvers.head.FairHead` is the head (fit and scores); this subclass adds what
scikit-learn's tools expect of an estimator: ``clone``, ``score``, metadata routing, tags,
feature names, and scikit-learn's own input checks and warning class.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning as SklearnConvergenceWarning
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from . import errors
from .errors import DataError
from .head import (  # noqa: F401  (labels_from_scores, probabilities_from_scores: their old home)
    PARAMETERS_DOC,
    FairHead,
    _bad_arrays_message,
    _plain_fit_arrays,
    labels_from_scores,
    probabilities_from_scores,
)
from .path_fitter import PathFitter  # noqa: F401  (its old home)

#: the dtypes scikit-learn's checks keep (the head's own)
_DTYPES = [np.float64, np.float32, np.float16]


class ConvergenceWarning(SklearnConvergenceWarning, errors.ConvergenceWarning):
    """scikit-learn's ``ConvergenceWarning`` and fairhead's at once: a filter on either catches it."""


class FairLogisticRegression(ClassifierMixin, BaseEstimator, FairHead):
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

    {parameters}
    See Also
    --------
    solvers.fit_path : a sweep over ``eps`` with warm starts.
    solvers.FairHead : the same head without scikit-learn (what the command line fits).

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

    _convergence_warning = ConvergenceWarning

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = True
        tags.input_tags.allow_nan = False
        return tags

    def _validated_arrays(self, X, y):
        """scikit-learn's ``validate_data`` (feature names, its conversions and messages); plain
        float ndarrays, which it would hand back as they are, skip it."""
        if _plain_fit_arrays(X, y):
            self._forget_feature_names(X.shape[1])
            return X, y
        try:
            return validate_data(self, X, y, dtype=_DTYPES, reset=True)
        except ValueError as err:  # sklearn's wording names the problem; add the fix, keep one line
            raise DataError(_bad_arrays_message(err)) from err

    def _check_targets(self, y) -> None:
        try:
            check_classification_targets(y)
        except ValueError as err:  # sklearn's wording (checks match "Unknown label type"), plus the fix
            raise DataError(f"{str(err).splitlines()[0].split('. Maybe')[0]}: y holds "
                            f"{type_of_target(y, input_name='y')} values such as {np.asarray(y).ravel()[:3].tolist()}, "
                            "not class labels; pass labels such as 0/1 or class names (threshold a "
                            "continuous target first)") from err

    def _validated_features(self, X):
        try:
            return validate_data(self, X, dtype=_DTYPES, reset=False)
        except ValueError as err:  # NaN, or another feature dimension: one line with the fix
            raise DataError(_bad_arrays_message(err, predicting=True)) from err

    def _check_fitted(self) -> None:
        check_is_fitted(self)


FairLogisticRegression.__doc__ = FairLogisticRegression.__doc__.replace("    {parameters}\n", PARAMETERS_DOC)
