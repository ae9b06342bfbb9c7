"""Baselines that go in the same table and plots as fairhead's heads, on the same cache.

============ ============================================================ ==========================
name         method                                                       needs
============ ============================================================ ==========================
expgrad      fairlearn ExponentiatedGradient + LogisticRegression at the   fairlearn; randomized
             sweep's own bounds (a few of them)                           classifier
gridsearch   fairlearn GridSearch + LogisticRegression (best of the grid)  fairlearn
threshold    fairlearn ThresholdOptimizer (post-processing)                fairlearn; the attribute
                                                                          at test time
penalty      the seed code's penalty form, ``loss + alpha * gap`` on soft  torch only
             predictions, full-batch gradient descent
============ ============================================================ ==========================

Rate constraints map to the matching fairlearn moment; score constraints are
compared with the rate moment they stand in for (``dp-score`` -> demographic parity, ...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import threading
import time
import warnings

import numpy as np

from fairhead import pipeline
from fairhead.sweep import HeadRecord, evaluate_predictor

BASELINES = ("expgrad", "gridsearch", "threshold", "penalty")
UNKNOWN_BASELINE_MSG = "unknown baseline {name!r}; choose from {known}"
NO_FAIRLEARN_NOTE = "skipped {name}: fairlearn is not installed (pip install 'fairhead[compare]')"

#: fairhead constraint -> (fairlearn reductions moment, ThresholdOptimizer constraint, soft-gap event)
FAMILY = {
    "dp": ("DemographicParity", "demographic_parity", "all"),
    "dp-score": ("DemographicParity", "demographic_parity", "all"),
    "cov": ("DemographicParity", "demographic_parity", "all"),
    "eopp": ("TruePositiveRateParity", "true_positive_rate_parity", "y=1"),
    "eopp-score": ("TruePositiveRateParity", "true_positive_rate_parity", "y=1"),
    "eo": ("EqualizedOdds", "equalized_odds", "label"),
    "eo-score": ("EqualizedOdds", "equalized_odds", "label"),
    "error-rate": ("ErrorRateParity", None, "error"),
    "group-loss": ("ErrorRateParity", None, "error"),
    "minimax": ("ErrorRateParity", None, "error"),
}
#: bounds used for baselines when the swept constraint's eps is not a rate gap
RATE_BOUNDS_FOR_SCORE_CONSTRAINTS = (0.1, 0.05, 0.02)


def matched_bounds(constraint, grid, k: int = 3) -> list[float]:
    """``k`` bounds from the sweep grid (rate constraints), else fixed rate bounds."""
    if constraint.kind != "rate" or not np.all(np.isfinite(grid)):
        return list(RATE_BOUNDS_FOR_SCORE_CONSTRAINTS)
    inner = np.asarray(grid)[1:] if len(grid) > 1 else np.asarray(grid)
    picks = np.unique(np.round(np.quantile(inner, np.linspace(0, 1, k)), 6))[::-1]
    return [float(p) for p in picks]


def _logistic(C, seed):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=2000, random_state=seed)


def _moment(constraint, bound):
    from fairlearn import reductions

    return getattr(reductions, FAMILY[constraint.name][0])(difference_bound=bound)


def run_expgrad(fit, arrays, *, constraint, grid, C, seed, **_):
    from fairlearn.reductions import ExponentiatedGradient

    for bound in matched_bounds(constraint, grid):
        t0 = time.perf_counter()
        model = ExponentiatedGradient(_logistic(C, seed), constraints=_moment(constraint, bound))
        model.fit(fit.X, fit.y, sensitive_features=pipeline.sensitive_arg(fit))
        wall = time.perf_counter() - t0
        metrics = evaluate_predictor(
            lambda a: _logit(model._pmf_predict(a.X)[:, 1]),
            lambda a: model.predict(a.X, random_state=seed), arrays, constraint)
        yield HeadRecord(method="expgrad", eps=bound, coef=[], intercept=float("nan"), certificate={},
                         metrics=metrics, wall_time=wall, notes="randomized classifier")


def run_gridsearch(fit, arrays, *, constraint, grid, C, seed, **_):
    from fairlearn.reductions import GridSearch

    for bound in matched_bounds(constraint, grid)[-1:]:  # GridSearch picks its own trade-off; one run
        t0 = time.perf_counter()
        model = GridSearch(_logistic(C, seed), constraints=_moment(constraint, bound), grid_size=10)
        model.fit(fit.X, fit.y, sensitive_features=pipeline.sensitive_arg(fit))
        wall = time.perf_counter() - t0
        best = model.predictors_[model.best_idx_]
        yield HeadRecord(method="gridsearch", eps=bound, coef=best.coef_.ravel().tolist(),
                         intercept=float(best.intercept_[0]), certificate={},
                         metrics=evaluate_predictor(lambda a: best.decision_function(a.X),
                                                    lambda a: model.predict(a.X), arrays, constraint),
                         wall_time=wall, notes="best of a 10-point Lagrange grid")


def run_threshold(fit, arrays, *, constraint, C, seed, **_):
    from fairlearn.postprocessing import ThresholdOptimizer

    target = FAMILY[constraint.name][1]
    if target is None:
        print(f"skipped threshold: ThresholdOptimizer has no form of {constraint.name!r}")
        return
    t0 = time.perf_counter()
    model = ThresholdOptimizer(estimator=_logistic(C, seed), constraints=target,
                               predict_method="decision_function")
    model.fit(fit.X, fit.y, sensitive_features=pipeline.sensitive_arg(fit))
    wall = time.perf_counter() - t0

    def sens(a):
        return pipeline.sensitive_arg(a)

    yield HeadRecord(
        method="threshold", eps=float("nan"), coef=[], intercept=float("nan"), certificate={},
        metrics=evaluate_predictor(lambda a: _logit(model._pmf_predict(a.X, sensitive_features=sens(a))[:, 1]),
                                   lambda a: model.predict(a.X, sensitive_features=sens(a), random_state=seed),
                                   arrays, constraint),
        wall_time=wall, notes="post-processing: needs the sensitive attribute at test time")


def soft_gap(p, y, groups, event):
    """The seed code's penalty: the largest group gap of soft predictions ``p = sigmoid(z)``."""
    import torch

    if event == "error":
        u, masks = torch.where(y > 0.5, 1 - p, p), [torch.ones_like(y, dtype=torch.bool)]
    else:
        u = p
        masks = {"all": [torch.ones_like(y, dtype=torch.bool)], "y=1": [y > 0.5],
                 "label": [y > 0.5, y < 0.5]}[event]
    gaps = []
    for mask in masks:
        overall = u[mask].mean()
        for g in torch.unique(groups):
            cell = mask & (groups == g)
            if cell.any():
                gaps.append((u[cell].mean() - overall).abs())
    return torch.stack(gaps).max()


