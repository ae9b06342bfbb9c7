"""How many cores a fit uses, and why that is not chosen from the machine's momentary load.

The rule (issue 23 item 4), in three parts:

* **torch runs at one thread in a CPU fit** (:func:`solvers.backends.torch.fit_threads`). Its
  work there is O(n) vector arithmetic, for which its OpenMP pool costs more than it saves and
  spins against numpy's BLAS threads, and a multi-threaded torch reduction sums in another order.
* **The products run at the BLAS thread count the process was given** (``OMP_NUM_THREADS``,
  ``OPENBLAS_NUM_THREADS``, :func:`threadpoolctl.threadpool_limits`; by default every core). It
  is not chosen from the load: OpenBLAS's products round differently at 1 and at 2 threads for
  some shapes (``X @ v`` and ``X^T r`` at 30,162 x 104, ``X^T R`` at 5,000 x 2,048; not at
  20,000 x 512), so a count that followed the load would make the same fit give different heads
  from run to run. On a shared machine, pass ``OMP_NUM_THREADS=1``: two BLAS threads on two busy
  cores made a 20,000 x 512 fit 4.9x slower than one, and scikit-learn's 5.3x
  (``benchmarks/bench_defaults.py --threads 1 2``, ``docs/benchmarks.md``).
* **Work whose bits do not depend on it follows the free cores**: a streamed pass reads its next
  block in a thread (:func:`solvers.out_of_core.RowChunks.blocks`) only while a core is free
  (:func:`free_cores`), since on a busy machine the thread only competes with the product.
"""

from __future__ import annotations

import os

#: where Linux reports runnable tasks: the fourth field of /proc/loadavg is ``running/total``
LOADAVG = "/proc/loadavg"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity; ``os.cpu_count()`` where that is unknown)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def free_cores() -> int:
    """Usable cores, besides the caller's, that no runnable task occupies right now:
    ``usable - running``, at least 0.

    ``running`` counts the machine's runnable threads at this instant, the caller's included (the
    fourth field of ``/proc/loadavg``). A snapshot, not an average: cheap (tens of microseconds),
    and right about a machine that is busy for seconds at a time. Where it cannot be read (not
    Linux), every usable core but the caller's counts as free.
    """
    usable = usable_cores()
    try:
        with open(LOADAVG) as f:
            running = int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return usable - 1
    return max(0, usable - max(running, 1))
