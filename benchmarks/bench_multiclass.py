"""K-class fair heads against scikit-learn's multinomial LogisticRegression, side by side in one run.

The question (issue 11): a K = 4 ``dp`` head (the deterministic Lagrangian reduction, per class
one-vs-rest, torch backend) on 20,000 x 512 synthetic embedding-like features, against
scikit-learn's unconstrained multinomial ``LogisticRegression`` (lbfgs, same C), as a time
ratio; goal at most 3x. Each side is timed ``--repeat`` times (best kept), alternating, with the
imports and a warm-up outside the timing. Also printed: the unconstrained fairhead head (same
problem as scikit-learn), the bounded gap on the fit split, and test accuracy and fairlearn-style
per-class DP differences (largest over classes) on a held-out split of the same size.

``--part paths`` (issue 19): 12-bound ``dp`` and ``eo`` paths (``fit_path``, eps from 0.15 to 0) on
the same fit split, without and with the per-class offset stage (:mod:`solvers.threshold_multiclass`),
side by side: per bound the achieved gap, whether it is met, the train accuracy and the seconds;
whether each path is monotone (along the grid, tightest last, no gap grows and no error falls) and
meets every bound above the resolution; and the time ratio of the two paths.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/bench_multiclass.py [--n 20000] [--d 512] [--eps 0.02] [--json out.json]
    OMP_NUM_THREADS=1 python benchmarks/bench_multiclass.py --part paths [--constraints dp eo] [--json out.json]
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from solvers import FairLogisticRegression, metrics  # noqa: E402
from solvers.synthetic import make_fair_multiclass  # noqa: E402


def _versions():
    out = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count(),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS")}
    for pkg in ("numpy", "scikit-learn", "torch"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def _timed(fn):
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


PATH_GRID = np.linspace(0.15, 0.0, 12)


def _path(Xf, yf, af, kind, C, offsets):
    """One 12-bound path, with or without the per-class offset stage (:mod:`solvers.threshold_multiclass`)."""
    from solvers import fit_path, threshold_multiclass

    threshold_multiclass.OFFSET_STAGE = offsets
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # unmet bounds below the resolution warn
            t, heads = _timed(lambda: fit_path(Xf, yf, sensitive_features=af, eps_grid=PATH_GRID, constraint=kind,
                                               C=C, backend="torch"))
    finally:
        threshold_multiclass.OFFSET_STAGE = True
    certs = [h.certificate_ for h in heads]
    gaps = [c.achieved_gap for c in certs]
    errs = [c.zero_one_error for c in certs]
    # along the grid (loosest first) the gaps never grow and the errors never fall (float64 sums of
    # n weights in [0, 1]: 1e-12 is far above their rounding and far below one prediction's weight)
    monotone = all(g2 <= g1 + 1e-12 and e2 >= e1 - 1e-12 for g1, g2, e1, e2 in zip(gaps, gaps[1:], errs, errs[1:]))
    return dict(path_s=t, resolution=max(c.resolution for c in certs), gaps=gaps, met=[bool(c.eps_met) for c in certs],
                train_accuracy=[1 - e for e in errs], head_wall_s=[c.wall_time for c in certs],
                unmet_above_resolution=[round(float(c.eps), 4) for c in certs
                                        if not c.eps_met and c.eps > c.resolution],
                monotone=monotone)


def part_paths(args, Xf, yf, af):
    """The 12-bound paths of ``--constraints`` on the fit split, without and with the offset stage,
    side by side in one run (see the module docstring)."""
    FairLogisticRegression(constraint="dp", eps=0.1, backend="torch").fit(Xf[:500], yf[:500],
                                                                          sensitive_features=af[:500])
    rows = []
    for kind in args.constraints:
        without = _path(Xf, yf, af, kind, args.C, False)
        with_ = _path(Xf, yf, af, kind, args.C, True)
        rows.append(dict(constraint=kind, eps=[float(e) for e in PATH_GRID], without_offsets=without,
                         with_offsets=with_, time_ratio=with_["path_s"] / without["path_s"]))
        print(f"{kind}: 12-bound path without offsets {without['path_s']:.1f}s, with {with_['path_s']:.1f}s "
              f"(ratio {rows[-1]['time_ratio']:.2f}); resolution {with_['resolution']:.4f}", flush=True)
        for name, r in (("without", without), ("with", with_)):
            print(f"   {name:7s} offsets: monotone {r['monotone']}, unmet above the resolution: "
                  f"{r['unmet_above_resolution'] or 'none'}", flush=True)
        print("| eps | gap without | train acc without | s | gap with | train acc with | s |")
        print("|---|---|---|---|---|---|---|")
        for i, e in enumerate(PATH_GRID):
            cells = [f"{r['gaps'][i]:.4f}{'' if r['met'][i] else ' (unmet)'} | {r['train_accuracy'][i]:.4f} | "
                     f"{r['head_wall_s'][i]:.2f}" for r in (without, with_)]
            print(f"| {e:.4f} | " + " | ".join(cells) + " |", flush=True)
    return rows


def main(argv=None):
    from sklearn.linear_model import LogisticRegression

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--d", type=int, default=512)
    p.add_argument("--k", type=int, default=4, help="classes")
    p.add_argument("--groups", type=int, default=2)
    p.add_argument("--eps", type=float, default=0.02)
    p.add_argument("--C", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--part", choices=("fit", "paths"), default="fit")
    p.add_argument("--constraints", nargs="+", default=["dp", "eo"], help="paths: which constraints")
    args = p.parse_args(argv)

    X, y, a = make_fair_multiclass(2 * args.n, args.d, n_classes=args.k, n_groups=args.groups, embedding_like=True,
                                   dtype=np.float32, seed=args.seed)
    (Xf, yf, af), (Xt, yt, at) = (X[: args.n], y[: args.n], a[: args.n]), (X[args.n :], y[args.n :], a[args.n :])
    if args.part == "paths":
        rows = part_paths(args, Xf, yf, af)
        if args.json:
            with open(args.json, "w") as f:
                json.dump({"rows": rows, "n": args.n, "d": args.d, "classes": args.k, "groups": args.groups,
                           "seed": args.seed, "versions": _versions()}, f, indent=1, default=float)
        return rows
    # imports and one-off set-up outside the timing
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LogisticRegression(C=args.C, max_iter=50).fit(Xf[:500], yf[:500])
    FairLogisticRegression(constraint="dp", eps=0.1, backend="torch").fit(Xf[:500], yf[:500], sensitive_features=af[:500])

    def sk():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # lbfgs may stop at max_iter on its own tolerance
            return LogisticRegression(C=args.C, max_iter=1000).fit(Xf, yf)

    def fair():
        return FairLogisticRegression(constraint="dp", eps=args.eps, C=args.C, backend="torch").fit(
            Xf, yf, sensitive_features=af)

    def free():
        return FairLogisticRegression(C=args.C, backend="torch").fit(Xf, yf)

    times = {"sklearn": [], "dp": [], "unconstrained": []}
    heads = {}
    for _ in range(args.repeat):
        for name, fn in (("sklearn", sk), ("dp", fair), ("unconstrained", free)):
            t, heads[name] = _timed(fn)
            times[name].append(t)
    best = {k: min(v) for k, v in times.items()}

    def quality(h):
        pf, pt = h.predict(Xf), h.predict(Xt)
        return {"fit_accuracy": metrics.accuracy(yf, pf), "test_accuracy": metrics.accuracy(yt, pt),
                "fit_dp_difference": metrics.demographic_parity_difference(yf, pf, sensitive_features=af,
                                                                          classes=h.classes_),
                "test_dp_difference": metrics.demographic_parity_difference(yt, pt, sensitive_features=at,
                                                                           classes=h.classes_)}

    cert = heads["dp"].certificate_
    out = {
        "n": args.n, "d": args.d, "classes": args.k, "groups": args.groups, "eps": args.eps, "C": args.C,
        "seed": args.seed, "repeat": args.repeat, "times_s": times, "best_s": best,
        "ratio_dp_vs_sklearn": best["dp"] / best["sklearn"],
        "ratio_unconstrained_vs_sklearn": best["unconstrained"] / best["sklearn"],
        "sklearn_n_iter": int(np.max(heads["sklearn"].n_iter_)),
        "dp_certificate": {"achieved_gap": cert.achieved_gap, "eps_met": cert.eps_met, "passes": cert.passes,
                           "zero_one_error": cert.zero_one_error, "notes": list(cert.notes)},
        "quality": {k: quality(h) for k, h in heads.items()},
        "versions": _versions(),
    }
    print(f"| {args.n:,} x {args.d}, K = {args.k}, {args.groups} groups | time | ratio to scikit-learn |")
    print("|---|---|---|")
    print(f"| scikit-learn multinomial LogisticRegression (lbfgs, tol 1e-4), unconstrained | {best['sklearn']:.3f} s "
          f"({out['sklearn_n_iter']} it) | 1 |")
    print(f"| fairhead unconstrained (torch, tol 1e-6) | {best['unconstrained']:.3f} s | "
          f"{out['ratio_unconstrained_vs_sklearn']:.2f}x |")
    print(f"| fairhead `dp` eps = {args.eps:g} (reduction, torch) | {best['dp']:.3f} s | "
          f"{out['ratio_dp_vs_sklearn']:.2f}x (goal at most 3x: {'met' if out['ratio_dp_vs_sklearn'] <= 3 else 'not met'}) |")
    print(f"dp head: bounded gap on the fit split {cert.achieved_gap:.4f} (eps met: {cert.eps_met}), "
          f"{cert.notes[0]}, {cert.passes} passes over X")
    for k, q in out["quality"].items():
        print(f"{k:>14s}: fit acc {q['fit_accuracy']:.4f} dp_diff {q['fit_dp_difference']:.4f} | "
              f"test acc {q['test_accuracy']:.4f} dp_diff {q['test_dp_difference']:.4f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=float)
    return out


if __name__ == "__main__":
    main()
