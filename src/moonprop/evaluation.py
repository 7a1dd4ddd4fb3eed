"""A trained network scored on a test set of one's choosing (`moonprop-eval`, as
lightning-hydra-template's eval.py): a checkpoint moonprop wrote (a run's last, a ModelCheckpoint's
best, an interrupted run's) or a run's MLflow model, scored by Lightning (`trainer.test`) on a test
set drawn from any dataset, size and seed, and recorded as an MLflow run of its own, tagged with the
run the network came from.
"""

from __future__ import annotations

import ast
import json
import time
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch

from moonprop import plot
from moonprop.callbacks import BOUNDARY_KEY, BatchedMlflowCallback, MlflowCallback, grid_input, shortest
from moonprop.config import (
    Config,
    ConfigError,
    LinearSchedule,
    LossConfig,
    ModelConfig,
    SgdOptimizer,
    first_line,
    params,
    redact,
    resolve_uri,
)
from moonprop.data import MoonsDataModule
from moonprop.loggers import MlflowRecord
from moonprop.module import MoonsClassifier
from moonprop.recorder import Recorder

EVALUATED_RUN_TAG = "moonprop.evaluated_run"  # the run whose network an evaluation scored
EVALUATED_TAG = "moonprop.evaluated"  # the checkpoint's path or the model's URI


class Network(NamedTuple):
    """What is scored: the module, where it came from (a path or a model URI) and its run, if known."""

    module: MoonsClassifier
    source: str
    run_id: str | None


class Evaluated(NamedTuple):
    run_id: str
    run_name: str
    metrics: dict[str, float]  # test/acc, test/loss


def from_checkpoint(path: str) -> Network:
    """A checkpoint of one run (`MoonsClassifier.load_from_checkpoint`), and the run it names."""
    if not Path(path).is_file():
        raise ConfigError("ckpt_path", path, "an existing checkpoint file (a run's checkpoints/*.ckpt)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)  # a checkpoint the user points at
    except Exception as e:
        raise ConfigError("ckpt_path", path, f"a checkpoint Lightning wrote: {type(e).__name__}") from None
    callbacks = saved.get("callbacks", {}) if isinstance(saved, dict) else {}
    if BatchedMlflowCallback.__qualname__ in callbacks:
        raise ConfigError("ckpt_path", path, "one run's checkpoint; a batched sweep's holds all its jobs: score a "
                                             "job's MLflow model with model_uri=models:/<model id>")
    if not isinstance(saved, dict) or "state_dict" not in saved or "hyper_parameters" not in saved:
        raise ConfigError("ckpt_path", path, "a checkpoint of moonprop's MoonsClassifier")
    module = MoonsClassifier.load_from_checkpoint(path, map_location="cpu")
    return Network(module, str(Path(path).resolve()), callbacks.get(MlflowCallback.__qualname__, {}).get("run_id"))


def from_model(uri: str, tracking_uri: str) -> Network:
    """A run's MLflow model (TorchScript) in the module of the run's settings, and that run."""
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(tracking_uri)
    try:
        info = mlflow.models.get_model_info(uri)
        with warnings.catch_warnings():  # "torch.load received a TorchScript archive": what moonprop logs
            warnings.simplefilter("ignore", UserWarning)
            network = mlflow.pytorch.load_model(uri, map_location="cpu")
    except Exception as e:
        raise ConfigError("model_uri", uri, f"an MLflow model in {redact(tracking_uri)}: {first_line(e)}") from None
    p = MlflowClient(tracking_uri).get_run(info.run_id).data.params
    model = ModelConfig(json.loads(p["model.hidden"]), p["model.activation"], p["model.init"],
                        ast.literal_eval(p.get("model.features", "['x1', 'x2']")))  # str(list): a run's params
    loss = LossConfig(p["loss.name"], float(p["loss.alpha"]), p["loss.penalty"])
    module = MoonsClassifier(model, loss, SgdOptimizer(), LinearSchedule(), 1, 0)  # only the network is scored
    module.net.load_state_dict(network.state_dict())
    return Network(module, uri, info.run_id)


def evaluate(network: Network, cfg: Config, recorder: Recorder, command: str) -> Evaluated:
    """Score `network` on the test set of `cfg` (its data, test_size and seed) and record it: the
    test metrics (step 0), the boundary on that test set, the test set as the run's dataset input."""
    datamodule = MoonsDataModule(cfg.data, cfg.seed)
    uri = resolve_uri(cfg.tracking.uri)
    training = ("data.num_batches", "data.batch_size", "data.val_size", "data.train_size")  # no part of a test set
    data = {k: v for k, v in params(cfg).items() if k.startswith("data.") and k not in training}
    spec: dict[str, Any] = dict(
        uri=uri, experiment=cfg.tracking.experiment, run_name=cfg.tracking.run_name,
        params={EVALUATED_TAG: network.source, **data, "seed": str(cfg.seed)},
        tags={**cfg.tracking.tags, EVALUATED_TAG: network.source, "mlflow.source.name": command,
              **({EVALUATED_RUN_TAG: network.run_id} if network.run_id else {})},
        texts={}, start_time_ms=int(time.time() * 1000),
        datasets=[d for d in datamodule.datasets() if d["context"] == "test"])
    module = network.module
    with recorder.run(**spec) as run:
        # Lightning's results are written by hand, once, as float32's shortest decimals (a run's
        # way), not through the Trainer's logger, which would add its float64 copies and an epoch
        trainer = pl.Trainer(accelerator=cfg.trainer.accelerator, devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
        (tested,) = trainer.test(module, datamodule=datamodule, verbose=False)
        metrics = {key: shortest(value) for key, value in tested.items()}
        MlflowRecord(run, uri, None, cfg.tracking.experiment).log_metrics(metrics, 0)  # always recorded
        pictures = plot.Boundary(datamodule.test[0].numpy(), datamodule.test[1].numpy(), cfg.plot.resolution,
                                 datamodule.plane)
        with torch.no_grad():
            scores = module(grid_input(pictures.grid, module)).float().cpu().numpy()
        run.send("image", pictures.draw(scores, f"evaluated   test acc {metrics['test/acc']:.3f}"), BOUNDARY_KEY, 0,
                 None)
    return Evaluated(run.id, run.name, metrics)
