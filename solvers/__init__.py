"""solvers: exact fair logistic heads on arrays (cvxpy reference, fast torch backend).

Public API::

    FairLogisticRegression(*, constraint=None, eps=0.05, C=1.0, ...)
    FairHead(...)          # the same head without scikit-learn (its import costs about 1 s)
    fit_path(X, y, *, sensitive_features, eps_grid, sample_weight=None, **params)
    save_head(estimator, path, *, cache_fingerprint=None, extra=None) / load_head(path)
    select_head(heads, X, y, sensitive_features, *, target="eo<=0.05", confidence=0.95)
    Certificate, metrics (module), constraints (module), intervals (module)
    export.to_sklearn(head) / export.to_torch_linear(head)
    RowChunks(path, rows, dataset="features", max_memory="2GB")   # an out-of-core X
    RowShard(local_rows, n_total=n, start=s)                      # one rank's rows (torchrun)

``import solvers`` imports neither torch nor cvxpy (nor torchvision / embedcache); the
backends load at the first fit that needs them.
"""

from __future__ import annotations

import importlib

__all__ = [
    "FairLogisticRegression",
    "FairHead",
    "Certificate",
    "fit_path",
    "iter_path",
    "save_head",
    "load_head",
    "metrics",
    "constraints",
    "export",
    "intervals",
    "select_head",
    "RowChunks",
    "RowShard",
    "shard_range",
]

_LAZY = {
    "FairLogisticRegression": ("solvers.estimator", "FairLogisticRegression"),
    "FairHead": ("solvers.head", "FairHead"),
    "Certificate": ("solvers.certificate", "Certificate"),
    "fit_path": ("solvers.path", "fit_path"),
    "iter_path": ("solvers.path", "iter_path"),
    "save_head": ("solvers.persistence", "save_head"),
    "load_head": ("solvers.persistence", "load_head"),
    "metrics": ("solvers.metrics", None),
    "constraints": ("solvers.constraints", None),
    "export": ("solvers.export", None),
    "intervals": ("solvers.intervals", None),
    "select_head": ("solvers.select", "select_head"),
    "RowChunks": ("solvers.out_of_core", "RowChunks"),
    "RowShard": ("solvers.distributed", "RowShard"),
    "shard_range": ("solvers.distributed", "shard_range"),
}


def __getattr__(name):
    if name in _LAZY:
        mod_name, attr = _LAZY[name]
        mod = importlib.import_module(mod_name)
        value = mod if attr is None else getattr(mod, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'solvers' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
