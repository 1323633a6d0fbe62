"""The GPU check, dry-run on the CPU at tiny sizes: every step runs (or says why not), and what
comes back is two files, as the lent machine returns at most eight."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from retino import PROJECT_ROOT

pytestmark = pytest.mark.slow


@pytest.mark.slow(seconds=22)
def test_the_gpu_check_dry_run_passes_every_step_and_returns_two_files(tmp_path):
    env = {**os.environ, "GPU_CHECK_DRY_RUN": "1", "WHEELS": str(tmp_path / "no-wheels"),
           "GPU_CHECK_WORK": str(tmp_path / "work"), "PYTHON": sys.executable,
           # the CUDA tests and the study run elsewhere in this suite, and one train-speed
           # step stands for the three (the same script with other flags)
           "GPU_CHECK_SKIP": "cuda-tests study real-study train-speed-gpu-decode "
                             "train-speed-strong",
           "OMP_NUM_THREADS": "1"}
    out = tmp_path / "out"
    proc = subprocess.run(["bash", "bench/gpu_check.sh", str(out)], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    summary = (out / "summary.txt").read_text()
    assert proc.returncode == 0, summary[-4000:]
    assert sorted(path.name for path in out.iterdir()) == ["logs.tar.gz", "summary.txt"]
    assert "OMP_NUM_THREADS=1" in summary  # recorded, then unset for the steps
    for step in ("prepare", "epoch", "train-speed-cpu-decode", "loader-speed"):
        assert f"== {step}:" in summary, step
    assert "== cuda-tests: SKIPPED (GPU_CHECK_SKIP)" in summary
    assert "input-pipeline efficiency" in summary and "0 step(s) failed" in summary
    assert Path(tmp_path / "work" / "cache").is_dir()  # the cache stayed in the work folder
