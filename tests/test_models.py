"""The trained network as an MLflow model, checked as an MLflow user would: the logged model linked
to its run and its final metrics, loaded through pyfunc and pytorch, served by `mlflow models
serve`, registered; the run's datasets and sources."""

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

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from moonprop.config import MoonsData
from moonprop.data import MoonsDataModule

from .conftest import default_store, moonprop

EPOCHS = 20


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """Two runs registered under one name, and a sweep registering its best; MLflow's global
    tracking URI points at their store, as `MLFLOW_TRACKING_URI` would for a user."""
    work = tmp_path_factory.mktemp("models")
    for seed in (0, 1):
        moonprop(f"data.num_batches={EPOCHS}", f"seed={seed}", f"tracking.run_name=seed{seed}",
                 "tracking.registered_model=moons", cwd=work)
    moonprop("-m", "data.num_batches=5", "seed=0,1,2", "tracking.registered_model=sweepy",
             "tracking.experiment=swept", cwd=work)
    client = default_store(work)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        yield work, client
    finally:
        mlflow.set_tracking_uri(previous)


def run_named(client: MlflowClient, name: str, experiment: str = "moonprop"):
    exp = client.get_experiment_by_name(experiment).experiment_id
    (run,) = client.search_runs([exp], f"attributes.run_name = '{name}'")
    return run


def test_each_run_logs_its_network_as_a_model_with_its_final_metrics(store):
    _, client = store
    run = run_named(client, "seed0")
    (output,) = run.outputs.model_outputs
    assert output.step == EPOCHS
    model = client.get_logged_model(output.model_id)
    assert (model.source_run_id, str(model.status), model.name) == (run.info.run_id, "READY", "model")
    assert model.params == run.data.params
    finals = {m.key: m for m in model.metrics}
    assert finals["test/acc"].value == run.data.metrics["test/acc"] and finals["test/acc"].step == EPOCHS
    assert finals["test/loss"].value == run.data.metrics["test/loss"]
    assert finals["test/acc"].dataset_name == "moons-test"
    # the run's own history is what it was: one value a step
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/acc")] == list(range(EPOCHS + 1))
    exp = run.info.experiment_id
    assert {m.source_run_id for m in client.search_logged_models([exp])} == {
        run.info.run_id, run_named(client, "seed1").info.run_id}  # the experiment's Models tab

    info = mlflow.models.get_model_info(f"models:/{model.model_id}")
    assert str(info.signature.inputs) == "[Tensor('float32', (-1, 2))]"
    assert str(info.signature.outputs) == "[Tensor('float32', (-1,))]"
    assert set(info.flavors) == {"pytorch", "python_function"}
    from mlflow.models.utils import load_serving_example

    example = load_serving_example(f"models:/{model.model_id}")
    assert np.array(json.loads(example)["inputs"]).shape == (3, 2)


def test_pyfunc_gives_the_scores_and_pytorch_the_network(store):
    _, client = store
    run = run_named(client, "seed0")
    uri = f"models:/{run.outputs.model_outputs[0].model_id}"
    points, labels = MoonsDataModule(MoonsData(), 0).test  # the run's test set
    scores = mlflow.pyfunc.load_model(uri).predict(points.numpy())
    assert scores.shape == (1000,) and scores.dtype == np.float32
    # score > 0 is the lower moon (+1), as in training: the run's own final test accuracy
    assert np.mean((scores > 0) == (labels.numpy() > 0)) == run.data.metrics["test/acc"]
    net = mlflow.pytorch.load_model(uri)
    assert sum(p.numel() for p in net.parameters()) == 337
    np.testing.assert_allclose(net(points).detach().numpy(), scores, rtol=1e-6)


def test_mlflow_models_serve_answers_with_the_scores(store):
    work, client = store
    run = run_named(client, "seed0")
    uri = f"models:/{run.outputs.model_outputs[0].model_id}"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    log = open(work / "serve.log", "w")
    server = subprocess.Popen([str(mlflow_cli), "models", "serve", "-m", uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT,
                              env={**os.environ, "MLFLOW_TRACKING_URI": client.tracking_uri,  # as in an
                                   "PATH": f"{mlflow_cli.parent}:{os.environ['PATH']}"},  # activated venv
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            assert server.poll() is None and time.monotonic() < deadline, (work / "serve.log").read_text()[-2000:]
            time.sleep(0.5)
        points = [[0.0, 1.0], [1.0, -0.5], [0.5, 0.25]]
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", method="POST",
                                         data=json.dumps({"inputs": points}).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:
            served = json.loads(response.read())["predictions"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    expected = mlflow.pyfunc.load_model(uri).predict(np.array(points, dtype=np.float32))
    np.testing.assert_allclose(served, expected, rtol=1e-6)
    assert served[0] < 0 < served[1]  # the upper moon's middle, the lower moon's


def test_each_run_is_a_new_version_of_its_registered_model(store):
    _, client = store
    versions = sorted(client.search_model_versions("name = 'moons'"), key=lambda v: int(v.version))
    assert [v.run_id for v in versions] == [run_named(client, "seed0").info.run_id,
                                            run_named(client, "seed1").info.run_id]
    version = mlflow.pyfunc.load_model("models:/moons/2").predict(np.zeros((1, 2), dtype=np.float32))
    assert version.shape == (1,)


def test_a_sweep_registers_only_its_best_job_under_an_alias(store):
    _, client = store
    exp = client.get_experiment_by_name("swept").experiment_id
    (parent,) = client.search_runs([exp], "tags.`sweep.id` != '' and attributes.run_name LIKE 'sweep %'")
    (version,) = client.search_model_versions("name = 'sweepy'")
    assert version.run_id == parent.data.tags["best_run_id"]
    assert client.get_model_version_by_alias("sweepy", "sweep-best").version == version.version
    assert version.tags["sweep.id"] == parent.data.tags["sweep.id"]
    assert parent.data.tags["best_model_version"] == f"sweepy/{version.version}"


def test_datasets_and_sources_are_recorded(store):
    _, client = store
    runs = [run_named(client, "seed0"), run_named(client, "seed1")]
    inputs = [{d.tags[0].value: d.dataset for d in run.inputs.dataset_inputs} for run in runs]
    assert all(set(i) == {"test", "train", "val"} for i in inputs)
    test0, test1 = inputs[0]["test"], inputs[1]["test"]
    assert (test0.name, test0.source_type) == ("moons-test", "code")
    assert test0.digest != test1.digest  # another seed, other points
    source = json.loads(test0.source)["tags"]
    assert (source["points"], source["noise"], source["seed"]) == ("1000", "0.1", "0")
    run = runs[0]
    tags = run.data.tags
    assert tags["mlflow.source.name"] == f"moonprop data.num_batches={EPOCHS} seed=0 tracking.run_name=seed0 " \
                                         "tracking.registered_model=moons"
    assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.user"]
    assert len(tags["mlflow.source.git.commit"]) == 40
    # the digest follows the data: other settings another digest, the same settings the same one
    assert inputs[0]["train"].digest != inputs[1]["train"].digest
    again = {d["context"]: d["digest"] for d in MoonsDataModule(MoonsData(num_batches=EPOCHS), 0).datasets()}
    assert again == {"test": test0.digest, "train": inputs[0]["train"].digest, "val": inputs[0]["val"].digest}
