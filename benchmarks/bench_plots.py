"""What do a sweep's plots cost inside the command, drawn in process and in worker processes?

Each round runs ``fairhead sweep adult.h5`` as a fresh process (as a user runs it) once per worker
count of ``--workers`` (``FAIRHEAD_FIGURE_WORKERS``; 0 draws the figures in process, one after the
other, as before :mod:`fairhead.figure_workers`) and once with ``--no-plots``, in alternating order.
Printed, as medians over the rounds:

* the command's wall seconds;
* the plots' share: that wall time minus the ``--no-plots`` sweep's (matplotlib's import included);
* the seconds the command waits in ``draw_figures`` (the figures drawn, or waited for, and written);
* each configuration's wall time over the in-process one (0 workers), measured side by side.

The cache is Adult, as in ``bench_commands.py``.

    .venv/bin/python benchmarks/bench_plots.py [--repeats 5] [--workers 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_commands import adult_cache, env  # noqa: E402

#: runs ``python -m fairhead ARGS`` with ``fairhead.sweep.draw_figures`` timed; prints one JSON line of seconds
RUNNER = """
import json, runpy, sys, time
import fairhead.sweep as sweep
stats = {}
draw = sweep.draw_figures
def timed(*a, **k):
    start = time.perf_counter()
    try:
        return draw(*a, **k)
    finally:
        stats["draw_figures"] = time.perf_counter() - start
sweep.draw_figures = timed
sys.argv = ["fairhead", *sys.argv[1:]]
try:
    runpy.run_module("fairhead", run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
print("PLOT-SECONDS " + json.dumps(stats))
"""


def one_sweep(cache: Path, out: Path, constraint: str, workers: int | None) -> tuple[float, float]:
    """``(wall, seconds in draw_figures)`` of one sweep command; ``workers=None``: ``--no-plots``."""
    args = ["sweep", str(cache), "--constraint", constraint, "--out", str(out), "--no-progress"]
    environment = env()
    if workers is None:
        args.append("--no-plots")
    else:
        environment["FAIRHEAD_FIGURE_WORKERS"] = str(workers)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], check=True, env=environment, cwd=ROOT,
                          capture_output=True, text=True)
    wall = time.perf_counter() - start
    line = [x for x in proc.stdout.splitlines() if x.startswith("PLOT-SECONDS ")][-1]
    return wall, json.loads(line.split(" ", 1)[1]).get("draw_figures", 0.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraint", default="dp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    configs = [None, *args.workers]
    walls: dict = {c: [] for c in configs}
    waits: dict = {c: [] for c in configs}
    with tempfile.TemporaryDirectory(prefix="bench_plots_") as tmp:
        tmp = Path(tmp)
        cache = adult_cache(tmp)
        for r in range(args.repeats):
            for c in (configs if r % 2 == 0 else configs[::-1]):
                wall, wait = one_sweep(cache, tmp / f"{c}-{r}", args.constraint, c)
                walls[c].append(wall)
                waits[c].append(wait)
    med = {c: statistics.median(v) for c, v in walls.items()}
    print(f"medians of {args.repeats} sweeps ({os.cpu_count()} cores), constraint {args.constraint!r}")
    print(f"{'':24}{'wall s':>10}{'plots s':>10}{'waits s':>10}{'wall / 0 workers':>18}")
    print(f"{'--no-plots':24}{med[None]:>10.2f}")
    for c in args.workers:
        ratio = med[c] / med[0] if 0 in med else float("nan")
        print(f"{f'{c} figure workers':24}{med[c]:>10.2f}{med[c] - med[None]:>10.2f}"
              f"{statistics.median(waits[c]):>10.2f}{ratio:>18.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
