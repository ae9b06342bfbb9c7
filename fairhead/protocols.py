"""The seed paper's five last-layer protocols, by name, on one cache.

======== ================================================================================
protocol head fitted on ("fine-tune" data)
======== ================================================================================
B1       the train split, unconstrained
B2       the validation split, unconstrained
B3       a group-balanced set: train + validation down-sampled (seeded) so every
         (label, attribute) cell has as many rows as the smallest one; unconstrained
M1       B2's data with the fairness constraint
M2       B3's data with the fairness constraint
======== ================================================================================

Every head is evaluated on train, on its own fine-tune data and on test, with the
paper's metrics: accuracy, balanced accuracy, AUC, per-group FPR and FNR, EO
difference and ratio, DP difference and ratio, accuracy-equality difference,
max-min fairness ``worst_group_accuracy`` (the worst sensitive group's accuracy, the paper's MMF)
and ``worst_cell_acc`` (the worst (label, group) cell's accuracy), plus ``constraint_value``: the
constraint's own bounded quantity (group vs overall rate gap for rate constraints, under the
``balance`` weights when given), which M1 and M2 are fitted to keep within ``eps`` on their
fine-tune data, and ``eps_met``: whether they did (their certificate's verdict; empty for the
unconstrained B1 B2 B3). A head that misses its bound is named under the table, as is an M head
equal to its B head because the constraint was inactive there. ``constraint_value`` and the paper's
``eo_diff`` / ``dp_diff`` (fairlearn's between-groups ``max - min``) are different quantities;
:meth:`ProtocolTable.to_text` says so under the table.

Below the table, :meth:`ProtocolTable.to_text` adds the overfitting section of
:mod:`fairhead.uncertainty` (``overfitting.png`` in ``--out``, ``overfitting`` in the JSON): per
protocol, the between-groups gap on its fine-tune data, on its held-out split (:data:`HELD_OUT`, the
split it never saw besides test) with the upper confidence bound there, and on test.
"""

from __future__ import annotations

import csv
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fairhead_errors import ConvergenceWarning, DataError
from fairhead_io import PNG_BY_MATPLOTLIB, StagedFiles, check_own_outputs, contains, ensure_output_folder, starts_with
from solvers.constraints import CONSTRAINTS, make_constraint
from solvers.head import FairHead, labels_from_scores
from solvers.intervals import check_confidence

from fairhead import pipeline, provenance
from fairhead.measure import constraint_value, describe_bounded_gap
from fairhead.progress_bar import progress_bar
from fairhead.tables import format_table
from fairhead.uncertainty import (INTERVAL_LEGEND, interval_columns, overfitting_metric, overfitting_row,
                                  overfitting_section, plot_overfitting)

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not
# need it does not pay for it. Heads are solvers.FairHead: scikit-learn (about 1 s, with scipy.stats and
# pandas) is never imported on a command's path.

PROTOCOLS = ("B1", "B2", "B3", "M1", "M2")
#: the files written into --out, with the first bytes that mark them as fairhead's own
PROTOCOL_OUTPUTS = {"protocols.csv": starts_with(b"protocol,split,n"), "protocols.json": contains(b'"rows"'),
                    "overfitting.png": PNG_BY_MATPLOTLIB}
#: protocol -> the split its head never saw besides test, for the overfitting section; B3 and M2
#: are fit on train and valid together, so only test is held out for them
HELD_OUT = {"B1": "valid", "B2": "train", "B3": None, "M1": "train", "M2": None}
NO_HELD_OUT = "none (fit on train+valid)"
HELD_OUT_HINT = ("each head's held-out split is the one it never saw besides test (B1: valid; B2, M1: train); "
                 "B3 and M2 are fit on train and valid together, so only test is held out for them.")
MSG_MISSING_SPLIT = "protocols need splits train, valid and test; cache '{path}' has {have}; {fix}"
#: the fix of MSG_MISSING_SPLIT, by how the cache was made
MISSING_SPLIT_FIX = {
    "extracted": "re-extract with all three (a manifest's --split-col with train, valid and test values)",
    "imported": "re-import it with --split COLUMN naming train, valid and test per row (without --split, "
                "`fairhead import` draws a hashed 70/15/15 train/valid/test split)",
}
#: the five fits' progress bar
PROGRESS_DESC = "protocols"
#: an M head whose B head already met eps: the constraint was inactive, so the two heads agree
INACTIVE_NOTE = ("{m} = {b}: {b} already meets {constraint} eps={eps:g} on the same data (constraint_value "
                 "{value:.4g}), so the constraint is inactive and {m} is {b}'s head up to solver tolerance "
                 "(coefficients within {diff:.1e}; the same prediction on {agree} of {n} fine-tune rows)")
