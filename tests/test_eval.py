"""`moonprop-eval`: a checkpoint or a run's MLflow model scored on a test set of the user's choosing,
recorded as an MLflow run of its own, tagged with the run it came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from moonprop.config import MoonsData
from moonprop.data import _TEST as TEST  # the test set's stream of random numbers
from moonprop.data import points
from moonprop.evaluation import EVALUATED_RUN_TAG, EVALUATED_TAG
from moonprop.loggers import BEST_CHECKPOINT_TAG
from moonprop.model import accuracy

from .conftest import default_store, epoch_images
from .conftest import moonprop as moonprop_cli


def moonprop_eval(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from moonprop.cli import evaluate_main; evaluate_main()", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300, env=dict(os.environ))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, str, str, str]:
    """A run with its best checkpoint: the folder, the run id, the checkpoint, the model URI."""
    folder = tmp_path_factory.mktemp("eval")
    moonprop_cli("data.num_batches=15", "plot.every_n_epochs=15", "callbacks=[checkpoint]", cwd=folder)
    client = default_store(folder)
    (run,) = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    model_uri = f"models:/{run.outputs.model_outputs[0].model_id}"
    return folder, run.info.run_id, run.data.tags[BEST_CHECKPOINT_TAG], model_uri


def evaluations(folder: Path):
    client = default_store(folder)
    runs = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    return client, [r for r in runs if EVALUATED_TAG in r.data.tags]


def test_a_checkpoint_scored_on_a_test_set_of_another_seed_and_size(trained):
    folder, source, checkpoint, _ = trained
    proc = moonprop_eval(f"ckpt_path={checkpoint}", "data.test_size=3000", "seed=7", cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    client, (run,) = evaluations(folder)
    assert run.info.status == "FINISHED" and run.data.tags[EVALUATED_RUN_TAG] == source
    assert set(run.data.metrics) == {"test/acc", "test/loss"}  # no Lightning "epoch", each point written once
    assert len(client.get_metric_history(run.info.run_id, "test/acc")) == 1
    assert run.data.params["data.test_size"] == "3000" and run.data.params["seed"] == "7"
    (dataset,) = run.inputs.dataset_inputs
    assert dataset.tags[0].value == "test" and '"points": "3000"' in dataset.dataset.source
    # the value Lightning's trainer.test gives, recomputed here from the checkpoint's weights
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    x, y = points(MoonsData(test_size=3000), 3000, 7, TEST)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                              torch.nn.Linear(16, 1))
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items()})
    with torch.no_grad():
        expected = accuracy(net(x).squeeze(-1), y)
    assert run.data.metrics["test/acc"] == pytest.approx(expected, abs=1e-6)
    assert f"test acc {expected:.3f}" in proc.stderr and source in proc.stderr
    assert len(epoch_images(client, run.info.run_id)) == 1  # the boundary on that test set


def test_an_mlflow_model_scored_on_noisier_moons(trained):
    folder, source, _, model_uri = trained
    proc = moonprop_eval(f"model_uri={model_uri}", "data.noise=0.3", cwd=folder)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, runs = evaluations(folder)
    (run,) = [r for r in runs if r.data.tags[EVALUATED_TAG] == model_uri]
    assert run.data.tags[EVALUATED_RUN_TAG] == source and run.data.params["data.noise"] == "0.3"
    mlflow.set_tracking_uri(f"sqlite:///{folder / 'outputs' / 'mlflow.db'}")
    x, y = points(MoonsData(noise=0.3), 1000, 0, TEST)
    scores = mlflow.pyfunc.load_model(model_uri).predict(x.numpy())
    assert run.data.metrics["test/acc"] == pytest.approx(float(np.mean((np.ravel(scores) > 0) == (y.numpy() > 0))))


@pytest.mark.parametrize("args, says", [
    ([], "ckpt_path=None: a checkpoint's path, or model_uri= an MLflow model's URI (one of them)"),
    (["ckpt_path=x.ckpt", "model_uri=models:/m-1"], "a checkpoint's path, or model_uri="),
    (["ckpt_path=missing.ckpt"], "ckpt_path=missing.ckpt: an existing checkpoint file"),
    (["model_uri=models:/m-0"], "model_uri=models:/m-0: an MLflow model in sqlite:///"),
    (["CHECKPOINT", "data.test_size=0"], "data.test_size=0: a positive integer"),
    (["CHECKPOINT", "-m", "seed=1,2"], "the overrides of one config"),
])
def test_bad_input_is_refused_in_one_line_before_any_run(trained, args, says):
    folder, _, checkpoint, _ = trained
    before = len(evaluations(folder)[1])
    proc = moonprop_eval(*[f"ckpt_path={checkpoint}" if a == "CHECKPOINT" else a for a in args], cwd=folder)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("moonprop-eval: invalid config: ") and says in proc.stderr
    assert len(evaluations(folder)[1]) == before


EVALUATE_FROM_PYTHON = """
import sys
import moonprop

scored = moonprop.evaluate(ckpt_path=sys.argv[1], overrides=["seed=11", "data=moons", "data.test_size=500"])
try:
    moonprop.evaluate(model_uri="models:/m-0", ckpt_path=sys.argv[1])
except moonprop.ConfigError as e:
    refused = str(e)
print(repr((scored.run_id, scored.metrics, scored.evaluated_run_id, refused)))
"""


def test_evaluate_from_python(trained):
    folder, source, checkpoint, _ = trained
    proc = subprocess.run([sys.executable, "-c", EVALUATE_FROM_PYTHON, checkpoint], cwd=folder, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id, metrics, evaluated, refused = eval(proc.stdout.strip().splitlines()[-1])
    client, runs = evaluations(folder)
    (run,) = [r for r in runs if r.info.run_id == run_id]
    assert evaluated == source and run.data.tags[EVALUATED_RUN_TAG] == source
    assert metrics == {"test/acc": run.data.metrics["test/acc"], "test/loss": run.data.metrics["test/loss"]}
    assert run.data.params["seed"] == "11" and run.data.params["data.test_size"] == "500"
    assert refused.startswith("invalid config: ckpt_path=") and "(one of them)" in refused
