"""Bad input, faults and interruptions through the real CLI and a real store: nothing is lost and
no run is left RUNNING."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient

from .conftest import (
    default_store,
    epoch_images,
    moonprop,
    only_run,
    require,
    slurm_is_up,
    start,
    sweep_runs,
    wait_for_step,
)


def steps(client: MlflowClient, run_id: str, key: str = "test/acc") -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# ---- bad input: one line, non-zero, nothing created ---------------------------------------------

@pytest.mark.parametrize("override", [
    "model.hidden=[16,0]", "data.batch_size=0", "data.noise=-1", "schedule.start=0",
    "loss.alpha=nan", "plot.every_n_epochs=0", "schedule=exponential", "+data.foo=1", "data.foo=1",
])
def test_bad_input_is_refused_before_anything_exists(workdir, override):
    proc = moonprop(override, cwd=workdir, check=False)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("moonprop: invalid config: "), proc.stderr
    assert override.lstrip("+").split("=")[0] in lines[0]
    assert list(workdir.iterdir()) == []  # no outputs/, no store, no run folder


def test_bad_value_in_a_sweep_is_refused_before_any_job(workdir):
    proc = moonprop("-m", "data.num_batches=2", "seed=0,1", "data.batch_size=10,0", cwd=workdir, check=False)
    assert proc.returncode == 2 and "data.batch_size=0" in proc.stderr
    assert list(workdir.iterdir()) == []


def test_gpu_without_one_is_refused(workdir):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    proc = moonprop("trainer.accelerator=gpu", cwd=workdir, check=False)
    assert proc.returncode == 2 and "trainer.accelerator=gpu" in proc.stderr and "no GPU" in proc.stderr
    assert list(workdir.iterdir()) == []


def test_unreachable_tracking_server_is_reported_fast(workdir):
    t = time.monotonic()
    proc = moonprop("tracking.uri=http://127.0.0.1:9", cwd=workdir, check=False)
    assert time.monotonic() - t < 10
    assert proc.returncode == 2 and "tracking.uri=http://127.0.0.1:9" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert list(workdir.iterdir()) == []


def test_unwritable_output_folder_is_reported_before_training(workdir):
    (workdir / "blocker").write_text("a file where a folder should be")
    proc = moonprop(f"hydra.run.dir={workdir}/blocker/run", cwd=workdir, check=False)
    assert proc.returncode == 2 and "hydra.run.dir" in proc.stderr
    proc = moonprop(f"tracking.uri=sqlite:///{workdir}/blocker/x.db", cwd=workdir, check=False)
    assert proc.returncode == 2 and "tracking.uri" in proc.stderr
    assert sorted(p.name for p in workdir.iterdir()) == ["blocker"]


# ---- faults during a run ------------------------------------------------------------------------

def test_diverging_loss_fails_the_run_with_reason_and_epoch(workdir):
    proc = moonprop("schedule.start=1e6", "data.num_batches=50", cwd=workdir, check=False)
    assert proc.returncode != 0
    run = only_run(workdir)
    assert run.info.status == "FAILED" and run.info.end_time
    assert "NonFiniteLoss" in run.data.tags["error"] and "at epoch" in run.data.tags["error"]
    last = max(steps(default_store(workdir), run.info.run_id))
    assert 1 <= last < 50  # stopped at the first non-finite step, what came before is kept


def test_sigint_kills_the_run_and_exits_130(workdir):
    proc = start("data.num_batches=100000", "plot.every_n_epochs=50", cwd=workdir)
    wait_for_step(workdir, 3, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    run = only_run(workdir)
    assert run.info.status == "KILLED" and run.info.end_time
    assert "SIGINT" in run.data.tags["error"]


def continue_with(err: str) -> list[str]:
    """The command an interrupted run or sweep printed to continue it, as a shell would split it."""
    (line,) = [line for line in err.splitlines() if "continue with: " in line]
    command = shlex.split(line.split("continue with: ", 1)[1])
    assert command[0] == "moonprop"
    return command[1:]


def interrupt(args: list[str], cwd: Path, after_step: int, signum: int = signal.SIGTERM) -> list[str]:
    """Run `moonprop ARGS`, send `signum` once the record has passed `after_step`; the printed way back."""
    proc = start(*args, cwd=cwd)
    wait_for_step(cwd, after_step, proc)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signum, err[-2000:]
    assert "Traceback" not in err and "weights_only" not in err, err[-2000:]
    return continue_with(err)


def history(client: MlflowClient, run_id: str, key: str = "test/acc") -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_sigterm_checkpoints_kills_and_the_printed_line_continues_the_same_run(workdir, tmp_path_factory):
    args = ["data.num_batches=3000", "plot.every_n_epochs=10", "tracking.run_name=a long one", "seed=3"]
    again = interrupt(args, workdir, 5)
    client = default_store(workdir)
    run = only_run(workdir)
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["error"]
    stopped_at = max(steps(client, run.info.run_id))
    assert stopped_at < 3000, "finished before the signal: make the run longer"
    (checkpoint,) = workdir.glob("outputs/runs/*/checkpoints/last.ckpt")
    assert again == [*args, f"resume={checkpoint}"]  # the run's own arguments, quoted for a shell

    proc = moonprop(*again, cwd=workdir)
    assert "weights_only" not in proc.stderr  # Lightning's note on loading a checkpoint is not the user's
    resumed = only_run(workdir)  # the same run, not a second one
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert steps(client, run.info.run_id) == list(range(3001))  # no gap, no repeat
    assert steps(client, run.info.run_id, "train/loss") == list(range(1, 3001))
    assert resumed.data.params == run.data.params
    assert "error" not in resumed.data.tags
    images = epoch_images(client, run.info.run_id)
    assert len(images) == 301  # every 10th epoch, 0 to 3000
    # the same numbers as a run that was never stopped
    elsewhere = tmp_path_factory.mktemp("uninterrupted")
    moonprop(*args, cwd=elsewhere)
    assert history(client, run.info.run_id) == history(default_store(elsewhere), only_run(elsewhere).info.run_id)


def test_a_run_is_written_once(workdir):
    """Continuing a run that has ended, or from an older checkpoint than its record has reached, is
    refused in one line before anything is written; the newest checkpoint continues it, once."""
    args = ["data.num_batches=8000", "plot.every_n_epochs=1000"]
    first = interrupt(args, workdir, 3)
    client = default_store(workdir)
    run_id = only_run(workdir).info.run_id
    second = interrupt(first, workdir, max(steps(client, run_id)) + 3)  # stopped again, further on
    assert second[-1] != first[-1]  # a checkpoint in the continuing run's own folder

    proc = moonprop(*first, cwd=workdir, check=False)  # the first checkpoint is behind the record now
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "the run's newest checkpoint, " + second[-1].removeprefix("resume=") in proc.stderr

    moonprop(*second, cwd=workdir)
    recorded = history(client, run_id)
    models = client.search_logged_models([only_run(workdir).info.experiment_id])
    for _ in range(2):  # as a user would, pressing up and enter
        proc = moonprop(*second, cwd=workdir, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "has ended FINISHED, and a run is written once" in proc.stderr
    assert history(client, run_id) == recorded and [s for s, _ in recorded] == list(range(8001))
    assert len(client.search_logged_models([only_run(workdir).info.experiment_id])) == len(models) == 1
    assert len(epoch_images(client, run_id)) == 9
    assert len(list(workdir.glob("outputs/runs/*"))) == 3  # the refusals made no run folder


@pytest.mark.parametrize("launcher, then", [([], []), (["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"], []),
                                             ([], ["hydra/launcher=slurm"])],
                         ids=["in-process", "joblib", "in-process-then-slurm"])
def test_the_printed_line_continues_the_sweep_keeping_what_finished(workdir, launcher, then):
    """Ctrl-C in a sweep, a job finished and one under way: the printed line continues the sweep
    in its folder, under the same parent, with its launcher or another (`then`). The finished job
    is kept, not run again; the stopped one continues into its own run from its checkpoint, or (a
    joblib worker killed before it could write one) runs again in a new run, its old one kept and
    tagged; the summary counts each once."""
    if then:
        require(slurm_is_up(), "no SLURM cluster with an idle node: run `scripts/slurm-cluster start` as root")
    args = ["-m", "data.num_batches=3000", "plot.every_n_epochs=1000", "seed=0,1", "data.batch_size=40,50", *launcher]
    proc = start(*args, cwd=workdir)
    client = default_store(workdir)
    deadline = time.monotonic() + 180
    while not [r for r in client.search_runs([client.get_experiment_by_name("moonprop").experiment_id]
                                              if client.get_experiment_by_name("moonprop") else [],
                                              "attributes.status = 'FINISHED'") if "mlflow.parentRunId" in r.data.tags]:
        assert time.monotonic() < deadline and proc.poll() is None, "no job finished"
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    again = continue_with(err)
    assert again[-1].startswith("hydra.sweep.dir=outputs/sweeps/") and again[:len(args)] == args
    parent, before = sweep_runs(client)
    assert parent.info.status == "KILLED"
    finished = {r.data.tags["sweep.job"]: r.info.run_id for r in before if r.info.status == "FINISHED"}
    stopped = {r.data.tags["sweep.job"]: r for r in before if r.info.status == "KILLED"}
    proc = moonprop(*again, *then, cwd=workdir, timeout=600)
    if not then:  # a SLURM job's lines are in its own log
        assert all(f"job {job} (" in proc.stderr and "had FINISHED" in proc.stderr for job in finished)
    parent_after, runs = sweep_runs(client)
    assert parent_after.info.run_id == parent.info.run_id and parent_after.info.status == "FINISHED"
    after = [r for r in runs if "sweep.superseded" not in r.data.tags]
    assert [r.data.tags["sweep.job"] for r in after] == ["0", "1", "2", "3"]  # each job once
    for run in after:
        assert run.info.status == "FINISHED" and steps(client, run.info.run_id) == list(range(3001))
        job = run.data.tags["sweep.job"]
        if job in finished:
            assert run.info.run_id == finished[job]  # kept
        elif job in stopped and "moonprop.checkpoint" in stopped[job].data.tags:
            assert run.info.run_id == stopped[job].info.run_id  # continued into its own run
        elif job in stopped:  # no checkpoint: run again; the old run stays, set apart
            assert client.get_run(stopped[job].info.run_id).data.tags["sweep.superseded"] == "true"
    assert parent_after.data.metrics["jobs/finished"] == 4 and "4 of 4 jobs finished" in proc.stderr


def test_a_sweep_folder_continues_only_the_same_sweep(workdir):
    moonprop("-m", "seed=0,1", "data.num_batches=2", "hydra.sweep.dir=outputs/s", cwd=workdir)
    client = default_store(workdir)
    parent, jobs = sweep_runs(client)
    proc = moonprop("-m", "seed=0,1,2", "data.num_batches=2", "hydra.sweep.dir=outputs/s", cwd=workdir, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("moonprop: invalid config: hydra.sweep.dir=outputs/s: ")
    assert "it holds `seed=0,1 data.num_batches=2`, this command gives `seed=0,1,2" in proc.stderr
    assert sweep_runs(client)[0].info.status == "FINISHED"  # nothing touched
    proc = moonprop("-m", "hydra/sweeper=search", "hydra.sweeper.n_trials=1", "hydra.sweep.dir=outputs/s",
                    cwd=workdir, check=False)
    assert proc.returncode == 2 and "a search continues its study with the same command" in proc.stderr
    # the same sweep again in its folder: nothing to train, the same parent summarised again
    proc = moonprop("-m", "seed=0,1", "data.num_batches=2", "hydra.sweep.dir=outputs/s", "hydra/launcher=joblib",
                    cwd=workdir)
    assert proc.stderr.count("had FINISHED") == 2
    assert [r.info.run_id for r in sweep_runs(client)[1]] == [r.info.run_id for r in jobs]


def test_resume_with_other_settings_is_refused(workdir):
    proc = start("data.num_batches=100000", "plot.every_n_epochs=1000", cwd=workdir)
    wait_for_step(workdir, 2, proc)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143
    (checkpoint,) = workdir.glob("outputs/runs/*/checkpoints/last.ckpt")
    result = moonprop("data.num_batches=700", "plot.every_n_epochs=1000", f"resume={checkpoint}", cwd=workdir,
                      check=False)
    assert result.returncode == 2 and "data.num_batches=700" in result.stderr and "100000" in result.stderr


def test_hard_kill_leaves_the_run_failed_not_running(workdir):
    proc = start("data.num_batches=100000", "plot.every_n_epochs=50", cwd=workdir)
    wait_for_step(workdir, 3, proc)
    proc.send_signal(signal.SIGKILL)  # no handler runs: only the recorder is left to tell
    proc.communicate(timeout=60)
    deadline = time.monotonic() + 30
    while (run := only_run(workdir)).info.status == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert run.info.status == "FAILED" and "ended without closing" in run.data.tags["error"]


# ---- many writers -------------------------------------------------------------------------------

@pytest.mark.parametrize("store", ["fresh", "existing"])
def test_sixteen_parallel_writers_lose_nothing(workdir, store):
    if store == "existing":
        moonprop("data.num_batches=1", cwd=workdir)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-m", "moonprop", "data.num_batches=5", f"seed={i}",
                               f"tracking.run_name=job{i}", f"hydra.run.dir=outputs/runs/job{i}"],
                              cwd=workdir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True)
             for i in range(16)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0] * 16, errors
    client = default_store(workdir)
    runs = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id],
                              "attributes.run_name LIKE 'job%'")
    assert len(runs) == 16 and {r.info.status for r in runs} == {"FINISHED"}
    for run in runs:
        assert steps(client, run.info.run_id) == [0, 1, 2, 3, 4, 5]
        assert steps(client, run.info.run_id, "train/loss") == [1, 2, 3, 4, 5]
        pngs = epoch_images(client, run.info.run_id)
        assert len(pngs) == 6


# ---- security -----------------------------------------------------------------------------------

def test_non_ascii_names_work_quoted_and_unquoted_gets_a_hint(workdir):
    proc = moonprop("tracking.run_name=läuft", cwd=workdir, check=False)
    assert proc.returncode == 2 and "quote" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    moonprop("data.num_batches=2", "tracking.experiment='Mondfähre 🌙'", "tracking.run_name='läuft'",
             cwd=workdir)
    client = default_store(workdir)
    (run,) = client.search_runs([client.get_experiment_by_name("Mondfähre 🌙").experiment_id])
    assert run.info.run_name == "läuft" and run.info.status == "FINISHED"


def sigterm_sweep(workdir: Path, *args: str, timeout: float = 120) -> MlflowClient:
    """Start a sweep of long jobs, SIGTERM it once a job has trained a few epochs; it exits 143."""
    proc = start("-m", "data.num_batches=100000", "plot.every_n_epochs=50", *args, cwd=workdir)
    wait_for_step(workdir, 3, proc, timeout=timeout)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    return default_store(workdir)


def test_sigterm_during_a_sweep_kills_the_job_and_the_parent(workdir):
    client = sigterm_sweep(workdir, "seed=0,1")
    runs = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    assert sorted(r.info.status for r in runs) == ["KILLED", "KILLED"]  # the job and its sweep


def test_sigterm_during_a_joblib_sweep_leaves_no_run_running(workdir):
    """joblib kills its workers with their recorders: the launching process ends their runs."""
    client = sigterm_sweep(workdir, "seed=0,1,2", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2")
    runs = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    assert len(runs) >= 2 and {r.info.status for r in runs} == {"KILLED"}
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert jobs and all("stopped by SIGTERM" in r.data.tags["error"] for r in jobs)


def test_sigterm_during_a_slurm_sweep_cancels_its_jobs(workdir):
    """submitit's launcher leaves submitted jobs running when it is stopped; ours cancels them,
    and each job stops at the end of an epoch with a checkpoint, KILLED."""
    require(slurm_is_up(), "no SLURM cluster with an idle node: run `scripts/slurm-cluster start` as root")
    client = sigterm_sweep(workdir, "seed=0,1", "hydra/launcher=slurm", timeout=300)
    experiment = client.get_experiment_by_name("moonprop").experiment_id
    deadline = time.monotonic() + 120
    while "RUNNING" in [r.info.status for r in client.search_runs([experiment])]:
        assert time.monotonic() < deadline, "a job of the stopped sweep goes on"
        time.sleep(1)
    runs = client.search_runs([experiment])
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert jobs and {r.info.status for r in runs} == {"KILLED"}
    assert all("stopped by SIGTERM after epoch" in r.data.tags["error"] for r in jobs)  # their own stop
    while not slurm_is_up():  # leave the node idle for the next test, as it was found
        assert time.monotonic() < deadline, "the cancelled jobs never left the node"
        time.sleep(1)


# ---- sweeps stopped by an error outside their jobs' training: FAILED, never RUNNING ----------------

def assert_sweep_failed(workdir: Path, proc: subprocess.CompletedProcess[str], reason: str) -> None:
    """Exit 1, one line that says why (no traceback), the parent run FAILED with the reason as its
    `error` tag, and no run left RUNNING."""
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    # loky's resource tracker, a process of its own, may warn of a killed worker's semaphores after
    # moonprop has exited: its lines are not moonprop's
    lines = proc.stderr.strip().splitlines()
    ours = [line for i, line in enumerate(lines) if "resource_tracker" not in line
            and not (line.strip() == "warnings.warn(" and "resource_tracker" in lines[i - 1])]
    last = ours[-1]
    assert last.startswith("moonprop: sweep ") and " FAILED: " in last and reason in last, last
    client = default_store(workdir)
    runs = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED" and parent.info.end_time and reason in parent.data.tags["error"]
    assert "RUNNING" not in [r.info.status for r in runs]


def test_a_sweep_whose_parent_run_cannot_be_opened_stops_before_any_job(workdir):
    """Hydra only warns when a callback fails and runs the jobs anyway: with no parent to count
    them, the sweep would exit 0. A store that is no database refuses the parent: exit 1, no job."""
    (workdir / "outputs").mkdir()
    (workdir / "outputs" / "mlflow.db").write_text("not a database")
    proc = moonprop("-m", "seed=0,1", "data.num_batches=2", cwd=workdir, check=False)
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("moonprop: the sweep's parent run could not be opened: RecorderError: MLflow: "), last
    assert "Launching" not in proc.stderr and "job 0" not in proc.stderr


def test_a_slurm_sweep_that_cannot_submit_ends_failed(workdir):
    require(slurm_is_up(), "no SLURM cluster with an idle node: run `scripts/slurm-cluster start` as root")
    proc = moonprop("-m", "seed=0,1", "data.num_batches=2", "hydra/launcher=slurm", "hydra.launcher.partition=nope",
                    cwd=workdir, check=False, timeout=300)
    assert_sweep_failed(workdir, proc, "invalid partition specified: nope")


def test_a_slurm_sweep_whose_controller_cannot_be_reached_ends_failed(workdir, tmp_path_factory):
    """A real sbatch against a controller that does not answer: the cluster's own configuration with
    the controller's port moved to one where nothing listens."""
    require(slurm_is_up(), "no SLURM cluster with an idle node: run `scripts/slurm-cluster start` as root")
    conf = tmp_path_factory.mktemp("slurm") / "slurm.conf"
    lines = Path("/etc/slurm/slurm.conf").read_text().splitlines()
    conf.write_text("\n".join([line for line in lines if not line.startswith("SlurmctldPort")] + ["SlurmctldPort=9"]))
    proc = moonprop("-m", "seed=0,1", "data.num_batches=2", "hydra/launcher=slurm", cwd=workdir, check=False,
                    timeout=300, env={"SLURM_CONF": str(conf)})
    assert_sweep_failed(workdir, proc, "Unable to contact slurm controller")


