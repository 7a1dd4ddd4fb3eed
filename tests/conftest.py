"""Shared fixtures: configs composed as the CLI composes them, and the CLI run in a scratch folder."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from moonprop.config import Config, validate
from moonprop.preflight import compose_job, without_hydra
from moonprop.tracking import ensure_store

REPO = Path(__file__).resolve().parents[1]


def make_config(*overrides: str) -> Config:
    return validate(without_hydra(compose_job(list(overrides))))


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


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path


def require(available: bool, reason: str) -> None:
    """Skip a test whose outside part is missing here (a laptop without root), but fail in CI,
    where .ci/run installs and starts everything."""
    if not available:
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
        pytest.skip(reason)
