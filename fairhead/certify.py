"""A sweep's heads on disk, and ``fairhead select``: certify one of them on a held-out split, or abstain.

``fairhead sweep`` writes each linear head it fitted (the unconstrained one and one per eps)
to ``SWEEP_DIR/heads/`` as a small head file (:func:`solvers.save_head` format, written
atomically), with the cache path, the fit split and the head's fit-split metrics in ``extra``.

``fairhead select SWEEP_DIR --target eo<=0.05 --confidence 0.95 --split valid`` reads them,
loads the certification split from the cache (refused unless the cache's fingerprint is the one
the heads were fitted on: another cache's "valid" rows may be the heads' fit rows), and runs
:func:`solvers.select_head` with the sweep's positive class; the test order of the fixed-sequence
procedure is each head's gap on the *fit* split (smallest first), which does not look at the
certification rows. It writes the certificate (``<head>.certificate.json``) beside the selected
head and ``selection.json`` in the sweep folder (also when it abstains). On abstention it prints
the smallest certifiable gap at 1, 2, 4 and 8 times the certification rows; always, the eps to
aim below the target (from the fit split's rates, never the certification rows). See
:mod:`solvers.select` for the bounds, the methods and their assumptions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from fairhead_errors import DataError
from fairhead_io import atomic_write_text
from solvers import load_head, save_head, select_head
from solvers.certificate import Certificate
from solvers.head import FairHead
from solvers.intervals import GAP_METRIC, GroupCounts, check_confidence
from solvers.select import BOUNDS, MSG_BOUND, aimed_eps, certification_margin, parse_target

from fairhead import pipeline
from fairhead.provenance import strict_json
from fairhead.tables import format_table

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not
# need it does not pay for it. Heads are solvers.FairHead: scikit-learn (about 1 s, with scipy.stats and
# pandas) is never imported on a command's path.

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
MSG_FINGERPRINT = ("cache '{cache}' (fingerprint {got}...) is not the cache the heads in '{path}' were fitted on "
                   "(fingerprint {expected}...): its certification rows may be the heads' fit rows; pass that "
                   "cache with --cache, or rerun `fairhead sweep` on this one")
MSG_MIXED_HEADS = ("the heads in '{path}' come from different caches or fit splits; rerun `fairhead sweep --out "
                   "{path}` into an empty folder")


def write_json_atomic(path: Path, doc) -> Path:
    """Write ``doc`` as strict JSON (NaN -> null), atomically (:func:`fairhead_io.atomic_write_text`)."""
    return atomic_write_text(Path(path), json.dumps(strict_json(doc), indent=1, default=float, allow_nan=False))


def _head_file_name(record, k: int) -> str:
    return "unconstrained.json" if record.method == "unconstrained" else f"eps-{k:03d}.json"


def save_sweep_heads(out: Path, records, *, constraint, params: dict, fit, fit_split: str, fingerprint,
                     cache_path) -> Path:
    """Write the sweep's linear heads (``unconstrained`` and ``fairhead``) to ``out/heads``."""
    folder = Path(out) / HEADS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    classes = np.arange(fit.n_classes) if fit.n_classes > 2 else np.unique(fit.y)
    k = 0
    for rec in records:
        if rec.method not in ("unconstrained", "fairhead"):
            continue
        constrained = rec.method == "fairhead"
        eps = float(rec.eps) if constrained and np.isfinite(rec.eps) else 0.0
        head = FairHead(constraint=constraint if constrained else None, eps=eps, **params)
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


def head_label(head) -> str:
    """How ``select`` names a sweep's head: by its bound (``eps=0.05``), not by its file."""
    return "unconstrained" if head.constraint in (None, "none") else f"eps={float(head.eps):.4g}"


def load_sweep_heads(sweep_dir: Path) -> list[tuple[Path, object]]:
    folder = Path(sweep_dir) / HEADS_DIR
    files = sorted(p for p in folder.glob("*.json") if not p.name.endswith(CERT_SUFFIX)) if folder.is_dir() else []
    if not files:
        raise DataError(MSG_NO_HEADS.format(path=sweep_dir))
    return [(p, load_head(p, head_type=FairHead)) for p in files]


def _sweep_pos_label(sweep_dir: Path):
    """The positive class the sweep was run with (``sweep.json`` config), or None for the default."""
    try:
        doc = json.loads((Path(sweep_dir) / "sweep.json").read_text())
    except (OSError, ValueError):
        return None
    return ((doc.get("provenance") or {}).get("config") or {}).get("pos_label")


def _aim_hint(heads, orders, fit_arrays, gap, target, confidence, n_cert, bound):
    """The eps to aim below ``target``: the bound's margin for the fit-split rates of the head whose
    fit gap is nearest the target, scaled to ``n_cert`` certification rows (no certification row used)."""
    finite = [i for i, o in enumerate(orders) if np.isfinite(o)]
    if not finite:
        return None
    i = min(finite, key=lambda j: (abs(orders[j] - target), j))
    counts = GroupCounts.from_predictions(fit_arrays.y, heads[i].predict(fit_arrays.X),
                                          sensitive_features=fit_arrays.group_names)
    if len(counts.groups) < 2:
        return None
    margin = certification_margin(counts, gap, confidence=confidence, n_rows=n_cert, bound=bound)
    return {"margin": margin, "eps": aimed_eps(target, margin), "from_head": i}


