"""Shared fixtures and helpers: configs composed through Hydra's public compose API, the CLI run in a
scratch folder, and what its runs left in the store."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from mlflow import MlflowClient
from omegaconf import DictConfig

from mlflow_server import MLFLOW, MlflowServer, basic_auth, postgres_database, serving  # scripts/, on pythonpath
from moonprop import cli, preflight
from moonprop.config import Config
from moonprop.tracking import store_lock

REPO = Path(__file__).resolve().parents[1]


def composed(*overrides: str, hydra: bool = False) -> DictConfig:
    """The config Hydra composes for `moonprop OVERRIDES`, through its public compose API (with
    Hydra's own part, `hydra.launcher` and the rest, if `hydra`)."""
    with initialize_config_module("moonprop.conf", version_base="1.3"):
        return compose(cli.CONFIG_NAME, list(overrides), return_hydra_config=hydra)


def check(argv: list[str]) -> list[Config]:
    """moonprop's checks of a command line, as `moonprop ARGV` makes them before Hydra starts."""
    return preflight.check(argv, cli.APP)


def make_config(*overrides: str) -> Config:
    """The checked config of `moonprop OVERRIDES` (a bad value raises its one-line ConfigError)."""
    (config,) = preflight.configs(list(overrides), cli.APP)
    return config


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
    with store_lock(uri):
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)  # creates the store's schema if it is new
    return client


def only_run(cwd: Path):
    """The one run in the default store of `cwd`."""
    client = default_store(cwd)
    (run,) = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    return run


def start(*args: str, cwd: Path) -> subprocess.Popen[str]:
    """The real CLI in the background, for a test that interrupts it."""
    return subprocess.Popen([sys.executable, "-m", "moonprop", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_step(cwd: Path, step: int, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until the run's test/acc has reached `step` in the store (the recorder writes every second)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        if (cwd / "outputs" / "mlflow.db").exists():
            client = default_store(cwd)
            exp = client.get_experiment_by_name("moonprop")
            runs = client.search_runs([exp.experiment_id]) if exp else []
            if runs and runs[0].data.metrics and len(client.get_metric_history(runs[0].info.run_id,
                                                                                "test/acc")) > step:
                return
        time.sleep(0.3)
    raise AssertionError("the run never got going")


def sweep_runs(client: MlflowClient):
    """A sweep's parent run and its jobs' runs, in job order."""
    exp = client.get_experiment_by_name("moonprop").experiment_id
    runs = client.search_runs([exp], "tags.`sweep.id` != ''")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, sorted(children, key=lambda r: int(r.data.tags["sweep.job"]))


def check_sweep(client: MlflowClient, jobs: int) -> None:
    """A finished sweep of `jobs` 3-epoch jobs, each named, nested and recorded, and its summary."""
    parent, children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert len(children) == jobs and {c.info.status for c in children} == {"FINISHED"}
    assert [c.data.tags["sweep.job"] for c in children] == [str(i) for i in range(jobs)]
    assert {c.data.tags["sweep.id"] for c in children} == {parent.data.tags["sweep.id"]}
    assert len({c.data.tags["sweep.overrides"] for c in children}) == jobs
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "test/acc")) == 4  # steps 0..3
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "jobs.csv", "summary.json", "summary.md", "boundaries.png", "curves.png"} <= names
    table = open(client.download_artifacts(parent.info.run_id, "jobs.csv")).read().splitlines()
    assert table[0].startswith("job,name,config,overrides,status,val_acc,val_loss,test_acc") and len(table) == jobs + 1
    # the best job: the best by val/acc in the configuration of the best mean val/acc
    configs: dict[str, list] = {}
    for child in children:
        configs.setdefault(child.data.tags["moonprop.config"], []).append(child)
    best_config = max(configs.values(), key=lambda runs: sum(r.data.metrics["val/acc"] for r in runs) / len(runs))
    best = max(best_config, key=lambda c: c.data.metrics["val/acc"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics["best/val_acc"] == best.data.metrics["val/acc"]
    assert parent.data.metrics["jobs/finished"] == jobs and parent.data.metrics["jobs/failed"] == 0
    # every job named by the values it was given for the swept keys, unique in the sweep
    names = [c.info.run_name for c in children]
    assert len(set(names)) == jobs and all("=" in n for n in names)
    swept = parent.data.tags["sweep.keys"].split(",")
    assert parent.info.run_name.startswith("sweep ")
    assert all(k.rpartition(".")[2] in parent.info.run_name for k in swept)


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
    """`mlflow server` or `mlflow ui` on a free port of 127.0.0.1, its URL once /health answers
    (RuntimeError with the end of its log if it does not start)."""
    require(MLFLOW.exists(), "the mlflow command is not installed")
    with serving(*args, log=log) as url:
        yield url


ADMIN_PASSWORD = "admin-" + "x7Qp2Lm9Tz"  # a test server's, alive for one test module


@contextlib.contextmanager
def signed_in(user: str, password: str) -> Iterator[None]:
    """MLflow's own variables, as a user sets them, for this process and every process it starts."""
    before = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def team_server(root: Path, users: dict[str, str]) -> Iterator[MlflowServer]:
    """The README's team server: `mlflow server --app-name basic-auth`, its store and its users in
    new PostgreSQL databases, its artifacts served, and `users` (name: password) made by its admin."""
    store, accounts = postgres_database("moonprop_test"), postgres_database("moonprop_test_users")
    require(store is not None and accounts is not None,
            "no PostgreSQL on 127.0.0.1 (and psycopg): run `scripts/postgres start` as root")
    served = MlflowServer("server", "--app-name", "basic-auth", "--backend-store-uri", store, "--artifacts-destination",
                          str(root / "art"), "--allowed-hosts", "127.0.0.1:*,localhost:*", log=root / "server.log",
                          env=basic_auth(root, accounts, ADMIN_PASSWORD))
    served.start()
    try:
        from mlflow.server import get_app_client

        with signed_in("admin", ADMIN_PASSWORD):
            admin = get_app_client("basic-auth", tracking_uri=served.url)
            for user, password in users.items():
                admin.create_user(user, password)
        yield served
    finally:
        served.stop()
