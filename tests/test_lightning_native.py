"""Native to Lightning: moonprop's MLflow record is a Lightning Logger, Lightning's loggers sit
beside it (`logger=[mlflow,csv,tensorboard]`), a ModelCheckpoint keeps a run's best network where
its MLflow run says, and a checkpoint loads and scores a test set as Lightning's do."""

from __future__ import annotations

import csv
import signal
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
from mlflow import MlflowClient
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import moonprop
from moonprop.loggers import BEST_CHECKPOINT_TAG
from moonprop.module import MoonsClassifier

from .conftest import default_store, only_run, start, sweep_runs
from .conftest import moonprop as moonprop_cli

EPOCHS = 12
KEYS = ("train/loss", "lr", "test/acc", "test/loss", "val/acc", "val/loss")


def csv_history(folder: Path) -> dict[str, dict[int, float]]:
    """Every metric CSVLogger wrote under `folder`, by its key and step."""
    (path,) = folder.rglob("metrics.csv")
    out: dict[str, dict[int, float]] = {}
    for row in csv.DictReader(path.open()):
        for key, value in row.items():
            if key != "step" and value:
                out.setdefault(key, {})[int(row["step"])] = float(value)
    return out


def tensorboard_history(folder: Path) -> dict[str, dict[int, float]]:
    (events,) = {p.parent for p in folder.rglob("events.out.tfevents.*")}
    accumulator = EventAccumulator(str(events))
    accumulator.Reload()
    return {key: {e.step: e.value for e in accumulator.Scalars(key)} for key in accumulator.Tags()["scalars"]}


def mlflow_history(client: MlflowClient, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def test_every_logger_of_the_group_gets_every_metric_at_every_step(workdir):
    """`logger=[mlflow,csv,tensorboard]` with Lightning's LearningRateMonitor and ModelCheckpoint:
    each logger has each metric at each step (step 0, the untrained network, included), the same
    values as the MLflow run; the best checkpoint is tagged on the run, loads, and scores the test
    set as the run recorded it at that step."""
    moonprop_cli(f"data.num_batches={EPOCHS}", "plot.every_n_epochs=6", "logger=[mlflow,csv,tensorboard]",
                 "callbacks=[checkpoint,lr_monitor]", cwd=workdir)
    run = only_run(workdir)
    client = default_store(workdir)
    folder = Path(run.data.tags[BEST_CHECKPOINT_TAG]).parent.parent  # the run's folder
    written = {"csv": csv_history(folder / "csv"), "tensorboard": tensorboard_history(folder / "tensorboard")}
    for key in (*KEYS, "lr-SGD"):
        recorded = mlflow_history(client, run.info.run_id, key)
        first = 1 if key in ("train/loss", "lr") else 0
        assert sorted(recorded) == list(range(first, EPOCHS + 1)) or key == "lr-SGD", key
        for name, history in written.items():
            assert history[key].keys() == recorded.keys(), (name, key)
            assert history[key] == pytest.approx(recorded, rel=1e-6), (name, key)
    # Lightning's convention for lr-SGD: at step k, the rate of step k + 1 (moonprop's lr at step k + 1)
    lr = mlflow_history(client, run.info.run_id, "lr")
    assert all(mlflow_history(client, run.info.run_id, "lr-SGD")[k] == lr[k + 1] for k in range(EPOCHS))

    best = Path(run.data.tags[BEST_CHECKPOINT_TAG])
    assert best == folder / "checkpoints" / "best.ckpt" and best.is_file()
    val = mlflow_history(client, run.info.run_id, "val/acc")
    step = max(range(1, EPOCHS + 1), key=lambda k: (val[k], -k))  # ModelCheckpoint keeps the first best
    module = MoonsClassifier.load_from_checkpoint(best)
    _, data = moonprop.build([f"data.num_batches={EPOCHS}"])
    (scores,) = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False).test(
        module, datamodule=data, verbose=False)
    assert scores["test/acc"] == pytest.approx(mlflow_history(client, run.info.run_id, "test/acc")[step])


