"""Shared fixtures: configs composed as the CLI composes them, and the CLI run in a scratch folder."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient

from moonprop.config import Config, validate
from moonprop.preflight import composed, without_hydra
from moonprop.tracking import ensure_store

REPO = Path(__file__).resolve().parents[1]


def make_config(*overrides: str) -> Config:
    return validate(without_hydra(composed(list(overrides))))


def moonprop(*args: str, cwd: Path, check: bool = True, timeout: float = 300,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real CLI (`python -m moonprop`) in `cwd`, so that outputs/ lands there."""
    proc = subprocess.run([sys.executable, "-m", "moonprop", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"moonprop {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-4000:]}")
    return proc


def default_store(cwd: Path) -> MlflowClient:
    """A client on the run's default store, opened under moonprop's lock: a test that looks while
    a run is creating the store must not race its schema migration."""
    uri = f"sqlite:///{cwd / 'outputs' / 'mlflow.db'}"
    ensure_store(uri)
    return MlflowClient(uri)


def epoch_images(client: MlflowClient, run_id: str) -> list[str]:
    """A run's per-epoch boundary images (MLflow's image layout), without their thumbnails."""
    return [a.path for a in client.list_artifacts(run_id, "images")
            if a.path.endswith(".webp") and not a.path.endswith("+compressed.webp")]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def slurm_is_up() -> bool:
    if not shutil.which("sinfo"):
        return False
    result = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    return result.returncode == 0 and "idle" in result.stdout


def require(available: bool, reason: str) -> None:
    """Skip a test whose outside part is missing here (a laptop without root), but fail in CI,
    where .ci/run installs and starts everything."""
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
        pytest.skip(reason)


@contextlib.contextmanager
def mlflow_command(*args: str, log: Path) -> Iterator[str]:
    """`mlflow server` or `mlflow ui` on a free port of 127.0.0.1, its URL once /health answers.

    One worker and no job runner: with defaults it starts ~15 processes and takes ~3 GiB. It is
    stopped by its process group, so nothing it started outlives the test.
    """
    mlflow = Path(sys.executable).with_name("mlflow")
    require(mlflow.exists(), "the mlflow command is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(mlflow), *args, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"},
                            start_new_session=True, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(url + "/health", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail(f"mlflow {args[0]} did not start: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