BROKEN_SWEEPER = '''
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper


class BrokenSweeper(BasicSweeper):
    """Runs its first batch of jobs, then fails as a sweeper with a bug would."""

    def get_job_batch(self):
        if self.batch_index == 1:
            raise RuntimeError("the sweeper broke after its first batch")
        return super().get_job_batch()
'''


def test_a_sweepers_error_ends_the_sweep_failed_with_what_ran_summarised(workdir, tmp_path_factory):
    plugins = tmp_path_factory.mktemp("plugins")  # Hydra takes sweepers from the hydra_plugins package
    (plugins / "hydra_plugins").mkdir()
    (plugins / "hydra_plugins" / "moonprop_broken_sweeper.py").write_text(BROKEN_SWEEPER)
    proc = moonprop("-m", "seed=0,1,2", "data.num_batches=2", "hydra.sweeper.max_batch_size=1",
                    "hydra.sweeper._target_=hydra_plugins.moonprop_broken_sweeper.BrokenSweeper", cwd=workdir,
                    check=False, env={"PYTHONPATH": str(plugins)})
    assert_sweep_failed(workdir, proc, "RuntimeError: the sweeper broke after its first batch")
    client = default_store(workdir)
    runs = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert [r.info.status for r in runs if "mlflow.parentRunId" in r.data.tags] == ["FINISHED"]  # the first batch
    assert "summary.csv" in {a.path for a in client.list_artifacts(parent.info.run_id)}


def test_a_joblib_worker_killed_outside_training_ends_the_sweep_failed(workdir):
    """A worker killed outright (the OOM killer, say): its run ends FAILED through its recorder, the
    sweep FAILED with joblib's reason, and the other worker's run does not stay RUNNING."""
    proc = start("-m", "data.num_batches=100000", "plot.every_n_epochs=50", "seed=0,1", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2", cwd=workdir)
    try:
        wait_for_step(workdir, 3, proc)
        workers = subprocess.run(["pgrep", "-P", str(proc.pid), "-f", "LokyProcess"], capture_output=True,
                                 text=True).stdout.split()
        assert workers, "no joblib worker found"
        os.kill(int(workers[0]), signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert_sweep_failed(workdir, subprocess.CompletedProcess(proc.args, proc.returncode, "", err),
                        "TerminatedWorkerError")
