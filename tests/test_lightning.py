"""Lightning's conventions and moonprop from Python: the module under a plain `pl.Trainer` with
Lightning's own loggers and callbacks, any Trainer argument and callback from the config, MLflow
tags and system metrics, and `moonprop.run` / `moonprop.build` in a process and in Jupyter."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import pytorch_lightning as pl
from mlflow import MlflowClient
from pytorch_lightning.callbacks import EarlyStopping, ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, MLFlowLogger

import moonprop

from .conftest import moonprop as moonprop_cli
from .conftest import only_run


def plain_trainer(**kwargs) -> pl.Trainer:
    """A Lightning user's own Trainer: no progress bar, no moonprop callback."""
    return pl.Trainer(accelerator="cpu", enable_progress_bar=False, enable_model_summary=False, **kwargs)


def test_under_a_plain_trainer_lightnings_callbacks_see_the_metrics(tmp_path):
    module, data = moonprop.build(["data.num_batches=60"])
    stop = EarlyStopping(monitor="val/acc", mode="max", patience=3)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val/acc", mode="max")
    trainer = plain_trainer(max_epochs=data.cfg.num_batches, callbacks=[stop, best], logger=False)
    trainer.fit(module, datamodule=data)
    assert 0 < trainer.current_epoch < 60 and stop.stopped_epoch > 0  # it stopped on val/acc
    assert {"train/loss", "lr", "val/acc", "val/loss", "test/acc", "test/loss"} <= set(trainer.callback_metrics)
    assert Path(best.best_model_path).is_file() and best.best_model_score is not None


def test_under_a_plain_trainer_lightnings_loggers_write_the_metrics(tmp_path):
    module, data = moonprop.build(["data.num_batches=5", "optimizer=momentum", "schedule.start=0.3"])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    loggers = [CSVLogger(tmp_path / "csv"), MLFlowLogger(experiment_name="plain", tracking_uri=uri)]
    plain_trainer(max_epochs=5, logger=loggers).fit(module, datamodule=data)
    (metrics,) = (tmp_path / "csv").rglob("metrics.csv")
    rows = list(csv.DictReader(metrics.open()))
    assert sum(bool(r["test/acc"]) for r in rows) == 5 and sum(bool(r["train/loss"]) for r in rows) == 5
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("plain").experiment_id])
    assert len(client.get_metric_history(run.info.run_id, "test/acc")) == 5
    # the module's hyperparameters (save_hyperparameters), as Lightning's logger flattens them
    assert (run.data.params["optimizer/name"], run.data.params["schedule/start"]) == ("momentum", "0.3")


def test_any_trainer_argument_passes_through(workdir):
    proc = moonprop_cli("data.num_batches=4", "trainer.precision=64", "+trainer.profiler=simple",
                        "trainer.gradient_clip_val=0.5", cwd=workdir)
    assert "FINISHED" in proc.stderr and "Profiler Report" in proc.stdout + proc.stderr
    run = only_run(workdir)
    assert (run.data.params["trainer.precision"], run.data.params["trainer.profiler"]) == ("64", "simple")
    assert run.data.params["trainer.gradient_clip_val"] == "0.5" and run.info.status == "FINISHED"


@pytest.mark.parametrize("override, says", [
    ("+trainer.precison=64", "trainer.precison=64: not an argument of Lightning's Trainer; did you mean "
                             "trainer.precision?"),
    ("trainer.max_epochs=5", "trainer.max_epochs=5: moonprop sets it: use data.num_batches"),
    ("+trainer.logger=true", "trainer.logger=True: moonprop sets it: use the logger group"),
    ("trainer.profiler=simple", "add it with +trainer.profiler=simple"),
    ("trainer.precision=65", "trainer.precision=65: Precision 65 is invalid"),
    ("+callbacks.mine._target_=os.system", "a _target_ comes from a config file, not the command line"),
    ("callbacks.early_stopping._target_=os.system", "a _target_ comes from a config file"),
])
def test_trainer_arguments_and_callbacks_are_checked_in_one_line(workdir, override, says):
    proc = moonprop_cli(override, cwd=workdir, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert says in proc.stderr and not (workdir / "outputs").exists()


def test_callbacks_from_the_config_group_and_from_the_users_own_folder(workdir, tmp_path_factory):
    moonprop_cli("callbacks=[early_stopping]", "callbacks.early_stopping.patience=2", "data.num_batches=200",
                 "plot.every_n_epochs=50", "tracking.run_name=stopped", cwd=workdir)
    run = only_run(workdir)
    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "test/acc")]
    assert run.info.status == "FINISHED" and max(steps) < 200  # stopped early, and says so in its record
    model = client.get_logged_model(run.outputs.model_outputs[0].model_id)
    assert {m.step for m in model.metrics} == {max(steps)}  # the model's metrics are its last epoch's
    # a callback of the user's own, from their config folder: `_target_` in a file they wrote
    mine = tmp_path_factory.mktemp("mine")
    (mine / "callbacks").mkdir()
    (mine / "callbacks" / "count.yaml").write_text("count:\n  _target_: counting.CountEpochs\n  path: epochs.json\n")
    (mine / "counting.py").write_text(textwrap.dedent("""
        import json, pytorch_lightning as pl
        class CountEpochs(pl.Callback):
            def __init__(self, path):
                self.path, self.epochs = path, 0
            def on_train_epoch_end(self, trainer, pl_module):
                self.epochs += 1
                json.dump({"epochs": self.epochs, "acc": float(trainer.callback_metrics["test/acc"])},
                          open(self.path, "w"))
        """))
    moonprop_cli("-cd", str(mine), "callbacks=[count]", "data.num_batches=7", cwd=workdir,
                 env={"PYTHONPATH": str(mine)})
    assert json.loads((workdir / "epochs.json").read_text())["epochs"] == 7


