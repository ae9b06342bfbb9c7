"""Markdown reports that put a result table and its plots together."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fairhead_io import atomic_write_text
from solvers.constraints import CONSTRAINTS

from fairhead import compare, uncertainty
from fairhead.tables import markdown_table
from fairhead.uncertainty import GAP_OF_METRIC

REPORT_COLUMNS = (
    ("method", "method"), ("eps", "eps"), ("alpha", "alpha"), ("split", "split"), ("accuracy", "acc"),
    ("balanced_accuracy", "bal. acc"), ("roc_auc", "AUC"), ("constraint_value", "constraint_value (bounded gap)"),
    ("demographic_parity_difference", "DP diff (between groups)"),
    ("equalized_odds_difference", "EO diff (between groups)"), ("worst_group_accuracy", "worst_group_accuracy (MMF)"),
    ("worst_cell_accuracy", "worst cell acc"),
    ("eps_met", "eps_met"), ("fit_time_s", "time (s)"),
)


def _headline(result) -> list[str]:
    """Three sentences a reader needs: the unconstrained gap, the tightest fair head, train vs test."""
    rows = result.rows
    fit, lines = result.fit_split, []

    def get(method, split, pick=None):
        sel = [r for r in rows if r["method"] == method and r["split"] == split]
        return pick(sel) if (sel and pick) else (sel[0] if sel else None)

    free_fit, free_test = get("unconstrained", fit), get("unconstrained", "test")
    if free_fit and free_test:
        lines.append(f"- Unconstrained head: accuracy {free_test['accuracy']:.3f} on test, "
                     f"bounded gap {free_fit['constraint_value']:.4f} on {fit} / "
                     f"{free_test['constraint_value']:.4f} on test "
                     f"(DP diff {free_test['demographic_parity_difference']:.3f}, "
                     f"EO diff {free_test['equalized_odds_difference']:.3f} on test).")
    heads = [r for r in rows if r["method"] == "fairhead" and r["split"] == fit]
    if heads:
        tight = min(heads, key=lambda r: (r["eps"] if not math.isnan(r["eps"]) else 0.0))
        test = next((r for r in rows if r["method"] == "fairhead" and r["split"] == "test"
                     and r["eps"] == tight["eps"]), None)
        if test:
            lines.append(f"- Tightest bound eps={tight['eps']:.4f}: bounded gap {tight['constraint_value']:.4f} on "
                         f"{fit} vs {test['constraint_value']:.4f} on test, accuracy "
                         f"{tight['accuracy']:.3f} / {test['accuracy']:.3f}.")
    missed = result.missed()
    n_heads = sum(r.method == "fairhead" for r in result.records)
    if missed:
        lines.append(f"- **{len(missed)} of {n_heads} heads miss their bound** on {fit}: "
                     + ", ".join(f"eps={r.eps:.4g} (bounded gap {r.metrics[fit]['constraint_value']:.4g})"
                                 for r in missed) + ".")
    elif n_heads:
        lines.append(f"- All {n_heads} heads meet their bound on {fit}.")
    lines += [f"- **Undefined on {split}**: {note}." for split, notes in result.undefined_rates.items()
              for note in notes]
    lines += score_gap_note(result.constraint, rows)
    return lines


#: constraints that bound a function of the score, not a hard-prediction rate
SCORE_FAMILY = tuple(name for name, c in CONSTRAINTS.items() if c.family == "score")
SCORE_GAP_NOTE = (
    "- **Why the `{name}` heads barely move the selection-rate gap** (test DP diff {tight:.3f} at eps={eps:.3g} "
    "against {free:.3f} unconstrained): a score constraint bounds the groups' *mean logits* (or their covariance "
    "with the group), not the share of each group predicted positive. Two groups can have the same mean logit "
    "and still put very different shares of their rows above 0 (different spreads, or one group's scores "
    "bunched just below the threshold), so equal means leave the hard-prediction gap in place. To bound the "
    "gap users see, sweep the rate constraint (`--constraint {rate}`).")
#: the rate constraint that bounds what a score constraint only approximates
RATE_OF_SCORE = {name: c.rate_form for name, c in CONSTRAINTS.items() if c.rate_form}


def score_gap_note(name: str, rows, *, split: str = "test") -> list[str]:
    """SCORE_GAP_NOTE when a score constraint's tightest head keeps at least half the unconstrained
    head's DP difference on ``split`` (measured in ``rows``)."""
    if name not in SCORE_FAMILY:
        return []
    free = [r for r in rows if r["method"] == "unconstrained" and r["split"] == split]
    heads = [r for r in rows if r["method"] == "fairhead" and r["split"] == split and not math.isnan(r["eps"])]
    if not free or not heads:
        return []
    tight = min(heads, key=lambda r: r["eps"])
    free_gap, tight_gap = free[0]["demographic_parity_difference"], tight["demographic_parity_difference"]
    if not (tight_gap >= 0.5 * free_gap > 0):
        return []
    return [SCORE_GAP_NOTE.format(name=name, tight=tight_gap, eps=tight["eps"], free=free_gap,
                                  rate=RATE_OF_SCORE[name])]


