"""What do a sweep's plots cost inside the command? ``fairhead sweep adult.h5`` with its plot functions timed.

Each round runs the sweep as a fresh process (as a user runs it) with ``plots.plot_sweep``,
``uncertainty.plot_overfitting`` and ``uncertainty.plot_group_rates`` wrapped in timers (wall and
the main thread's CPU seconds; the first includes matplotlib's import). With ``--baseline DIR``
(another fairhead checkout, e.g. ``git worktree add /tmp/fairhead-main main``) both trees run in
alternating rounds on the same cache: medians side by side and their ratio. The cache is Adult, as
in ``bench_commands.py``.

    .venv/bin/python benchmarks/bench_plots.py [--repeats 3] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_commands import adult_cache, env  # noqa: E402

PLOTS = (("fairhead.plots", "plot_sweep"), ("fairhead.uncertainty", "plot_overfitting"),
         ("fairhead.uncertainty", "plot_group_rates"))

#: runs ``python -m fairhead ARGS`` with the plot functions timed; prints one JSON line of seconds
RUNNER = """
import importlib, json, runpy, sys, time
stats = {}
def timed(module, name):
    mod = importlib.import_module(module)
    fn = getattr(mod, name)
    def wrapper(*a, **k):
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            return fn(*a, **k)
        finally:
            stats[name] = (time.perf_counter() - wall, time.thread_time() - cpu)
    setattr(mod, name, wrapper)
for module, name in %r:
    timed(module, name)
sys.argv = ["fairhead", *sys.argv[1:]]
try:
    runpy.run_module("fairhead", run_name="__main__")
except SystemExit as exc:
    if exc.code:
        raise
print("PLOT-SECONDS " + json.dumps(stats))
""" % (PLOTS,)


def one_sweep(tree: Path, cache: Path, out: Path, constraint: str) -> dict[str, tuple[float, float]]:
    """``{function: (wall, cpu)}`` of one sweep command of ``tree``'s fairhead."""
    proc = subprocess.run([sys.executable, "-c", RUNNER, "sweep", str(cache), "--constraint", constraint,
                           "--out", str(out)], check=True, env=env(tree), cwd=tree, capture_output=True, text=True)
    line = [x for x in proc.stdout.splitlines() if x.startswith("PLOT-SECONDS ")][-1]
    return {k: tuple(v) for k, v in json.loads(line.split(" ", 1)[1]).items()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--constraint", default="dp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", type=Path, default=None, help="another fairhead checkout: before / after")
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "fairhead" / "cli.py").is_file():
        parser.error(f"--baseline {args.baseline} is not a fairhead checkout (no fairhead/cli.py); pass the folder "
                     "of one, e.g. `git worktree add /tmp/fairhead-main main`")
    trees = {"after": ROOT} if args.baseline is None else {"before": args.baseline.resolve(), "after": ROOT}
    rounds: dict[str, dict[str, list[tuple[float, float]]]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory(prefix="bench_plots_") as tmp:
        tmp = Path(tmp)
        cache = adult_cache(tmp)
        for r in range(args.repeats):
            for name in (list(trees) if r % 2 == 0 else list(trees)[::-1]):
                for fn, secs in one_sweep(trees[name], cache, tmp / f"{name}-{r}", args.constraint).items():
                    rounds[name].setdefault(fn, []).append(secs)
    names = list(trees)
    print(f"medians of {args.repeats} sweeps, wall s (main-thread cpu s)")
    print(f"{'':20}" + "".join(f"{n:>18}" for n in names) + ("    after / before (cpu)" if len(names) == 2 else ""))
    totals = {n: [0.0, 0.0] for n in names}
    for _, fn in PLOTS:
        cells, cpu = "", {}
        for n in names:
            wall = statistics.median(s[0] for s in rounds[n][fn])
            cpu[n] = statistics.median(s[1] for s in rounds[n][fn])
            totals[n][0] += wall
            totals[n][1] += cpu[n]
            cells += f"{f'{wall:.2f} ({cpu[n]:.2f})':>18}"
        print(f"{fn:20}{cells}" + (f"{cpu['after'] / cpu['before']:>24.2f}" if len(names) == 2 else ""))
    print(f"{'all plots':20}" + "".join(f"{f'{totals[n][0]:.2f} ({totals[n][1]:.2f})':>18}" for n in names)
          + (f"{totals['after'][1] / totals['before'][1]:>24.2f}" if len(names) == 2 else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
