"""The problem the data-parallel tests solve, in the test process and in each torchrun rank."""

import numpy as np

from solvers.synthetic import make_fair_classification, make_fair_multiclass

#: 4 KiB blocks (64 rows of 16 features): the 3000 rows are 47 blocks, cut between 2 ranks
BLOCK_BYTES = "4096"
#: name -> (constraint, eps): a score constraint, the two rate families, and no constraint
CASES = {"none": (None, 0.05), "dp-score": ("dp-score", 0.02), "eo": ("eo", 0.03), "dp": ("dp", 0.02)}
PATH_EPS = [0.1, 0.04, 0.01]


def problem():
    return make_fair_classification(3000, 16, embedding_like=True, dtype=np.float32, seed=3)

#: K-class heads (X @ W with W of shape (d, K) combined across ranks): name -> (constraint, eps)
MC_CASES = {"mc-dp-score": ("dp-score", 0.05), "mc-dp": ("dp", 0.05)}


def mc_problem():
    return make_fair_multiclass(3000, 16, n_classes=3, embedding_like=True, dtype=np.float32, seed=4)
