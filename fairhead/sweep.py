"""Constraint-tightness sweeps: how much accuracy each level of fairness costs, on every split.

For a constraint and a grid ``eps_0 > eps_1 > ... > eps_m`` (by default from the
unconstrained head's own constraint value, where the bound is inactive, down to
0; to the tightest feasible value for ``group-loss``; to the resolution for rate
constraints, below which the search cannot steer a gap), the sweep fits one head
per ``eps`` on the fit split, each warm-started from the previous one, and
evaluates every head on every split of the cache. Rate heads then make the front
monotone exactly as :func:`solvers.fit_path` does (:func:`solvers.path.monotone_front`),
so a sweep's heads are ``fit_path``'s.

Outputs, in the report folder:

* ``sweep.csv`` / ``sweep.json`` -- one row per (method, eps, split); the JSON adds
  the provenance (cache fingerprint, certificates, versions, seed), what each gap column
  measures (``columns``) and the test fronts (``fronts``);
* ``tradeoff.png`` and ``fit_vs_test.png`` (see :mod:`fairhead.plots`);
* ``report.md`` -- the table and the plots together;
* ``progress.jsonl`` -- finished heads, so an interrupted sweep resumes where it stopped
  (it replays the finished heads' solves, not their evaluation, so that the warm-start chain and
  every later head equal an uninterrupted run's).

The path starts from the unconstrained head the sweep fits anyway (bounds it already meets cost
one check each).
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fairhead_errors import DataError
from fairhead_io import (PNG_BY_MATPLOTLIB, StagedFiles, atomic_write_bytes, atomic_write_text, check_own_outputs,
                         contains, ensure_output_folder, naming_the_file, starts_with)
from solvers.certificate import Certificate
from solvers.constraints import make_constraint
from solvers.head import FairHead
from solvers.intervals import check_confidence
from solvers.metrics import undefined_rates
from solvers.path import (iter_path, monotone_front, rate_resolution, replaced_certificate,
                          replacement_note)

from fairhead import certify, pipeline, provenance, report, uncertainty
from fairhead import compare as baselines  # `compare` is run_sweep's list of baselines
from fairhead import plots as plotting  # `plots` is run_sweep's flag
from fairhead.data_parallel import MSG_COMPARE
from fairhead.figure_workers import FIGURES, FigureWorkers, draw_figures
from fairhead.evaluation import GAP_COLUMNS, HeadRecord, evaluate_predictor, head_coef, head_intercept, head_scores
from fairhead.measure import BETWEEN_GROUPS, constraint_value, describe_bounded_gap
from fairhead.progress_bar import progress_bar
from fairhead.tables import format_table

# Imported inside the functions that use them: embedcache (it imports torch: 1-2 s); a command that does not
# need it does not pay for it. Heads are solvers.FairHead: scikit-learn (about 1 s, with scipy.stats and
# pandas) is never imported on a command's path.

MSG_BAD_GRID = "eps grid must hold finite values >= 0; got {grid}; pass e.g. --eps-grid 0.1 0.05 0.02 0"
MSG_BAD_N_EPS = "--n-eps must be an integer >= 2 (a sweep runs from the inactive bound down to the tightest); got {n}"
MSG_NO_CONSTRAINT = "a sweep tightens a constraint; pass --constraint dp (or another), not 'none'"
MSG_MULTICLASS_COMPARE = (
    "--compare {names} fits binary baselines (fairlearn's reductions and the seed's penalties), and label {label!r} "
    "has {k} classes; drop --compare for a {k}-class sweep"
)
MSG_MINIMAX_GRID = ("constraint 'minimax' minimises the largest group loss and has no bound to sweep; "
                    "drop --eps-grid (the sweep fits the one minimax head)")
MSG_COMPARE_OUT_OF_CORE = ("the baselines of --compare ({names}) need the features in memory, and --max-memory "
                           "streams them; drop --compare or --max-memory")
MSG_NO_SPLIT = "fit split {split!r} is not in cache '{path}' (it has: {have}); pick one with --fit-split"
#: the one line of a default rate grid that stops at the resolution (instead of at 0)
MSG_GRID_CUT = ("grid: {n} bounds from {top:.4g} down to {floor:.4g}, the resolution of '{name}' on '{split}' (one "
                "prediction's weight over its group's); a tighter bound is met, if at all, only by a (near) constant "
                "head, so the sweep stops there (pass --eps-grid to fit tighter bounds anyway)")
#: ... and when the unconstrained head is already within the resolution: the one bound is the resolution
MSG_GRID_WITHIN = ("grid: 1 bound, {floor:.4g}, the resolution of '{name}' on '{split}' (one prediction's weight over "
                   "its group's), which the unconstrained head already meets (its gap {top:.4g}); a tighter bound is "
                   "met, if at all, only by a (near) constant head, so the sweep stops there (pass --eps-grid to fit "
                   "tighter bounds anyway)")
PROGRESS_FILE = "progress.jsonl"
#: every file a sweep writes into --out, with the first bytes that mark it as a sweep's own
SWEEP_OUTPUTS = {
    "sweep.csv": starts_with(b"method,constraint,eps,"),
    "sweep.json": contains(b'"provenance"'),
    "report.md": starts_with(b"# fairhead"),
    "tradeoff.png": PNG_BY_MATPLOTLIB,
    "fit_vs_test.png": PNG_BY_MATPLOTLIB,
    "overfitting.png": PNG_BY_MATPLOTLIB,
    "group_rates.png": PNG_BY_MATPLOTLIB,
    "group_rates.csv": starts_with(b"head,"),
    # a kill may have torn even the first entry: a prefix of the marker is ours too
    PROGRESS_FILE: lambda head: head.startswith(b'{"config_key"') or b'{"config_key"'.startswith(head),
}

def default_eps_grid(inactive_value: float, n_eps: int, *, floor: float = 0.0) -> np.ndarray:
    """``n_eps`` bounds from ``inactive_value`` down to ``floor``, denser near the floor.

    ``eps_k = floor + (inactive - floor) * (1 - k / (n - 1))**2``: the quadratic
    spacing spends more points where the trade-off bends (tight bounds).
    """
    if n_eps < 2:
        return np.array([float(inactive_value)])
    t = 1.0 - np.arange(n_eps) / (n_eps - 1)
    return floor + (float(inactive_value) - floor) * t**2


def check_grid(grid) -> np.ndarray:
    grid = np.asarray(grid, dtype=float).reshape(-1)
    if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid < 0):
        raise DataError(MSG_BAD_GRID.format(grid="[" + ", ".join(f"{g:g}" for g in grid) + "]"))
    return np.sort(grid)[::-1]  # loose to tight, so each warm start moves a little


@dataclass
class SweepResult:
    out: Path
    constraint: str
    fit_split: str
    records: list[HeadRecord]
    rows: list[dict[str, Any]]
    files: dict[str, Path] = field(default_factory=dict)
    balance: str | None = None
    split_sizes: dict[str, int] = field(default_factory=dict)
    #: split -> rates undefined in some group there (no y=1 or no y=0 rows), which count as 0
    undefined_rates: dict[str, list[str]] = field(default_factory=dict)
    confidence: float = 0.95
    #: per (head, split, group, rate) exact intervals of selection rate, TPR, FPR (fairhead.uncertainty)
    group_rates: list[dict] = field(default_factory=list)
    #: classes of the label (K > 2: a multinomial head, gaps per class one-vs-rest)
    n_classes: int = 2
    #: lines about the sweep as a whole (a default grid cut at the resolution)
    notes: list[str] = field(default_factory=list)

    def gap_legend(self) -> dict[str, str]:
        """What each gap column measures, for this sweep's constraint and balance."""
        bounded = describe_bounded_gap(self.constraint, self.balance, self.n_classes)
        return {k: v.format(bounded=bounded) for k, v in GAP_COLUMNS.items()}

    def overfitting(self) -> dict:
        """Per head: the gap on the fit split, on the held-out split (with its bound) and on test."""
        metric = uncertainty.overfitting_metric(self.constraint)
        cert = uncertainty.certification_split(self.split_sizes, self.fit_split)
        return {"metric": metric, "fit_split": self.fit_split, "cert_split": cert, "confidence": self.confidence,
                "rows": uncertainty.overfitting_rows(self.rows, fit_split=self.fit_split, cert_split=cert,
                                                     metric=metric) if cert else []}

    def missed(self) -> list[HeadRecord]:
        """fairhead heads that miss their own bound on the fit split."""
        return [r for r in self.records if r.method == "fairhead" and r.missed_bound]

    def fronts(self, split: str = "test", *, family_only: bool = False) -> list[dict[str, Any]]:
        """Best accuracy at gap <= t per method (see :func:`compare.fronts`), for the DP and EO
        differences and the swept constraint's own family gap (EOpp for ``eopp``, AE for ``error-rate``).

        ``family_only`` keeps only the family gap (DP for ``dp``, EO for ``eo``, ...), the one
        the heads bound; DP and EO where the constraint has none.
        """
        family = BETWEEN_GROUPS.get(self.constraint)
        gaps = baselines.FRONT_GAPS
        if family in baselines.GAP_NAMES and family not in dict(gaps):
            gaps = (*gaps, (family, baselines.GAP_NAMES[family]))
        if family_only:
            gaps = tuple(g for g in gaps if g[0] == family) or gaps
        return baselines.fronts(self.rows, split=split, n=self.split_sizes.get(split), gaps=gaps)

    def summary(self, splits=None) -> str:
        splits = splits or [self.fit_split, "test"]
        cols = ["method", "eps"] + (["alpha"] if any(r.alpha is not None for r in self.records) else []) + [
            "split", "accuracy", "constraint_value", "demographic_parity_difference",
            "equalized_odds_difference", "eps_met", "fit_time_s"]
        shown = [{c: r.get(c) for c in cols} for r in self.rows if r["split"] in splits]
        short = {"demographic_parity_difference": "dp_diff", "equalized_odds_difference": "eo_diff",
                 "fit_time_s": "time_s"}
        shown = [{short.get(k, k): v for k, v in r.items()} for r in shown]
        legend = self.gap_legend()
        lines = [f"sweep of '{self.constraint}' fitted on '{self.fit_split}' "
                 f"({len(self.records)} heads)", format_table(shown),
                 f"constraint_value: {legend['constraint_value']}",
                 "dp_diff, eo_diff: fairlearn's between-groups differences (max - min over groups, unit weights)",
                 *self.notes]
        heads = [r for r in self.records if r.method == "fairhead"]
        missed = self.missed()
        if missed:
            gaps = ", ".join(f"eps={r.eps:.4g} (constraint_value {r.metrics[self.fit_split]['constraint_value']:.4g})"
                             for r in missed)
            lines.append(f"MISSED: {len(missed)} of {len(heads)} heads miss their bound on '{self.fit_split}': {gaps}")
        elif heads:
            lines.append(f"all {len(heads)} heads meet their bound on '{self.fit_split}'")
        test = "test" if "test" in self.split_sizes else None
        if test and len({r.method for r in self.records}) > 1:
            lines.append(f"fronts on '{test}': best accuracy at a between-groups gap <= t (heads compared by their "
                         "measured gap, not by the eps they aimed at)")
            lines.append(format_table(baselines.front_table(self.fronts(test, family_only=True))))
        lines += [f"UNDEFINED on '{split}': {note}" for split, notes in self.undefined_rates.items() for note in notes]
        lines += uncertainty.wide_group_notes(self.group_rates, self.rows)
        lines += [f"wrote {name}: {path}" for name, path in self.files.items()]
        return "\n".join(lines)


