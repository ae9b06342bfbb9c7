"""Benchmark the solvers side by side in one run and print the ratios the issue asks for.

Questions answered (synthetic embedding-like data with group-dependent base rates, seeded):

1. torch ``dp-score`` fit vs scikit-learn's unconstrained LogisticRegression (lbfgs) at the
   same C, n=20000, d=512 (goal: <= 2x).
2. torch ``dp`` rate head at eps=0.02 vs fairlearn's ExponentiatedGradient at the same bound
   (goal: <= 10% of its time, test gap and accuracy at least as good).
3. a 20-point eps sweep (``fit_path``) vs one cold solve (goal: <= 3x).
4. cvxpy (Clarabel / SCS) times at sizes where they finish in a few minutes.
5. ``--celeba-scale``: 162,770 x 2,048 float32, time vs scikit-learn and peak memory vs the
   feature matrix (goal: <= 2x each).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_solvers.py [--quick] [--celeba-scale] [--json out.json]

Prints a Markdown table for the README and writes the results (with seed and versions) as JSON.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import os
import platform
import resource
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from solvers import FairLogisticRegression, fit_path, metrics  # noqa: E402
from solvers.synthetic import make_fair_classification  # noqa: E402


def _versions():
    out = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    for pkg in ("numpy", "scikit-learn", "torch", "cvxpy", "clarabel", "scs", "fairlearn"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    out["OMP_NUM_THREADS"] = os.environ.get("OMP_NUM_THREADS")
    return out


def _timed(fn, repeat=1):
    best, out = np.inf, None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def _split(n, d, seed, dtype=np.float32):
    X, y, a = make_fair_classification(2 * n, d, embedding_like=True, dtype=dtype, seed=seed)
    return (X[:n], y[:n], a[:n]), (X[n:], y[n:], a[n:])


def _quality(clf_predict, X, y, a):
    yhat = clf_predict(X)
    return {
        "accuracy": metrics.accuracy(y, yhat),
        "dp_difference": metrics.demographic_parity_difference(y, yhat, sensitive_features=a),
    }


def bench_score(n, d, seed, C, repeat):
    from sklearn.linear_model import LogisticRegression

    (X, y, a), _ = _split(n, d, seed)
    FairLogisticRegression(backend="torch").fit(X[:500], y[:500])  # import / warm-up outside the timing
    t_sk, sk = _timed(lambda: LogisticRegression(C=C, max_iter=5000).fit(X, y), repeat)
    t_t, clf = _timed(
        lambda: FairLogisticRegression(constraint="dp-score", eps=0.0, C=C, backend="torch").fit(
            X, y, sensitive_features=a), repeat)
    t_u, _ = _timed(lambda: FairLogisticRegression(C=C, backend="torch").fit(X, y), repeat)
    return {
        "n": n, "d": d, "sklearn_lbfgs_s": t_sk, "sklearn_n_iter": int(sk.n_iter_[0]),
        "torch_dp_score_s": t_t, "torch_dp_score_n_iter": clf.n_iter_, "torch_unconstrained_s": t_u,
        "ratio_dp_score_vs_sklearn": t_t / t_sk, "status": clf.certificate_.status,
        "stationarity": clf.certificate_.stationarity,
    }


def bench_rate(n, d, seed, C, eps, skip_eg=False):
    from sklearn.linear_model import LogisticRegression

    (X, y, a), (Xt, yt, at) = _split(n, d, seed)
    t_r, clf = _timed(lambda: FairLogisticRegression(constraint="dp", eps=eps, C=C, backend="torch").fit(
        X, y, sensitive_features=a))
    t_s, sc = _timed(lambda: FairLogisticRegression(constraint="dp-score", eps=0.0, C=C, backend="torch").fit(
        X, y, sensitive_features=a))
    out = {
        "n": n, "d": d, "eps": eps, "torch_dp_s": t_r, "torch_dp_fits": clf.certificate_.notes[0],
        "torch_dp_train": _quality(clf.predict, X, y, a), "torch_dp_test": _quality(clf.predict, Xt, yt, at),
        "torch_dp_eps_met": clf.certificate_.eps_met, "dp_score_eps0_s": t_s,
        "dp_score_eps0_train": _quality(sc.predict, X, y, a), "dp_score_eps0_test": _quality(sc.predict, Xt, yt, at),
    }
    if not skip_eg:
        from fairlearn.reductions import DemographicParity, ExponentiatedGradient

        def eg_fit():
            eg = ExponentiatedGradient(LogisticRegression(C=C, max_iter=5000),
                                       constraints=DemographicParity(difference_bound=eps))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                eg.fit(X, y, sensitive_features=a)
            return eg

        t_eg, eg = _timed(eg_fit)
        pred = lambda Z: eg.predict(Z, random_state=0)  # noqa: E731 - EG is randomized
        out.update({
            "eg_s": t_eg, "eg_train": _quality(pred, X, y, a), "eg_test": _quality(pred, Xt, yt, at),
            "ratio_dp_vs_eg_time": t_r / t_eg,
        })
    return out


def bench_path(n, d, seed, C, points=20):
    (X, y, a), _ = _split(n, d, seed)
    grid = np.linspace(0.5, 0.0, points)
    t_cold, _ = _timed(lambda: FairLogisticRegression(constraint="dp-score", eps=0.0, C=C, backend="torch").fit(
        X, y, sensitive_features=a))
    t_path, heads = _timed(lambda: fit_path(X, y, sensitive_features=a, eps_grid=grid, constraint="dp-score",
                                            C=C, backend="torch"))
    return {"n": n, "d": d, "points": points, "cold_s": t_cold, "path_s": t_path, "ratio_path_vs_cold": t_path / t_cold,
            "iters": [h.n_iter_ for h in heads]}


def bench_cvxpy(sizes, seed, C):
    import cvxpy as cp

    rows = []
    for n, d in sizes:
        (X, y, a), _ = _split(n, d, seed, dtype=np.float64)
        row = {"n": n, "d": d}
        ref = None
        for solver in ("CLARABEL", "SCS"):
            if solver not in cp.installed_solvers():
                continue
            from solvers.backends import cvxpy as cvb

            order = cvb.SOLVER_ORDER
            cvb.SOLVER_ORDER = (solver,)
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t, clf = _timed(lambda: FairLogisticRegression(constraint="dp-score", eps=0.0, C=C, backend="cvxpy",
                                                                   tol=1e-8).fit(X, y, sensitive_features=a))
                row[f"{solver.lower()}_s"] = t
                row[f"{solver.lower()}_objective"] = clf.certificate_.objective
            finally:
                cvb.SOLVER_ORDER = order
        t, clf = _timed(lambda: FairLogisticRegression(constraint="dp-score", eps=0.0, C=C, backend="torch",
                                                       tol=1e-8).fit(X, y, sensitive_features=a))
        row["torch_s"] = t
        row["torch_objective"] = clf.certificate_.objective
        if "clarabel_objective" in row:
            ref = row["clarabel_objective"]
            row["objective_rel_diff"] = abs(ref - row["torch_objective"]) / abs(ref)
        rows.append(row)
    return rows


def _rss_now():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def bench_celeba(seed, C):
    from sklearn.linear_model import LogisticRegression

    n, d = 162_770, 2_048
    rng = np.random.default_rng(seed)
    X = np.empty((n, d), dtype=np.float32)
    a = rng.integers(0, 2, n)
    y = (rng.random(n) < np.where(a == 1, 0.6, 0.3)).astype(np.int64)
    M = (rng.normal(size=(16, d)) / 4).astype(np.float32)
    for s in range(0, n, 8192):
        e = min(n, s + 8192)
        Z = rng.normal(size=(e - s, 16)).astype(np.float32)
        Z[:, 0] += 1.5 * (2 * y[s:e] - 1)
        Z[:, 1] += 1.0 * a[s:e]
        X[s:e] = np.maximum(Z @ M + 0.5 + 0.5 * rng.normal(size=(e - s, d)).astype(np.float32), 0)
    base = _rss_now()
    peak0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t_t, clf = _timed(lambda: FairLogisticRegression(constraint="dp-score", eps=0.0, C=C, backend="torch").fit(
        X, y, sensitive_features=a))
    peak_t = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t_sk, _ = _timed(lambda: LogisticRegression(C=C, max_iter=5000).fit(X, y))
    return {
        "n": n, "d": d, "X_bytes": X.nbytes, "torch_dp_score_s": t_t, "sklearn_s": t_sk, "ratio_time": t_t / t_sk,
        "rss_before_fit": base, "peak_rss_after_torch_fit": peak_t, "peak_before_fit": peak0,
        "peak_over_X": peak_t / X.nbytes, "fit_extra_over_X": max(0, peak_t - base) / X.nbytes,
        "status": clf.certificate_.status,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--C", type=float, default=1.0)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--celeba-scale", action="store_true", help="also run 162,770 x 2,048 float32")
    ap.add_argument("--no-eg", action="store_true", help="skip fairlearn ExponentiatedGradient")
    ap.add_argument("--json", default="bench_solvers_results.json", help="where to write the results")
    args = ap.parse_args(argv)
    n, d = (4000, 128) if args.quick else (20000, 512)
    res = {"seed": args.seed, "C": args.C, "versions": _versions()}
    print(f"# bench_solvers (n={n}, d={d}, seed={args.seed}, C={args.C})", flush=True)
    res["score"] = bench_score(n, d, args.seed, args.C, repeat=3)
    print("score:", json.dumps(res["score"]), flush=True)
    res["rate"] = bench_rate(n, d, args.seed, args.C, 0.02, skip_eg=args.no_eg)
    print("rate:", json.dumps(res["rate"]), flush=True)
    res["path"] = bench_path(n, d, args.seed, args.C)
    print("path:", json.dumps(res["path"]), flush=True)
    sizes = [(1000, 32), (2000, 64)] if args.quick else [(2000, 64), (5000, 128), (10000, 256)]
    res["cvxpy"] = bench_cvxpy(sizes, args.seed, args.C)
    print("cvxpy:", json.dumps(res["cvxpy"]), flush=True)
    if args.celeba_scale:
        res["celeba"] = bench_celeba(args.seed, args.C)
        print("celeba:", json.dumps(res["celeba"]), flush=True)
    with open(args.json, "w") as fh:
        json.dump(res, fh, indent=1, default=float)
    print(markdown(res))
    return res


def markdown(res) -> str:
    s, r, p = res["score"], res["rate"], res["path"]
    lines = [
        f"| question (n={s['n']}, d={s['d']}, {res['versions'].get('cpus')} CPUs, OMP_NUM_THREADS="
        f"{res['versions'].get('OMP_NUM_THREADS')}) | fairhead | reference | ratio | goal |",
        "| --- | --- | --- | --- | --- |",
        f"| `dp-score` fit, torch vs sklearn lbfgs (unconstrained, same C) | {s['torch_dp_score_s']:.3f} s "
        f"| {s['sklearn_lbfgs_s']:.3f} s | {s['ratio_dp_score_vs_sklearn']:.2f}x | <= 2x |",
    ]
    if "eg_s" in r:
        lines.append(
            f"| `dp` rate head eps=0.02 vs ExponentiatedGradient: time | {r['torch_dp_s']:.2f} s | {r['eg_s']:.2f} s "
            f"| {r['ratio_dp_vs_eg_time']:.1%} | <= 10% |")
        lines.append(
            f"| ... test DP difference / accuracy | {r['torch_dp_test']['dp_difference']:.3f} / "
            f"{r['torch_dp_test']['accuracy']:.3f} | {r['eg_test']['dp_difference']:.3f} / "
            f"{r['eg_test']['accuracy']:.3f} | | gap <=, acc >= |")
        lines.append(
            f"| ... train DP difference / accuracy | {r['torch_dp_train']['dp_difference']:.3f} / "
            f"{r['torch_dp_train']['accuracy']:.3f} | {r['eg_train']['dp_difference']:.3f} / "
            f"{r['eg_train']['accuracy']:.3f} | | |")
    lines.append(
        f"| `dp-score` eps=0 (score constraint) test DP difference / accuracy | "
        f"{r['dp_score_eps0_test']['dp_difference']:.3f} / {r['dp_score_eps0_test']['accuracy']:.3f} | | | |")
    lines.append(f"| 20-point eps sweep vs one cold solve | {p['path_s']:.2f} s | {p['cold_s']:.2f} s "
                 f"| {p['ratio_path_vs_cold']:.2f}x | <= 3x |")
    for row in res["cvxpy"]:
        cl = f"{row['clarabel_s']:.2f} s" if "clarabel_s" in row else "-"
        sc = f"{row['scs_s']:.2f} s" if "scs_s" in row else "-"
        lines.append(f"| cvxpy `dp-score` n={row['n']}, d={row['d']}: Clarabel / SCS vs torch (tol 1e-8) "
                     f"| {row['torch_s']:.3f} s | {cl} / {sc} | rel. obj. diff {row.get('objective_rel_diff', float('nan')):.1e} | |")
    if "celeba" in res:
        c = res["celeba"]
        lines.append(f"| CelebA scale {c['n']}x{c['d']} float32: torch `dp-score` vs sklearn | {c['torch_dp_score_s']:.1f} s "
                     f"| {c['sklearn_s']:.1f} s | {c['ratio_time']:.2f}x | <= 2x |")
        lines.append(f"| ... peak RSS / feature matrix ({c['X_bytes'] / 2**30:.2f} GiB) | {c['peak_over_X']:.2f}x "
                     f"| | fit adds {c['fit_extra_over_X']:.2f}x | <= 2x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
