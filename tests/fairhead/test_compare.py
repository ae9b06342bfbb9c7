"""The penalty baseline is the seed code's penalty (Mao et al., Fairness-Finetuning), not another one."""

from __future__ import annotations

import numpy as np
import pytest

from fairhead import compare
from solvers.constraints import make_constraint

#: float64 tensors on both sides: the same sums in a different order
ATOL = 1e-12


@pytest.fixture()
def scores():
    rng = np.random.default_rng(0)
    n = 300
    a = rng.integers(0, 2, n)
    y = (rng.random(n) < np.where(a == 1, 0.6, 0.3)).astype(np.float64)
    z = rng.normal(size=n) + 0.8 * a
    return z, y, a


def _seed_forms(z, y, a):
    """The seed's formulas for a binary attribute a, written out in numpy (its utils.py)."""
    p = 1 / (1 + np.exp(-z))
    fpr = abs(np.sum(p * (1 - y) * a) / np.sum(a) - np.sum(p * (1 - y) * (1 - a)) / np.sum(1 - a))
    fnr = abs(np.sum((1 - p) * y * a) / np.sum(a) - np.sum((1 - p) * y * (1 - a)) / np.sum(1 - a))
    r1, r0 = np.sum(a * p) / np.sum(a), np.sum((1 - a) * p) / np.sum(1 - a)
    loss = np.logaddexp(0.0, -(2 * y - 1) * z)
    l1, l0 = loss[a == 1].mean(), loss[a == 0].mean()
    return {"EO": fpr + fnr, "EOpp": fnr, "DI": -min(r1 / r0, r0 / r1), "AE": abs(l1 - l0), "MMF": max(l1, l0)}


@pytest.mark.parametrize("form", ["EO", "EOpp", "DI", "AE", "MMF"])
def test_penalty_forms_are_the_seed_formulas(scores, form):
    import torch

    z, y, a = scores
    ours = compare.seed_penalty(form, torch.as_tensor(z), torch.as_tensor(y), torch.as_tensor(a), 2)
    assert float(ours) == pytest.approx(_seed_forms(z, y, a)[form], abs=ATOL)


def test_more_groups_sum_the_pairwise_differences(scores):
    import torch

    z, y, _ = scores
    g = np.arange(len(z)) % 3
    p = 1 / (1 + np.exp(-z))
    joint = [np.mean((1 - p[g == k]) * y[g == k]) for k in range(3)]
    expected = sum(abs(joint[i] - joint[j]) for i in range(3) for j in range(i + 1, 3))
    ours = compare.seed_penalty("EOpp", torch.as_tensor(z), torch.as_tensor(y), torch.as_tensor(g), 3)
    assert float(ours) == pytest.approx(expected, abs=ATOL)


@pytest.mark.parametrize("constraint, form", [("dp", "DI"), ("eo", "EO"), ("error-rate", "AE"), ("minimax", "MMF")])
def test_penalty_heads_carry_their_form_and_alpha(split_arrays, constraint, form):
    cons = make_constraint(constraint)
    train = split_arrays["train"]
    heads = list(compare.run_penalty(train, {"train": train}, constraint=cons, C=1.0, seed=0,
                                     alphas=(1.0, 4.0), epochs=120))
    if form == "MMF":  # the largest group loss replaces the loss: one head, no alpha
        assert [h.alpha for h in heads] == [None]
    else:
        assert [h.alpha for h in heads] == [1.0, 4.0]
    assert all(f"seed penalty {form}" in h.notes for h in heads)
    assert all(np.isnan(r["alpha"]) == (form == "MMF") for h in heads for r in h.rows(constraint))
    # deterministic: from zero, full batch
    again = list(compare.run_penalty(train, {"train": train}, constraint=cons, C=1.0, seed=0,
                                     alphas=(1.0, 4.0), epochs=120))
    assert [h.coef for h in heads] == [h.coef for h in again]


def test_a_larger_alpha_shrinks_the_seed_penalty(split_arrays):
    """The seed's EO penalty (joint rates, not fairlearn's conditional ones) is what the baseline trades
    against: with more alpha it is smaller on the fit split."""
    import torch

    train = split_arrays["train"]
    heads = list(compare.run_penalty(train, {"train": train}, constraint=make_constraint("eo"), C=1.0, seed=0,
                                     alphas=(0.0, 2.0), epochs=300))
    y, g = torch.as_tensor(train.y.astype(np.float64)), torch.as_tensor(train.groups[:, 0])
    values = [float(compare.seed_penalty("EO", torch.as_tensor(train.X @ np.asarray(h.coef) + h.intercept), y, g, 2))
              for h in heads]
    assert values[1] < 0.5 * values[0]
