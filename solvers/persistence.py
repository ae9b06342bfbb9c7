"""Save and load fitted heads as JSON or npz (never pickle).

Both formats hold one JSON document (npz: in the 0-d unicode array ``meta``, with the
coefficients as float64 arrays ``coef`` and ``intercept``)::

    {"format": "fairhead-head", "format_version": "1.0",
     "params": {...}, "constraint": {...} | null, "eps": ..., "classes": [...],
     "groups": [...], "n_features_in": d, "coef": [[...]], "intercept": [...],   # one row per class for K > 2
     "certificate": {...}, "cache_fingerprint": ..., "extra": {...}, "versions": {...}}

JSON stores floats with ``repr`` precision, so a loaded head predicts identically. The files are
strict JSON (no NaN or Infinity): every parser reads them. Writes are atomic, and a file that is
not a head is never overwritten; loads validate every field before a head predicts anything.
"""

from __future__ import annotations

import functools
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from fairhead_io import atomic_open, atomic_write_text

from .certificate import Certificate
from .constraints import Constraint
from .errors import DataError

FORMAT = "fairhead-head"
FORMAT_VERSION = "1.0"
#: a head is d + 1 numbers and its metadata: a file this large is something else (never read whole)
MAX_HEAD_BYTES = 256 * 2**20

MSG_SUFFIX = "head file {path!r} must end in .json or .npz; got suffix {suffix!r}"
MSG_FORMAT = "{path!r} is not a fairhead head file (format={got!r}); pass a file written by solvers.save_head"
MSG_VERSION = "head file {path!r} has format-version {got}, newer than this fairhead reads ({ours}); upgrade fairhead"
MSG_NOT_FITTED = "save_head needs a fitted FairLogisticRegression; call fit first"
MSG_MISSING = "head file {path!r} does not exist; pass the path of a head written by `fairhead fit` or solvers.save_head"
MSG_UNREADABLE = "head file {path!r} cannot be read ({why}); pass a file written by solvers.save_head, or refit"
MSG_DAMAGED = "head file {path!r} is damaged: {why}; refit the head and save it again"
MSG_NOT_FINITE = "cannot save a head with a non-finite {what} ({value}); refit with finite data and parameters"
MSG_NOT_A_HEAD = ("{path!r} exists and is not a fairhead head file; save_head only replaces its own heads: "
                  "pass another path or move that file away")
MSG_FOLDER = "head path {path!r} is a folder; pass a file name ending in .json or .npz"
MSG_NO_FOLDER = "folder {folder!r} for the head does not exist; create it first or pass a path in an existing folder"


def _jsonable(v):
    if isinstance(v, Constraint):
        return v.to_dict()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None  # strict JSON: every parser reads the file (NaN / inf are not JSON)
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, (tuple, list)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    return v


