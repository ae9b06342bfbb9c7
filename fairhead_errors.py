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
    """Base of every error fairhead raises on purpose."""

    #: exit code the CLI uses for this family (see ``fairhead.cli``)
    exit_code = 1


class DataError(FairheadError, ValueError):
    """Bad input data: shapes, missing files or columns, one group, non-binary labels."""

    exit_code = 3


class CacheError(FairheadError):
    """A cache that is missing, incomplete, corrupt, from a newer format or from another run."""

    exit_code = 3


class BackboneError(FairheadError, ValueError):
    """An unknown backbone name, unknown weights, or a weights file that does not fit."""

    exit_code = 3


class InfeasibleConstraintError(FairheadError, ValueError):
    """The fairness constraint cannot be met by any head (e.g. a bound below the reachable minimum)."""

    exit_code = 4


class SolverError(FairheadError):
    """A numerical backend failed or did not reach the requested tolerance."""

    exit_code = 4


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
]