def _eps_key(eps: float) -> float:
    """Dictionary key of a bound; NaN (minimax: no bound) gets one stable key."""
    return float(eps) if np.isfinite(eps) else -1.0


def _config_key(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _parse_progress_line(line: str) -> str | None:
    """The intact entry of one line, or ``None`` for a torn one. A line that an older fairhead
    appended right after a torn entry (``<torn>{"config_key": ...}``) still yields its intact tail."""
    for start in (0, line.rfind('{"config_key"')):
        if start < 0:
            continue
        try:
            item = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(item, dict) and isinstance(item.get("record"), dict):
            return line[start:]
    return None


def _load_progress(path: Path, key: str) -> list[HeadRecord]:
    """Finished heads of an earlier run with the same configuration.

    A kill or a full disk can leave a torn last entry. It is skipped, and the file is rewritten
    (atomically) without it, so that the next entry starts on a line of its own: otherwise every
    later resume would trip over the same torn line and recompute the heads after it, for good.
    """
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    kept, records, damaged = [], [], not text.endswith("\n") and bool(text)
    for line in text.splitlines():
        entry = _parse_progress_line(line) if line.strip() else None
        if entry is None:
            damaged = damaged or bool(line.strip())
            continue
        damaged = damaged or entry != line
        kept.append(entry)
        item = json.loads(entry)
        if item.get("config_key") == key:
            try:
                records.append(HeadRecord(**item["record"]))
            except TypeError:  # written by another fairhead version: recompute that head
                continue
    if damaged:
        atomic_write_text(path, "".join(line + "\n" for line in kept))
    return records


def _append_progress(path: Path, key: str, record: HeadRecord) -> None:
    """Append one finished head: one line, handed to the operating system when the file closes.

    No fsync per line (:func:`_seal_progress` syncs the file once, after the path). What a kill can
    lose: a killed process loses nothing it appended, since every closed write is in the kernel's page
    cache and reaches the disk without the process; only a crash of the machine (power, kernel) before
    the seal can lose lines appended since the last seal, or leave the last one torn. Resume still
    works: :func:`_load_progress` skips a torn line, and a lost head is simply solved again (a resumed
    sweep replays every finished head's solve anyway, so the warm-start chain is the same).
    """
    with naming_the_file(path), open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps({"config_key": key, "record": record.__dict__}, default=float) + "\n")


