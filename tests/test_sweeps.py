"""Sweeps through the real CLI: every job nested under one parent run, the summary on the parent."""

from __future__ import annotations

import pytest
from mlflow import MlflowClient

from .conftest import default_store, moonprop, require, slurm_is_up


def sweep_runs(client: MlflowClient):
    exp = client.get_experiment_by_name("moonprop").experiment_id
    (parent,) = client.search_runs([exp], "tags.`sweep.id` != '' and attributes.run_name LIKE 'sweep %'")
    children = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    return parent, sorted(children, key=lambda r: int(r.data.tags["sweep.job"]))


def check_sweep(client: MlflowClient, jobs: int) -> None:
    parent, children = sweep_runs(client)
    assert parent.info.status == "FINISHED"
    assert len(children) == jobs and {c.info.status for c in children} == {"FINISHED"}
    assert [c.data.tags["sweep.job"] for c in children] == [str(i) for i in range(jobs)]
    assert {c.data.tags["sweep.id"] for c in children} == {parent.data.tags["sweep.id"]}
    assert len({c.data.tags["sweep.overrides"] for c in children}) == jobs
    for child in children:
        assert len(client.get_metric_history(child.info.run_id, "test/acc")) == 4  # steps 0..3
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "boundaries.png", "curves.png"} <= names
    csv = open(client.download_artifacts(parent.info.run_id, "summary.csv")).read().splitlines()
    assert csv[0].startswith("job,name,overrides,status,test_acc") and len(csv) == jobs + 1
    best = max(children, key=lambda c: c.data.metrics["test/acc"])
    assert parent.data.tags["best_run_id"] == best.info.run_id
    assert parent.data.metrics == {}  # no one-value chart for the experiment's chart view
    # every job named by the values it was given for the swept keys, unique in the sweep
    names = [c.info.run_name for c in children]
    assert len(set(names)) == jobs and all("=" in n for n in names)
    swept = parent.data.tags["sweep.keys"].split(",")
    assert parent.info.run_name.startswith("sweep ")
    assert all(k.rpartition(".")[2] in parent.info.run_name for k in swept)


SWEEP = ("-m", "data.num_batches=3", "seed=0,1", "schedule=linear,cosine")


def test_default_launcher_runs_jobs_in_one_process(workdir):
    proc = moonprop(*SWEEP, cwd=workdir)
    check_sweep(default_store(workdir), 4)
    _, children = sweep_runs(default_store(workdir))
    assert [c.info.run_name for c in children] == ["seed=0 schedule=linear", "seed=0 schedule=cosine",
                                                   "seed=1 schedule=linear", "seed=1 schedule=cosine"]
    assert "best: job" in proc.stderr and "| job | name | status |" in proc.stderr


def test_joblib_launcher_runs_jobs_in_parallel_workers(workdir):
    proc = moonprop(*SWEEP, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=workdir, timeout=300)
    check_sweep(default_store(workdir), 4)
    assert "leaked" not in proc.stderr  # joblib's workers and shared-memory folder are cleaned up


def test_slurm_launcher_runs_jobs_on_a_real_cluster(workdir):
    require(slurm_is_up(), "no SLURM cluster with an idle node: run `scripts/slurm-cluster start` as root")
    moonprop(*SWEEP, "hydra/launcher=slurm", cwd=workdir, timeout=600)
    client = default_store(workdir)
    check_sweep(client, 4)
    _, children = sweep_runs(client)
    assert all(c.data.tags.get("sweep.id") for c in children)
    assert list(workdir.glob("outputs/sweeps/*/.submitit/*/*_log.out"))  # ran as SLURM jobs


def test_a_failing_job_does_not_stop_the_others(workdir):
    proc = moonprop("-m", "data.num_batches=3", "schedule.start=1,1e6,0.5", cwd=workdir, check=False)
    assert proc.returncode == 1
    parent, children = sweep_runs(default_store(workdir))
    assert [c.info.status for c in children] == ["FINISHED", "FAILED", "FINISHED"]
    assert parent.info.status == "FAILED"
    assert "| FAILED |" in proc.stderr and "job 1" in proc.stderr


@pytest.mark.parametrize("n_jobs, cores, expected", [(2, 2, 1), (-1, 2, 1), (1, 4, 4), (2, 8, 4)])
def test_threads_are_pinned_so_workers_times_threads_fit_the_cores(n_jobs, cores, expected, monkeypatch):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from moonprop import cli

    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda _: set(range(cores)))
    hc = OmegaConf.create({"mode": RunMode.MULTIRUN, "launcher": {"n_jobs": n_jobs}})
    assert cli.threads_per_job(hc) == expected
