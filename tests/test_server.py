"""Past one machine: sweeps writing through a real MLflow tracking server whose store is PostgreSQL
(scripts/postgres), whose artifacts it serves itself (`--artifacts-destination`) and which lets in
only its users (`--app-name basic-auth`, the README's recipe), everything read back through it:
many writers at once (joblib, SLURM, a batched sweep of 100 jobs), and the server restarted in the
middle of a sweep."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from mlflow_server import MlflowServer

from .conftest import epoch_images, moonprop, require, signed_in, slurm_is_up, start, team_server

ALICE = ("alice", "alice-pw-Vn3Kq8xR")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[MlflowServer]:
    """The README's team server (conftest.team_server: basic-auth, its store and users in
    PostgreSQL, its artifacts served), and alice signed in through MLflow's own variables for the
    module's commands, as a user exports them: the experiments she creates are hers."""
    with team_server(tmp_path_factory.mktemp("server"), dict([ALICE])) as served, signed_in(*ALICE):
        yield served


def sweep_of(client: MlflowClient, experiment: str):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return parent, [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]


def check_every_record(client: MlflowClient, parent, children, jobs: int, epochs: int, pictures: int) -> None:
    """Every run FINISHED, with every metric point, every picture and its model."""
    assert parent.info.status == "FINISHED" and len(children) == jobs
    for child in children:
        assert child.info.status == "FINISHED", child.data.tags.get("error")
        run = child.info.run_id
        for key, steps in (("test/acc", range(epochs + 1)), ("val/acc", range(epochs + 1)),
                           ("train/loss", range(1, epochs + 1)), ("lr", range(1, epochs + 1))):
            recorded = sorted(m.step for m in client.get_metric_history(run, key))
            assert recorded == list(steps), (child.info.run_name, key)
        assert len(epoch_images(client, run)) == pictures
        (output,) = child.outputs.model_outputs
        assert client.get_logged_model(output.model_id).status.name == "READY"
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "jobs.csv", "summary.md", "boundaries.png", "curves.png"} <= names


def test_parallel_sweep_through_a_tracking_server(server, workdir):
    with_credentials = server.url.replace("http://", f"http://{ALICE[0]}:{ALICE[1]}@")
    moonprop("-m", "data.num_batches=3", "seed=0,1", "schedule=linear,cosine", f"tracking.uri={with_credentials}",
             "tracking.experiment=served", "tracking.registered_model=served", "hydra/launcher=joblib",
             "hydra.launcher.n_jobs=2", cwd=workdir, timeout=600)
    assert not (workdir / "outputs" / "mlflow.db").exists()  # nothing went to the local store

    client = MlflowClient(server.url)
    parent, children = sweep_of(client, "served")
    check_every_record(client, parent, children, jobs=4, epochs=3, pictures=4)
    for child in children:
        assert child.data.params["tracking.uri"] == server.url.replace("http://", "http://***@")
        (output,) = child.outputs.model_outputs
        assert client.get_logged_model(output.model_id).source_run_id == child.info.run_id
        assert {d.tags[0].value for d in child.inputs.dataset_inputs} == {"test", "train", "val"}
        assert ALICE[1] not in str(child.data.params) + str(child.data.tags)
    assert ALICE[1] not in str(parent.data.tags)
    (version,) = client.search_model_versions("name = 'served'")  # the sweep's best only
    assert version.run_id == parent.data.tags["best_run_id"]
    assert client.get_model_version_by_alias("served", "sweep-best").version == version.version


def test_a_slurm_sweep_of_16_jobs_through_a_tracking_server(server, workdir):
    """The README's recipe for a cluster: SLURM jobs log through a tracking server on PostgreSQL,
    not a shared SQLite file, and need no shared folder for their artifacts."""
    require(slurm_is_up(), "no SLURM cluster with an idle node: run `scripts/slurm-cluster start` as root")
    moonprop("-m", "data.num_batches=10", "plot.every_n_epochs=5", "seed=range(0,16)", f"tracking.uri={server.url}",
             "tracking.experiment=cluster", "hydra/launcher=slurm", cwd=workdir, timeout=900)
    assert not (workdir / "outputs" / "mlflow.db").exists()
    client = MlflowClient(server.url)
    parent, children = sweep_of(client, "cluster")
    check_every_record(client, parent, children, jobs=16, epochs=10, pictures=3)
    assert len(list(workdir.glob("outputs/sweeps/*/.submitit/*/*_log.out"))) == 16  # ran as SLURM jobs


def test_a_batched_sweep_of_100_jobs_through_a_tracking_server(server, workdir):
    moonprop("-m", "data.num_batches=10", "plot.every_n_epochs=5", "seed=range(0,100)", f"tracking.uri={server.url}",
             "tracking.experiment=batched", "hydra/launcher=batched", cwd=workdir, timeout=900)
    client = MlflowClient(server.url)
    parent, children = sweep_of(client, "batched")
    check_every_record(client, parent, children, jobs=100, epochs=10, pictures=3)


def first_point_recorded(client: MlflowClient, experiment: str) -> bool:
    """Whether a run of `experiment` has its first test point. The server makes an experiment and
    then, in a hook after the request, gives its creator the right to read it: between the two, a
    reader who polls is refused (403), which here only means "not yet"."""
    try:
        found = client.get_experiment_by_name(experiment)
    except MlflowException as refused:
        if refused.get_http_status_code() == 403:
            return False
        raise
    return bool(found and client.search_runs([found.experiment_id], "metrics.`test/acc` >= 0"))


def test_a_server_restarted_in_the_middle_of_a_sweep_loses_nothing(server, workdir):
    """The server stops and starts again a few seconds later while the sweep writes: the recorder
    says so in one line and MLflow's retries (about a minute) carry every write over."""
    proc = start("-m", "data.num_batches=400", "plot.every_n_epochs=100", "seed=0,1,2", f"tracking.uri={server.url}",
                 "tracking.experiment=restarted", cwd=workdir)
    client = MlflowClient(server.url)
    deadline = time.monotonic() + 120
    while not first_point_recorded(client, "restarted"):
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1][-3000:]
        time.sleep(0.3)
    server.stop()
    stopped = time.monotonic()
    time.sleep(3)
    server.start()
    assert time.monotonic() - stopped < 15  # stopped and started again within ~10 s
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "moonprop: the tracking server did not answer" in err and "Retrying" not in err
    parent, children = sweep_of(client, "restarted")
    check_every_record(client, parent, children, jobs=3, epochs=400, pictures=5)
