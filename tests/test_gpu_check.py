"""The GPU check (`make gpu-check`, scripts/gpu_check.py): one line and exit 0 where there is no
CUDA device, and its comparison, run here with the CPU against itself."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from .conftest import REPO

SCRIPT = [sys.executable, str(REPO / "scripts" / "gpu_check.py")]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a CUDA device: make gpu-check runs for real")
def test_without_a_gpu_it_says_so_in_one_line(tmp_path):
    proc = subprocess.run([*SCRIPT, "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip().startswith("gpu-check: no CUDA device")
    assert len(proc.stdout.strip().splitlines()) == 1 and not list(tmp_path.iterdir())


def test_it_compares_every_job_and_writes_json_and_a_table(tmp_path):
    proc = subprocess.run([*SCRIPT, "--accelerators", "cpu,cpu", "--jobs", "2", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((tmp_path / "gpu-check.json").read_text())
    assert results["sweep_test_acc_same"] == 2 and results["run_test_acc_max_diff"] == 0  # the CPU is deterministic
    table = (tmp_path / "gpu-check.md").read_text()
    assert table.startswith("| on ") and "2-job batched sweep" in table