def test_tags_and_mlflows_system_metrics(workdir):
    moonprop_cli("+tracking.tags.team=moons", "+tracking.tags.ticket=MP-7", "tracking.system_metrics=true",
                 "data.num_batches=300", "plot.every_n_epochs=100", "tracking.run_name=tagged", cwd=workdir)
    moonprop_cli("data.num_batches=300", "plot.every_n_epochs=100", "tracking.run_name=by-env", cwd=workdir,
                 env={"MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING": "true"})
    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])}
    assert (runs["tagged"].data.tags["team"], runs["tagged"].data.tags["ticket"]) == ("moons", "MP-7")
    for name in ("tagged", "by-env"):
        assert any(key.startswith("system/cpu_utilization") for key in runs[name].data.metrics), name


RUN_TWICE = """
import signal, sys
import moonprop

handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
first = moonprop.run(["data.num_batches=3", "tracking.run_name=first"])
second = moonprop.run(["data.num_batches=4", "data=circles", "tracking.run_name=second"])
assert handlers == {s: signal.getsignal(s) for s in handlers}
try:
    moonprop.run(["data.batch_size=0"])
except moonprop.ConfigError as e:
    refused = str(e)
import mlflow, numpy as np
mlflow.set_tracking_uri("sqlite:///outputs/mlflow.db")
scores = mlflow.pyfunc.load_model(second.model_uri).predict(np.zeros((3, 2), dtype=np.float32))
print({"first": first._asdict() | {"run_dir": str(first.run_dir)}, "second": second.run_id, "refused": refused,
       "scores": len(scores), "second_dir": second.run_dir.is_dir()})
"""


def test_moonprop_run_from_python_twice_in_one_process(workdir):
    proc = subprocess.run([sys.executable, "-c", RUN_TWICE], cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = eval(proc.stdout.strip().splitlines()[-1])  # the dict printed above
    assert out["refused"] == "invalid config: data.batch_size=0: a positive integer"
    assert out["scores"] == 3 and out["second_dir"]
    first = out["first"]
    assert set(first["metrics"]) == {"val/acc", "val/loss", "test/acc", "test/loss", "train/loss", "lr"}
    assert first["model_uri"].startswith("models:/m-")
    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    run = client.get_run(first["run_id"])
    # the record the CLI makes: its name, params, source, metrics
    assert run.info.run_name == "first" and run.data.params["data.num_batches"] == "3"
    assert run.data.tags["mlflow.source.name"] == "moonprop data.num_batches=3 tracking.run_name=first"
    assert run.data.metrics["test/acc"] == first["metrics"]["test/acc"]
    assert Path(first["run_dir"], ".hydra", "config.yaml").is_file()


def test_moonprop_run_in_a_jupyter_kernel(workdir):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    cells = ["import moonprop",
             "a = moonprop.run(['data.num_batches=2', 'tracking.run_name=nb'])",
             "b = moonprop.run(['data.num_batches=2', 'model.activation=tanh'])",
             "assert a.run_id != b.run_id and 0 < b.metrics['test/acc'] <= 1",
             "try:\n    moonprop.run(['model.activation=swish'])\nexcept moonprop.ConfigError as e:\n    print(e)"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    kernel = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    kernel.execute()
    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert "invalid config: model.activation=swish: one of relu" in printed
    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    assert len(client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])) == 2