def recommendation(result, *, sweep_dir=None) -> list[str]:
    """The report's last section: the head to use and the command that certifies it.

    The target is the tightest one a head of this sweep reaches on the held-out (certification)
    split: the smallest upper confidence bound of the swept family's between-groups gap there,
    rounded up to 0.01; the recommended head is the most accurate one on that split whose bound is
    within it. ``fairhead select`` recomputes the bounds and decides (its fixed-sequence test may
    stop before that head)."""
    over = result.overfitting()
    cert, gap = over.get("cert_split"), GAP_OF_METRIC.get(over["metric"])
    title = ["## Recommended head and next step", ""]
    if not cert or gap is None:
        return [*title, f"- No held-out split besides `{result.fit_split}` and test: a head cannot be certified "
                "here. Extract or import the data with a validation split, then run `fairhead select`.", ""]
    acc = {r["eps"]: r["accuracy"] for r in result.rows if r["method"] == "fairhead" and r["split"] == cert}
    heads = [(r["eps"], r["cert_bound"], acc[r["eps"]]) for r in over["rows"]
             if r["method"] == "fairhead" and r["eps"] in acc and r["cert_bound"] is not None
             and math.isfinite(r["cert_bound"])]
    if not heads:
        return [*title, f"- No fairhead head has a bound on `{cert}`; nothing to recommend.", ""]
    target = math.ceil(min(b for _, b, _ in heads) * 100 - 1e-9) / 100
    eps, bound, accuracy = max((h for h in heads if h[1] <= target + 1e-12), key=lambda h: (h[2], -h[0]))
    where = sweep_dir if sweep_dir is not None else result.out
    conf = result.confidence
    return [*title,
            f"- **Recommended: the head at eps={eps:.3g}**: accuracy {accuracy:.3f} on `{cert}`, the most accurate "
            f"head whose {gap} gap has its {conf:g} upper bound on `{cert}` ({bound:.3f}) within {target:.2f}, the "
            f"tightest target a head of this sweep reaches there. A looser target certifies a more accurate head.",
            f"- Next: certify it on the held-out rows (`select` recomputes the bounds and decides; it abstains, "
            "naming what would certify, when no head does):", "", "```bash",
            f"fairhead select {where} --target {gap}:{target:.2f} --split {cert} --confidence {conf:g}",
            "```", ""]


def _legend(result) -> list[str]:
    """What each gap column measures: the bound and the reported gaps are different quantities."""
    legend = result.gap_legend()
    return ["## What the gap columns measure", "",
            *(f"- **{header}**: {legend[key]}." for key, header in REPORT_COLUMNS if key in legend), ""]


def _fronts(result) -> list[str]:
    """The front comparison (best test accuracy at test gap <= t), when several methods ran."""
    if "test" not in result.split_sizes or len({r.method for r in result.records}) < 2:
        return []
    table = compare.front_table(result.fronts("test"))
    return ["## Fronts on test: best accuracy at a between-groups gap <= t", "",
            "Methods are compared by the gap their heads measure on test, not at matched eps (fairhead aims "
            "at 0.9 eps and bounds each group against the overall rate; ExponentiatedGradient aims at eps on its "
            "own moment; the penalty has no bound). `-`: no head of that method reaches the level; "
            "`±` one binomial standard error.", "",
            markdown_table(table), ""]


def sweep_report_text(result, files: Mapping[str, Path], meta: Mapping[str, Any]) -> str:
    """The Markdown of ``report.md`` for one sweep: headline, plots, and the per-split table."""
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    parts = [
        f"# fairhead sweep: constraint `{result.constraint}`",
        "",
        f"Fitted on split `{result.fit_split}`; cache fingerprint `{meta.get('cache_fingerprint', '?')}`; "
        f"created {meta.get('created', '?')}.",
        "",
        *_headline(result),
        "",
        *[line for note in result.notes for line in (note, "")],  # e.g. a default grid cut at the resolution
    ]
    for key, caption in (("tradeoff_plot", "Accuracy against each fairness gap (Pareto front circled)"),
                         ("fit_vs_test_plot", "Gap on test against gap on the fit split (above the diagonal: "
                                              "the constraint overfits)"),
                         ("overfitting_plot", "Gap on the fit split against the certified upper bound on the "
                                              "held-out split (and the gap on test)"),
                         ("group_rates_plot", "Selection rate, TPR and FPR per group, with exact intervals")):
        if key in files:
            parts += [f"## {caption}", "", f"![{caption}]({Path(files[key]).name})", ""]

    over = result.overfitting()
    parts += uncertainty.overfitting_section(over["rows"], fit_split=result.fit_split, cert_split=over["cert_split"],
                                             metric=over["metric"], confidence=result.confidence)
    parts += [uncertainty.INTERVAL_LEGEND.format(conf=result.confidence), ""]
    parts += [*_fronts(result), *_legend(result), "## Results", "", markdown_table(result.rows, REPORT_COLUMNS), "",
              f"Full table: `{Path(files['table']).name}`; provenance and certificates: `{Path(files['json']).name}`.",
              "", f"_Versions: {versions}_", "", *recommendation(result)]
    return "\n".join(parts)


def write_sweep_report(result, files: Mapping[str, Path], meta: Mapping[str, Any], *, staged=None) -> Path:
    """Write ``report.md`` for one sweep (atomically; with ``staged``, together with the other outputs)."""
    path = Path(result.out) / "report.md"
    text = sweep_report_text(result, files, meta)
    if staged is not None:
        staged.write_text(path, text)
    else:
        atomic_write_text(path, text)
    return path
