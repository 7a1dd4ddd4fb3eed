"""Sweeps through the real CLI: every job nested under one parent run, the summary on the parent."""

from __future__ import annotations

import pytest

from .conftest import check_sweep, default_store, moonprop, require, slurm_is_up, sweep_runs

SWEEP = ("-m", "data.num_batches=3", "seed=0,1", "schedule=linear,cosine")


def test_default_launcher_runs_jobs_in_one_process(workdir):
    proc = moonprop(*SWEEP, cwd=workdir)
    check_sweep(default_store(workdir), 4)
    _, children = sweep_runs(default_store(workdir))
    assert [c.info.run_name for c in children] == ["seed=0 schedule=linear", "seed=0 schedule=cosine",
                                                   "seed=1 schedule=linear", "seed=1 schedule=cosine"]
    assert "best configuration, by mean val_acc" in proc.stderr and "| job | name | status |" in proc.stderr
    assert "| config | n | test_acc_mean | test_acc_std | test_acc_ci95 |" in proc.stderr


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
