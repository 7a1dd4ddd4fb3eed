"""A run's trained network as an MLflow model: written, logged, linked to its run, its final metrics
and its test set, and registered.

The network comes from the trainer as TorchScript, so that anyone can load it with MLflow alone,
with or without moonprop: `mlflow.pytorch.load_model(uri)` gives the network, and
`mlflow.pyfunc.load_model(uri).predict(points)` its scores (score > 0: the lower moon, +1).

This runs in the recorder, which does not import torch: the model's folder is written the way
`mlflow.pytorch.save_model` writes it for a TorchScript module (mlflow_internals.save_torchscript,
which says why); everything else goes through MlflowClient.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from mlflow import MlflowClient
from mlflow.entities import LoggedModelOutput, LoggedModelStatus, Metric
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.types import Schema, TensorSpec

from moonprop.mlflow_internals import save_torchscript

NAME = "model"  # the logged model's name, as MLflow's `log_model(name="model")` would call it
MODEL_TYPE = "moonprop-mlp"
# points (n, 2) -> scores (n,), both float32, as the network takes and gives them
SIGNATURE = ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 2))]),
                           outputs=Schema([TensorSpec(np.dtype(np.float32), (-1,))]))
# the upper moon's middle, the space between the moons, the lower moon's middle
INPUT_EXAMPLE = np.array([[0.0, 1.0], [0.5, 0.25], [1.0, -0.5]], dtype=np.float32)
BEST_ALIAS = "sweep-best"  # a sweep registers only its best job's model, under this alias


def log(client: MlflowClient, run_id: str, torchscript: bytes, torch_version: str, step: int,
        test_set: tuple[str, str] | None = None, registered_model: str | None = None,
        known: tuple[str, dict[str, str], dict[str, Metric]] | None = None) -> str:
    """Log the network as the run's model at `step` (its last epoch): listed in the experiment's
    Models tab with the run's final test/acc and test/loss (evaluated on `test_set`, the dataset's
    name and digest), and registered as a new version of `registered_model` if given. Its id.
    `known`: the run's experiment, params and final test metrics by key, which are otherwise read back."""
    if known is None:
        run, last = client.get_run(run_id), {}
        for key in ("test/acc", "test/loss"):
            last |= {m.key: m for m in client.get_metric_history(run_id, key) if m.step == step}
        known = (run.info.experiment_id, run.data.params, last)
    experiment_id, params, by_key = known
    final_metrics = list(by_key.values())
    model = client.create_logged_model(experiment_id, name=NAME, source_run_id=run_id,
                                       params=params, model_type=MODEL_TYPE)
    with tempfile.TemporaryDirectory() as tmp:
        save_torchscript(Path(tmp), torchscript, torch_version, run_id, model.model_id, SIGNATURE, INPUT_EXAMPLE)
        client.log_model_artifacts(model.model_id, tmp)
    client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)
    client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step)])
    # The run's last test metrics again, now naming the model and the test set: the same key,
    # value, step and time, so the run's own history is unchanged (MLflow keeps one of each).
    finals = [Metric(m.key, m.value, m.timestamp, step, model_id=model.model_id,
                     dataset_name=test_set[0] if test_set else None,
                     dataset_digest=test_set[1] if test_set else None) for m in final_metrics]
    if finals:
        client.log_batch(run_id, metrics=finals)
    if registered_model:
        register(client, registered_model, model.model_id, run_id)
    return model.model_id


def register(client: MlflowClient, name: str, model_id: str, run_id: str, alias: str | None = None,
             tags: dict[str, str] | None = None) -> str:
    """A new version of the registered model `name` (created if new) from the logged model; with
    `alias`, that alias moves to it. The version."""
    try:
        client.create_registered_model(name)
    except MlflowException as e:
        if e.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    # its artifacts' own location as the source: a `models:/` one is resolved against the process's
    # global tracking URI, not this client's
    source = client.get_logged_model(model_id).artifact_location
    version = client.create_model_version(name, source=source, run_id=run_id, model_id=model_id, tags=tags)
    if alias:
        client.set_registered_model_alias(name, alias, version.version)
    return str(version.version)


def model_id_of(client: MlflowClient, run_id: str) -> str | None:
    """The model a run logged, if it logged one."""
    outputs = client.get_run(run_id).outputs
    models = outputs.model_outputs if outputs else []
    return models[-1].model_id if models else None

