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
    assert "best configuration, by mean val_acc" in proc.stderr and "| job | name | seed | status |" in proc.stderr
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


LAUNCHERS = {"in-process": [], "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
             "batched": ["hydra/launcher=batched"], "slurm": ["hydra/launcher=slurm"]}


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_job_that_fails_before_training_has_its_run_and_is_counted(workdir, launcher):
    """A job whose callback's constructor raises (EarlyStopping refuses mode=sideways, which only
    Lightning knows) fails before its training, and before anything would open its run: it is
    recorded all the same, FAILED under the sweep's parent with the reason, the summary counts it
    and the sweep exits 1."""
    if launcher == "slurm":
        require(slurm_is_up(), "no SLURM cluster with an idle node: run `scripts/slurm-cluster start` as root")
    proc = moonprop("-m", "data.num_batches=3", "callbacks=[early_stopping]",
                    "callbacks.early_stopping.mode=max,sideways", *LAUNCHERS[launcher], cwd=workdir, check=False,
                    timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "1 of 2 jobs finished" in proc.stderr
    if launcher != "slurm":  # a SLURM job says it in its own log
        assert "job 1 (mode=sideways) FAILED" in proc.stderr
    client = default_store(workdir)
    parent, children = sweep_runs(client)
    assert [c.info.status for c in children] == ["FINISHED", "FAILED"]
    assert "`mode` can be min, max, got sideways" in children[1].data.tags["error"]
    assert children[1].info.run_name == "mode=sideways" and children[1].info.end_time
    assert parent.info.status == "FAILED" and parent.data.metrics["jobs/failed"] == 1
    jobs = client.download_artifacts(parent.info.run_id, "jobs.csv", str(workdir))
    assert [line.split(",")[4] for line in open(jobs).read().splitlines()[1:]] == ["FINISHED", "FAILED"]


def test_hydras_resolver_in_a_value_reads_the_jobs_hydra_config(workdir):
    """`${hydra:...}` in a value, as plain Hydra resolves it: the checks see what the job will."""
    moonprop("data.num_batches=2", "tracking.run_name=${hydra:job.name}", cwd=workdir)
    proc = moonprop("-m", "data.num_batches=2", "seed=0,1", "data.batch_size=${hydra:job.num}", cwd=workdir,
                    check=False)
    # Hydra's sweeper resolves it before it numbers the jobs: every job would get None
    assert proc.returncode == 2 and proc.stderr.startswith("moonprop: invalid config: data.batch_size=None")
    client = default_store(workdir)
    (run,) = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    assert run.info.run_name == "moonprop"


@pytest.mark.parametrize("n_jobs, cores, expected", [(2, 2, 1), (-1, 2, 1), (1, 4, 4), (2, 8, 4)])
def test_threads_are_pinned_so_workers_times_threads_fit_the_cores(n_jobs, cores, expected, monkeypatch):
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    from moonprop import cli

    monkeypatch.setattr(cli.os, "sched_getaffinity", lambda _: set(range(cores)))
    hc = OmegaConf.create({"mode": RunMode.MULTIRUN, "launcher": {"n_jobs": n_jobs}})
    assert cli.threads_per_job(hc) == expected
