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
