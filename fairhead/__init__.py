"""fairhead: fair last-layer fine-tuning.

The pipeline, one package per stage::

    embedcache  sources -> backbone -> HDF5 feature cache
    solvers     cache arrays -> fair problem -> backend (cvxpy | torch) -> head + certificate
    fairhead    the CLI and the glue that knows both (fit, sweep, protocols, report, demo)

``import fairhead`` stays light: the heavy libraries load on first use.
"""

from fairhead_errors import (  # noqa: F401
    BackboneError,
    CacheError,
    DataError,
    FairheadError,
    InfeasibleConstraintError,
    SolverError,
)

__version__ = "0.1.0"
