"""A parallel sweep against a real MLflow tracking server, everything read back through it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from mlflow import MlflowClient

from .conftest import epoch_images, mlflow_command, moonprop, require, slurm_is_up


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 with its own SQLite store and artifact folder."""
    root = tmp_path_factory.mktemp("server")
    with mlflow_command("server", "--backend-store-uri", f"sqlite:///{root / 'server.db'}",
                        "--artifacts-destination", str(root / "art"), log=root / "server.log") as url:
        yield url


def test_parallel_sweep_through_a_tracking_server(server, workdir):
    with_credentials = server.replace("http://", "http://alice:s3cret@")
    moonprop("-m", "data.num_batches=3", "seed=0,1", "schedule=linear,cosine",
             f"tracking.uri={with_credentials}", "tracking.experiment=served", "tracking.registered_model=served",
             "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", cwd=workdir, timeout=600)
    assert not (workdir / "outputs" / "mlflow.db").exists()  # nothing went to the local store

    client = MlflowClient(server)
    exp = client.get_experiment_by_name("served").experiment_id
    runs = client.search_runs([exp])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 4 and {c.info.status for c in children} == {"FINISHED"}
    assert parent.info.status == "FINISHED"
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "test/acc")] == [0, 1, 2, 3]
        assert len(epoch_images(client, child.info.run_id)) == 4
        assert child.data.params["tracking.uri"] == server.replace("http://", "http://***@")
        # the network as a logged model, through the server's artifact proxy; the datasets
        (output,) = child.outputs.model_outputs
        assert client.get_logged_model(output.model_id).source_run_id == child.info.run_id
        assert {d.tags[0].value for d in child.inputs.dataset_inputs} == {"test", "train", "val"}
        assert "s3cret" not in str(child.data.params) + str(child.data.tags)
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"summary.csv", "summary.md", "boundaries.png", "curves.png"} <= names
    assert "s3cret" not in str(parent.data.tags)
    (version,) = client.search_model_versions("name = 'served'")  # the sweep's best only
    assert version.run_id == parent.data.tags["best_run_id"]
    assert client.get_model_version_by_alias("served", "sweep-best").version == version.version


def test_slurm_sweep_through_a_tracking_server(server, workdir):
    """The README's recipe for a cluster: SLURM jobs log through a tracking server, not a shared
    SQLite file; every job nested under the sweep's parent, everything read back through it."""
    require(slurm_is_up(), "no SLURM cluster with an idle node: run `scripts/slurm-cluster start` as root")
    moonprop("-m", "data.num_batches=3", "seed=0,1", f"tracking.uri={server}", "tracking.experiment=cluster",
             "hydra/launcher=slurm", cwd=workdir, timeout=600)
    assert not (workdir / "outputs" / "mlflow.db").exists()
    client = MlflowClient(server)
    runs = client.search_runs([client.get_experiment_by_name("cluster").experiment_id])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(children) == 2 and {r.info.status for r in runs} == {"FINISHED"}
    for child in children:
        assert [m.step for m in client.get_metric_history(child.info.run_id, "test/acc")] == [0, 1, 2, 3]
        assert "boundary.png" in {a.path for a in client.list_artifacts(child.info.run_id)}
    assert list(workdir.glob("outputs/sweeps/*/.submitit/*/*_log.out"))  # ran as SLURM jobs
