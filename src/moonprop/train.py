"""One training run: config -> data module -> module -> Lightning trainer -> MLflow (via the recorder)."""

from __future__ import annotations

import logging
import sys

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from moonprop.callbacks import MlflowCallback
from moonprop.config import Config, params, resolve_uri
from moonprop.data import MoonsDataModule
from moonprop.module import MoonsClassifier
from moonprop.recorder import Recorder

# Lightning's start-up banner (GPU available, TPU available, ...) says nothing a run's record lacks.
logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)


def train(cfg: Config, recorder: Recorder, overrides: list[str] | None = None,
          tags: dict[str, str] | None = None, parent_run_id: str | None = None) -> float:
    """Train and record one run; returns the final test accuracy (what a sweeper maximises)."""
    torch.set_num_threads(cfg.trainer.threads)  # 2 threads made this tiny model 14-56x slower
    datamodule = MoonsDataModule(cfg.data, cfg.seed)
    module = MoonsClassifier(cfg.model, cfg.loss, cfg.schedule, cfg.data.num_batches, cfg.seed)
    tracker = MlflowCallback(recorder, datamodule.test, cfg.plot, cfg.data.num_batches)
    texts = {"config.yaml": OmegaConf.to_yaml(OmegaConf.structured(cfg)),
             "overrides.yaml": OmegaConf.to_yaml(list(overrides or []))}
    with recorder.run(uri=resolve_uri(cfg.tracking.uri), experiment=cfg.tracking.experiment,
                      run_name=cfg.tracking.run_name, params=params(cfg), tags=tags or {}, texts=texts,
                      parent_run_id=parent_run_id, resolution=cfg.plot.resolution):
        trainer = pl.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=1,
            max_epochs=cfg.data.num_batches,  # one epoch = one freshly drawn batch, as in the seed
            num_sanity_val_steps=1,  # evaluates the untrained network: step 0 of the record
            logger=False,  # MLflow is written by MlflowCallback, through the recorder
            enable_checkpointing=False,
            enable_model_summary=False,
            enable_progress_bar=sys.stderr.isatty(),
            deterministic=True,
            callbacks=[tracker],
        )
        trainer.fit(module, datamodule=datamodule)
    return tracker.test_acc[-1]