def _seal_progress(path: Path) -> None:
    """Make the progress file durable once, after the path: an atomic swap (a temporary copy, one
    fsync, ``os.replace``, the folder synced) of the very bytes appended, entries of other
    configurations included. A kill during the swap leaves the appended file as it was."""
    atomic_write_bytes(path, path.read_bytes())


def load_sweep_data(cache_path, *, fit_split, attributes, pos_label=None, max_memory=None, parallel=None):
    """Open the cache and read every split (fit split first) as :class:`pipeline.SplitArrays`
    (``y = 1`` for ``pos_label``, by default the label's second category; ``max_memory``: features
    streamed from the cache, see :func:`pipeline.load_arrays`)."""
    import embedcache

    with embedcache.open(cache_path) as cache:
        if fit_split not in cache.splits:
            raise DataError(MSG_NO_SPLIT.format(split=fit_split, path=cache_path, have=", ".join(cache.splits)))
        pipeline.check_names(cache, attributes=attributes, pos_label=pos_label)  # before any features are read
        splits = [fit_split] + [s for s in cache.splits if s != fit_split]
        arrays = {}
        for split in splits:
            arrays[split] = pipeline.load_arrays(cache, split, attributes if not arrays else
                                                 arrays[fit_split].attributes, pos_label=pos_label,
                                                 max_memory=max_memory, parallel=parallel)
        return arrays, cache.fingerprint, dict(cache.provenance)


