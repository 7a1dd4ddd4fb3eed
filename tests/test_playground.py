"""TensorFlow Playground's knobs: input features (model.features) and a finite training set
(data.train_size), end to end: trained, recorded, logged as a model that takes points, scored again."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from mlflow import MlflowClient

import moonprop

from .conftest import check, default_store, make_config
from .conftest import moonprop as moonprop_cli


@pytest.fixture
def store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_with_squares_a_network_without_hidden_layers_separates_the_circles(store):
    """Playground's lesson: a linear classifier cannot separate a circle from the ring around it;
    on x1^2 and x2^2 it can, and its MLflow model still takes points (n, 2)."""
    common = ["data=circles", "model.hidden=[]", "data.num_batches=100", "plot.every_n_epochs=100",
              f"tracking.uri={store}"]
    plain = moonprop.run(common)
    squares = moonprop.run([*common, "model.features=[sq_x1,sq_x2]"])
    assert plain.metrics["test/acc"] < 0.7
    assert squares.metrics["test/acc"] >= 0.99
    client = MlflowClient(store)
    artifacts = {r.run_id: {a.path for a in client.list_artifacts(r.run_id)} for r in (plain, squares)}
    assert "features.png" in artifacts[squares.run_id] and "features.png" not in artifacts[plain.run_id]
    import mlflow

    mlflow.set_tracking_uri(store)
    model = mlflow.pyfunc.load_model(squares.model_uri)
    scores = model.predict(np.array([[0.0, 0.0], [0.5, 0.0], [0.0, -1.0], [0.7, 0.7]], dtype=np.float32))
    assert list(np.sign(scores)) == [1, 1, -1, -1]  # inside the inner circle +1, on the outer one -1
    assert client.get_run(squares.run_id).data.params["model.features"] == "['sq_x1', 'sq_x2']"
    # scored again from its MLflow model: the features come back with the network
    evaluated = moonprop.evaluate(model_uri=squares.model_uri, overrides=["data=circles", f"tracking.uri={store}"])
    assert evaluated.metrics["test/acc"] == squares.metrics["test/acc"]


def test_a_small_training_set_over_fits_and_the_record_shows_it(store):
    """experiment=overfit's smallest set: the whole training set's accuracy (train/acc, every
    epoch from the untrained network on) reaches 1 while the test accuracy falls from its best and
    the test loss rises; the training set is the run's dataset input."""
    result = moonprop.run(["experiment=overfit", "hydra.mode=RUN", "data.train_size=20", "plot.every_n_epochs=600",
                           f"tracking.uri={store}"])
    client = MlflowClient(store)

    def history(key):
        return [m.value for m in sorted(client.get_metric_history(result.run_id, key), key=lambda m: m.step)]

    train, test, test_loss = history("train/acc"), history("test/acc"), history("test/loss")
    assert len(train) == len(test) == 601
    assert train[-1] == 1.0 and test[-1] < max(test) and test_loss[-1] > min(test_loss) + 0.05
    (train_set,) = [d for d in client.get_run(result.run_id).inputs.dataset_inputs
                    if d.tags[0].value == "train"]
    assert '"points": "20"' in train_set.dataset.source


@pytest.mark.parametrize("override, key, allowed", [
    ("model.features=[x1,x3]", "model.features[1]", "one of x1, x2, sq_x1, sq_x2, x1x2, sin_x1, sin_x2"),
    ("model.features=[x1^2]", "model.features[0]", "(x1^2 is sq_x1)"),
    ("model.features=[x1,x1]", "model.features", "each once"),
    ("model.features=[]", "model.features", "one or more"),
    ("data.train_size=10", "data.train_size", "a number of points >= data.batch_size (50)"),
    ("data.train_size=0", "data.train_size", "null (a fresh batch every epoch)"),
])
def test_bad_features_and_training_sizes_are_refused_in_one_line(override, key, allowed):
    with pytest.raises(moonprop.ConfigError) as err:
        make_config(override.replace("x1^2", "'x1^2'"))
    assert err.value.key == key and allowed in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_a_search_over_features_and_training_sizes_in_parallel_workers(workdir):
    """Both knobs in a search space, its trials run by joblib's workers: each trial's run records
    the features and training set it drew; a bad value in the space is refused before any trial."""
    proc = moonprop_cli("-m", "hydra/sweeper=search", "hydra/launcher=joblib", "hydra.sweeper.n_trials=4",
                        "hydra.sweeper.n_jobs=2", "data=circles", "model.hidden=[]", "data.num_batches=30",
                        "data.batch_size=20", "model.features=choice([x1,x2],[sq_x1,sq_x2])",
                        "data.train_size=choice(20,200)", cwd=workdir)
    assert proc.returncode == 0, proc.stderr[-2000:]
    client = default_store(workdir)
    jobs = [r for r in client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
            if "mlflow.parentRunId" in r.data.tags]
    assert len(jobs) == 4
    for run in jobs:
        assert run.data.params["model.features"] in ("['x1', 'x2']", "['sq_x1', 'sq_x2']")
        assert run.data.params["data.train_size"] in ("20", "200") and "train/acc" in run.data.metrics
    (parent,) = {r.data.tags["mlflow.parentRunId"] for r in jobs}
    with open(client.download_artifacts(parent, "jobs.csv", str(workdir))) as f:
        table = list(csv.DictReader(f))
    assert sorted(float(row["train_acc"]) for row in table) == sorted(r.data.metrics["train/acc"] for r in jobs)
    with pytest.raises(moonprop.ConfigError, match=r"model.features\[0\]=x3"):
        check(["-m", "hydra/sweeper=search", "model.features=choice([x1,x2],[x3])"])
    proc = moonprop_cli("model.features=[x1^2,x2^2]", cwd=workdir, check=False)  # Playground's spelling, unquoted
    assert proc.returncode == 2 and "model.features names x1^2 sq_x1" in proc.stderr.strip().splitlines()[-1]


def test_debug_overfit_is_lightnings_overfit_batches_on_one_batch(workdir):
    """debug=overfit: one batch, the same every epoch, learnt by heart, in the debug store; Lightning's
    own spelling is pointed at it."""
    moonprop_cli("debug=overfit", cwd=workdir)
    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'debug' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("debug").experiment_id])
    assert run.data.params["data.train_size"] == run.data.params["data.batch_size"] == "50"
    assert run.data.metrics["train/acc"] == 1.0
    assert not (workdir / "outputs" / "mlflow.db").exists()  # the user's store gets nothing
    proc = moonprop_cli("+trainer.overfit_batches=1", cwd=workdir, check=False)
    assert proc.returncode == 2 and "debug=overfit" in proc.stderr