def test_a_plain_trainer_with_every_logger_of_the_group(tmp_path):
    """The module under a user's own Trainer writes through Lightning's own logging to its loggers."""
    module, data = moonprop.build(["data.num_batches=4"])
    loggers = [CSVLogger(tmp_path, name="csv"), TensorBoardLogger(tmp_path, name="tensorboard")]
    trainer = pl.Trainer(max_epochs=4, logger=loggers, log_every_n_steps=1, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    (tested,) = trainer.test(module, datamodule=data, verbose=False)
    for history in (csv_history(tmp_path / "csv"), tensorboard_history(tmp_path / "tensorboard")):
        assert sorted(history["train/loss"]) == sorted(history["val/acc"]) == [0, 1, 2, 3]  # Lightning's steps
        assert tested["test/acc"] == pytest.approx(history["test/acc"][4])  # trainer.test, logged after the fit
        assert history["test/acc"][4] == pytest.approx(history["test/acc"][3])  # the same network, scored again


def test_a_checkpoint_of_a_run_loads_as_lightning_loads_one(workdir):
    """`load_from_checkpoint` on the checkpoint Lightning writes (+trainer.enable_checkpointing=true,
    its default ModelCheckpoint, in the run's folder): the same weights and the same settings."""
    moonprop_cli("data.num_batches=5", "optimizer=adam", "schedule=cosine", "schedule.start=0.05",
                 "+trainer.enable_checkpointing=true", cwd=workdir)
    (path,) = workdir.glob("outputs/runs/*/checkpoints/epoch=4-step=5.ckpt")
    module = MoonsClassifier.load_from_checkpoint(path)
    assert (module.optimizer_cfg.name, module.schedule.name, module.schedule.start) == ("adam", "cosine", 0.05)
    run = only_run(workdir)
    _, data = moonprop.build(["data.num_batches=5"])
    (scores,) = pl.Trainer(logger=False, enable_progress_bar=False).test(module, datamodule=data, verbose=False)
    assert scores["test/acc"] == pytest.approx(run.data.metrics["test/acc"])


def test_a_batched_job_with_loggers_of_its_own_trains_alone_and_writes_them(workdir):
    moonprop_cli("-m", "hydra/launcher=batched", "seed=0,1", "data.num_batches=6", "plot.every_n_epochs=3",
                 "logger=[mlflow,csv]", cwd=workdir)
    client = default_store(workdir)
    _, children = sweep_runs(client)
    folders = sorted(workdir.glob("outputs/sweeps/*/[01]"))
    assert len(children) == len(folders) == 2
    for folder in folders:
        history = csv_history(folder / "csv")
        (child,) = [c for c in children if c.data.params["seed"] == folder.name]
        for key in KEYS:
            assert history[key] == pytest.approx(mlflow_history(client, child.info.run_id, key), rel=1e-6), key


@pytest.mark.parametrize("override, says", [
    ("-m logger=[csv] seed=1,2", "logger=['csv']: a list with mlflow in a sweep, whose jobs are compared in MLflow: "
                                 "logger=[mlflow,csv]"),
    ("+logger.mlflow.tracking_uri=x", "logger.mlflow={'tracking_uri': 'x'}: moonprop.loggers.MlflowRecord's "
                                      "arguments: got an unexpected keyword argument 'tracking_uri'"),
    ("trainer=ddp", "trainer=ddp: one of cpu, default, gpu; a run trains on one device"),
    ("+trainer.logger=true", "trainer.logger=True: moonprop sets it: use the logger group (logger=[mlflow,csv]"),
])
def test_the_logger_and_trainer_groups_are_checked_in_one_line(workdir, override, says):
    proc = moonprop_cli(*override.split(), "data.num_batches=2", cwd=workdir, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert says in proc.stderr and not (workdir / "outputs").exists()


def test_trainer_presets(workdir):
    moonprop_cli("trainer=cpu", "data.num_batches=2", "trainer.precision=64", cwd=workdir)
    run = only_run(workdir)
    assert (run.data.params["trainer.accelerator"], run.data.params["trainer.precision"]) == ("cpu", "64")


def test_lightnings_fast_dev_run_checks_a_run_and_records_nothing(workdir):
    proc = moonprop_cli("+trainer.fast_dev_run=true", "callbacks=[early_stopping,checkpoint]", "logger=[mlflow,csv]",
                        cwd=workdir)
    assert "fast_dev_run FINISHED: val acc" in proc.stderr and "nothing recorded" in proc.stderr
    outputs = {p.name for p in (workdir / "outputs").iterdir()}
    assert outputs == {"runs"}  # no store, no artifacts: only Hydra's run folder
    (folder,) = (workdir / "outputs" / "runs").iterdir()
    assert not (folder / "checkpoints").exists() and not (folder / "csv").exists()  # Lightning turned them off
    refused = moonprop_cli("-m", "+trainer.fast_dev_run=true", "seed=1,2", cwd=workdir, check=False)
    assert refused.returncode == 2 and "trainer.fast_dev_run=True: false in a sweep" in refused.stderr


def test_debug_presets(workdir):
    """debug=fdr: two epochs, recorded end to end in a store of their own; debug=profiler: Lightning's report."""
    moonprop_cli("debug=fdr", "model.hidden=[8]", cwd=workdir)
    assert not (workdir / "outputs" / "mlflow.db").exists()
    client = MlflowClient(f"sqlite:///{workdir / 'outputs' / 'debug' / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("debug").experiment_id])
    assert run.info.status == "FINISHED" and run.data.params["model.hidden"] == "[8]"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "test/acc")] == [0, 1, 2]
    assert run.outputs.model_outputs and (workdir / "outputs" / "debug" / "mlartifacts").is_dir()
    proc = moonprop_cli("debug=profiler", "data.num_batches=3", "tracking.experiment=profiled", cwd=workdir)
    assert "Profiler Report" in proc.stdout + proc.stderr


def test_an_interrupted_run_with_a_model_checkpoint_continues_and_keeps_its_best(workdir):
    """Beside a ModelCheckpoint and a CSVLogger, SIGTERM still leaves last.ckpt and `resume=` continues
    the same MLflow run; the best checkpoint is the continued run's, and every logger has every step."""
    from .test_faults import interrupt

    args = ["data.num_batches=2000", "plot.every_n_epochs=500", "callbacks=[checkpoint]", "logger=[mlflow,csv]"]
    again = interrupt(args, workdir, 5)
    proc = moonprop_cli(*again, cwd=workdir)
    assert "weights_only" not in proc.stderr
    run = only_run(workdir)
    client = default_store(workdir)
    assert run.info.status == "FINISHED" and sorted(mlflow_history(client, run.info.run_id, "test/acc")) == \
        list(range(2001))
    best = Path(run.data.tags[BEST_CHECKPOINT_TAG])
    continued = Path(proc.stderr.split("folder ")[-1].split(")")[0])
    assert best.parent == continued / "checkpoints" and best.is_file()
    MoonsClassifier.load_from_checkpoint(best)
    first, second = sorted(workdir.glob("outputs/runs/*/csv"))
    steps = sorted({*csv_history(first)["test/acc"], *csv_history(second)["test/acc"]})
    assert steps == list(range(2001))  # the loggers of the two parts hold the whole run between them


def test_a_run_that_mlflow_does_not_record_when_the_user_asks_for_one(workdir):
    """`logger=[csv]`: no store, no MLflow run; the CSV has the whole run, and an interrupted one
    continues from its checkpoint as a recorded one does."""
    from .test_faults import continue_with

    proc = start("logger=[csv]", "data.num_batches=3000", "plot.every_n_epochs=1000", cwd=workdir)
    deadline = time.monotonic() + 60
    while not list(workdir.glob("outputs/runs/*/csv/version_0/metrics.csv")):  # written every 100 steps
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    done = moonprop_cli(*continue_with(err), cwd=workdir)
    assert "not recorded in MLflow" in done.stderr
    assert {p.name for p in (workdir / "outputs").iterdir()} == {"runs"}  # no store, no artifacts
    first, second = sorted(workdir.glob("outputs/runs/*/csv"))
    history = [csv_history(first), csv_history(second)]
    assert sorted({*history[0]["test/acc"], *history[1]["test/acc"]}) == list(range(3001))
    assert max(history[0]["test/acc"]) + 1 == min(history[1]["test/acc"])  # continued where it stopped
