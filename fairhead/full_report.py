"""The full-network comparison's outputs: the side-by-side table, ``gaps.png``, ``report.md``, CSV and JSON.

The side-by-side table has one line per model (the five protocols' heads, the eps path's heads,
the full networks) with its accuracy and its between-groups gap (fairlearn's difference of the
constraint's family: DP for ``dp``, EO for ``eo``, ...) on train, valid and test, the constraint's own
bounded gap on train and test, and the wall time and peak memory of its fit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from fairhead_io import StagedFiles

from fairhead import provenance
from fairhead.evaluation import GAP_COLUMNS, METRIC_COLUMNS
from fairhead.measure import BETWEEN_GROUPS, describe_bounded_gap
from fairhead.plots import finish
from fairhead.tables import format_table, markdown_table

#: the papers' setting, for readers with a GPU (docs/guide.md: "Full-network baseline")
PAPERS_SETTING = ("The papers' setting: CelebA (162,770 train images; e.g. target Blond_Hair, sensitive Male), "
                  "ResNet-18/50 from ImageNet weights, 64 px images in the seed code, whole-network training for "
                  "tens of epochs: on a GPU run `fairhead finetune-full CACHE --max-train 0 --max-eval 0 "
                  "--epochs 20 --batch-size 128 --device cuda` on a cache extracted with "
                  "`--backbone resnet18 --weights IMAGENET1K_V1`.")
STOPPING_RULE = ("Early stopping keeps the epoch with the best validation objective (unconstrained: the loss; "
                 "penalty: loss + alpha P); the Lagrangian's epochs that meet eps on the validation rows (valid "
                 "bounded gap) compete on their loss, the others on how far they miss eps.")
HISTORY_COLUMNS = (("epoch", "epoch"), ("train_loss", "train loss"), ("train_fairness_term", "train fairness term"),
                   ("valid_loss", "valid loss"), ("valid_objective", "valid objective"),
                   ("valid_accuracy", "valid acc"), ("valid_bounded_gap", "valid bounded gap"),
                   ("mu_max", "max multiplier"), ("kept", "best so far"),
                   ("seconds", "seconds"))


def gap_metric(constraint: str) -> tuple[str, str]:
    """``(metric key, short name)`` of the between-groups gap of the constraint's family."""
    key = BETWEEN_GROUPS[constraint]
    return key, dict(METRIC_COLUMNS)[key]


def side_by_side(result) -> list[dict]:
    """One line per model: accuracy and gap on each split, bounded gap, time, memory."""
    key, short = gap_metric(result.constraint)
    cuda = any(m.peak_cuda_mb is not None for m in result.models)
    lines = []
    for m in result.models:
        line = {"family": m.family, "model": m.name, "fit on": m.fit_on}
        line.update({f"acc {s}": m.metrics[s]["accuracy"] for s in ("train", "valid", "test")})
        line.update({f"{short} {s}": m.metrics[s][key] for s in ("train", "valid", "test")})
        line.update({f"bounded {s}": m.metrics[s]["constraint_value"] for s in ("train", "test")})
        line.update({"time (s)": m.wall_s, "peak RSS (MB)": m.peak_rss_mb, "added (MB)": m.added_rss_mb})
        if cuda:
            line["peak CUDA (MB)"] = float("nan") if m.peak_cuda_mb is None else m.peak_cuda_mb
        lines.append(line)
    return lines


def legend(result) -> list[str]:
    key, short = gap_metric(result.constraint)
    return [f"{short}: {GAP_COLUMNS.get(key, key)}",
            f"bounded: the constraint's own gap, {describe_bounded_gap(result.constraint)}",
            "time: a head's fit (path heads: their own solve); a full network's training over all runs of a resumed "
            "training (every epoch with its validation pass) plus its final evaluation",
            "peak RSS: the process's peak resident memory during the fit, everything already resident included; "
            "added: above the resident memory when the fit began (the eps path: the whole path's)",
            "every model is measured on the same train, valid and test rows"]


