"""benchmarks/gpu_check.sh cannot rot: its --tiny run on CPU writes every section's figures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_gpu_check_runs_tiny_on_cpu_and_reports_every_section(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--tiny", "--device", "cpu"],
                          env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["sections_failed"] == []
    assert report["environment"]["device"] == "cpu"
    assert report["extraction"]["end_to_end_fp32_img_per_s"] > 0
    assert report["extraction"]["images"] == report["sizes"]["extract_images"]
    for constraint in ("dp-score", "dp", "eo"):
        cpu = report["heads"][constraint]["cpu"]
        assert cpu["seconds"] > 0 and 0.5 < cpu["accuracy"] <= 1.0
        # on a CPU run the comparison fits the same head twice: a determinism check
        assert report["cpu_heads"][constraint]["max_abs_coef_diff"] == 0.0
    sweep = report["sweep"]
    assert sweep["cli_sweep_returncode"] == 0
    assert len(sweep["eps_met"]) == sweep["points"]
