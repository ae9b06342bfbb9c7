"""Helpers shared by the test suites, in one place: tests import them from here, never from another test module.

``tests/`` is on ``sys.path`` (``pythonpath`` in pyproject.toml), so a test writes ``from support.cli import run_cli``.

- :mod:`support.cli`: the ``fairhead`` command in a subprocess (``run_cli``, ``start_cli``) or in the test's own
  process (``main_cli``), and ``read_rows`` for the CSV files it writes
- :mod:`support.files`: files in the formats users hand to fairhead (CSV tables of features) and ``tree_digest``
- :mod:`support.celeba`: a miniature CelebA tree in the official layout
- :mod:`support.backbones`: weights files that a backbone must refuse
- :mod:`support.extraction`: the pinned creation time and the journal's committed rows of a killed extraction
- :mod:`support.data_parallel`: the problem the data-parallel tests solve, in the test process and in each
  ``torchrun`` rank (``support/data_parallel_worker.py``)
"""

from __future__ import annotations

from pathlib import Path

#: the checkout the tests run against (subprocesses get it as PYTHONPATH and cwd)
REPO_ROOT = Path(__file__).resolve().parents[2]
#: the tests folder (what a subprocess puts on sys.path to import ``support``)
TESTS_DIR = REPO_ROOT / "tests"
