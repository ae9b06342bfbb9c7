"""A sweep's heads on disk, and ``fairhead select``: certify one of them on a held-out split, or abstain.

``fairhead sweep`` writes each linear head it fitted (the unconstrained one and one per eps)
to ``SWEEP_DIR/heads/`` as a small head file (:func:`solvers.save_head` format, written
atomically), with the cache path, the fit split and the head's fit-split metrics in ``extra``.

``fairhead select SWEEP_DIR --target eo<=0.05 --confidence 0.95 --split valid`` reads them,
loads the certification split from the cache, and runs :func:`solvers.select_head`; the
test order of the fixed-sequence procedure is each head's gap on the *fit* split (smallest
first), which does not look at the certification rows. It writes the certificate
(``<head>.certificate.json``) beside the selected head and ``selection.json`` in the sweep
folder (also when it abstains). See :mod:`solvers.select` for the method and its assumptions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fairhead_errors import DataError

HEADS_DIR = "heads"
SELECTION_FILE = "selection.json"
CERT_SUFFIX = ".certificate.json"
MSG_MULTICLASS = ("sweep '{path}' holds {k}-class heads; `fairhead select` certifies the between-groups gaps of "
                 "binary heads only: select a {k}-class head by its per-class gaps in sweep.csv instead")
MSG_NO_HEADS = ("no heads in '{path}'; run `fairhead sweep ... --out {path}` first (sweeps written before "
                "heads were saved must be rerun)")
MSG_FIT_SPLIT = ("split {split!r} is the split the heads were fitted on; certify on a held-out split "
                 "(e.g. --split valid)")
MSG_NO_CACHE = "the heads in '{path}' do not name their cache; pass it with --cache"
MSG_NO_SPLIT = "split {split!r} is not in cache '{cache}' (it has: {have}); pick one with --split"


def write_json_atomic(path: Path, doc) -> Path:
    """Write ``doc`` as strict JSON (NaN -> null), atomically (:func:`fairhead_io.atomic_write_text`)."""
    from fairhead.provenance import strict_json
    from fairhead_io import atomic_write_text

    return atomic_write_text(Path(path), json.dumps(strict_json(doc), indent=1, default=float, allow_nan=False))


def _head_file_name(record, k: int) -> str:
    return "unconstrained.json" if record.method == "unconstrained" else f"eps-{k:03d}.json"


def save_sweep_heads(out: Path, records, *, constraint, params: dict, fit, fit_split: str, fingerprint,
                     cache_path) -> Path:
    """Write the sweep's linear heads (``unconstrained`` and ``fairhead``) to ``out/heads``."""
    from solvers import FairLogisticRegression, save_head
    from solvers.certificate import Certificate

    folder = Path(out) / HEADS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    classes = np.arange(fit.n_classes) if fit.n_classes > 2 else np.unique(fit.y)
    k = 0
    for rec in records:
        if rec.method not in ("unconstrained", "fairhead"):
            continue
        constrained = rec.method == "fairhead"
        eps = float(rec.eps) if constrained and np.isfinite(rec.eps) else 0.0
        head = FairLogisticRegression(constraint=constraint if constrained else None, eps=eps, **params)
        head.intercept_ = np.asarray(rec.intercept, dtype=np.float64).reshape(-1)  # one per class for K > 2
        head.coef_ = np.asarray(rec.coef, dtype=np.float64).reshape(head.intercept_.shape[0], -1)
        head.classes_ = classes
        head.n_features_in_ = head.coef_.shape[1]
        head.n_iter_ = int((rec.certificate or {}).get("n_iter") or 1)
        head.groups_ = []
        head.certificate_ = Certificate.from_dict(rec.certificate)
        extra = {"sweep_method": rec.method, "fit_split": fit_split, "cache": str(Path(cache_path).resolve())
                 if cache_path else None, "attributes": list(fit.attributes),
                 "fit_metrics": rec.metrics.get(fit_split, {})}
        name = _head_file_name(rec, k)
        k += constrained
        save_head(head, folder / name, cache_fingerprint=fingerprint, extra=extra)  # atomic
    return folder


def load_sweep_heads(sweep_dir: Path) -> list[tuple[Path, object]]:
    from solvers import load_head

    folder = Path(sweep_dir) / HEADS_DIR
    files = sorted(p for p in folder.glob("*.json") if not p.name.endswith(CERT_SUFFIX)) if folder.is_dir() else []
    if not files:
        raise DataError(MSG_NO_HEADS.format(path=sweep_dir))
    return [(p, load_head(p)) for p in files]


def select_from_sweep(sweep_dir, *, target, confidence=0.95, split="valid", method="fixed-sequence",
                      cache=None):
    """Certify a sweep's heads on ``split`` of their cache; write the certificate; return the Selection."""
    import embedcache
    from solvers import select_head
    from solvers.intervals import GAP_METRIC
    from solvers.select import parse_target

    from fairhead import pipeline

    gap, _ = parse_target(target)
    heads = load_sweep_heads(sweep_dir)
    if len(heads[0][1].classes_) > 2:
        raise DataError(MSG_MULTICLASS.format(path=sweep_dir, k=len(heads[0][1].classes_)))
    extras = [h.extra_ for _, h in heads]
    fit_split = extras[0].get("fit_split")
    if split == fit_split:
        raise DataError(MSG_FIT_SPLIT.format(split=split))
    cache = cache or extras[0].get("cache")
    if not cache:
        raise DataError(MSG_NO_CACHE.format(path=sweep_dir))
    with embedcache.open(cache) as c:
        if split not in c.splits:
            raise DataError(MSG_NO_SPLIT.format(split=split, cache=cache, have=", ".join(c.splits)))
        arrays = pipeline.load_arrays(c, split, extras[0].get("attributes") or None)
    # the test order: the gap on the fit split (no certification rows involved), smallest first
    order = [float(e.get("fit_metrics", {}).get(GAP_METRIC[gap], np.inf)) for e in extras]
    order = [o if np.isfinite(o) else np.inf for o in order]
    sel = select_head([h for _, h in heads], arrays.X, arrays.y, arrays.group_names, target=target,
                      confidence=confidence, method=method, order=order, labels=[p.stem for p, _ in heads])
    sel.notes = [f"WIDE on '{split}': {n}" for n in sel.notes]
    head_file = str(heads[sel.selected][0]) if sel.selected is not None else None
    doc = sel.certificate(split=split, head_file=head_file)
    doc["fit_split"] = fit_split
    doc["cache"] = str(cache)
    if head_file:
        write_json_atomic(Path(head_file).with_suffix("").with_name(Path(head_file).stem + CERT_SUFFIX), doc)
    write_json_atomic(Path(sweep_dir) / SELECTION_FILE, doc)
    return sel


def selection_summary(sel, sweep_dir) -> str:
    from fairhead.tables import format_table

    rows = [{"head": b.label, "acc": b.accuracy, "acc_low": b.accuracy_low, "acc_high": b.accuracy_high,
             f"{sel.gap}_gap": b.gap, "upper_bound": b.bound, "tested": b.tested, "certified": b.certified}
            for b in sel.bounds]
    lines = [format_table(rows), sel.explanation, *sel.notes]
    if not sel.abstained:
        lines.append(f"wrote certificate beside the head and {Path(sweep_dir) / SELECTION_FILE}")
    else:
        lines.append(f"wrote {Path(sweep_dir) / SELECTION_FILE}")
    return "\n".join(lines)
