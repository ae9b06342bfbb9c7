"""Re-export of the shared fairhead error hierarchy and its ``one_line`` helper (see ``fairhead_errors``)."""

from fairhead_errors import (  # noqa: F401
    BackboneError,
    CacheError,
    DataError,
    FairheadError,
    InfeasibleConstraintError,
    SolverError,
    one_line,
)