def run_sweep(cache_path, *, out, constraint="dp", eps_grid=None, n_eps=20, fit_split="train",
              attributes=None, compare=None, plots=True, C=1.0, backend="auto", balance=None,
              device="cpu", progress=True, seed=0, min_group_size=10, pos_label=None, data=None,
              confidence=0.95, max_memory=None, parallel=None) -> SweepResult:
    """Sweep ``eps`` for ``constraint`` on a cache; write the table, plots and report to ``out``.

    ``compare`` lists baselines from :mod:`fairhead.compare` to put in the same table
    (``expgrad``, ``gridsearch``, ``threshold``, ``penalty``). ``data`` may pass
    pre-loaded ``(arrays_by_split, fingerprint, provenance)`` to skip reading the cache.
    ``confidence`` is the level of every interval in the outputs. ``max_memory`` (bytes, or
    ``"2GB"``) sweeps out of core: the features are streamed from the cache in each pass (the
    heads equal the in-memory sweep's; the fairlearn and penalty baselines need them in memory).
    ``parallel`` (a :class:`fairhead.data_parallel.DataParallel`, under torchrun) sweeps on the
    ranks' shares of the rows: every rank solves the same path, rank 0 writes the files.
    """
    confidence = check_confidence(confidence)
    _check_sweep_options(constraint, eps_grid=eps_grid, n_eps=n_eps, compare=compare, max_memory=max_memory,
                         parallel=parallel)
    writes = parallel is None or parallel.writes  # under torchrun, rank 0 writes and shows progress
    progress = progress and writes
    if writes:
        out = ensure_output_folder(out, flag="--out")  # before any work: a bad --out fails in a second
        check_own_outputs(out, SWEEP_OUTPUTS, flag="--out")
    out = Path(out)
    if compare and data is None:  # the label's classes are metadata: refuse before any features are read
        _refuse_multiclass_compare(cache_path, compare)
    # the figures' workers import matplotlib while the heads are solved (none where no core is spare; kept
    # for the process's next sweep; none for an out-of-core sweep, whose memory budget they would exceed)
    workers = FigureWorkers.start(len(FIGURES)) if plots and writes and max_memory is None else None
    arrays, fingerprint, cache_prov = data or load_sweep_data(cache_path, fit_split=fit_split,
                                                              attributes=attributes, pos_label=pos_label,
                                                              max_memory=max_memory, parallel=parallel)
    fit = arrays[fit_split]
    cons = make_constraint(constraint)
    if compare and fit.n_classes > 2:
        raise DataError(MSG_MULTICLASS_COMPARE.format(names=" ".join(compare), label=fit.label_name, k=fit.n_classes))
    base = dict(C=C, backend=backend, balance=balance, device=device, min_group_size=min_group_size)
    evaluate = dict(arrays=arrays, constraint=cons, balance=balance, confidence=confidence)

    # the unconstrained head anchors the grid (its own constraint value = where the bound is inactive)
    free, free_record = _fit_unconstrained(fit, fit_split, base, evaluate)
    inactive = constraint_value(cons, y=fit.y, scores=free.decision_function(fit.X),
                                sensitive_features=pipeline.sensitive_arg(fit), balance=balance)
    grid, floor, sweep_notes = _eps_grid(fit, cons, inactive, eps_grid=eps_grid, n_eps=n_eps, base=base,
                                         fit_split=fit_split)
    config = _sweep_config(fingerprint, cons, grid, fit, fit_split=fit_split, seed=seed, base=base,
                           pos_label=pos_label, confidence=confidence)
    progress_file = _ProgressFile(out / PROGRESS_FILE, _config_key(config), writes=writes)
    done = progress_file.finished_heads()
    if parallel is not None:  # every rank replays rank 0's finished heads: the same solves, the same collectives
        done = parallel.broadcast(done)

    heads = _solve_path(fit, grid, cons, free=free, done=done, progress_file=progress_file, base=base,
                        evaluate=evaluate, fit_split=fit_split, progress=progress)
    # after the whole path, as fit_path does: the progress file keeps each head as it was solved, so a
    # resumed sweep makes the same choice
    records = [free_record, *(_monotone_front(heads) if cons.kind == "rate" else heads)]
    if writes:  # the heads on disk, for `fairhead select`
        certify.save_sweep_heads(out, records, constraint=cons, params=base, fit=fit, fit_split=fit_split,
                                 fingerprint=fingerprint, cache_path=cache_path)
    if compare:
        records += baselines.run_baselines(compare, fit, arrays, constraint=cons, grid=grid, C=C, seed=seed,
                                           progress=progress, balance=balance, confidence=confidence)

    result = _sweep_result(out, cons.name, fit_split, records, arrays, balance=balance, confidence=confidence,
                           notes=sweep_notes)
    meta = provenance.collect(seed=seed, extra={"cache_fingerprint": fingerprint, "config": config,
                                                "cache_provenance": cache_prov,
                                                "unconstrained_value": inactive, "floor": floor})
    if writes:
        result.files.update(write_sweep(result, meta, plots=plots, workers=workers))
    return result


