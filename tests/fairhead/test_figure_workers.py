"""A sweep's figures drawn in worker processes: the same PNG bytes as drawn in process, written by the
command itself (staged with its outputs), a dead worker's figures drawn in process, and the worker count's rule."""

from __future__ import annotations

import os

import pytest

from fairhead import figure_workers, sweep
from fairhead_errors import DataError
from fairhead_io import StagedFiles


def _sweep(split_arrays, out, monkeypatch, workers):
    monkeypatch.setenv(figure_workers.WORKERS_VARIABLE, str(workers))
    return sweep.run_sweep(None, out=out, constraint="dp", eps_grid=[0.1, 0.05], progress=False,
                           data=(split_arrays, "test-fingerprint", {}))


def _pngs(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_workers_write_the_bytes_drawing_in_process_writes(split_arrays, tmp_path, monkeypatch):
    in_process = _sweep(split_arrays, tmp_path / "in-process", monkeypatch, 0)
    in_workers = _sweep(split_arrays, tmp_path / "workers", monkeypatch, 2)
    expected = _pngs(tmp_path / "in-process")
    assert set(expected) == {"tradeoff.png", "fit_vs_test.png", "overfitting.png", "group_rates.png"}
    assert _pngs(tmp_path / "workers") == expected
    names = {k: v.name for k, v in in_process.files.items()}
    assert {k: v.name for k, v in in_workers.files.items()} == names
    # the command wrote every file itself: no worker left a temporary file behind
    assert sorted(p.name for p in (tmp_path / "workers").iterdir()) == sorted(
        p.name for p in (tmp_path / "in-process").iterdir())


@pytest.mark.slow  # a sweep drawn twice: in `make test-all` (CI)
def test_a_dead_worker_leaves_its_figures_to_the_command(split_arrays, tmp_path, monkeypatch):
    result = _sweep(split_arrays, tmp_path / "reference", monkeypatch, 0)
    tasks = sweep.sweep_figure_tasks(result)
    with figure_workers.FigureWorkers(1) as workers:
        os.kill(workers._all[0].pid, 9)  # every task must still be drawn and written
        with StagedFiles() as staged:
            files = workers.draw(tasks, staged)
        assert workers.broken
    assert set(files) == {"tradeoff_plot", "fit_vs_test_plot", "overfitting_plot", "group_rates_plot"}
    assert all(path.read_bytes() == (tmp_path / "reference" / path.name).read_bytes() for path in files.values())


def test_a_figure_that_fails_in_a_worker_fails_in_the_command_as_drawn_in_process(tmp_path):
    bad = ("overfitting", dict(over_rows=[{"fit_gap": 0.1}], out=tmp_path, fit_split="train", cert_split="valid",
                               metric="dp_diff"))  # no "cert_bound": the drawing raises KeyError
    with figure_workers.FigureWorkers(1) as workers, StagedFiles() as staged:
        with pytest.raises(KeyError, match="cert_bound"):
            workers.draw([bad], staged)
        assert not workers.broken  # the worker answered with the error and still serves


def test_a_script_without_a_main_guard_is_not_run_again_by_the_workers(split_arrays, tmp_path):
    """A spawned multiprocessing worker would import the user's script again: each would start a sweep."""
    import subprocess
    import sys

    script = tmp_path / "user_script.py"
    script.write_text("import os\n"
                      "print('script ran in', os.getpid(), flush=True)\n"
                      "from fairhead.figure_workers import FigureWorkers\n"
                      "w = FigureWorkers(2)\n"
                      "from fairhead_io import StagedFiles\n"
                      "with StagedFiles() as s:\n"
                      "    w.draw([], s)\n"
                      "for worker in w._all: worker.ask('group_rates', dict(group_rows=[], out='.', split='x'))\n"
                      "w.close()\n")
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("script ran in") == 1
    assert "Traceback" not in out.stderr


def test_rendered_files_keep_bytes_and_refuse_text():
    rendered = figure_workers.RenderedFiles()
    with rendered.open("a/b.png", "wb") as fh:
        fh.write(b"\x89PNG")
    assert rendered.files == {figure_workers.Path("a/b.png"): b"\x89PNG"}
    with pytest.raises(ValueError, match="mode must be 'wb'"):
        with rendered.open("a/c.txt", "w"):
            pass


@pytest.mark.parametrize("n_figures, cores, expected", [(4, 1, 0), (4, 2, 2), (4, 16, 4), (1, 8, 1), (0, 8, 0)])
def test_one_worker_per_figure_and_core_and_none_on_one_core(monkeypatch, n_figures, cores, expected):
    monkeypatch.delenv(figure_workers.WORKERS_VARIABLE, raising=False)
    assert figure_workers.worker_count(n_figures, cores) == expected


def test_the_variable_sets_the_count_and_a_bad_value_is_one_line(monkeypatch):
    monkeypatch.setenv(figure_workers.WORKERS_VARIABLE, "0")
    assert figure_workers.worker_count(4, 16) == 0
    assert figure_workers.FigureWorkers.start(4) is None
    monkeypatch.setenv(figure_workers.WORKERS_VARIABLE, "3")
    assert figure_workers.worker_count(2, 1) == 2
    monkeypatch.setenv(figure_workers.WORKERS_VARIABLE, "two")
    with pytest.raises(DataError, match="FAIRHEAD_FIGURE_WORKERS must be a whole number") as err:
        figure_workers.worker_count(4, 2)
    assert "\n" not in str(err.value)


def test_no_plots_starts_no_worker(split_arrays, tmp_path, monkeypatch):
    started = []
    monkeypatch.setattr(figure_workers.FigureWorkers, "start", classmethod(lambda cls, n: started.append(n)))
    sweep.run_sweep(None, out=tmp_path, constraint="dp", eps_grid=[0.1], progress=False, plots=False,
                    data=(split_arrays, "test-fingerprint", {}))
    assert started == []


def test_workers_end_when_the_command_is_killed(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    code = ("from fairhead.figure_workers import FigureWorkers\n"
            "w = FigureWorkers(1)\n"
            "print(w._all[0].pid, flush=True)\n"
            "import time; time.sleep(120)\n")
    command = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        worker = int(command.stdout.readline())
        command.send_signal(signal.SIGKILL)
        command.wait(timeout=10)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
                with open(f"/proc/{worker}/stat") as f:  # a zombie no one reaps (PID 1 in a container) has exited
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        break
            except (ProcessLookupError, FileNotFoundError):
                break
            time.sleep(0.1)
        else:
            os.kill(worker, 9)
            pytest.fail("the figure worker outlived its killed command")
    finally:
        command.kill()
        command.stdout.close()


def test_the_process_keeps_its_workers_for_the_next_sweep_and_replaces_broken_ones(monkeypatch):
    monkeypatch.setenv(figure_workers.WORKERS_VARIABLE, "1")
    monkeypatch.setattr(figure_workers, "_SHARED", None)  # a pool of its own
    first = figure_workers.FigureWorkers.start(4)
    assert figure_workers.FigureWorkers.start(4) is first  # the demo's second sweep: no new start
    os.kill(first._all[0].pid, 9)
    first._all[0].process.wait(timeout=30)
    assert first.broken
    second = figure_workers.FigureWorkers.start(4)
    assert second is not first and not second.broken
    second.close()


@pytest.mark.slow  # a sweep drawn twice: in `make test-all` (CI)
def test_a_stuck_worker_is_stopped_and_its_figure_drawn_in_process(split_arrays, tmp_path, monkeypatch):
    import signal

    result = _sweep(split_arrays, tmp_path / "reference", monkeypatch, 0)
    tasks = sweep.sweep_figure_tasks(result)[-1:]  # one small figure
    monkeypatch.setattr(figure_workers, "TASK_SECONDS", 2.0)
    with figure_workers.FigureWorkers(1) as workers:
        os.kill(workers._all[0].pid, signal.SIGSTOP)  # stopped: it never answers
        with StagedFiles() as staged:
            files = workers.draw(tasks, staged)
        assert workers.broken
    (path,) = files.values()
    assert path.read_bytes() == (tmp_path / "reference" / path.name).read_bytes()


def test_no_worker_runs_what_is_not_python_nor_beside_a_user_matplotlib(monkeypatch):
    monkeypatch.setattr(figure_workers.sys, "frozen", True, raising=False)
    assert figure_workers.python_interpreter() is None  # a frozen app's executable is the app
    monkeypatch.delattr(figure_workers.sys, "frozen")
    monkeypatch.setattr(figure_workers.sys, "executable", "/bin/sh")
    assert figure_workers.python_interpreter() is None  # an embedding server's
    monkeypatch.setattr(figure_workers.sys, "executable", "")
    with pytest.raises(OSError, match="no Python interpreter"):
        figure_workers.FigureWorkers(1)
    monkeypatch.undo()
    import matplotlib  # noqa: F401 - the user's own matplotlib, with its style settings

    monkeypatch.delenv(figure_workers.WORKERS_VARIABLE, raising=False)
    assert figure_workers.FigureWorkers.start(4) is None  # drawn in process, in the user's style
