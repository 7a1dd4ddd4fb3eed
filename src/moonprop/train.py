"""One training run: config -> data module -> module -> Lightning trainer -> MLflow (via the recorder)."""

from __future__ import annotations

import logging
import signal
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from omegaconf import OmegaConf

from moonprop.callbacks import GracefulStop, MlflowCallback, PruneHopeless
from moonprop.config import Config, params, redact, redacted, resolve_uri
from moonprop.data import MoonsDataModule
from moonprop.module import MoonsClassifier
from moonprop.recorder import Recorder
from moonprop.sweep import Job

# Lightning's start-up banner (GPU available, TPU available, ...) says nothing a run's record lacks,
# and its own use of a deprecated torch API is not the user's to fix.
logging.getLogger("pytorch_lightning").setLevel(logging.WARNING)
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)", category=FutureWarning)
# A sweep on a SLURM node already runs under srun/sbatch through submitit: the hint does not apply.
warnings.filterwarnings("ignore", message=r"The `srun` command is available on your system")


def checkpoint_state(path: str) -> dict[str, Any]:
    """What MlflowCallback kept in a checkpoint: its run id and the run's params."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # our own file
    return checkpoint["callbacks"][MlflowCallback.__qualname__]


def train(cfg: Config, recorder: Recorder, run_dir: Path, overrides: list[str] | None = None,
          tags: dict[str, str] | None = None, job: Job | None = None, close_in_background: bool = False,
          launch_dir: str | None = None) -> float:
    """Train and record one run; returns the final test accuracy (what a sweeper maximises).

    Interrupted by Ctrl-C or SIGTERM, it writes `run_dir/checkpoints/last.ckpt`; `resume=` that
    path continues the same MLflow run where it stopped. A sweep's `job` names the run, nests it
    under the sweep's parent and, in a search, reports to its trial, which may stop it early. With
    `close_in_background` (a sweep's jobs in one process), the next job trains while the recorder
    closes this run. A relative SQLite store is the one in `launch_dir`, where moonprop was started
    (a job may run elsewhere).
    """
    torch.set_num_threads(cfg.trainer.threads)  # 2 threads made this tiny model 14-56x slower
    datamodule = MoonsDataModule(cfg.data, cfg.seed)
    module = MoonsClassifier(cfg.model, cfg.loss, cfg.schedule, cfg.data.num_batches, cfg.seed)
    run_params = params(cfg)
    tracker = MlflowCallback(recorder, datamodule.test, cfg.plot, cfg.data.num_batches, run_params)
    stopper = GracefulStop(run_dir / "checkpoints" / "last.ckpt")
    pruner = PruneHopeless(**job.trial) if job and job.trial else None
    overrides = [redact(o) for o in overrides or []]
    texts = {"config.yaml": OmegaConf.to_yaml(OmegaConf.structured(redacted(cfg))),
             "overrides.yaml": OmegaConf.to_yaml(overrides)}
    with stopper.handling_signals(), recorder.run(
            background_end=close_in_background,
            uri=resolve_uri(cfg.tracking.uri, launch_dir), experiment=cfg.tracking.experiment,
            run_name=job.name if job else cfg.tracking.run_name, params=run_params,
            tags={**(tags or {}), **(job.tags if job else {})}, texts=texts,
            parent_run_id=job.parent if job else None, plot_every=cfg.plot.every_n_epochs,
            num_epochs=cfg.data.num_batches,
            start_time_ms=int(time.time() * 1000), datasets=datamodule.datasets(),
            registered_model=None if job else cfg.tracking.registered_model,  # a sweep registers its best
            resume_run_id=checkpoint_state(cfg.resume)["run_id"] if cfg.resume else None):
        trainer = pl.Trainer(
            accelerator=cfg.trainer.accelerator,
            devices=1,
            max_epochs=cfg.data.num_batches,  # one epoch = one freshly drawn batch, as in the seed
            # the untrained network is step 0 of the record; a resumed run has it already
            num_sanity_val_steps=0 if cfg.resume else 1,
            logger=False,  # MLflow is written by MlflowCallback, through the recorder
            enable_checkpointing=False,  # GracefulStop writes the checkpoint that matters
            enable_model_summary=False,
            enable_progress_bar=sys.stderr.isatty(),
            deterministic=True,
            callbacks=[tracker, stopper, *([pruner] if pruner else [])],
        )
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.resume)
        except SystemExit:
            if stopper.signum == signal.SIGINT:  # a second Ctrl-C, which Lightning turns into exit(1)
                raise KeyboardInterrupt from None
            raise
        if pruner and pruner.pruned_at is not None:
            recorder.send("tags", {"optuna.pruned": f"at epoch {pruner.pruned_at}"})
    return tracker.test_acc
