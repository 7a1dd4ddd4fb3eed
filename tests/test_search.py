"""hydra/sweeper=search through the real CLI: an Optuna (>= 4) study in a real storage, continued,
pruned, run in parallel workers, reproducible, and read back by optuna-dashboard."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest

from moonprop.config import ConfigError

from .conftest import check, default_store, moonprop

SEARCH = ("-m", "hydra/sweeper=search", "data.num_batches=20")


def study(workdir: Path, storage: str | None = None) -> optuna.Study:
    storage = storage or f"sqlite:///{workdir / 'outputs' / 'optuna.db'}"
    (summary,) = optuna.get_all_study_summaries(storage)
    return optuna.load_study(study_name=summary.study_name, storage=storage)


def jobs_and_parent(workdir: Path):
    client = default_store(workdir)
    runs = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return client, [r for r in runs if "mlflow.parentRunId" in r.data.tags], parents


def test_a_search_lives_in_its_storage_and_the_same_command_continues_it(workdir):
    moonprop(*SEARCH, "hydra.sweeper.n_trials=3", cwd=workdir)
    first = study(workdir)
    assert [t.state.name for t in first.trials] == ["COMPLETE"] * 3
    moonprop(*SEARCH, "hydra.sweeper.n_trials=3", cwd=workdir)
    again = study(workdir)
    assert again.study_name == first.study_name and len(again.trials) == 6
    params = [json.dumps(t.params, sort_keys=True) for t in again.trials]
    assert len(set(params)) == 6  # sampled with the history, not the first three again

    client, jobs, parents = jobs_and_parent(workdir)
    assert len(jobs) == 6 and len(parents) == 2
    by_trial = {int(r.data.tags["optuna.trial"]): r for r in jobs}
    assert sorted(by_trial) == list(range(6)) and {r.data.tags["optuna.study"] for r in jobs} == {again.study_name}
    for trial in again.trials:  # each trial's value is its run's final validation accuracy (the test's only reports)
        assert trial.value == by_trial[trial.number].data.metrics["val/acc"]
        assert by_trial[trial.number].info.run_name.startswith(f"#{trial.number} ")
    last = max(parents, key=lambda r: r.info.start_time)
    assert json.loads(last.data.tags["search.best_params"]) == again.best_params
    assert set(json.loads(last.data.tags["search.importances"])) == {"model.hidden", "schedule.start", "loss.alpha"}
    # a search's parent sorts like any sweep's: its best by validation, its test accuracy reported
    best = max((r for r in jobs if r.data.tags["mlflow.parentRunId"] == last.info.run_id),
               key=lambda r: r.data.metrics["val/acc"])
    assert last.data.metrics["best/val_acc"] == best.data.metrics["val/acc"] and "best/test_acc" in last.data.metrics


def test_hopeless_trials_are_pruned_at_an_epochs_end(workdir):
    proc = moonprop("-m", "hydra/sweeper=search", "data.num_batches=40", "hydra.sweeper.n_trials=8",
                    "hydra.sweeper.pruner.n_startup_trials=2", "hydra.sweeper.pruner.n_warmup_steps=10", cwd=workdir)
    states = [t.state.name for t in study(workdir).trials]
    assert "PRUNED" in states and "COMPLETE" in states
    client, jobs, (parent,) = jobs_and_parent(workdir)
    pruned = [r for r in jobs if "optuna.pruned" in r.data.tags]
    assert len(pruned) == states.count("PRUNED")
    for run in pruned:  # stopped after the epoch it names, its record ends there, its run is not failed
        epoch = int(run.data.tags["optuna.pruned"].removeprefix("at epoch "))
        assert 10 <= epoch < 40 and run.info.status == "FINISHED"  # judged from the 10th epoch on
        assert max(m.step for m in client.get_metric_history(run.info.run_id, "test/acc")) == epoch
    assert f"{len(pruned)} pruned" in proc.stderr
    assert parent.info.status == "FINISHED" and parent.data.tags["best_run_id"] not in {r.info.run_id for r in pruned}


def test_parallel_workers_share_the_study_and_prune_in_the_workers(workdir):
    moonprop("-m", "hydra/sweeper=search", "data.num_batches=30", "hydra.sweeper.n_trials=4", "hydra.sweeper.n_jobs=2",
             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=workdir, timeout=600)
    trials = study(workdir).trials
    assert len(trials) == 4 and all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
    assert all(len(t.intermediate_values) > 0 for t in trials)  # reported from the workers


def test_the_same_seed_gives_the_same_trials_in_a_fresh_storage(tmp_path):
    runs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        moonprop(*SEARCH, "hydra.sweeper.n_trials=3", "hydra.sweeper.sampler.seed=7", cwd=tmp_path / name)
        runs.append([t.params for t in study(tmp_path / name).trials])
    assert runs[0] == runs[1]


def test_a_journal_file_storage_for_a_clusters_shared_file_system(workdir):
    journal = workdir / "shared" / "search.log"
    moonprop(*SEARCH, "hydra.sweeper.n_trials=2", f"hydra.sweeper.storage=journal:{journal}", cwd=workdir)
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    (summary,) = optuna.get_all_study_summaries(storage)
    assert len(optuna.load_study(study_name=summary.study_name, storage=storage).trials) == 2
    assert not (workdir / "outputs" / "optuna.db").exists()


def test_optuna_dashboard_shows_the_study(workdir):
    moonprop(*SEARCH, "hydra.sweeper.n_trials=2", cwd=workdir)
    name = study(workdir).study_name
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dashboard = Path(sys.executable).with_name("optuna-dashboard")
    proc = subprocess.Popen([str(dashboard), f"sqlite:///{workdir / 'outputs' / 'optuna.db'}", "--host", "127.0.0.1",
                             "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as response:
                    studies = json.loads(response.read())["study_summaries"]
                break
            assert proc.poll() is None and time.monotonic() < deadline, "optuna-dashboard did not start"
            time.sleep(0.5)
        (shown,) = studies
        assert shown["study_name"] == name
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies/{shown['study_id']}", timeout=10) as r:
            assert len(json.loads(r.read())["trials"]) == 2
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_every_value_of_the_space_is_checked_before_the_search_starts(workdir):
    with pytest.raises(ConfigError, match=r"schedule.start=0\.0: a finite learning rate > 0"):
        check(["-m", "hydra/sweeper=search", "schedule.start=interval(0.0, 1.0)"])
    with pytest.raises(ConfigError, match=r"model.hidden\[0\]=0"):
        check(["-m", "hydra/sweeper=search", "model.hidden=choice([8],[0])"])
    for setting, allowed in (("hydra.sweeper.n_jobs=0", "a positive integer"),
                             ("hydra.sweeper.pruner=bogus", "an Optuna pruner"),
                             ("hydra.sweeper.storage=journal:/proc/no/search.log", "a storage in a writable folder")):
        with pytest.raises(ConfigError, match=allowed):
            check(["-m", "hydra/sweeper=search", setting])
    proc = moonprop("-m", "hydra/sweeper=search", "hydra.sweeper.direction=minimize", cwd=workdir, check=False)
    assert proc.returncode == 2 and "hydra.sweeper.direction=minimize: maximize" in proc.stderr
    proc = moonprop("-m", "hydra/sweeper=optuna", cwd=workdir, check=False)  # one search, not two
    assert proc.returncode == 2 and "one of basic, race, search" in proc.stderr
    assert list(workdir.iterdir()) == []
