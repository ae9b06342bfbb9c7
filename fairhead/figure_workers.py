"""A sweep's figures drawn in worker processes, beside the command's own work.

Each figure of a sweep is Python work on one core: matplotlib's import (about 0.4 s) and 0.1-1 s
of drawing, about 2 s of a 5.5 s Adult sweep when drawn one after the other. Workers started when
the sweep starts import matplotlib while the heads are solved, then draw the figures at once,
one task per figure (:data:`FIGURES`). They are kept for the process's next sweep (the demo runs
two; a second sweep would otherwise pay their start again) and end with the process.

A worker is a fresh interpreter (``sys.executable``, only where that is Python: not in a frozen app
or an embedding server) in its own session, given the command's ``sys.path``, that imports only the
plot modules: never the user's script, as a ``multiprocessing`` spawn would (a script without an
``if __name__ == "__main__"`` guard would run again in every worker). It reads tasks on its
standard input and answers on its standard output, each a length-prefixed pickle of fairhead's
own rows and PNG bytes (never a user's file). It exits when its input closes: when the command
ends, is interrupted, or is killed with -9. A figure gets :data:`TASK_SECONDS` in a worker; past
that, the worker is stopped and the figure drawn in process.

A worker writes nothing. It renders each PNG into memory (:class:`RenderedFiles`, which stands in
for :class:`fairhead_io.StagedFiles`), and the command writes the bytes under its own output
policy, staged with the sweep's other outputs: a kill or a full disk leaves the outputs as drawing
in process does, and the bytes are the ones drawing in process gives (the same figure, the same
Agg canvas). A figure a worker could not draw (it died, or the drawing failed) is drawn in
process, where a failure raises as it always did; where no worker can run (one usable core),
every figure is.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import pickle
import queue
import signal
import struct
import subprocess
import sys
import threading
import traceback
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
    2 cores an Adult sweep took 0.79-0.94x its in-process wall time with two workers, and 0.95-1.06x
    with one (``benchmarks/bench_plots.py``, ``docs/benchmarks.md``)."""
    value = os.environ.get(WORKERS_VARIABLE, "").strip()
    if value:
        if not value.isdigit():
            raise DataError(MSG_BAD_WORKERS.format(value=value))
        return min(n_figures, int(value))
    if cores is None:
        cores = usable_cores()
    return 0 if cores < 2 else min(n_figures, cores)


def _send(stream, message) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(struct.pack("<Q", len(data)) + data)
    stream.flush()


