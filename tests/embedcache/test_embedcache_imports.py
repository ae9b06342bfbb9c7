"""Dependency boundaries: importing embedcache (and its torchrun module) pulls in neither cvxpy, the solvers nor torchvision."""

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_import_embedcache_stays_in_its_lane():
    code = (
        "import sys, embedcache, embedcache.distributed; "
        "bad = [m for m in ('cvxpy', 'solvers', 'torchvision', 'fairhead') if m in sys.modules]; "
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO_ROOT, check=True,
        env={"PYTHONPATH": str(REPO_ROOT), "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == "", f"import embedcache imported: {out.stdout.strip()}"