#: the same for a rate constraint, whose heads also choose their intercept for accuracy on the fit rows
INACTIVE_RATE_NOTE = ("{m} = {b}: {b} already meets {constraint} eps={eps:g} on the same data (constraint_value "
                      "{value:.4g}), so the constraint is inactive and {m} is {b}'s fit with its intercept chosen "
                      "for accuracy on those rows, as every rate head's (coefficients within {diff:.1e}; the same "
                      "prediction on {agree} of {n} fine-tune rows)")
MISSED_NOTE = ("{m} MISSES its bound: constraint_value {value:.4g} > eps {eps:g} on its fine-tune data ({fit_on}); "
               "no head on the multiplier path meets it there. Raise --eps, lower --C, or use --balance group")
#: the columns the report (``fairhead demo``'s report.md) keeps; the CSV and JSON keep every one
REPORT_COLUMNS = ("protocol", "split", "n", "acc", "eo_diff", "dp_diff", "worst_group_accuracy", "constraint_value",
                  "eps_met")
#: metrics that carry ``_low`` / ``_high`` intervals (fairhead.uncertainty.interval_columns)
INTERVAL_KEYS = ("accuracy", "equalized_odds_difference", "demographic_parity_difference",
                 "accuracy_equality_difference", "worst_group_accuracy")
PROTOCOL_METRICS = (
    ("accuracy", "acc"), ("balanced_accuracy", "bal_acc"), ("roc_auc", "auc"),
    ("equalized_odds_difference", "eo_diff"), ("equalized_odds_ratio", "eo_ratio"),
    ("demographic_parity_difference", "dp_diff"), ("demographic_parity_ratio", "dp_ratio"),
    ("accuracy_equality_difference", "acc_eq_diff"), ("worst_group_accuracy", "worst_group_accuracy"),
    ("worst_cell_accuracy", "worst_cell_acc"),
)


def _concat(parts: list[pipeline.SplitArrays]) -> pipeline.SplitArrays:
    first = parts[0]
    return pipeline.SplitArrays(
        X=np.concatenate([p.X for p in parts]), y=np.concatenate([p.y for p in parts]),
        groups=np.concatenate([p.groups for p in parts]), attributes=first.attributes,
        categories=first.categories, sample_ids=np.concatenate([p.sample_ids for p in parts]),
        n_classes=first.n_classes, label_name=first.label_name, label_categories=first.label_categories)


def _take(arrays: pipeline.SplitArrays, idx: np.ndarray) -> pipeline.SplitArrays:
    return arrays.take(idx)  # one implementation (SplitArrays.take keeps every field)


