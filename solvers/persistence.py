"""Save and load fitted heads as JSON or npz (never pickle).

Both formats hold one JSON document (npz: in the 0-d unicode array ``meta``, with the
coefficients as float64 arrays ``coef`` and ``intercept``)::

    {"format": "fairhead-head", "format_version": "1.0",
     "params": {...}, "constraint": {...} | null, "eps": ..., "classes": [...],
     "groups": [...], "n_features_in": d, "coef": [[...]], "intercept": [...],
     "certificate": {...}, "cache_fingerprint": ..., "extra": {...}, "versions": {...}}

JSON stores floats with ``repr`` precision, so a loaded head predicts identically.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .certificate import Certificate
from .constraints import Constraint
from .errors import DataError

FORMAT = "fairhead-head"
FORMAT_VERSION = "1.0"

MSG_SUFFIX = "head file {path!r} must end in .json or .npz; got suffix {suffix!r}"
MSG_FORMAT = "{path!r} is not a fairhead head file (format={got!r}); pass a file written by solvers.save_head"
MSG_VERSION = "head file {path!r} has format-version {got}, newer than this fairhead reads ({ours}); upgrade fairhead"
MSG_NOT_FITTED = "save_head needs a fitted FairLogisticRegression; call fit first"


def _jsonable(v):
    if isinstance(v, Constraint):
        return v.to_dict()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, list):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


def _versions() -> dict:
    import importlib.metadata as md

    out = {}
    for pkg in ("fairhead", "numpy", "scikit-learn", "torch", "cvxpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def save_head(estimator, path, *, cache_fingerprint=None, extra=None) -> Path:
    """Write a fitted head to ``path`` (``.json`` or ``.npz`` by suffix); return the path."""
    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix not in (".json", ".npz"):
        raise DataError(MSG_SUFFIX.format(path=str(path), suffix=suffix))
    if not hasattr(estimator, "coef_"):
        raise DataError(MSG_NOT_FITTED)
    params = estimator.get_params(deep=False)
    doc = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "params": _jsonable(params),
        "constraint": _jsonable(params.get("constraint")),
        "eps": float(estimator.eps),
        "classes": _jsonable(estimator.classes_),
        "groups": _jsonable(list(getattr(estimator, "groups_", []))),
        "n_features_in": int(estimator.n_features_in_),
        "n_iter": int(estimator.n_iter_),
        "certificate": estimator.certificate_.to_dict(),
        "cache_fingerprint": cache_fingerprint,
        "extra": _jsonable(extra or {}),
        "versions": _versions(),
    }
    if suffix == ".json":
        doc["coef"] = [[float(x) for x in estimator.coef_.ravel()]]
        doc["intercept"] = [float(estimator.intercept_[0])]
        path.write_text(json.dumps(doc, indent=1, allow_nan=True))
    else:
        with open(path, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(doc, allow_nan=True)), coef=estimator.coef_.astype(np.float64),
                     intercept=estimator.intercept_.astype(np.float64))
    return path


def load_head(path):
    """Read a head written by :func:`save_head`; return a fitted FairLogisticRegression."""
    from .estimator import FairLogisticRegression

    path = Path(os.fspath(path))
    suffix = path.suffix.lower()
    if suffix == ".json":
        doc = json.loads(path.read_text())
        coef = np.asarray(doc.get("coef"), dtype=np.float64)
        intercept = np.asarray(doc.get("intercept"), dtype=np.float64)
    elif suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            doc = json.loads(str(z["meta"]))
            coef, intercept = z["coef"], z["intercept"]
    else:
        raise DataError(MSG_SUFFIX.format(path=str(path), suffix=suffix))
    if doc.get("format") != FORMAT:
        raise DataError(MSG_FORMAT.format(path=str(path), got=doc.get("format")))
    if int(str(doc["format_version"]).split(".")[0]) > int(FORMAT_VERSION.split(".")[0]):
        raise DataError(MSG_VERSION.format(path=str(path), got=doc["format_version"], ours=FORMAT_VERSION))
    params = dict(doc["params"])
    if isinstance(params.get("constraint"), dict):
        from .constraints import make_constraint

        params["constraint"] = make_constraint(params["constraint"])
    est = FairLogisticRegression(**params)
    est.coef_ = coef.reshape(1, -1)
    est.intercept_ = intercept.reshape(1)
    est.classes_ = np.asarray(doc["classes"])
    est.n_features_in_ = int(doc["n_features_in"])
    est.n_iter_ = int(doc.get("n_iter", 1))
    est.groups_ = [tuple(g) if isinstance(g, list) else g for g in doc.get("groups", [])]
    est.certificate_ = Certificate.from_dict(doc["certificate"])
    est.constraint_violation_ = float(est.certificate_.max_violation)
    est.cache_fingerprint_ = doc.get("cache_fingerprint")
    est.extra_ = doc.get("extra", {})
    est.versions_ = doc.get("versions", {})
    return est


__all__ = ["save_head", "load_head"]