def _check_sweep_options(constraint, *, eps_grid, n_eps, compare, max_memory, parallel) -> None:
    """Refuse options that cannot make a sweep, before any file is touched or any row is read."""
    if constraint is None:
        raise DataError(MSG_NO_CONSTRAINT)
    if eps_grid is not None and not make_constraint(constraint).bounded:
        raise DataError(MSG_MINIMAX_GRID)
    if eps_grid is None and (isinstance(n_eps, bool) or not isinstance(n_eps, (int, np.integer)) or n_eps < 2):
        raise DataError(MSG_BAD_N_EPS.format(n=n_eps))
    if eps_grid is not None:
        check_grid(eps_grid)
    if compare and max_memory is not None:
        raise DataError(MSG_COMPARE_OUT_OF_CORE.format(names=" ".join(compare)))
    if compare and parallel is not None:
        raise DataError(MSG_COMPARE.format(names=" ".join(compare)))


def _refuse_multiclass_compare(cache_path, compare) -> None:
    """The baselines of ``--compare`` are binary: refuse a K-class label from the cache's metadata."""
    import embedcache  # deferred: embedcache imports torch (1-2 s)

    with embedcache.open(cache_path) as cache:
        k = len(cache.label_categories)
        if k > 2:
            raise DataError(MSG_MULTICLASS_COMPARE.format(names=" ".join(compare), label=cache.label_name, k=k))