def headline(result, *, protocols: bool = True) -> list[str]:
    """Measured sentences: each model's gap where it was fitted against its gap on test (``protocols``:
    with M1's, which the demo's own summary already gives)."""
    key, short = gap_metric(result.constraint)
    lines = []

    def gaps(m, fit_split):
        return m.metrics[fit_split][key], m.metrics["test"][key]

    for m in result.models:
        if m.family == "full-network" and m.method != "unconstrained":
            fit, test = gaps(m, "train")
            lines.append(f"- {m.name} (trained on train): {short} {fit:.3f} on train, {m.metrics['valid'][key]:.3f} "
                         f"on valid, {test:.3f} on test; test accuracy {m.metrics['test']['accuracy']:.3f}; "
                         f"{m.wall_s:.0f} s, peak {m.peak_rss_mb:.0f} MB.")
    by = {m.method: m for m in result.models if m.family == "last-layer"}
    if protocols and "M1" in by:
        fit, test = gaps(by["M1"], "valid")
        lines.append(f"- M1 (last layer, constrained on valid): {short} {fit:.3f} on valid (its fit data), "
                     f"{test:.3f} on test; test accuracy {by['M1'].metrics['test']['accuracy']:.3f}; "
                     f"{by['M1'].wall_s:.2f} s, peak {by['M1'].peak_rss_mb:.0f} MB.")
    path = [m for m in result.models if m.method == "eps path"]
    if path:
        near = min(path, key=lambda m: abs(m.eps - result.eps))
        fit, test = gaps(near, "train")
        lines.append(f"- The eps path's head at eps={near.eps:.4g} (last layer, on train): {short} {fit:.3f} on "
                     f"train, {test:.3f} on test; test accuracy {near.metrics['test']['accuracy']:.3f}.")
    return lines


def summary_text(result) -> str:
    lines = [f"full network vs last layer, constraint '{result.constraint}' eps={result.eps:g} "
             f"(rows: {', '.join(f'{s} {n}' for s, n in result.split_sizes.items())})",
             format_table(side_by_side(result)), *legend(result), "", "== what this shows ==", *headline(result)]
    lines += [f"wrote {name}: {path}" for name, path in result.files.items()]
    lines.append(f"finished in {result.wall_s:.0f} s")
    return "\n".join(lines)


