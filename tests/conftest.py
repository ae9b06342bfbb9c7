"""Suite-wide settings: keep torch to the machine's cores so parallel BLAS does not oversubscribe, and draw
a sweep's figures in process in the fast tests."""

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _figures_in_process_in_fast_tests(request, monkeypatch):
    """The fast tests (``make test``) draw figures in process: a worker's start is about 0.7 s of CPU per
    sweep, dozens of sweeps add half a minute. The worker path is covered by
    ``tests/fairhead/test_figure_workers.py`` (it sets the count itself) and by every slow and fault test
    (the conformance suite's kills and full disks), which keep the default."""
    if not any(request.node.get_closest_marker(m) for m in ("slow", "fault")):
        monkeypatch.setenv("FAIRHEAD_FIGURE_WORKERS", "0")