def _head_record(method: str, eps: float, head, *, wall_time: float, notes: str = "", arrays, constraint, balance,
                 confidence) -> HeadRecord:
    """A fitted head's record: its parameters, certificate and metrics on every split."""
    return HeadRecord(
        method=method, eps=eps, coef=head_coef(head), intercept=head_intercept(head),
        certificate=head.certificate_.to_dict(),
        metrics=evaluate_predictor(lambda a: head_scores(head, a), None, arrays, constraint, balance=balance,
                                   confidence=confidence),
        wall_time=wall_time, notes=notes)


def _fit_unconstrained(fit, fit_split: str, base: dict, evaluate: dict):
    """The unconstrained head on the fit split, and its record (``eps`` NaN)."""
    t0 = time.perf_counter()
    free = pipeline.fit_head(FairHead(constraint=None, **base), fit, split=fit_split)
    free_time = time.perf_counter() - t0
    return free, _head_record("unconstrained", float("nan"), free, wall_time=free_time, **evaluate)


def _eps_grid(fit, cons, inactive: float, *, eps_grid, n_eps: int, base: dict, fit_split: str):
    """The bounds to sweep (loose to tight), the grid's floor, and the notes that explain a default grid."""
    sens = pipeline.sensitive_arg(fit)
    floor, notes = 0.0, []
    if not cons.bounded:
        grid = np.array([np.nan])  # an objective, not a bound: one head
    elif eps_grid is not None:
        grid = check_grid(eps_grid)
    elif cons.kind == "rate":
        grid, floor = _rate_grid(fit, sens, cons, inactive, n_eps, base)
        if floor > 0:
            msg = MSG_GRID_CUT if len(grid) > 1 else MSG_GRID_WITHIN
            notes.append(msg.format(n=len(grid), top=grid[0] if len(grid) > 1 else inactive, floor=floor,
                                    name=cons.name, split=fit_split))
    else:
        if cons.floor_from is not None:  # the tightest feasible bound: that head's own value
            tight = FairHead(constraint=cons.floor_from, **base).fit(fit.X, fit.y, sensitive_features=sens)
            floor = constraint_value(cons, y=fit.y, scores=tight.decision_function(fit.X), sensitive_features=sens,
                                     balance=base["balance"])
            floor *= 1.0 + 1e-4
        grid = default_eps_grid(max(inactive, floor), n_eps, floor=floor)
    return grid, floor, notes


def _sweep_config(fingerprint, cons, grid, fit, *, fit_split, seed, base, pos_label, confidence) -> dict:
    """What makes two sweeps the same problem: its hash keys the finished heads a rerun may reuse."""
    config = {"cache": fingerprint, "constraint": cons.to_dict(), "grid": [float(e) for e in grid],
              "fit_split": fit_split, "attributes": list(fit.attributes), "seed": seed, **base}
    if pos_label is not None:  # another positive class is another problem: never resume across it
        config["pos_label"] = str(pos_label)
    if confidence != 0.95:  # finished rows carry intervals at their level (0.95: keys of older progress files)
        config["confidence"] = confidence
    return config