def plot_gaps(result, path: Path, *, staged=None) -> Path:
    """Grouped bars: each model's between-groups gap on train, valid and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key, short = gap_metric(result.constraint)
    names = [m.name for m in result.models]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.55 * len(names) + 2), 3.8))
    for k, (split, color) in enumerate((("train", "tab:blue"), ("valid", "tab:orange"), ("test", "tab:red"))):
        values = np.array([m.metrics[split][key] for m in result.models], dtype=float)
        low = np.array([m.metrics[split].get(f"{key}_low", np.nan) for m in result.models], dtype=float)
        high = np.array([m.metrics[split].get(f"{key}_high", np.nan) for m in result.models], dtype=float)
        ax.bar(x + (k - 1) * 0.27, values, width=0.27, color=color, label=split)
        ax.errorbar(x + (k - 1) * 0.27, values, yerr=np.abs(np.vstack([values - low, high - values])), fmt="none",
                    ecolor="k", elinewidth=0.6, alpha=0.5)
    n_last = sum(m.family == "last-layer" for m in result.models)
    if 0 < n_last < len(names):
        ax.axvline(n_last - 0.5, color="k", linewidth=1, linestyle=":")
    ax.set_xticks(x, names, rotation=45, ha="right", fontsize=7)
    ax.set_ylabel(f"{short} (between groups)")
    ax.set_title(f"last layer (left) vs full network (right): '{result.constraint}' eps={result.eps:g}; "
                 "bars: the intervals of the rows", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    return finish(fig, path, staged)


def _history_section(result) -> list[str]:
    parts = ["## Full-network training", ""]
    for method, info in result.training.items():
        cfg = info["config"]
        parts += [f"### `{method}`", "",
                  f"{cfg['optimizer']} lr {cfg['lr']:g} (head {cfg['head_lr']:g}), weight decay {cfg['weight_decay']:g}, "
                  f"batch {cfg['batch_size']}, up to {cfg['epochs']} epochs (patience {cfg['patience']}), "
                  f"{cfg['image_size']} px, seed {cfg['seed']}"
                  + (f", alpha {cfg['alpha']:g}" if method == "penalty" else "")
                  + (f", multiplier step {cfg['dual_lr']:g}; final multipliers "
                     + ", ".join(f"{v:.3g}" for v in info["multipliers"]) if method == "lagrangian" else "")
                  + f". Kept epoch {info['best_epoch']} of {info['epochs_run']}"
                  + ("; stopped early" if info["stopped_early"] else "")
                  + (f"; resumed after epoch {info['resumed_at_epoch']}" if info["resumed_at_epoch"] else "") + ".",
                  "", markdown_table(info["history"], HISTORY_COLUMNS), ""]
    return [*parts, STOPPING_RULE, ""]


def report_section(result, *, link: str = "", level: int = 2) -> list[str]:
    """The side-by-side table, the headline and the plot, for ``report.md`` or the demo's report
    (``link``: the folder of the outputs, relative to the report)."""
    h = "#" * level
    plot = [f"![gaps]({link}gaps.png)", ""] if "plot" in result.files or not result.files else []
    return [f"{h} Full network vs last layer (`{result.constraint}`, eps={result.eps:g})", "",
            *headline(result), "", markdown_table(side_by_side(result)), "",
            *(f"- {line}" for line in legend(result)), "", *plot]


def report_text(result, meta) -> str:
    setting = result.setting
    rows = ", ".join(f"{s} {n}" for s, n in result.split_sizes.items())
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items())
    return "\n".join([
        "# fairhead: full network vs last layer", "",
        f"Cache `{setting['cache']}` (fingerprint `{setting['cache_fingerprint'][:12]}`), backbone "
        f"`{setting['backbone']}`; rows {rows} (at most {setting['max_train']} train and {setting['max_eval']} "
        f"valid / test rows, seed {setting['seed']}; 0 = all). Full network on {setting['image_size']} px images, "
        f"device {setting['device']}, {setting['threads']} thread(s). Total time {result.wall_s:.0f} s.", "",
        *report_section(result), *_history_section(result),
        "## The papers' setting", "", PAPERS_SETTING, "",
        "Full table: `full_network.csv`; training histories and provenance: `full_network.json`; the eps path's "
        "own report: [eps-path/report.md](eps-path/report.md).", "", f"_Versions: {versions}_", ""])


def write_outputs(result, *, plots: bool = True) -> dict[str, Path]:
    """Write ``full_network.csv``, ``full_network.json``, ``gaps.png`` (with ``plots``) and ``report.md``
    together (staged: a kill leaves the old set or the new one)."""
    out = Path(result.out)
    rows = result.rows
    meta = provenance.collect(seed=result.setting.get("seed"), extra={"setting": result.setting})
    files = {"table": out / "full_network.csv", "json": out / "full_network.json",
             **({"plot": out / "gaps.png"} if plots else {}), "report": out / "report.md"}
    result.files = files
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with StagedFiles() as staged:
        with staged.open(files["table"], "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        payload = {"side_by_side": side_by_side(result), "constraint": result.constraint, "eps": result.eps,
                   "columns": legend(result), "rows": rows, "training": result.training, "provenance": meta,
                   "wall_s": result.wall_s}
        staged.write_text(files["json"], json.dumps(provenance.strict_json(payload), indent=1, allow_nan=False,
                                                    default=str))
        if plots:
            plot_gaps(result, files["plot"], staged=staged)
        staged.write_text(files["report"], report_text(result, meta))
    return files
