"""The one error hierarchy that every fairhead package shares.

It lives in its own tiny module so that ``embedcache`` and ``solvers`` can both
raise the same errors without importing each other. Each package re-exports
these names (``embedcache.errors``, ``solvers.errors``, ``fairhead.errors``).

Every message is one line that names the problem and the fix, with the actual
values, e.g. ``cache 'x.h5' is incomplete (8192 of 20000 rows); rerun the same
`fairhead extract` command to resume``. The CLI maps each family to an exit code.
A message names a Python parameter in backticks (`` `batch_size=64` ``); the CLI prints it as its
flag (``--batch-size 64``, :func:`fairhead.cli.as_flags`). :func:`one_line` quotes another error.
"""

from __future__ import annotations


class FairheadError(Exception):
    """Base of every error fairhead raises on purpose.

    Catch it to handle any of them; ``exit_code`` is what the command line exits with.

    Examples
    --------
    >>> import embedcache
    >>> from fairhead_errors import FairheadError
    >>> try:
    ...     embedcache.open("no-such-cache.h5")
    ... except FairheadError as err:
    ...     print(type(err).__name__, err.exit_code, err)
    CacheError 3 no cache at 'no-such-cache.h5'; build it with `fairhead extract` or `fairhead import`
    """

    #: exit code the CLI uses for this family (see ``fairhead.cli``)
    exit_code = 1


class DataError(FairheadError, ValueError):
    """Bad input data: shapes, missing files or columns, one group, non-binary labels.

    Also a ``ValueError``, so code (and scikit-learn's checks) that catch that still work.

    Examples
    --------
    >>> import numpy as np
    >>> from fairhead_errors import DataError
    >>> from solvers import FairLogisticRegression
    >>> X, y = np.zeros((20, 2)), np.r_[np.zeros(10), np.ones(10)]
    >>> try:
    ...     FairLogisticRegression(constraint="dp").fit(X, y, sensitive_features=np.zeros(20))
    ... except DataError as err:
    ...     print(err)
    sensitive_features has only 1 group ([0.0]) in the fitting rows; a fairness constraint needs at least 2 groups
    """

    exit_code = 3


class CacheError(FairheadError):
    """A cache that is missing, incomplete, corrupt, from a newer format or from another run.

    Examples
    --------
    >>> import embedcache
    >>> from fairhead_errors import CacheError
    >>> try:
    ...     embedcache.open("no-such-cache.h5")
    ... except CacheError as err:
    ...     print(err)
    no cache at 'no-such-cache.h5'; build it with `fairhead extract` or `fairhead import`
    """

    exit_code = 3


class BackboneError(FairheadError, ValueError):
    """An unknown backbone name, unknown weights, or a weights file that does not fit.

    Examples
    --------
    >>> import embedcache
    >>> from fairhead_errors import BackboneError
    >>> try:
    ...     embedcache.build_backbone("resnet5")
    ... except BackboneError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    unknown backbone 'resnet5' (did you mean 'resnet50'?); use efficientnet_lite0 or a torchvision ...
    """

    exit_code = 3


class InfeasibleConstraintError(FairheadError, ValueError):
    """The fairness constraint cannot be met by any head (e.g. a bound below the reachable minimum).

    Examples
    --------
    >>> from fairhead_errors import InfeasibleConstraintError
    >>> from solvers import FairLogisticRegression
    >>> from solvers.synthetic import make_fair_classification
    >>> X, y, a = make_fair_classification(300, 4, seed=0)
    >>> try:
    ...     FairLogisticRegression(constraint="group-loss", eps=0.01, backend="cvxpy").fit(X, y, sensitive_features=a)
    ... except InfeasibleConstraintError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    group-loss bound eps=0.01 is infeasible (smallest reachable largest group loss about ...); raise eps
    """

    exit_code = 4


class SolverError(FairheadError):
    """A numerical backend failed or did not reach the requested tolerance.

    Also raised by ``strict=True`` when no rate head meets its bound (instead of a warning).

    Examples
    --------
    >>> from fairhead_errors import SolverError
    >>> from solvers import FairLogisticRegression
    >>> from solvers.synthetic import make_fair_classification
    >>> X, y, a = make_fair_classification(300, 4, seed=0)
    >>> try:
    ...     FairLogisticRegression(constraint="dp", eps=0.0001, strict=True).fit(X, y, sensitive_features=a)
    ... except SolverError as err:
    ...     print(err)  # doctest: +ELLIPSIS
    no head on the multiplier path meets dp eps=0.0001 on the fit split (best achieved gap ...); raise eps, ...
    """

    exit_code = 4


class ConvergenceWarning(UserWarning):
    """A head that missed its bound or its tolerance: a warning, since the head is still usable.

    :class:`solvers.FairLogisticRegression` warns with a subclass that is also scikit-learn's
    ``sklearn.exceptions.ConvergenceWarning``, so a filter on either class catches it.

    Examples
    --------
    >>> import warnings
    >>> from fairhead_errors import ConvergenceWarning
    >>> from solvers import FairHead
    >>> from solvers.synthetic import make_fair_classification
    >>> X, y, a = make_fair_classification(300, 4, seed=0)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     head = FairHead(constraint="dp", eps=0.0001).fit(X, y, sensitive_features=a)
    >>> [w.category.__name__ for w in caught]
    ['ConvergenceWarning']
    """


#: the most characters of another error's text that a message quotes
ONE_LINE_LIMIT = 200


def one_line(err: BaseException | str, *, limit: int = ONE_LINE_LIMIT, with_type: bool = False) -> str:
    r"""Another error's text as one short line for a message: whitespace (newlines included) collapsed,
    cut at ``limit`` characters. ``with_type`` puts the error's class in front (``OSError: ...``) and quotes
    an ``OSError`` by its ``strerror`` (the message shows the path already).

    >>> one_line(ValueError("bad\n  value"), with_type=True)
    'ValueError: bad value'
    """
    if isinstance(err, str):
        text = err
    else:
        text = err.strerror if with_type and isinstance(err, OSError) and err.strerror else str(err)
        if with_type:
            text = f"{type(err).__name__}: {text}"
    return " ".join(text.split())[:limit]


__all__ = [
    "one_line",
    "FairheadError",
    "DataError",
    "CacheError",
    "BackboneError",
    "InfeasibleConstraintError",
    "SolverError",
    "ConvergenceWarning",
]
