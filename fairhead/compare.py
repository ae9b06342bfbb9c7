"""Baselines that go in the same table and plots as fairhead's heads, on the same cache.

============ ============================================================ ==========================
name         method                                                       needs
============ ============================================================ ==========================
expgrad      fairlearn ExponentiatedGradient + LogisticRegression at the   fairlearn; randomized
             sweep's own bounds (a few of them)                           classifier
gridsearch   fairlearn GridSearch + LogisticRegression (best of the grid)  fairlearn
threshold    fairlearn ThresholdOptimizer (post-processing)                fairlearn; the attribute
                                                                          at test time
penalty      the seed code's penalty (Mao et al., Fairness-Finetuning):   torch only
             ``loss + alpha * P`` with P its EO / DI / AE form (MMF: the
             largest group loss), SGD with momentum and weight decay
============ ============================================================ ==========================

Rate constraints map to the matching fairlearn moment; score constraints are
compared with the rate moment they stand in for (``dp-score`` -> demographic parity, ...).

Methods are compared **between fronts**, not at matched ``eps``: fairhead aims its search
at ``0.9 eps`` and bounds each group against the overall rate, ExponentiatedGradient aims
at ``eps`` on its own moment, and the penalty has no bound at all. :func:`fronts` gives,
for each method, the best test accuracy among its heads whose measured test gap (fairlearn's
between-groups DP or EO difference) is at most ``t``, for ``t`` in :data:`FRONT_THRESHOLDS`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import warnings

import numpy as np

from fairhead_errors import DataError
from solvers.constraints import CONSTRAINTS
from solvers.problem import encode_groups

from fairhead import pipeline
from fairhead.evaluation import HeadRecord, evaluate_predictor
from fairhead.progress_bar import progress_bar, ticking

BASELINES = ("expgrad", "gridsearch", "threshold", "penalty")
#: gap levels of the front comparison (best accuracy at gap <= t)
FRONT_THRESHOLDS = (0.02, 0.03, 0.05, 0.10)
#: the gaps fronts are read on (row key -> short name)
FRONT_GAPS = (("demographic_parity_difference", "DP diff"), ("equalized_odds_difference", "EO diff"))
#: short names of every between-groups gap a constraint's family bounds (:data:`fairhead.measure.BETWEEN_GROUPS`)
GAP_NAMES = {**dict(FRONT_GAPS), "equal_opportunity_difference": "EOpp diff",
             "accuracy_equality_difference": "AE diff"}
MSG_UNKNOWN_BASELINE = "unknown baseline {name!r}; choose from {known}"
NO_FAIRLEARN_NOTE = "skipped {name}: fairlearn is not installed (pip install 'fairhead[compare]')"

#: fairhead constraint -> (fairlearn reductions moment, ThresholdOptimizer constraint), each class's
#: ``fairlearn_moment`` and ``fairlearn_threshold`` (``None``: fairlearn has no such form)
FAMILY = {name: (c.fairlearn_moment, c.fairlearn_threshold) for name, c in CONSTRAINTS.items()}
#: fairhead constraint -> the seed code's penalty form (see :func:`seed_penalty`), each class's ``paper``
SEED_PENALTY = {name: c.paper for name, c in CONSTRAINTS.items()}
#: the seed's fine-tuning recipe: SGD(lr=1e-2, momentum=0.9, weight_decay=5e-4), StepLR(100, 0.5),
#: up to 1000 full-batch epochs, stopped after epoch 50 once the loss has risen 3 epochs in a row
SEED_SGD = dict(lr=1e-2, momentum=0.9, weight_decay=5e-4)
SEED_EPOCHS, SEED_STEP, SEED_GAMMA, SEED_PATIENCE, SEED_MIN_EPOCHS = 1000, 100, 0.5, 3, 50
#: below this many feature entries the penalty's epochs run on one thread: on small designs torch's
#: thread pool costs more than the product (measured 1.7-10x slower on two shared cores, up to 600 x 1280)
ONE_THREAD_BELOW = 10_000_000
#: penalty weights tried (the seed's default is 2)
PENALTY_ALPHAS = (0.5, 1.0, 2.0, 4.0, 8.0)
#: bounds used for baselines when the swept constraint's eps is not a rate gap
RATE_BOUNDS_FOR_SCORE_CONSTRAINTS = (0.1, 0.05, 0.02)


def fronts(rows, *, split: str = "test", thresholds=FRONT_THRESHOLDS, gaps=FRONT_GAPS, n: int | None = None):
    """Each method's front on ``split``: its best accuracy among heads whose gap is ``<= t``.

    Returns one dict per (gap, method, t): ``gap`` (short name), ``method``, ``t``,
    ``accuracy`` (NaN when no head of the method reaches the level), the chosen head's ``eps``
    and ``alpha``, its measured ``gap_value`` and, with the split size ``n``, the binomial
    standard error ``se = sqrt(acc (1 - acc) / n)`` of that accuracy.
    """
    out = []
    methods = list(dict.fromkeys(r["method"] for r in rows if r["split"] == split))
    for key, short in gaps:
        for method in methods:
            heads = [r for r in rows if r["split"] == split and r["method"] == method]
            for t in thresholds:
                ok = [r for r in heads if np.isfinite(r.get(key, np.nan)) and r[key] <= t + 1e-12]
                best = max(ok, key=lambda r: r["accuracy"], default=None)
                acc = float("nan") if best is None else float(best["accuracy"])
                se = float(np.sqrt(acc * (1 - acc) / n)) if (n and best is not None) else float("nan")
                out.append({"gap": short, "method": method, "t": float(t), "accuracy": acc, "se": se,
                            "eps": float("nan") if best is None else best.get("eps", float("nan")),
                            "alpha": float("nan") if best is None else best.get("alpha", float("nan")),
                            "gap_value": float("nan") if best is None else float(best[key])})
    return out


def front_table(front_rows) -> list[dict]:
    """:func:`fronts` pivoted for printing: one row per (gap, method), one column per ``t``."""
    table: dict[tuple, dict] = {}
    for r in front_rows:
        row = table.setdefault((r["gap"], r["method"]), {"gap <= t": r["gap"], "method": r["method"]})
        acc = r["accuracy"]
        if np.isnan(acc):
            cell = "-"
        elif np.isnan(r["se"]):
            cell = f"{acc:.4f}"
        else:
            cell = f"{acc:.4f}±{r['se']:.4f}"
        row[f"t={r['t']:g}"] = cell
    return list(table.values())


def matched_bounds(constraint, grid, k: int = 3) -> list[float]:
    """``k`` bounds from the sweep grid (rate constraints), else fixed rate bounds.

    They only place ExponentiatedGradient's heads along its front; the comparison itself is
    between fronts (:func:`fronts`), since the two methods do not aim at ``eps`` alike.
    """
    if constraint.kind != "rate" or not np.all(np.isfinite(grid)):
        return list(RATE_BOUNDS_FOR_SCORE_CONSTRAINTS)
    inner = np.asarray(grid)[1:] if len(grid) > 1 else np.asarray(grid)
    picks = np.unique(np.round(np.quantile(inner, np.linspace(0, 1, k)), 6))[::-1]
    return [float(p) for p in picks]


def _logistic(C, seed, *, counted: bool = False):
    from sklearn.linear_model import LogisticRegression

    if counted:  # each fit a reduction makes calls the hook of :func:`_counting_fits`
        return _counting_class()(C=C, max_iter=2000, random_state=seed)
    return LogisticRegression(C=C, max_iter=2000, random_state=seed)


_COUNTING = {}


def _counting_class():
    """A LogisticRegression whose ``fit`` calls ``_COUNTING["hook"]`` (reductions clone their estimator:
    the class, hence the hook, survives ``sklearn.clone``)."""
    if "class" not in _COUNTING:
        from sklearn.linear_model import LogisticRegression

        class CountingLogisticRegression(LogisticRegression):
            def fit(self, X, y, sample_weight=None):
                out = super().fit(X, y, sample_weight=sample_weight)
                hook = _COUNTING.get("hook")
                if hook is not None:
                    hook()
                return out

        _COUNTING["class"] = CountingLogisticRegression
    return _COUNTING["class"]


@contextlib.contextmanager
def _counting_fits(report, what: str, most: int):
    """Call ``report(text)`` after every inner fit: how many, of at most ``most``, and the time each takes
    (ExponentiatedGradient fits its estimator once per iteration: minutes per bound on Adult)."""
    started, count = time.perf_counter(), [0]

    def hook():
        count[0] += 1
        each = (time.perf_counter() - started) / count[0]
        report(f"{what}: inner fit {count[0]} of at most {most}, {each:.1f} s each, "
               f"at most {each * max(most - count[0], 0):.0f} s left")

    _COUNTING["hook"] = hook
    try:
        yield
    finally:
        _COUNTING["hook"] = None


#: fairlearn ExponentiatedGradient's default max_iter (one estimator fit per iteration, plus the first)
EXPGRAD_MAX_ITER = 50


def _moment(constraint, bound):
    from fairlearn import reductions

    return getattr(reductions, FAMILY[constraint.name][0])(difference_bound=bound)


def run_expgrad(fit, arrays, *, constraint, grid, C, seed, balance=None, confidence=0.95, report=None, **_):
    """ExponentiatedGradient at each matched bound; ``report(text)`` hears about every inner fit."""
    from fairlearn.reductions import ExponentiatedGradient

    for bound in matched_bounds(constraint, grid):
        t0 = time.perf_counter()
        model = ExponentiatedGradient(_logistic(C, seed, counted=report is not None),
                                      constraints=_moment(constraint, bound), max_iter=EXPGRAD_MAX_ITER)
        with _counting_fits(report or (lambda text: None), f"bound {bound:g}", EXPGRAD_MAX_ITER + 1):
            model.fit(fit.X, fit.y, sensitive_features=pipeline.sensitive_arg(fit))
        wall = time.perf_counter() - t0
        metrics = evaluate_predictor(
            lambda a: _logit(model._pmf_predict(a.X)[:, 1]),
            lambda a: model.predict(a.X, random_state=seed), arrays, constraint, balance=balance,
            confidence=confidence)
        yield HeadRecord(method="expgrad", eps=bound, coef=[], intercept=float("nan"), certificate={},
                         metrics=metrics, wall_time=wall, notes="randomized classifier")


def run_gridsearch(fit, arrays, *, constraint, grid, C, seed, balance=None, confidence=0.95, **_):
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
                                                    lambda a: model.predict(a.X), arrays, constraint,
                                                    balance=balance, confidence=confidence),
                         wall_time=wall, notes="best of a 10-point Lagrange grid")


def run_threshold(fit, arrays, *, constraint, C, seed, balance=None, confidence=0.95, **_):
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
                                   arrays, constraint, balance=balance, confidence=confidence),
        wall_time=wall, notes="post-processing: needs the sensitive attribute at test time")


def _pairwise(values):
    """``sum_{g < h} |v_g - v_h|``: the seed's between-group difference, summed over pairs of groups."""
    import torch

    i, j = torch.triu_indices(len(values), len(values), offset=1, device=values.device)
    return (values[i] - values[j]).abs().sum()