@functools.lru_cache(maxsize=1)
def _versions() -> dict:
    """The versions a head file records (read once per process: a sweep saves 21 heads, and each
    lookup parses a package's metadata, about 1 ms)."""
    import importlib.metadata as md

    out = {}
    for pkg in ("fairhead", "numpy", "scikit-learn", "torch", "cvxpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in (".json", ".npz"):
        raise DataError(MSG_SUFFIX.format(path=str(path), suffix=suffix))
    return suffix


def is_head_file(path) -> bool:
    """Whether ``path`` is a file written by :func:`save_head` (read without trusting it)."""
    path = Path(os.fspath(path))
    try:
        if not path.is_file() or path.stat().st_size > MAX_HEAD_BYTES:
            return False
        doc, _, _ = _read(path, _suffix(path))
    except (DataError, OSError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT


def check_head_path(path) -> Path:
    """Refuse a target that :func:`save_head` must not write: a wrong suffix, a folder, a missing
    folder, or an existing file that is not a head (a cache or a table named ``x.json`` is never
    replaced). Call it before a long fit to fail early; :func:`save_head` calls it too."""
    path = Path(os.fspath(path))
    _suffix(path)
    if path.is_dir():
        raise DataError(MSG_FOLDER.format(path=str(path)))
    folder = path.parent
    if not folder.is_dir():
        raise DataError(MSG_NO_FOLDER.format(folder=str(folder)))
    if os.path.lexists(path) and not is_head_file(path):
        raise DataError(MSG_NOT_A_HEAD.format(path=str(path)))
    return path


def save_head(estimator, path, *, cache_fingerprint=None, extra=None) -> Path:
    """Write a fitted head to ``path`` (``.json`` or ``.npz`` by suffix); return the path.

    The write is atomic (a temporary file beside ``path``, fsynced, then renamed over it), so
    a kill or a full disk leaves the previous head intact. An existing file that is not a head
    is never replaced (see :func:`check_head_path`). Heads are never pickled.

    Parameters
    ----------
    estimator : FairLogisticRegression
        A fitted head (binary or K classes).
    path : str or os.PathLike
        ``*.json`` (readable text) or ``*.npz``; its folder must exist.
    cache_fingerprint : str, optional
        The fingerprint of the cache the head was fitted on (``Cache.fingerprint``); the loaded
        head carries it as ``cache_fingerprint_``, so that later commands can check that heads
        come from the same data.
    extra : dict, optional
        JSON-able provenance stored with the head; the loaded head carries it as ``extra_``.

    Returns
    -------
    pathlib.Path
        The path written.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from solvers import FairLogisticRegression, load_head, save_head
    >>> from solvers.synthetic import make_fair_classification
    >>> X, y, a = make_fair_classification(300, 4, seed=0)
    >>> head = FairLogisticRegression(constraint="dp-score", eps=0.05).fit(X, y, sensitive_features=a)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     path = save_head(head, pathlib.Path(folder) / "head.json")
    ...     again = load_head(path)
    >>> path.name, np.array_equal(again.coef_, head.coef_), again.certificate_ == head.certificate_
    ('head.json', True, True)
    """
    path = check_head_path(path)
    suffix = path.suffix.lower()
    if not hasattr(estimator, "coef_"):
        raise DataError(MSG_NOT_FITTED)
    intercept = np.asarray(estimator.intercept_, dtype=np.float64).reshape(-1)
    coef = np.asarray(estimator.coef_, dtype=np.float64).reshape(intercept.shape[0], -1)  # (1, d) or (K, d)
    for what, value in (("coefficient", coef), ("intercept", intercept),
                        ("eps", np.float64(estimator.eps)), ("C", np.float64(estimator.C))):
        if not np.all(np.isfinite(value)):
            bad = value if value.ndim == 0 else value[~np.isfinite(value)].ravel()[0]
            raise DataError(MSG_NOT_FINITE.format(what=what, value=float(bad)))
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
        "certificate": _jsonable(estimator.certificate_.to_dict()),
        "cache_fingerprint": cache_fingerprint,
        "extra": _jsonable(extra or {}),
        "versions": dict(_versions()),
    }
    if suffix == ".json":
        doc["coef"] = [[float(x) for x in row] for row in coef]
        doc["intercept"] = [float(x) for x in intercept]
        atomic_write_text(path, json.dumps(doc, indent=1, allow_nan=False))
    else:
        with atomic_open(path, "wb") as fh:
            np.savez(fh, meta=np.array(json.dumps(doc, allow_nan=False)), coef=coef, intercept=intercept)
    return path


def _read(path: Path, suffix: str):
    """``(document, coef, intercept)`` of a head file; DataError for anything unreadable."""
    try:
        if suffix == ".json":
            doc = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(doc, dict):
                raise ValueError("the JSON document is not an object")
            return doc, doc.get("coef"), doc.get("intercept")
        with np.load(path, allow_pickle=False) as z:
            if not {"meta", "coef", "intercept"} <= set(z.files):
                raise ValueError(f"arrays {sorted(z.files)} instead of meta, coef and intercept")
            doc = json.loads(str(z["meta"]))
            if not isinstance(doc, dict):
                raise ValueError("meta is not a JSON object")
            return doc, z["coef"], z["intercept"]
    except FileNotFoundError as err:
        raise DataError(MSG_MISSING.format(path=str(path))) from err
    except IsADirectoryError as err:
        raise DataError(MSG_FOLDER.format(path=str(path))) from err
    except RecursionError as err:  # a hand-made document nested thousands of levels deep
        raise DataError(MSG_UNREADABLE.format(path=str(path), why="its JSON is nested too deeply")) from err
    except (ValueError, UnicodeDecodeError, OSError, zipfile.BadZipFile, EOFError) as err:
        why = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(MSG_UNREADABLE.format(path=str(path), why=why)) from err


def _holds_bool(value) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return True
    if isinstance(value, np.ndarray):
        return value.dtype == np.bool_
    return isinstance(value, list) and any(_holds_bool(v) for v in value)


def _finite_array(value, what: str, path: Path) -> np.ndarray:
    if _holds_bool(value):  # JSON true/false would read as 1.0/0.0
        raise DataError(MSG_DAMAGED.format(path=str(path), why=f"{what} holds true/false, not numbers"))
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataError(MSG_DAMAGED.format(path=str(path), why=f"{what} is not a list of numbers")) from err
    if arr.size == 0 or not np.all(np.isfinite(arr)):
        why = f"{what} is empty" if arr.size == 0 else f"{what} holds {int((~np.isfinite(arr)).sum())} NaN or infinite value(s)"
        raise DataError(MSG_DAMAGED.format(path=str(path), why=why))
    return arr


def _validated(doc: dict, coef, intercept, path: Path):
    """Check every field a prediction depends on; return ``(params, coef, intercept, n_features)``."""
    from ._validation import validate_params
    from .constraints import make_constraint
    from .head import FairHead

    def damaged(why):
        return DataError(MSG_DAMAGED.format(path=str(path), why=why))

    missing = [k for k in ("params", "classes", "n_features_in", "certificate") if k not in doc]
    if missing:
        raise damaged(f"missing field(s) {', '.join(missing)}")
    coef = _finite_array(coef, "coef", path)
    intercept = _finite_array(intercept, "intercept", path)
    n_features = doc["n_features_in"]
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        raise damaged(f"n_features_in is {n_features!r}, not a positive integer")
    classes = doc["classes"]
    if (not isinstance(classes, list) or len(classes) < 2
            or len({json.dumps(c, sort_keys=True) for c in classes}) != len(classes)):
        raise damaged(f"classes is {classes!r}; a head has two or more distinct classes")
    if not all(isinstance(c, str) for c in classes) and not all(
            isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        raise damaged(f"classes is {classes!r}; a head's classes are all numbers or all strings")
    if classes != sorted(classes):  # fit stores np.unique(y), sorted; another order flips the predicted labels
        raise damaged(f"classes is {classes!r}, not in sorted order as fit writes them (a reordered list would "
                      "flip every predicted label)")
    if "extra" in doc and not isinstance(doc["extra"], dict):
        raise damaged(f"extra is {type(doc['extra']).__name__}, not a JSON object")
    rows = 1 if len(classes) == 2 else len(classes)  # the binary head has one logit, a K-class head K
    if coef.ndim > 2 or (coef.ndim == 2 and coef.shape[0] != rows) or coef.size != rows * n_features:
        raise damaged(f"coef has shape {coef.shape} but n_features_in is {n_features} and there are {len(classes)} "
                      "classes; they must agree")
    if intercept.size != rows:
        raise damaged(f"intercept has {intercept.size} values; a head with {len(classes)} classes has {rows}")
    if not isinstance(doc["params"], dict) or not isinstance(doc["certificate"], dict):
        raise damaged("params and certificate must be JSON objects")
    params = dict(doc["params"])
    try:
        if isinstance(params.get("constraint"), dict):
            params["constraint"] = make_constraint(params["constraint"])
        est = FairHead(**params)
        validate_params(est)
        make_constraint(est.constraint)
    except (DataError, TypeError, KeyError) as err:
        raise damaged(f"its parameters are invalid ({str(err).splitlines()[0] if str(err) else err!r})") from err
    # the copies of the constraint and the bound must agree (a hand edit changes only one of them)
    name = getattr(est.constraint, "name", est.constraint)
    top = doc.get("constraint")
    top_name = top.get("name") if isinstance(top, dict) else top
    if "constraint" in doc and top_name != name:
        raise damaged(f"constraint {top_name!r} disagrees with its parameters' constraint {name!r}")
    cert_name = doc["certificate"].get("constraint")
    if name is not None and cert_name is not None and cert_name != name:
        raise damaged(f"its certificate is for constraint {cert_name!r}, its parameters say {name!r}")
    if "eps" in doc and doc["eps"] != est.eps:
        raise damaged(f"eps {doc['eps']!r} disagrees with its parameters' eps {est.eps!r}")
    return params, coef, intercept, n_features


def load_head(path, *, head_type=None):
    """Read a head written by :func:`save_head`; return a fitted FairLogisticRegression.

    Every field a prediction depends on is checked (finite coefficients of the stated
    dimension, one row per class for K > 2 classes, valid parameters, one constraint throughout); a damaged or
    hand-edited file raises a one-line :class:`DataError`.

    Parameters
    ----------
    path : str or os.PathLike
        A ``*.json`` or ``*.npz`` head file.
    head_type : type, optional
        The class to return: :class:`~solvers.FairLogisticRegression` (the default) or
        :class:`~solvers.FairHead`, the same head without importing scikit-learn (about 1 s;
        the commands load heads this way).

    Returns
    -------
    FairLogisticRegression
        The head, fitted (an instance of ``head_type``): the same coefficients, parameters,
        classes and certificate as the one saved, so it predicts bit for bit the same.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from solvers import FairLogisticRegression, load_head, save_head
    >>> from solvers.synthetic import make_fair_classification
    >>> X, y, a = make_fair_classification(300, 4, seed=0)
    >>> head = FairLogisticRegression().fit(X, y)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     again = load_head(save_head(head, pathlib.Path(folder) / "head.npz"))
    >>> bool((again.predict(X) == head.predict(X)).all()), again.constraint
    (True, None)
    """
    from .head import FairHead

    if head_type is None:
        from .estimator import FairLogisticRegression as head_type  # deferred: scikit-learn (about 1 s)
    elif not (isinstance(head_type, type) and issubclass(head_type, FairHead)):
        raise DataError(f"head_type is {head_type!r}; pass solvers.FairHead or solvers.FairLogisticRegression")
    path = Path(os.fspath(path))
    suffix = _suffix(path)
    if path.exists() and not path.is_file() and not path.is_dir():  # a FIFO or a device would block the read
        raise DataError(MSG_UNREADABLE.format(path=str(path), why="it is not a regular file (a pipe or a device)"))
    if path.is_file() and path.stat().st_size > MAX_HEAD_BYTES:
        raise DataError(MSG_UNREADABLE.format(path=str(path), why=f"{path.stat().st_size} bytes is no head"))
    doc, coef, intercept = _read(path, suffix)
    if doc.get("format") != FORMAT:
        raise DataError(MSG_FORMAT.format(path=str(path), got=doc.get("format")))
    try:
        major = int(str(doc["format_version"]).split(".")[0])
    except (KeyError, ValueError) as err:
        raise DataError(MSG_DAMAGED.format(path=str(path), why=f"format_version is {doc.get('format_version')!r}")) from err
    if major > int(FORMAT_VERSION.split(".")[0]):
        raise DataError(MSG_VERSION.format(path=str(path), got=doc["format_version"], ours=FORMAT_VERSION))
    params, coef, intercept, n_features = _validated(doc, coef, intercept, path)
    est = head_type(**params)
    est.coef_ = coef.reshape(intercept.size, -1)
    est.intercept_ = intercept.reshape(-1)
    est.classes_ = np.asarray(doc["classes"])
    est.n_features_in_ = n_features
    try:
        est.n_iter_ = int(doc.get("n_iter", 1))
        est.groups_ = [tuple(g) if isinstance(g, list) else g for g in doc.get("groups", [])]
        est.certificate_ = Certificate.from_dict(doc["certificate"])
        violation = est.certificate_.max_violation  # strict JSON wrote a NaN as null
        est.constraint_violation_ = float("nan") if violation is None else float(violation)
    except (TypeError, ValueError) as err:
        raise DataError(MSG_DAMAGED.format(path=str(path), why=f"its certificate cannot be read ({err})")) from err
    est.cache_fingerprint_ = doc.get("cache_fingerprint")
    est.extra_ = doc.get("extra", {})
    est.versions_ = doc.get("versions", {})
    return est


__all__ = ["save_head", "load_head", "check_head_path", "is_head_file"]
