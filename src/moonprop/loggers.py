"""moonprop's MLflow record as a Lightning Logger, and the `logger` group's other loggers.

A run's Trainer has a logger, so that whatever Lightning writes to loggers (LearningRateMonitor,
DeviceStatsMonitor, a user's callback calling `trainer.logger.log_metrics`) lands in the MLflow run,
and Lightning's own loggers (`logger=[mlflow,csv]`) sit beside it. The run's own metrics reach
every logger of the Trainer from moonprop's callbacks (callbacks.py), step 0 included, as each
step's values are known; the module's `self.log` then feeds only the callbacks and the progress bar
(Lightning would drop step 0, scored in its sanity check, and log through a slower path).

Writes go through the recorder process (recorder.py) as before: this class only hands them over.
"""

from __future__ import annotations

import logging
import time
import warnings
from argparse import Namespace
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from hydra.utils import instantiate
from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from moonprop.config import RECORD_LOGGER
from moonprop.recorder import Run

# Every Trainer moonprop makes (train.py, evaluation.py) has its loggers from here, hence this module says
# what Lightning prints to the terminal.
# Lightning's start-up banner (GPU available, TPU available, ...) says nothing a run's record lacks
# (its other messages, a profiler's report say, still show),
# and its own use of a deprecated torch API is not the user's to fix.
logging.getLogger("pytorch_lightning.utilities.rank_zero").setLevel(logging.WARNING)
# nor does its note on resuming that `weights_only` was not set: moonprop's checkpoints are its own
logging.getLogger("pytorch_lightning.trainer.connectors.checkpoint_connector").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
# A sweep on a SLURM node already runs under srun/sbatch through submitit: the hint does not apply.
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")

BEST_CHECKPOINT_TAG = "moonprop.best_checkpoint"  # a ModelCheckpoint's best, as its run's tag


class MlflowRecord(Logger):
    """One moonprop run in MLflow. Like Lightning's MLFlowLogger, `experiment` is an MlflowClient
    on the run's store and `run_id` names the run, so that callbacks written for that logger
    (`trainer.logger.experiment.log_artifact(trainer.logger.run_id, path)`) work unchanged."""

    def __init__(self, run: Run, uri: str, save_dir: str | Path | None, experiment_name: str = "moonprop") -> None:
        super().__init__()
        self.run, self.uri, self._name = run, uri, experiment_name
        self._save_dir = None if save_dir is None else str(save_dir)
        self._client = _LazyClient(uri)

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return self.run.id

    @property
    def run_id(self) -> str:
        return self.run.id

    @property
    def save_dir(self) -> str | None:
        """The run's folder: where Lightning writes what it keeps on disk for the run (a profiler's report)."""
        return self._save_dir

    @property
    def experiment(self) -> Any:
        """MLflow's client on the run's store. Lightning reads this property as a run starts, and
        MLflow costs a second to import (the recorder's, not the trainer's): the client is made,
        and MLflow imported, on first use."""
        return self._client

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.run.send("metrics", {k: float(v) for k, v in metrics.items()}, step or 0, int(time.time() * 1000))

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace, *args: Any, **kwargs: Any) -> None:
        """Nothing: the run's params are its whole resolved config, written as the run opened
        (the module's hyperparameters are a part of it)."""

    def after_save_checkpoint(self, checkpoint_callback: pl.callbacks.ModelCheckpoint) -> None:
        """The best checkpoint so far, tagged on the run: findable from MLflow, by its path."""
        if checkpoint_callback.best_model_path:
            self.run.send("tags", {BEST_CHECKPOINT_TAG: checkpoint_callback.best_model_path})


class _LazyClient:
    """An MlflowClient made on first use."""

    def __init__(self, uri: str) -> None:
        self._uri, self._client = uri, None

    def __getattr__(self, name: str) -> Any:
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self._uri)
        return getattr(self._client, name)


def record_of(configs: dict[str, Any], run: Run, uri: str, run_dir: Path | None, experiment: str) -> Logger:
    """moonprop's record of `run`: the `logger` group's `mlflow` entry, instantiated from its `_target_`."""
    return instantiate(configs[RECORD_LOGGER], run=run, uri=uri, save_dir=run_dir, experiment_name=experiment)


def loggers_of(configs: dict[str, Any], run_dir: Path) -> list[Logger]:
    """The `logger` group's other loggers (Lightning's, the user's), each instantiated from its
    `_target_`, writing into the run's folder unless its config says where (`save_dir`)."""
    return [instantiate(config, **({} if "save_dir" in config else {"save_dir": str(run_dir)}))
            for name, config in configs.items() if name != RECORD_LOGGER]
