"""Re-export of the shared fairhead error hierarchy (see ``fairhead_errors``)."""

from fairhead_errors import (  # noqa: F401
    BackboneError,
    CacheError,
    ConvergenceWarning,
    DataError,
    FairheadError,
    InfeasibleConstraintError,
    SolverError,
)