def group_balanced(arrays: pipeline.SplitArrays, *, seed: int) -> pipeline.SplitArrays:
    """Down-sample every (label, group) cell to the size of the smallest one (seeded, order kept)."""
    cell_key = np.column_stack([arrays.y, arrays.groups])
    cells, inverse = np.unique(cell_key, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    sizes = np.bincount(inverse)
    smallest = int(sizes.min())
    rng = np.random.default_rng(seed)
    keep = [np.sort(rng.choice(np.flatnonzero(inverse == c), size=smallest, replace=False))
            for c in range(len(cells))]
    return _take(arrays, np.sort(np.concatenate(keep)))


#: each protocol's fine-tune data, in words (for tables that list the heads by protocol)
FIT_ON = {"B1": "train", "B2": "valid", "B3": "train+valid balanced", "M1": "valid", "M2": "train+valid balanced"}


def protocol_plans(train: pipeline.SplitArrays, valid: pipeline.SplitArrays, *, constraint, seed: int) -> dict:
    """``protocol -> (fine-tune data, constraint or None)``: what each of B1 B2 B3 M1 M2 fits its head on."""
    balanced = group_balanced(_concat([train, valid]), seed=seed)
    return {"B1": (train, None), "B2": (valid, None), "B3": (balanced, None),
            "M1": (valid, constraint), "M2": (balanced, constraint)}


@dataclass
class ProtocolTable:
    rows: list[dict]
    group_names: list[str]
    constraint: str | None = None
    balance: str | None = None
    confidence: float = 0.95
    #: rows of a head on its held-out split where the table has none (B1 on valid), same columns
    held_out_rows: list[dict] = field(default_factory=list)
    n_classes: int = 2
    eps: float | None = None
    #: one line per head that misses its bound or equals its B head (printed under the table, in the JSON)
    notes: list[str] = field(default_factory=list)
    #: how the table was made (constraint, eps, seed, cache fingerprint, versions), written to protocols.json
    provenance: dict = field(default_factory=dict)

    def columns(self, intervals: bool = True) -> list[str]:
        cols = ["protocol", "split", "n"] + [h for _, h in PROTOCOL_METRICS] + ["constraint_value", "eps_met"]
        if intervals:
            cols += [f"{h}_{end}" for k, h in PROTOCOL_METRICS if k in INTERVAL_KEYS for end in ("low", "high")]
        for g in self.group_names:
            cols += [f"FPR[{g}]", f"FNR[{g}]"]
        return cols

    def legend(self) -> list[str]:
        """What ``constraint_value`` and the between-groups columns measure."""
        eps = "" if self.eps is None else f" {self.eps:g}"
        return [f"constraint_value: the bounded gap, {describe_bounded_gap(self.constraint, self.balance, self.n_classes)}",
                f"eps_met: whether M1 / M2 keep constraint_value within eps{eps} on their fine-tune data "
                "(the fit's certificate; empty for the unconstrained B1 B2 B3)",
                "eo_diff, dp_diff, acc_eq_diff: between-groups max - min (fairlearn), unit weights; "
                "worst_group_accuracy: the worst sensitive group's accuracy (MMF); "
                "worst_cell_acc: the worst (label, group) cell",
                *(["K classes: each gap is the largest over classes of its one-vs-rest value; FPR[g], FNR[g] are "
                   "the mean over classes of the one-vs-rest rates"] if self.n_classes > 2 else []),
                "*_low/*_high (CSV, JSON): " + INTERVAL_LEGEND.format(conf=self.confidence)]

    def overfitting(self) -> dict:
        """Per protocol: the gap on its fine-tune data, on its held-out split (with its bound) and on test."""
        long = overfitting_metric(self.constraint, available=INTERVAL_KEYS)  # a gap the rows carry intervals of
        metric = dict(PROTOCOL_METRICS)[long]
        by_split = {(r["protocol"], r["split"]): r for r in [*self.rows, *self.held_out_rows]}
        rows = [{"protocol": p, "held_out": HELD_OUT.get(p) or NO_HELD_OUT,
                 **overfitting_row(by_split.get((p, "fine-tune")), by_split.get((p, HELD_OUT.get(p))),
                                   by_split.get((p, "test")), metric=metric)}
                for p in dict.fromkeys(r["protocol"] for r in self.rows)]
        return {"metric": metric, "fit_split": "fine-tune", "cert_split": "held-out", "confidence": self.confidence,
                "rows": rows}

    def overfitting_section(self) -> list[str]:
        over = self.overfitting()
        return overfitting_section(over["rows"], fit_split=over["fit_split"], cert_split=over["cert_split"],
                                   metric=over["metric"], confidence=self.confidence,
                                   id_columns=(("protocol", "protocol"), ("held_out", "held-out split")),
                                   hint=HELD_OUT_HINT)

    def to_text(self, columns=None) -> str:
        """The table (``columns``, default every column without intervals), the notes, the legend and
        the overfitting section."""
        return "\n".join([format_table(self.rows, list(columns or self.columns(intervals=False))),
                          *self.notes, *self.legend(), "", *self.overfitting_section()]).rstrip("\n")

    def to_json(self) -> dict:
        """What ``protocols.json`` holds (and ``fairhead protocols --json`` prints): rows first."""
        return provenance.strict_json({"rows": self.rows, "groups": self.group_names, "columns": self.legend(),
                                       "constraint": self.constraint, "eps": self.eps, "notes": self.notes,
                                       "overfitting": self.overfitting(), "provenance": self.provenance})

    def write(self, out: Path) -> dict[str, Path]:
        out = ensure_output_folder(out, flag="--out")
        check_own_outputs(out, PROTOCOL_OUTPUTS, flag="--out")
        csv_path, json_path = out / "protocols.csv", out / "protocols.json"
        with StagedFiles() as staged:  # both replaced together: a kill leaves the old pair or the new one
            with staged.open(csv_path, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns())
                writer.writeheader()
                writer.writerows(self.rows)
            over = self.overfitting()
            # "rows" first: its key marks the file as ours (PROTOCOL_OUTPUTS reads the first bytes)
            staged.write_text(json_path, json.dumps(self.to_json(), indent=1, allow_nan=False))
            png_path = plot_overfitting(over["rows"], out, fit_split=over["fit_split"], cert_split=over["cert_split"],
                                        metric=over["metric"], staged=staged,
                                        labels=[r["protocol"] for r in over["rows"]])
        return {"protocols_table": csv_path, "protocols_json": json_path, "overfitting_plot": png_path}


def _row(protocol: str, split: str, head, arrays: pipeline.SplitArrays, constraint, balance=None,
         confidence=0.95) -> dict:
    scores = head.decision_function(arrays.X)  # once: labels, probabilities and the bounded gap follow
    yhat = labels_from_scores(scores, head.classes_)
    values = pipeline.evaluate_head_scores(head, arrays, scores)
    values.update(interval_columns(arrays.y, yhat, pipeline.sensitive_arg(arrays), confidence, classes=arrays.classes))
    row = {"protocol": protocol, "split": split, "n": int(len(arrays.y))}
    row.update({h: float(values.get(k, float("nan"))) for k, h in PROTOCOL_METRICS})
    # the quantity the M-protocols bound (group vs overall), next to the paper's metrics
    row.update({f"{h}_{end}": values[f"{k}_{end}"] for k, h in PROTOCOL_METRICS if k in INTERVAL_KEYS
                for end in ("low", "high")})
    row["constraint_value"] = constraint_value(constraint, y=arrays.y, scores=scores,
                                               sensitive_features=pipeline.sensitive_arg(arrays), balance=balance)
    row["eps_met"] = eps_met(head)
    names = arrays.group_names
    for g in np.unique(names):
        if arrays.n_classes > 2:  # K classes: the mean over classes of the one-vs-rest rates
            row[f"FPR[{g}]"], row[f"FNR[{g}]"] = _class_mean_rates(arrays.y[names == g], yhat[names == g],
                                                                   arrays.n_classes)
            continue
        neg, pos = (names == g) & (arrays.y == 0), (names == g) & (arrays.y == 1)
        row[f"FPR[{g}]"] = float(yhat[neg].mean()) if neg.any() else float("nan")
        row[f"FNR[{g}]"] = float(1 - yhat[pos].mean()) if pos.any() else float("nan")
    return row


def eps_met(head) -> bool | None:
    """Whether a constrained head keeps its bound on its fit data (its certificate's verdict, as
    ``fairhead fit`` prints it: :attr:`solvers.certificate.Certificate.keeps_bound`); None without a bound."""
    return head.certificate_.keeps_bound


def _class_mean_rates(y, yhat, n_classes: int) -> tuple[float, float]:
    """The mean over classes (those with rows of each event) of the one-vs-rest FPR and FNR."""
    fpr = [float((yhat[y != k] == k).mean()) for k in range(n_classes) if (y != k).any()]
    fnr = [float((yhat[y == k] != k).mean()) for k in range(n_classes) if (y == k).any()]
    return (float(np.mean(fpr)) if fpr else float("nan"), float(np.mean(fnr)) if fnr else float("nan"))


def _missing_split_fix(cache) -> str:
    from embedcache.importer import IMPORTED_ARCH
    from embedcache.store import schema

    imported = cache.provenance.get(schema.BACKBONE_ARCH_ATTR) == IMPORTED_ARCH
    return MISSING_SPLIT_FIX["imported" if imported else "extracted"]


def _fit_quietly(head, arrays, *, split: str) -> None:
    """Fit ``head``. The ConvergenceWarning of a bound the multiplier path cannot meet is not printed:
    the table says it in its own words (``eps_met``, :data:`MISSED_NOTE`). Every other warning
    (a solver that did not converge) is shown as it would have been."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pipeline.fit_head(head, arrays, split=split)
    said = head.certificate_.eps_met is False
    for w in caught:
        if not (said and issubclass(w.category, ConvergenceWarning)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _notes(rows: list[dict], heads: dict, plans: dict, *, constraint: str, eps: float) -> list[str]:
    """MISSED_NOTE for an M head that misses eps; INACTIVE_NOTE for one whose B head (the same data,
    unconstrained) already meets eps: the unconstrained optimum is then feasible, so it is the
    constrained optimum too (the objective is strictly convex), and the two heads differ only by
    the solvers' tolerance (rate heads: and by the intercept the threshold search chooses for
    accuracy on the fit rows, :mod:`solvers.threshold`)."""
    by = {(r["protocol"], r["split"]): r for r in rows}
    notes = []
    for m, b in (("M1", "B2"), ("M2", "B3")):
        fit = by[(m, "fine-tune")]
        if fit["eps_met"] is False:
            notes.append(MISSED_NOTE.format(m=m, value=fit["constraint_value"], eps=eps, fit_on=FIT_ON[m]))
        base = by[(b, "fine-tune")]["constraint_value"]
        if base <= eps:
            diff = max(float(np.max(np.abs(heads[m].coef_ - heads[b].coef_))),
                       float(np.max(np.abs(np.asarray(heads[m].intercept_) - np.asarray(heads[b].intercept_)))))
            X = plans[m][0].X
            agree = int(np.sum(heads[m].predict(X) == heads[b].predict(X)))
            note = INACTIVE_RATE_NOTE if CONSTRAINTS[constraint].family == "rate" else INACTIVE_NOTE
            notes.append(note.format(m=m, b=b, constraint=constraint, eps=eps, value=base, diff=diff,
                                     agree=agree, n=len(plans[m][0].y)))
    return notes


def run_protocols(cache_path, *, constraint="eo", eps=0.05, attributes=None, seed=0, out=None,
                  C=1.0, backend="auto", balance=None, device="cpu", min_group_size=10, pos_label=None,
                  data=None, confidence=0.95, progress=False) -> ProtocolTable:
    """Fit B1, B2, B3, M1 and M2 on a cache and evaluate each on train, its fine-tune data and test.

    ``progress`` shows a bar over the five fits. The table's ``provenance`` (written to
    ``protocols.json``) records the constraint, eps, seed, the cache's fingerprint and the versions.
    """
    import embedcache

    if constraint in (None, "none"):
        raise DataError("protocols M1 and M2 need a constraint; pass --constraint eo (or another)")
    if out is not None:  # before the five fits: a bad --out fails in a second, not after all the work
        check_own_outputs(ensure_output_folder(out, flag="--out"), PROTOCOL_OUTPUTS, flag="--out")
    confidence = check_confidence(confidence)
    fingerprint = None
    if data is None:
        with embedcache.open(cache_path) as cache:
            if not {"train", "valid", "test"} <= set(cache.splits):
                raise DataError(MSG_MISSING_SPLIT.format(path=cache_path, have=", ".join(cache.splits),
                                                         fix=_missing_split_fix(cache)))
            pipeline.check_names(cache, attributes=attributes, pos_label=pos_label)  # before any features are read
            data = {s: pipeline.load_arrays(cache, s, attributes, pos_label=pos_label) for s in ("train", "valid", "test")}
            fingerprint = cache.fingerprint
    train, valid, test = data["train"], data["valid"], data["test"]
    name = make_constraint(constraint).name
    base = dict(C=C, backend=backend, balance=balance, device=device, min_group_size=min_group_size)
    rows, held_out_rows, heads = [], [], {}
    plans = protocol_plans(train, valid, constraint=constraint, seed=seed)
    with progress_bar(progress, total=len(plans), desc=PROGRESS_DESC, unit="head") as bar:
        for protocol, (fit_on, cons) in plans.items():
            bar.set_postfix_str(f"{protocol} on {FIT_ON[protocol]}")
            head = FairHead(constraint=cons, eps=eps, **base)
            _fit_quietly(head, fit_on, split=f"{protocol} fine-tune")
            heads[protocol] = head
            for split, arrays in (("train", train), ("fine-tune", fit_on), ("test", test)):
                rows.append(_row(protocol, split, head, arrays, constraint, balance, confidence))
            held = HELD_OUT[protocol]
            if held is not None and held != "train":  # a train row is in the table already
                held_out_rows.append(_row(protocol, held, head, data[held], constraint, balance, confidence))
            bar.update(1)
    group_names = sorted({str(g) for arrays in (train, valid, test) for g in np.unique(arrays.group_names)})
    bounded = CONSTRAINTS[name].bounded
    meta = provenance.collect(seed=seed, extra={
        "command": "protocols", "cache": None if cache_path is None else str(cache_path),
        "cache_fingerprint": fingerprint, "constraint": name, "eps": eps if bounded else None,
        "config": {"C": C, "backend": backend, "balance": balance, "min_group_size": min_group_size,
                   "attributes": list(train.attributes), "pos_label": pos_label, "confidence": confidence}})
    table = ProtocolTable(rows=rows, group_names=group_names, constraint=constraint, balance=balance,
                          confidence=confidence, held_out_rows=held_out_rows, n_classes=train.n_classes,
                          eps=eps if bounded else None,
                          notes=_notes(rows, heads, plans, constraint=name, eps=eps) if bounded else [],
                          provenance=meta)
    if out is not None:
        table.write(out)
    return table
