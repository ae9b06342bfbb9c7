"""Bitwise pins of the rate search (issue 19 item 4: the search's refactor changes no head).

Each case fits rate heads on small synthetic data and compares, bit for bit, the head's
coefficients and intercept (sha256 of their float64 bytes), its multipliers, and the
certificate's ``eps_met``, ``achieved_gap``, ``n_iter`` and ``passes`` (the L-BFGS iterations and the
passes over X: a fingerprint of the path the search took) with values computed on the code before
the refactor. The search is deterministic (one thread, fixed order of every reduction), so the same code gives the same
bits on the same machine; a different BLAS or CPU may round differently, so these pins guard a
refactor on one machine, not a port (``fingerprints(case)`` prints a case's new pins).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass

import numpy as np
import pytest

from solvers import FairLogisticRegression, iter_path
from solvers.synthetic import make_fair_classification, make_fair_multiclass


@dataclass(frozen=True)
class Case:
    id: str
    constraint: str
    eps: tuple
    path: bool = False  # one path along ``eps`` (warm starts; :func:`iter_path`: each head as solved)
    n_groups: int = 2
    n_classes: int = 2
    fit_intercept: bool = True
    data: str = "synthetic"  # or "embedding": 800 x 12 embedding-like, 4 groups (sign steps, stalls)
    max_iter: int = 2000  # the estimator's default; 3: the search's fits stop early, the chosen one is polished
    from_free: bool = False  # the path starts from the unconstrained head (as ``fairhead sweep``)


CASES = [
    Case("dp", "dp", (0.1, 0.05, 0.02)),
    Case("eopp", "eopp", (0.1, 0.03)),
    Case("eo", "eo", (0.1, 0.05, 0.02)),
    Case("error-rate", "error-rate", (0.01, 0.004)),
    Case("fpr", "fpr", (0.03, 0.015)),
    Case("dp-no-intercept", "dp", (0.05,), fit_intercept=False),
    Case("dp-3-groups", "dp", (0.05, 0.02), n_groups=3),
    Case("eo-3-groups", "eo", (0.05,), n_groups=3),
    Case("eo-path", "eo", (0.1, 0.05, 0.02, 0.01), path=True),
    Case("dp-path", "dp", (0.1, 0.05, 0.02, 0.0), path=True),
    Case("eo-3-groups-path", "eo", (0.08, 0.04, 0.02, 0.01), path=True, n_groups=3),
    Case("K3-dp", "dp", (0.08, 0.04), n_classes=3),
    Case("K3-eo", "eo", (0.1, 0.05), n_classes=3),
    Case("K3-dp-path", "dp", (0.1, 0.05, 0.03), path=True, n_classes=3),
    Case("dp-max-iter", "dp", (0.05,), max_iter=3),
    Case("eo-max-iter", "eo", (0.02,), max_iter=3),
    Case("dp-embedding", "dp", (0.02, 0.005), data="embedding"),
    Case("dp-embedding-path", "dp", (0.05, 0.02, 0.005, 0.002), path=True, data="embedding", from_free=True),
    Case("dp-embedding-path-stall", "dp", (0.01, 0.007, 0.006), path=True, data="embedding", from_free=True),
    Case("K4-eo-3-groups", "eo", (0.02,), n_classes=4, n_groups=3),
]


def _data(case: Case):
    if case.data == "embedding":
        return make_fair_classification(800, 12, n_groups=4, embedding_like=True, seed=4)
    if case.n_classes > 2:
        seed = 5 if case.n_groups == 2 else 6
        return make_fair_multiclass(600, 6, n_classes=case.n_classes, n_groups=case.n_groups, seed=seed)
    if case.n_groups == 2:  # every rate binds: dp 0.27, TPR 0.16, FPR 0.05 unconstrained
        return make_fair_classification(600, 6, base_rates=(0.2, 0.6), group_shift=1.0, seed=3)
    return make_fair_classification(600, 6, n_groups=case.n_groups, seed=3)


def _sha(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(np.asarray(a, dtype=np.float64)).tobytes())
    return h.hexdigest()[:16]


def fingerprints(case: Case) -> list:
    """Per bound: ``(sha of coef and intercept, sha of the multipliers, eps_met, achieved_gap, n_iter,
    passes over X, number of notes)``."""
    X, y, a = _data(case)
    params = dict(constraint=case.constraint, backend="torch", fit_intercept=case.fit_intercept,
                  max_iter=case.max_iter)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a tight bound may stay unmet (it warns)
        if case.path:
            free = FairLogisticRegression(backend="torch").fit(X, y) if case.from_free else None
            heads = list(iter_path(X, y, sensitive_features=a, eps_grid=list(case.eps), init_head=free, **params))
        else:
            heads = [FairLogisticRegression(eps=e, **params).fit(X, y, sensitive_features=a) for e in case.eps]
    out = []
    for h in heads:
        c = h.certificate_
        out.append((_sha(h.coef_, h.intercept_), _sha(c.multipliers), bool(c.eps_met), float(c.achieved_gap),
                    int(c.n_iter), int(c.passes), len(c.notes)))
    return out


PINS = {
    'dp-max-iter': [
        ('7d195949243dd248', 'cca90d1db68fefbd', True, 0.049999999999999815, 26, 71, 2)],
    'eo-max-iter': [
        ('8a081bb1615b1bc9', 'c11158b73d3a0506', True, 0.00793868053654534, 52, 141, 4)],
    'dp-embedding': [
        ('812b273e8b0f40e8', '2abe18f35118aeab', True, 0.012528801843317998, 70, 185, 2),
        ('40fbd76440ded44a', '642f844eafc94de0', False, 0.006296082949308737, 385, 872, 2)],
    'dp-embedding-path': [
        ('86de704790ba4b2c', '052010d2ef425021', True, 0.045587349397590377, 25, 65, 2),
        ('a261024b22a556f1', '16a94ab340900be3', True, 0.01734965635738829, 46, 130, 2),
        ('1e2905b1bd3e3f5b', '907bfe4ca03f4cdf', False, 0.006071428571428464, 230, 527, 2),
        ('1e2905b1bd3e3f5b', '907bfe4ca03f4cdf', False, 0.006071428571428464, 30, 72, 3)],
    'dp-embedding-path-stall': [
        ('77fe446a1eb7ba23', '6b8e8b313174f27f', True, 0.00825460829493085, 442, 1011, 2),
        ('1e83cf86acfa526f', 'e57f1428634f0ec4', True, 0.005754608294930855, 214, 464, 2),
        ('1e83cf86acfa526f', 'e57f1428634f0ec4', True, 0.005754608294930855, 19, 46, 3)],
    'K4-eo-3-groups': [
        ('40aa3ae90635f9e5', '0cb7282909fee8e6', False, 0.041091440636673665, 628, 1529, 1)],
    'dp': [
        ('2cc14ba9b9227d6c', '7c2a093d805c4ca6', True, 0.09999999999999976, 47, 123, 2),
        ('8c255d6e3532c3ea', 'e3575aeeed1eaaa5', True, 0.049999999999999815, 50, 119, 2),
        ('411253a49a609d9d', 'e8b4305889b95669', True, 0.01999999999999983, 49, 131, 2)],
    'eopp': [
        ('db36ea50ace2b9cd', 'd5382393d122a743', True, 0.08486175745962227, 32, 83, 3),
        ('9ac148886fbb6786', '4b94dfeab5b3747a', True, 0.01505611825896537, 40, 105, 3)],
    'eo': [
        ('f131b5a5fbc27e3f', 'b656b0130fede7e0', True, 0.08486175745962243, 32, 83, 3),
        ('8a7ddb28f8918305', 'a787312cf85ecf9d', True, 0.029290993703805265, 37, 107, 3),
        ('3e02aa1fd4cb733d', '889c95b381e33e51', True, 0.00793868053654534, 88, 211, 3)],
    'error-rate': [
        ('e4de1efc20bfca65', '374708fff7719dd5', True, 0.006666666666666679, 14, 52, 2),
        ('1c85932a46e4db04', 'dc5ca86adfd53dbf', True, 0.0016666666666666791, 64, 161, 3)],
    'fpr': [
        ('dd5ade5291fb1a59', '4aa5a5f087f2f273', True, 0.019761120590452767, 31, 91, 3),
        ('0bbf0d739fa8dd94', 'bbcecc30c4e11dbf', True, 0.013372485218840529, 27, 79, 3)],
    'dp-no-intercept': [
        ('f28358f665542c06', 'f42c97d2ff837cb1', True, 0.046666666666666495, 34, 81, 1)],
    'dp-3-groups': [
        ('2f2cf62642c24510', 'c7c7511b465e0e2e', True, 0.049223057644110176, 83, 193, 2),
        ('2b2e7a5cf9171e07', 'ded44e781269a7c2', True, 0.019837092731829438, 105, 253, 2)],
    'eo-3-groups': [
        ('ec0fed30b392fd8e', '242a69946e9214b5', True, 0.04779411764705894, 36, 109, 3)],
    'eo-path': [
        ('f131b5a5fbc27e3f', 'b656b0130fede7e0', True, 0.08486175745962243, 32, 83, 3),
        ('97404aee393e51e6', '5f56485b9b9bb013', True, 0.029290993703805265, 32, 100, 3),
        ('9d7870873e594873', '5f56485b9b9bb013', True, 0.007026188520850421, 41, 100, 4),
        ('9d7870873e594873', '5f56485b9b9bb013', True, 0.007026188520850421, 42, 102, 5)],
    'dp-path': [
        ('2cc14ba9b9227d6c', '7c2a093d805c4ca6', True, 0.09999999999999976, 47, 123, 2),
        ('4e655c1439152236', 'ca692ab4dea29d44', True, 0.049999999999999815, 4, 14, 2),
        ('2e6b0394512cc8d3', '9af3ce94e039aa85', True, 0.01999999999999983, 5, 28, 2),
        ('6cbc6a962388af64', '9af3ce94e039aa85', False, 0.003333333333333202, 9, 42, 2)],
    'eo-3-groups-path': [
        ('b828f9e4c2e10f19', '275d11a175c5a22a', True, 0.04779411764705894, 16, 61, 3),
        ('4c36cb8dcd640ada', '7f5386cc1392a11b', True, 0.03706086372790336, 25, 74, 3),
        ('18a9b5a2fc400234', 'c3366e72ad1d43e5', False, 0.022058823529411888, 69, 169, 3),
        ('70be60fb5fdde2c1', 'c3366e72ad1d43e5', False, 0.02573529411764694, 37, 96, 3)],
    # K-class heads re-pinned when the per-class offset stage landed (solvers.threshold_multiclass):
    # the same search (fits, passes), each head chosen at its best offsets
    'K3-dp': [
        ('be21ddf6581a80fd', '4efad4ead694c795', True, 0.07999999999999996, 50, 127, 1),
        ('021827b07472614d', '0fdbd7324b638eda', True, 0.03979674796747967, 63, 165, 1)],
    'K3-eo': [
        ('2479c133c8f99a87', '2ea9ab9198d16380', True, 0.07686463213878683, 7, 17, 1),
        ('d6a9c551bdb66e81', 'fa96111355189804', True, 0.04710649613777378, 48, 124, 1)],
    'K3-dp-path': [
        ('589567e31aea3258', 'cb296b88c0eb5dcd', True, 0.09532520325203253, 45, 114, 1),
        ('6ed13743af4515a7', '3d0def65c66482d4', True, 0.04991869918699191, 44, 126, 1),
        ('f645fd7306ee0703', 'd4a4b13576eaf5ca', True, 0.026260162601626027, 44, 130, 1)],
}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_rate_heads_are_bitwise_those_before_the_refactor(case):
    assert fingerprints(case) == PINS[case.id]