@dataclass
class _ProgressFile:
    """The progress file of one sweep configuration (``key``): read once, appended per head, sealed once.
    Only the writing rank keeps one (``writes``); the others read and write nothing."""

    path: Path
    key: str
    writes: bool
    appended: bool = False

    def finished_heads(self) -> dict[float, HeadRecord]:
        if not self.writes:
            return {}
        return {_eps_key(r.eps): r for r in _load_progress(self.path, self.key) if r.method == "fairhead"}

    def append(self, record: HeadRecord) -> None:
        if self.writes:
            _append_progress(self.path, self.key, record)
            self.appended = True

    def seal(self) -> None:
        if self.appended:  # one fsync for the whole path instead of one per head
            _seal_progress(self.path)


def _solve_path(fit, grid, cons, *, free, done, progress_file: _ProgressFile, base: dict, evaluate: dict,
                fit_split: str, progress: bool) -> list[HeadRecord]:
    """One warm-started path over ``grid`` from the unconstrained head ``free``: a record per bound.

    Each head is written to the progress file as soon as it is solved. A resumed sweep replays the finished
    heads' solves (not their evaluation) so that the warm-start chain, and with it every later head, is
    exactly the uninterrupted run's.
    """
    todo = [float(e) for e in grid if _eps_key(e) not in done]
    last = max((i for i, e in enumerate(grid) if _eps_key(e) not in done), default=-1)
    replay = [float(e) for e in grid[: last + 1]]
    solved: dict[float, HeadRecord] = {}
    bar = progress_bar(progress, total=len(grid), initial=len(grid) - len(todo), desc=f"sweep {cons.name}",
                       unit="head")
    with bar, warnings.catch_warnings(record=True) as caught:  # a failure closes the bar's line before its message
        # an unmet bound is recorded in its row (certificate + notes), not raised mid-sweep
        warnings.simplefilter("always")
        path = iter_path(fit.X, fit.y, sensitive_features=pipeline.sensitive_arg(fit),
                         eps_grid=[e if np.isfinite(e) else 0.0 for e in replay], constraint=cons,
                         init_head=free if cons.bounded else None, estimator=FairHead(**base))
        for eps, head in zip(replay, path):
            if _eps_key(eps) in done:
                caught.clear()
                continue
            replaced = replacement_note(head.certificate_)  # iter_path gave an unmet bound a head that meets it
            notes = "; ".join(sorted({str(w.message) for w in caught}) + ([replaced] if replaced else []))
            # wall time: the solver's own (a path may yield heads late)
            rec = _head_record("fairhead", eps, head, wall_time=head.certificate_.wall_time, notes=notes, **evaluate)
            solved[_eps_key(eps)] = rec
            progress_file.append(rec)
            bar.update(1)
            bar.set_postfix(eps=f"{eps:.4f}", fit_gap=f"{rec.metrics[fit_split]['constraint_value']:.4f}")
            caught.clear()
    progress_file.seal()
    return [done.get(_eps_key(e)) or solved[_eps_key(e)] for e in grid]


def _sweep_result(out: Path, name: str, fit_split: str, records: list[HeadRecord], arrays, *, balance,
                  confidence: float, notes: list[str]) -> SweepResult:
    """The sweep's table rows, undefined rates and per-group rate intervals, around its records."""
    fit = arrays[fit_split]
    undefined = {s: undefined_rates(a.y, sensitive_features=a.group_names, classes=a.classes)
                 for s, a in arrays.items()}
    result = SweepResult(out=out, constraint=name, fit_split=fit_split, records=records,
                         rows=[row for rec in records for row in rec.rows(name)], balance=balance,
                         split_sizes={s: int(len(a.y)) for s, a in arrays.items()},
                         undefined_rates={s: v for s, v in undefined.items() if v}, confidence=confidence,
                         n_classes=fit.n_classes, notes=notes)
    for rec in records if fit.n_classes == 2 else ():  # selection rate, TPR, FPR: binary rates
        if rec.method in ("fairhead", "unconstrained"):
            head = "unconstrained" if rec.method == "unconstrained" else f"eps={rec.eps:.4g}"
            for split, a in arrays.items():
                yhat = (a.scoring_X @ np.asarray(rec.coef) + rec.intercept > 0).astype(np.int64)  # X @ w's bits
                result.group_rates += uncertainty.group_rate_rows(a.y, yhat, a.group_names, confidence,
                                                                  head=head, split=split)
    return result