def run_penalty(fit, arrays, *, constraint, C, seed, alphas=(0.3, 1.0, 3.0, 10.0), steps=400, lr=0.05, **_):
    """``min mean loss + ||w||^2 / (2 C n) + alpha * soft_gap`` by full-batch Adam from zero (deterministic)."""
    import torch

    from solvers.problem import encode_groups

    event = FAMILY[constraint.name][2]
    X = torch.as_tensor(np.asarray(fit.X, dtype=np.float32))
    y = torch.as_tensor(fit.y.astype(np.float32))
    codes, _, _ = encode_groups(pipeline.sensitive_arg(fit), len(fit.y))
    groups = torch.as_tensor(codes)
    mean, std = X.mean(0), X.std(0).clamp_min(1e-6)  # standardise so one step size fits all features
    Xs = (X - mean) / std
    for alpha in alphas:
        torch.manual_seed(seed)
        w = torch.zeros(X.shape[1], requires_grad=True)
        b = torch.zeros((), requires_grad=True)
        opt = torch.optim.Adam([w, b], lr=lr)
        t0 = time.perf_counter()
        for _ in range(steps):
            opt.zero_grad()
            z = Xs @ w + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(z, y)
            raw_w = w / std  # the penalty is on the original-scale coefficients, as in the heads
            obj = loss + (raw_w @ raw_w) / (2 * C * len(y)) + alpha * soft_gap(torch.sigmoid(z), y, groups, event)
            obj.backward()
            opt.step()
        wall = time.perf_counter() - t0
        coef = (w / std).detach().numpy().astype(np.float64)
        intercept = float(b.detach() - (mean / std) @ w.detach())

        def score(a, coef=coef, intercept=intercept):
            return np.asarray(a.X, dtype=np.float64) @ coef + intercept

        yield HeadRecord(method="penalty", eps=float("nan"), coef=coef.tolist(), intercept=intercept,
                         certificate={}, metrics=evaluate_predictor(score, None, arrays, constraint),
                         wall_time=wall, notes=f"alpha={alpha:g}, {steps} Adam steps")


