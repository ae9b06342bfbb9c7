"""A sweep's figures drawn in worker processes, beside the command's own work.

Each figure of a sweep is Python work on one core: matplotlib's import (about 0.4 s) and 0.1-0.7 s
of drawing, about 2 s of a 5.5 s Adult sweep when drawn one after the other. Workers started when
the sweep starts import matplotlib while the heads are solved, then draw the figures at once,
one task per figure (:data:`FIGURES`).

A worker writes nothing. It renders each PNG into memory (:class:`RenderedFiles`, which stands in
for :class:`fairhead_io.StagedFiles`), and the command writes the bytes under its own output policy,
staged with the sweep's other outputs: a kill or a full disk leaves the outputs as drawing in
process does, and the bytes are the ones drawing in process gives (the same figure, the same Agg
canvas). Workers ignore Ctrl-C (the command handles it and stops them) and exit when the command
does.

Where no worker can run (one usable core, or no process support: a sandbox without semaphores),
or a worker dies, the figures are drawn in process, as :func:`draw_figures` does without workers.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import threading
import time
from pathlib import Path

from fairhead_errors import DataError
from solvers._cores import usable_cores

#: the figures a worker may draw: name -> (module, function, output name); each function takes
#: ``staged=`` and returns its PNG's path
FIGURES = {
    "tradeoff": ("fairhead.plots", "plot_tradeoff", "tradeoff_plot"),
    "fit_vs_test": ("fairhead.plots", "plot_fit_vs_test", "fit_vs_test_plot"),
    "overfitting": ("fairhead.uncertainty", "plot_overfitting", "overfitting_plot"),
    "group_rates": ("fairhead.uncertainty", "plot_group_rates", "group_rates_plot"),
}


def _figure(name: str):
    import importlib

    module, function, _ = FIGURES[name]
    return getattr(importlib.import_module(module), function)


def _draw(name: str, kwargs: dict, staged) -> dict[str, Path]:
    """Draw figure ``name`` through ``staged``; ``{output name: path}``."""
    return {FIGURES[name][2]: _figure(name)(**kwargs, staged=staged)}


class RenderedFiles:
    """The files a drawing function writes, kept in memory as ``{path: bytes}`` (``open(path, "wb")``,
    as :meth:`fairhead_io.StagedFiles.open`)."""

    def __init__(self):
        self.files: dict[Path, bytes] = {}

    @contextlib.contextmanager
    def open(self, path, mode: str = "wb"):
        if mode != "wb":
            raise ValueError(f"figures are written as bytes; mode must be 'wb', got {mode!r}")
        buffer = io.BytesIO()
        yield buffer
        self.files[Path(path)] = buffer.getvalue()


#: seconds between a worker's checks that the command still runs
PARENT_CHECK_SECONDS = 0.5


def _exit_with(parent: int) -> None:
    """Exit once ``parent`` is gone (killed with -9: nothing told the worker, which would wait forever)."""
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _prepare_worker(parent: int) -> None:
    """A worker's start: Ctrl-C is the command's to handle, the worker ends with the command, and
    matplotlib is imported now, while the command solves."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401

    for name in FIGURES:
        _figure(name)


def _ready() -> int:
    return os.getpid()


def _render(name: str, kwargs: dict):
    """In a worker: draw figure ``name`` into memory; ``(its output paths, {path: PNG bytes})``."""
    rendered = RenderedFiles()
    paths = _draw(name, kwargs, rendered)
    return paths, rendered.files


#: the environment variable that sets the number of workers (0: draw in process), e.g. on a shared node
WORKERS_VARIABLE = "FAIRHEAD_FIGURE_WORKERS"
MSG_BAD_WORKERS = WORKERS_VARIABLE + " must be a whole number of workers (0 draws the figures in process), got {value!r}"


def worker_count(n_figures: int, cores: int | None = None) -> int:
    """Workers for ``n_figures`` figures: :data:`WORKERS_VARIABLE` where set, else one per figure and
    at most one per usable core (``cores``, this process's), and 0 on one core, where a worker only
    takes turns with the command.

    Not one core fewer than there are: while the workers draw, the command only waits for them. On
    2 cores, an Adult sweep took 0.85x the wall time with two workers as with one
    (``benchmarks/bench_plots.py``)."""
    value = os.environ.get(WORKERS_VARIABLE, "").strip()
    if value:
        if not value.isdigit():
            raise DataError(MSG_BAD_WORKERS.format(value=value))
        return min(n_figures, int(value))
    if cores is None:
        cores = usable_cores()
    return 0 if cores < 2 else min(n_figures, cores)


class FigureWorkers:
    """Worker processes that draw figures (see the module's docstring); use as a context manager, or
    call :meth:`close`. Start them before the work they should overlap: each imports matplotlib at once."""

    def __init__(self, workers: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: a fresh interpreter (a fork of a process holding torch's and BLAS's threads is unsafe)
        self._pool = ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=_prepare_worker, initargs=(os.getpid(),))
        self._started = [self._pool.submit(_ready) for _ in range(workers)]  # one process each, now

    @classmethod
    def start(cls, n_figures: int) -> "FigureWorkers | None":
        """Workers for ``n_figures`` figures (:func:`worker_count`), or ``None`` where none can run."""
        workers = worker_count(n_figures)
        if workers < 1:
            return None
        try:
            return cls(workers)
        except (OSError, ImportError, NotImplementedError):  # no semaphores or no processes here: draw in process
            return None

    def draw(self, tasks, staged) -> dict[str, Path]:
        """Draw ``tasks`` (``(figure name, keyword arguments)``) in the workers, write each PNG through
        ``staged`` in the order of ``tasks``, and return the output paths. A task a dead worker left
        is drawn in process."""
        from concurrent.futures.process import BrokenProcessPool

        futures = []
        for name, kwargs in tasks:
            try:
                futures.append(self._pool.submit(_render, name, kwargs))
            except (BrokenProcessPool, RuntimeError):
                futures.append(None)
        files = {}
        for (name, kwargs), future in zip(tasks, futures):
            try:
                if future is None:
                    raise BrokenProcessPool("no worker")
                paths, rendered = future.result()
            except BrokenProcessPool:
                files.update(_draw(name, kwargs, staged))
                continue
            for path, data in rendered.items():
                staged.write_bytes(path, data)
            files.update(paths)
        return files

    def close(self) -> None:
        """Stop the workers: at once, dropping any figure not yet drawn."""
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "FigureWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def draw_figures(tasks, staged, workers: FigureWorkers | None = None) -> dict[str, Path]:
    """Draw ``tasks`` (``(figure name, keyword arguments)``, names of :data:`FIGURES`) and write them
    through ``staged``: in ``workers`` where given, else here, one after the other."""
    if workers is not None:
        return workers.draw(tasks, staged)
    files = {}
    for name, kwargs in tasks:
        files.update(_draw(name, kwargs, staged))
    return files