def seed_penalty(form, z, y, groups, n_groups):
    """The seed code's fairness penalty for scores ``z`` (differentiable; ``p = sigmoid(z)``).

    With per-group means :math:`\\langle\\cdot\\rangle_g` and the sum over pairs of groups (the
    seed has two groups, one pair):

    * ``EO`` -- :math:`\\sum_{g<h} |\\langle p(1-y)\\rangle_g - \\langle p(1-y)\\rangle_h|
      + |\\langle (1-p)y\\rangle_g - \\langle (1-p)y\\rangle_h|`: joint (not conditional)
      false-positive and false-negative rates of each group;
    * ``EOpp`` -- the false-negative half of ``EO`` (an extension: the seed has no EOpp);
    * ``DI`` -- disparate impact, :math:`-\\min_g \\langle p\\rangle_g / \\max_g \\langle p\\rangle_g`;
    * ``AE`` -- accuracy equality, :math:`\\sum_{g<h} |L_g - L_h|` with :math:`L_g` the group's
      mean logistic loss;
    * ``MMF`` -- max-min fairness, :math:`\\max_g L_g` (it replaces the loss, no ``alpha``).
    """
    import torch

    counts = torch.bincount(groups, minlength=n_groups).to(z.dtype)

    def mean_by_group(u):
        return torch.zeros(n_groups, dtype=z.dtype, device=z.device).index_add(0, groups, u) / counts

    p = torch.sigmoid(z)
    if form in ("EO", "EOpp"):
        fnr = _pairwise(mean_by_group((1 - p) * y))
        return fnr if form == "EOpp" else fnr + _pairwise(mean_by_group(p * (1 - y)))
    if form == "DI":
        rates = mean_by_group(p)
        return -rates.min() / rates.max()
    losses = mean_by_group(torch.nn.functional.binary_cross_entropy_with_logits(z, y, reduction="none"))
    return _pairwise(losses) if form == "AE" else losses.max()


