"""fairhead: fair last-layer fine-tuning.

The pipeline, one package per stage::

    embedcache  sources -> backbone -> HDF5 feature cache
    solvers     cache arrays -> fair problem -> backend (cvxpy | torch) -> head + certificate
    fairhead    the CLI and the glue that knows both (fit, sweep, protocols, report, demo)

``import fairhead`` stays light: the heavy libraries load on first use. The library's
entry points are re-exported from :mod:`solvers` (loaded on first access)::

    from fairhead import FairLogisticRegression, fit_path, select_head
"""

import importlib

from fairhead_errors import (  # noqa: F401
    BackboneError,
    CacheError,
    DataError,
    FairheadError,
    InfeasibleConstraintError,
    SolverError,
)

#: the installed fairhead's version (``fairhead --version`` prints it)
__version__ = "0.1.0"

#: names re-exported from :mod:`solvers` (each loaded on first access, as ``solvers`` does);
#: ``fairhead.export`` is the CLI's exporter module, so ``solvers.export`` is not among them
_FROM_SOLVERS = ("FairLogisticRegression", "FairHead", "fit_path", "iter_path", "select_head", "save_head", "load_head",
                 "Certificate", "metrics", "constraints", "intervals")

__all__ = ["__version__", *_FROM_SOLVERS, "FairheadError", "DataError", "CacheError", "BackboneError",
           "InfeasibleConstraintError", "SolverError"]


def __getattr__(name):
    if name in _FROM_SOLVERS:
        value = getattr(importlib.import_module("solvers"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'fairhead' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
