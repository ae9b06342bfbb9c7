"""The smallest certifiable gap against group sizes: how many certification rows a target needs.

For two groups of ``n1`` and ``n2`` certification rows whose rates are equal (an observed gap of 0)
at ``rate``, the smallest target :func:`solvers.select_head` can certify is the gap's upper bound
(:func:`solvers.intervals.gap_upper_bound`), printed for the exact bound and the union bound at
confidence 0.9 and 0.95. For ``dp`` the rows are the groups' rows; for ``eo`` read ``n1, n2`` as each
group's positives (TPR) or negatives (FPR), whichever is smaller. An observed gap ``g`` adds about
``g`` to the smallest certifiable target (the bound's margin barely moves)::

    python benchmarks/certifiable_targets.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SIZES = ((100, 100), (300, 200), (660, 440), (1000, 1000), (3000, 1500), (10000, 5000))
RATES = (0.5, 0.2)
CONFIDENCES = (0.9, 0.95)


def smallest_certifiable(n1, n2, rate, confidence, bound):
    from solvers.intervals import GroupCounts, gap_upper_bound

    counts = GroupCounts(("a", "b"), {"a": {"selection_rate": (round(rate * n1), n1)},
                                      "b": {"selection_rate": (round(rate * n2), n2)}})
    return gap_upper_bound(counts, "dp", 1.0 - confidence, bound=bound)


def main():
    cols = [(r, c, b) for r in RATES for c in CONFIDENCES for b in ("exact", "union")]
    print("| group rows | " + " | ".join(f"rate {r:g}, {c:g}, {b}" for r, c, b in cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for n1, n2 in SIZES:
        vals = [smallest_certifiable(n1, n2, r, c, b) for r, c, b in cols]
        print(f"| {n1:,} + {n2:,} | " + " | ".join(f"{v:.3f}" for v in vals) + " |", flush=True)


if __name__ == "__main__":
    main()