def run_penalty(fit, arrays, *, constraint, C, seed, balance=None, confidence=0.95, alphas=PENALTY_ALPHAS,
                epochs=SEED_EPOCHS,
                **_):
    """The seed code's penalised fine-tuning of the head, one head per ``alpha`` (MMF: one head).

    Minimises ``mean logistic loss + alpha * seed_penalty`` (MMF: the largest group loss) by
    the seed's recipe (:data:`SEED_SGD`: SGD with momentum 0.9 and weight decay 5e-4, step
    decay, early stopping), full batch and from zero, so it is deterministic. Features are
    standardised first so that one step size fits every cache (the seed's ResNet features
    are of order one already); the weight decay acts on the standardised coefficients, as
    SGD's does on the seed's layer. ``C`` is not used: the weight decay is the seed's.
    """
    import torch

    form = SEED_PENALTY[constraint.name]
    if form is None:
        print(f"skipped penalty: the seed paper has no penalty form of {constraint.name!r}")
        return
    X = torch.as_tensor(np.asarray(fit.X, dtype=np.float32))
    y = torch.as_tensor(fit.y.astype(np.float32))
    codes, labels, _ = encode_groups(pipeline.sensitive_arg(fit), len(fit.y))
    groups = torch.as_tensor(codes, dtype=torch.int64)
    mean, std = X.mean(0), X.std(0).clamp_min(1e-6)
    Xs = (X - mean) / std
    threads = torch.get_num_threads()
    if Xs.numel() < ONE_THREAD_BELOW:
        torch.set_num_threads(1)
    try:
        yield from _penalty_heads(form, Xs, y, groups, len(labels), mean, std, arrays, constraint, seed=seed,
                                  balance=balance, confidence=confidence, alphas=alphas, epochs=epochs)
    finally:
        torch.set_num_threads(threads)