def _receive(stream):
    head = stream.read(8)
    if len(head) < 8:
        raise EOFError("the other end closed")
    (size,) = struct.unpack("<Q", head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the other end closed mid-message")
    return pickle.loads(data)  # noqa: S301 - fairhead's own messages between its own processes


def serve() -> None:
    """A worker's loop (``python -m fairhead.figure_workers``): import the plot modules, say ready, then
    draw each task read on standard input and answer ``("ok", (paths, {path: bytes}))`` or
    ``("error", traceback)``; end when the input closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the command's: it closes our input
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot corrupt the answers
    tasks = sys.stdin.buffer
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401

    for name in FIGURES:
        _figure(name)
    _send(answers, ("ready", os.getpid()))
    while True:
        try:
            name, kwargs = _receive(tasks)
        except EOFError:
            return
        try:
            answer = ("ok", _render(name, kwargs))
        except Exception:  # the command draws it again in process, where the error is raised
            answer = ("error", traceback.format_exc())
        try:
            _send(answers, answer)
        except (BrokenPipeError, OSError):
            return


#: a worker's command: the command's own ``sys.path`` (read from :data:`PATH_VARIABLE`), then :func:`serve`
#: (as a multiprocessing spawn sets the path, without importing the user's script)
BOOTSTRAP = ("import json, os, sys; sys.path[:] = json.loads(os.environ['{var}']); "
             "from fairhead.figure_workers import serve; serve()")
PATH_VARIABLE = "FAIRHEAD_FIGURE_WORKER_PATH"


def python_interpreter() -> str | None:
    """This process's Python interpreter, or ``None`` where ``sys.executable`` is something else (a frozen
    app, an embedding server such as uWSGI), which a worker must not run."""
    exe = sys.executable
    if getattr(sys, "frozen", False) or not exe or not os.path.isfile(exe):
        return None
    return exe if os.path.basename(exe).lower().startswith(("python", "pypy")) else None


class _Worker:
    """One worker process and its two pipes; :meth:`ask` is used by one thread at a time."""

    def __init__(self, python: str):
        env = {**os.environ, PATH_VARIABLE: json.dumps([p for p in sys.path if isinstance(p, str)])}
        # its own session: the terminal's Ctrl-C, Ctrl-Z and Ctrl-\ go to the command, which ends the worker
        self.process = subprocess.Popen([python, "-c", BOOTSTRAP.format(var=PATH_VARIABLE)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env,
                                        **({"start_new_session": True} if os.name == "posix" else
                                           {"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP}))
        self.pid = self.process.pid
        self.ready = False
        self.dead = False

    def stop(self) -> None:
        """Kill the worker (one that does not answer): its pending read ends, its figure is drawn in process."""
        self.dead = True
        with contextlib.suppress(OSError):
            self.process.kill()

    def ask(self, name: str, kwargs: dict):
        """``(paths, {path: bytes})`` of figure ``name``, or ``None`` where this worker cannot draw it."""
        if self.dead:
            return None
        try:
            if not self.ready:
                _receive(self.process.stdout)  # its imports done
                self.ready = True
            _send(self.process.stdin, (name, kwargs))
            status, value = _receive(self.process.stdout)
        except Exception:  # noqa: BLE001 - a closed pipe, a dead worker, a garbled answer: drawn in process
            self.dead = True
            return None
        return value if status == "ok" else None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.process.stdin.close()  # the worker ends at the end of its input
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            self.process.stdout.close()


#: the workers :meth:`FigureWorkers.start` keeps for this process
_SHARED = None
_SHARED_LOCK = threading.Lock()
#: seconds a figure may take in a worker (its start included) before the worker is stopped and the figure
#: drawn in process: a stopped or stuck worker never hangs the command
TASK_SECONDS = 600.0


class FigureWorkers:
    """Worker processes that draw figures (see the module's docstring); :meth:`close` ends them. Start them
    before the work they should overlap: each imports matplotlib at once."""

    def __init__(self, workers: int, python: str | None = None):
        self.workers = workers
        python = python or python_interpreter()
        if python is None:
            raise OSError("no Python interpreter to run a figure worker (sys.executable is not one)")
        self._all: list[_Worker] = []
        try:
            for _ in range(workers):
                self._all.append(_Worker(python))
        except BaseException:  # no half-started set left running
            self.close()
            raise
        self._idle: queue.Queue = queue.Queue()
        for worker in self._all:
            self._idle.put(worker)

    @classmethod
    def start(cls, n_figures: int) -> "FigureWorkers | None":
        """This process's workers for ``n_figures`` figures (:func:`worker_count`), or ``None`` where none
        can run. They are started on the first call and kept for the next: a second sweep in one process
        (the demo runs two) draws at once, without starting and importing again. They end with the process.

        None either where this process has imported matplotlib already, unless :data:`WORKERS_VARIABLE` sets
        the count: its style settings (``rcParams``, a notebook's theme) then apply to the figures, as they
        always did, and a worker would not see them."""
        global _SHARED
        workers = worker_count(n_figures)
        if workers < 1 or ("matplotlib" in sys.modules and not os.environ.get(WORKERS_VARIABLE, "").strip()):
            return None
        with _SHARED_LOCK:  # sweeps in threads share one set
            if _SHARED is not None and (_SHARED.workers < workers or _SHARED.broken):
                _SHARED.close()
                _SHARED = None
            if _SHARED is None:
                try:
                    _SHARED = cls(workers)
                except Exception:  # noqa: BLE001 - no interpreter or no processes here: draw in process
                    return None
                atexit.register(_SHARED.close)
            return _SHARED

    @property
    def broken(self) -> bool:
        """Whether a worker died (its figures are then drawn in process)."""
        return any(w.dead or w.process.poll() is not None for w in self._all)

    def _ask(self, name: str, kwargs: dict, *, holding: list, k: int):
        worker = self._idle.get()  # the first free worker: the longest figure goes first, to its own
        holding[k] = worker
        try:
            return worker.ask(name, kwargs)
        finally:
            self._idle.put(worker)

    def draw(self, tasks, staged) -> dict[str, Path]:
        """Draw ``tasks`` (``(figure name, keyword arguments)``) in the workers, write each PNG through
        ``staged`` in the order of ``tasks``, and return the output paths. A figure no worker could draw
        is drawn in process."""
        answers: list = [None] * len(tasks)
        holding: list = [None] * len(tasks)

        def run(k: int) -> None:
            answers[k] = self._ask(*tasks[k], holding=holding, k=k)

        threads = [threading.Thread(target=run, args=(k,), daemon=True) for k in range(len(tasks))]
        for thread in threads:
            thread.start()
        files = {}
        for k, ((name, kwargs), thread) in enumerate(zip(tasks, threads)):
            thread.join(TASK_SECONDS)
            if thread.is_alive():  # a stuck or stopped worker: stop it, its read ends with nothing
                if holding[k] is not None:
                    holding[k].stop()
                thread.join(10)
                answers[k] = None
            if answers[k] is None:
                files.update(_draw(name, kwargs, staged))
                continue
            paths, rendered = answers[k]
            for path, data in rendered.items():
                staged.write_bytes(path, data)
            files.update(paths)
        return files

    def close(self) -> None:
        """End the workers (each finishes the figure it draws, if any)."""
        for worker in self._all:
            worker.close()

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


if __name__ == "__main__":
    serve()