def _rate_grid(fit, sens, cons, inactive: float, n_eps: int, base: dict) -> tuple[np.ndarray, float]:
    """The default grid of a rate constraint and its floor: ``n_eps`` bounds from ``inactive`` down to
    the resolution (:func:`solvers.path.rate_resolution`, the number the heads' certificates carry),
    or the one bound ``resolution`` when the unconstrained head already meets it (every tighter bound
    is below the resolution)."""
    resolution = rate_resolution(fit.y, sensitive_features=sens, constraint=cons, **base)
    if inactive <= resolution:
        return np.array([float(resolution)]), float(resolution)
    return default_eps_grid(inactive, n_eps, floor=resolution), float(resolution)


def _monotone_front(heads: list[HeadRecord]) -> list[HeadRecord]:
    """The path's records with :func:`solvers.path.monotone_front` applied, as :func:`solvers.fit_path`
    applies it to its heads: a record takes a copy of a more accurate record that meets its bound
    (coefficients, certificate and metrics: the same head), with its own eps, search time and a note."""
    certs = [Certificate.from_dict(h.certificate) for h in heads]
    out = []
    for j, i in enumerate(monotone_front(certs)):
        if i == j:
            out.append(heads[j])
            continue
        cert = replaced_certificate(certs[j], certs[i])
        out.append(dataclasses.replace(heads[i], eps=heads[j].eps, certificate=cert.to_dict(),
                                       wall_time=heads[j].wall_time, notes=replacement_note(cert)))
    return out


def sweep_figure_tasks(result: SweepResult) -> list[tuple[str, dict]]:
    """The sweep's figures as ``(name, keyword arguments)`` of :data:`fairhead.figure_workers.FIGURES`:
    the trade-off (and fit against test), the overfitting plot, the group rates."""
    common = dict(out=result.out, fit_split=result.fit_split)
    tasks = [(name, dict(rows=result.rows, title=f"constraint '{result.constraint}'", constraint=result.constraint,
                         **common)) for name in plotting.sweep_figures(result.rows, result.fit_split)]
    over = result.overfitting()
    if over["rows"]:
        tasks.append(("overfitting", dict(over_rows=over["rows"], cert_split=over["cert_split"],
                                          metric=over["metric"], **common)))
    if result.group_rates:
        split = "test" if "test" in result.split_sizes else result.fit_split
        tasks.append(("group_rates", dict(group_rows=result.group_rates, out=result.out, split=split)))
    return tasks


def write_sweep(result: SweepResult, meta: dict, *, plots: bool = True,
                workers: FigureWorkers | None = None) -> dict[str, Path]:
    """Write ``sweep.csv``, ``sweep.json``, the plots and ``report.md``; return their paths. ``workers``
    (:class:`~fairhead.figure_workers.FigureWorkers`) draw the figures where given.

    The outputs are replaced together (:class:`fairhead_io.StagedFiles`): each goes to a fsynced
    temporary file first and the renames follow back to back, so a kill or a full disk leaves the
    previous set of outputs whole, never a torn JSON beside a new table and an old report.
    """
    out = result.out
    files = {}
    columns = list(result.rows[0].keys())
    with StagedFiles() as staged:
        files["table"] = out / "sweep.csv"
        with staged.open(files["table"], "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(result.rows)
        if result.group_rates:
            files["group_rates"] = out / "group_rates.csv"
            with staged.open(files["group_rates"], "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(result.group_rates[0]))
                writer.writeheader()
                writer.writerows(result.group_rates)
        payload = {"provenance": meta, "constraint": result.constraint, "fit_split": result.fit_split,
                   "columns": result.gap_legend(), "fronts": result.fronts() if "test" in result.split_sizes else [],
                   "missed_bound": [r.eps for r in result.missed()], "undefined_rates": result.undefined_rates,
                   "notes": result.notes,
                   "confidence": result.confidence, "overfitting": result.overfitting(),
                   "rows": result.rows,
                   "heads": [{k: v for k, v in r.__dict__.items() if k != "metrics"} for r in result.records]}
        files["json"] = staged.write_text(out / "sweep.json", json.dumps(
            provenance.strict_json(payload), indent=1, default=str, allow_nan=False))
        if plots:
            files.update(draw_figures(sweep_figure_tasks(result), staged, workers=workers))
        files["report"] = report.write_sweep_report(result, files, meta, staged=staged)
    return files