def _penalty_heads(form, Xs, y, groups, n_groups, mean, std, arrays, constraint, *, seed, balance, confidence,
                   alphas, epochs):
    import torch

    for alpha in ((None,) if form == "MMF" else alphas):
        torch.manual_seed(seed)
        layer = torch.nn.Linear(Xs.shape[1], 1)
        torch.nn.init.zeros_(layer.weight)
        torch.nn.init.zeros_(layer.bias)
        opt = torch.optim.SGD(layer.parameters(), **SEED_SGD)
        sched = torch.optim.lr_scheduler.StepLR(opt, step_size=SEED_STEP, gamma=SEED_GAMMA)
        t0 = time.perf_counter()
        losses, rising, done = [], 0, 0
        for epoch in range(1, epochs + 1):
            opt.zero_grad()
            z = layer(Xs).squeeze(1)
            fair = seed_penalty(form, z, y, groups, n_groups)
            obj = fair if form == "MMF" else (
                torch.nn.functional.binary_cross_entropy_with_logits(z, y) + alpha * fair)
            obj.backward()
            opt.step()
            sched.step()
            losses.append(float(obj.detach()))
            done = epoch
            rising = rising + 1 if epoch > SEED_MIN_EPOCHS and losses[-1] >= losses[-2] else 0
            if rising >= SEED_PATIENCE:
                break
        wall = time.perf_counter() - t0
        w = layer.weight.detach().squeeze(0).double()
        coef = (w / std.double()).numpy()
        intercept = float(layer.bias.detach().double()[0] - (mean.double() / std.double()) @ w)

        def score(a, coef=coef, intercept=intercept):
            return np.asarray(a.X, dtype=np.float64) @ coef + intercept

        # alpha first: the demo's summary labels a baseline by the first clause of its note
        what = "seed penalty MMF (largest group loss)" if form == "MMF" else f"alpha={alpha:g}, seed penalty {form}"
        yield HeadRecord(method="penalty", eps=float("nan"), coef=coef.tolist(), intercept=intercept,
                         certificate={}, metrics=evaluate_predictor(score, None, arrays, constraint, balance=balance,
                                                                    confidence=confidence),
                         wall_time=wall, alpha=alpha,
                         notes=f"{what}, {done} SGD epochs")