def select_from_sweep(sweep_dir, *, target, confidence=0.95, split="valid", method="fixed-sequence",
                      cache=None, bound="exact"):
    """Certify a sweep's heads on ``split`` of their cache; write the certificate; return the Selection."""
    import embedcache

    gap, value = parse_target(target)
    check_confidence(confidence)
    if bound not in BOUNDS:
        raise DataError(MSG_BOUND.format(got=bound))
    heads = load_sweep_heads(sweep_dir)
    if len(heads[0][1].classes_) > 2:
        raise DataError(MSG_MULTICLASS.format(path=sweep_dir, k=len(heads[0][1].classes_)))
    extras = [h.extra_ for _, h in heads]
    fit_split = extras[0].get("fit_split")
    fingerprints = {getattr(h, "cache_fingerprint_", None) for _, h in heads}
    if len(fingerprints) > 1 or len({e.get("fit_split") for e in extras}) > 1:
        raise DataError(MSG_MIXED_HEADS.format(path=sweep_dir))
    expected = fingerprints.pop()
    if split == fit_split:
        raise DataError(MSG_FIT_SPLIT.format(split=split))
    cache = cache or extras[0].get("cache")
    if not cache:
        raise DataError(MSG_NO_CACHE.format(path=sweep_dir))
    attributes = extras[0].get("attributes") or None
    pos_label = _sweep_pos_label(sweep_dir)
    with embedcache.open(cache) as c:
        if expected and c.fingerprint != expected:
            raise DataError(MSG_FINGERPRINT.format(cache=cache, got=c.fingerprint[:12], path=sweep_dir,
                                                   expected=str(expected)[:12]))
        if split not in c.splits:
            raise DataError(MSG_NO_SPLIT.format(split=split, cache=cache, have=", ".join(c.splits)))
        arrays = pipeline.load_arrays(c, split, attributes, pos_label=pos_label)
        fit_arrays = pipeline.load_arrays(c, fit_split, attributes, pos_label=pos_label) \
            if fit_split in c.splits else None
    # the test order: the gap on the fit split (no certification rows involved), smallest first
    order = [float(e.get("fit_metrics", {}).get(GAP_METRIC[gap], np.inf)) for e in extras]
    order = [o if np.isfinite(o) else np.inf for o in order]
    sel = select_head([h for _, h in heads], arrays.X, arrays.y, arrays.group_names, target=target,
                      confidence=confidence, method=method, bound=bound, order=order,
                      labels=[head_label(h) for _, h in heads])
    sel.notes = [f"WIDE on '{split}': {n}" for n in sel.notes]
    aim = _aim_hint([h for _, h in heads], order, fit_arrays, gap, value, confidence, sel.n_rows, bound) \
        if fit_arrays is not None else None
    head_file = str(heads[sel.selected][0]) if sel.selected is not None else None
    doc = sel.certificate(split=split, head_file=head_file)
    doc["fit_split"] = fit_split
    doc["cache"] = str(cache)
    doc["cache_fingerprint"] = expected
    doc["pos_label"] = pos_label
    doc["aim_below"] = aim
    sel.aim = aim
    if head_file:
        write_json_atomic(Path(head_file).with_suffix("").with_name(Path(head_file).stem + CERT_SUFFIX), doc)
    write_json_atomic(Path(sweep_dir) / SELECTION_FILE, doc)
    return sel


def selection_summary(sel, sweep_dir) -> str:
    rows = [{"head": b.label, "acc": b.accuracy, "acc_low": b.accuracy_low, "acc_high": b.accuracy_high,
             f"{sel.gap}_gap": b.gap, "upper_bound": b.bound, "tested": b.tested, "certified": b.certified}
            for b in sel.bounds]
    lines = [format_table(rows), sel.explanation, *sel.notes]
    if sel.abstained and sel.plan:
        lines.append(f"smallest certifiable {sel.gap} gap of the first head by certification rows (its observed "
                     f"rates, {sel.bound} bound, confidence {sel.confidence:g}):")
        lines.append(format_table([{"rows": p["rows"], "group_rows": " ".join(f"{g}:{n}" for g, n in
                                                                              p["group_rows"].items()),
                                    "smallest_certifiable": p["smallest_certifiable"]} for p in sel.plan]))
    aim = getattr(sel, "aim", None)
    if aim:
        lines.append(f"to certify an accurate head, aim below the target: the bound's margin at {sel.n_rows} rows is "
                     f"{aim['margin']:.4f} (fit-split rates); sweep with --eps-grid "
                     f"{' '.join(f'{e:.4g}' for e in aim['eps'])} and select again")
    if not sel.abstained:
        lines.append(f"wrote certificate beside the head and {Path(sweep_dir) / SELECTION_FILE}")
    else:
        lines.append(f"wrote {Path(sweep_dir) / SELECTION_FILE}")
    return "\n".join(lines)
