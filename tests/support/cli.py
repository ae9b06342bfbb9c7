"""The ``fairhead`` command as a user runs it (a subprocess of this checkout) or in the test's own process."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

from support import REPO_ROOT

#: seconds a CLI subprocess may run before the test fails
CLI_TIMEOUT_S = 300


def start_cli(*args, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``python -m fairhead.cli ARGS`` on this checkout's sources; stdout and stderr are piped as text."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT), **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "fairhead.cli", *map(str, args)], env=env, cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(*args, env_extra: dict[str, str] | None = None, timeout: float = CLI_TIMEOUT_S) -> tuple[int, str, str]:
    """Run ``fairhead ARGS`` in a subprocess, as a user would: exit code, stdout, stderr."""
    proc = start_cli(*args, env_extra=env_extra)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, out, err


def main_cli(capsys, *args) -> tuple[int, str, str]:
    """The CLI in this process (no interpreter start-up): exit code, stdout, stderr."""
    from fairhead.cli import main

    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_rows(path) -> list[dict[str, str]]:
    """The rows of a CSV file the CLI wrote, as dicts keyed by the header."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def assert_fit_metrics_match_head(cache, tmp_path, constraint: str) -> None:
    """``fairhead fit`` multiplies each split once and derives labels and probabilities from the scores;
    its metrics must equal those computed from the head's own ``predict`` / ``predict_proba``."""
    import embedcache
    import numpy as np

    from fairhead import pipeline
    from fairhead.uncertainty import interval_columns
    from solvers import metrics

    result = pipeline.fit_on_cache(cache, constraint=constraint, eps=0.05, save=tmp_path / f"head-{constraint}.json")
    head = result.head
    with embedcache.open(cache) as c:
        for split in c.splits:
            arrays = pipeline.load_arrays(c, split)
            proba = head.predict_proba(arrays.X)
            want = metrics.evaluate(arrays.y, head.predict(arrays.X), sensitive_features=arrays.group_names,
                                    y_score=proba if arrays.n_classes > 2 else proba[:, 1], classes=arrays.classes)
            want.update(interval_columns(arrays.y, head.predict(arrays.X), arrays.group_names, 0.95,
                                         classes=arrays.classes))
            got = result.metrics[split]
            assert set(want) <= set(got)
            for key, value in want.items():
                assert got[key] == value or (np.isnan(got[key]) and np.isnan(value)), (split, key)


class Terminal:
    """A stand-in stderr that says it is a terminal (progress bars show on terminals only)."""

    def __init__(self):
        import io

        self.buffer = io.StringIO()

    def isatty(self):
        return True

    def write(self, text):
        return self.buffer.write(text)

    def flush(self):
        pass
