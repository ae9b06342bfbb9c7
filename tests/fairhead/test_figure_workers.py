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


def test_a_dead_worker_leaves_its_figures_to_the_command(split_arrays, tmp_path, monkeypatch):
    result = _sweep(split_arrays, tmp_path / "reference", monkeypatch, 0)
    tasks = sweep.sweep_figure_tasks(result)
    workers = figure_workers.FigureWorkers(1)
    try:
        for future in workers._started:
            pid = future.result(timeout=60)
        os.kill(pid, 9)  # the pool is broken: every task must still be drawn and written
        with StagedFiles() as staged:
            files = workers.draw(tasks, staged)
    finally:
        workers.close()
    assert set(files) == {"tradeoff_plot", "fit_vs_test_plot", "overfitting_plot", "group_rates_plot"}
    assert all(path.read_bytes() == (tmp_path / "reference" / path.name).read_bytes() for path in files.values())


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
            "print(w._started[0].result(timeout=60), flush=True)\n"
            "import time; time.sleep(120)\n")
    command = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True)
    try:
        worker = int(command.stdout.readline())
        command.send_signal(signal.SIGKILL)
        command.wait(timeout=10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            os.kill(worker, 9)
            pytest.fail("the figure worker outlived its killed command")
    finally:
        command.kill()
        command.stdout.close()
