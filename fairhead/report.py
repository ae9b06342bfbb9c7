"""Markdown reports that put a result table and its plots together."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fairhead_io import atomic_write_text

REPORT_COLUMNS = (
    ("method", "method"), ("eps", "eps"), ("alpha", "alpha"), ("split", "split"), ("accuracy", "acc"),
    ("balanced_accuracy", "bal. acc"), ("roc_auc", "AUC"), ("constraint_value", "constraint_value (bounded gap)"),
    ("demographic_parity_difference", "DP diff (between groups)"),
    ("equalized_odds_difference", "EO diff (between groups)"), ("worst_group_accuracy", "worst_group_accuracy (MMF)"),
    ("worst_cell_accuracy", "worst cell acc"),
    ("eps_met", "eps_met"), ("fit_time_s", "time (s)"),
)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4f}"
    return "" if value is None else str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns=None) -> str:
    """A GitHub-flavoured Markdown table; ``columns`` is a list of ``(key, header)``."""
    if not rows:
        return "_no rows_"
    columns = list(columns or [(k, k) for k in rows[0].keys()])
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_fmt(row.get(k)) for k, _ in columns) + " |" for row in rows]
    return "\n".join(lines)


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
    return lines


def _legend(result) -> list[str]:
    """What each gap column measures: the bound and the reported gaps are different quantities."""
    legend = result.gap_legend()
    return ["## What the gap columns measure", "",
            *(f"- **{header}**: {legend[key]}." for key, header in REPORT_COLUMNS if key in legend), ""]


def _fronts(result) -> list[str]:
    """The front comparison (best test accuracy at test gap <= t), when several methods ran."""
    from fairhead import compare

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
    ]
    for key, caption in (("tradeoff_plot", "Accuracy against each fairness gap (Pareto front circled)"),
                         ("fit_vs_test_plot", "Gap on test against gap on the fit split (above the diagonal: "
                                              "the constraint overfits)"),
                         ("overfitting_plot", "Gap on the fit split against the certified upper bound on the "
                                              "held-out split (and the gap on test)"),
                         ("group_rates_plot", "Selection rate, TPR and FPR per group, with exact intervals")):
        if key in files:
            parts += [f"## {caption}", "", f"![{caption}]({Path(files[key]).name})", ""]
    from fairhead import uncertainty

    over = result.overfitting()
    parts += uncertainty.overfitting_section(over["rows"], fit_split=result.fit_split, cert_split=over["cert_split"],
                                             metric=over["metric"], confidence=result.confidence)
    parts += [uncertainty.INTERVAL_LEGEND.format(conf=result.confidence), ""]
    parts += [*_fronts(result), *_legend(result), "## Results", "", markdown_table(result.rows, REPORT_COLUMNS), "",
              f"Full table: `{Path(files['table']).name}`; provenance and certificates: `{Path(files['json']).name}`.",
              "", f"_Versions: {versions}_", ""]
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