RUNNERS = {"expgrad": run_expgrad, "gridsearch": run_gridsearch, "threshold": run_threshold,
           "penalty": run_penalty}
NEEDS_FAIRLEARN = {"expgrad", "gridsearch", "threshold"}


def _logit(p):
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


def _float64(a: pipeline.SplitArrays) -> pipeline.SplitArrays:
    """fairlearn's post-processing writes float64 into arrays shaped like the scores; give it float64 X."""
    return dataclasses.replace(a, X=np.asarray(a.X, dtype=np.float64))


def run_baselines(names, fit, arrays, *, constraint, grid, C, seed=0, progress=True, balance=None,
                  confidence=0.95):
    """Run the named baselines (all of :data:`BASELINES` for an empty list) and yield their records."""
    fit, arrays = _float64(fit), {k: _float64(v) for k, v in arrays.items()}
    names = list(names) or list(BASELINES)
    for name in names:
        if name not in RUNNERS:
            raise DataError(MSG_UNKNOWN_BASELINE.format(name=name, known=", ".join(BASELINES)))
    try:
        import fairlearn  # noqa: F401
        have_fairlearn = True
    except ImportError:
        have_fairlearn = False

    for name in names:
        if name in NEEDS_FAIRLEARN and not have_fairlearn:
            print(NO_FAIRLEARN_NOTE.format(name=name))
            continue
        records = []
        # one tick per fitted model; the clock keeps running during a long fit (ExponentiatedGradient
        # can take minutes per bound), so a slow baseline never looks frozen
        with progress_bar(progress, total=expected_fits(name, constraint, grid), desc=f"baseline {name}",
                          unit="fit") as bar, ticking(bar), warnings.catch_warnings():
            # fairlearn's own pandas/sklearn deprecation notices are not the user's to fix
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", FutureWarning)
            for record in RUNNERS[name](fit, arrays, constraint=constraint, grid=grid, C=C, seed=seed,
                                        balance=balance, confidence=confidence,
                                        report=None if bar.disable else bar.set_postfix_str):
                records.append(record)
                bar.update(1)
        yield from records


def expected_fits(name: str, constraint, grid) -> int:
    """How many models a baseline fits (the length of its progress bar)."""
    if name == "expgrad":
        return len(matched_bounds(constraint, grid))
    if name == "penalty":  # the seed's MMF form fits one head, the others one per alpha (none: no form)
        form = SEED_PENALTY.get(constraint.name)
        return 0 if form is None else 1 if form == "MMF" else len(PENALTY_ALPHAS)
    return 1