RUNNERS = {"expgrad": run_expgrad, "gridsearch": run_gridsearch, "threshold": run_threshold,
           "penalty": run_penalty}
NEEDS_FAIRLEARN = {"expgrad", "gridsearch", "threshold"}


def _logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _float64(a: pipeline.SplitArrays) -> pipeline.SplitArrays:
    """fairlearn's post-processing writes float64 into arrays shaped like the scores; give it float64 X."""
    return dataclasses.replace(a, X=np.asarray(a.X, dtype=np.float64))


def run_baselines(names, fit, arrays, *, constraint, grid, C, seed=0, progress=True):
    """Run the named baselines (all of :data:`BASELINES` for an empty list) and yield their records."""
    from fairhead_errors import DataError

    fit, arrays = _float64(fit), {k: _float64(v) for k, v in arrays.items()}
    names = list(names) or list(BASELINES)
    for name in names:
        if name not in RUNNERS:
            raise DataError(UNKNOWN_BASELINE_MSG.format(name=name, known=", ".join(BASELINES)))
    try:
        import fairlearn  # noqa: F401
        have_fairlearn = True
    except ImportError:
        have_fairlearn = False
    from tqdm.auto import tqdm

    for name in names:
        if name in NEEDS_FAIRLEARN and not have_fairlearn:
            print(NO_FAIRLEARN_NOTE.format(name=name))
            continue
        records = []
        # one tick per fitted model; the clock keeps running during a long fit (ExponentiatedGradient
        # can take minutes per bound), so a slow baseline never looks frozen
        with tqdm(total=expected_fits(name, constraint, grid), desc=f"baseline {name}", unit="fit",
                  disable=not progress, dynamic_ncols=True) as bar, _ticking(bar), warnings.catch_warnings():
            # fairlearn's own pandas/sklearn deprecation notices are not the user's to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            for record in RUNNERS[name](fit, arrays, constraint=constraint, grid=grid, C=C, seed=seed):
                records.append(record)
                bar.update(1)
        yield from records


def expected_fits(name: str, constraint, grid) -> int:
    """How many models a baseline fits (the length of its progress bar)."""
    if name == "expgrad":
        return len(matched_bounds(constraint, grid))
    if name == "penalty":
        return len(inspect.signature(run_penalty).parameters["alphas"].default)
    return 1


@contextlib.contextmanager
def _ticking(bar, every_s: float = 1.0):
    """Redraw ``bar`` every ``every_s`` seconds from a daemon thread (its elapsed time keeps moving)."""
    if bar.disable:
        yield
        return
    stop = threading.Event()

    def tick():
        while not stop.wait(every_s):
            bar.refresh()

    thread = threading.Thread(target=tick, name="fairhead-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
