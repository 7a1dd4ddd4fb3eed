"""A search's trial as its job trains it: the Lightning callback that reports every epoch's
validation accuracy (what the search maximises; the test set only reports) to the trial's Optuna
study and stops the training when the study's pruner judges it hopeless.

The sweeper (search.py) names this callback in each job's entry of the sweep's trials file
(`moonprop.jobs.Trial`); moonprop instantiates it beside its own, wherever the job runs (this
process, a joblib worker, a SLURM node). Hydra's plugin discovery skips modules whose names start
with `_`, so Lightning and Optuna are imported only in a trial.
"""

from __future__ import annotations

from typing import Any

import optuna
import pytorch_lightning as pl

from hydra_plugins.moonprop_search.search import PRUNED_AT, pruner_of, storage_of, trial_id
from moonprop.callbacks import tag_run
from moonprop.jobs import PRUNED_TAG


class PruneHopeless(pl.Callback):
    """Every epoch's validation accuracy goes to trial `number` of `study`; when the study's pruner
    judges the trial hopeless, training stops at that epoch's end (Lightning's own stop: the run
    ends, records and logs its model as usual), its run tagged PRUNED_TAG and its trial PRUNED_AT."""

    def __init__(self, storage: str, study: str, number: int, pruner: Any) -> None:
        backend = storage_of(storage)
        loaded = optuna.load_study(study_name=study, storage=backend, pruner=pruner_of(pruner))
        self.trial = optuna.trial.Trial(loaded, trial_id(backend, study, number))

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking:  # step 0, the untrained network: nothing to judge yet
            return
        epoch = trainer.current_epoch + 1
        self.trial.report(outputs["val_acc"], epoch)
        if self.trial.should_prune():
            self.trial.set_user_attr(PRUNED_AT, epoch)
            tag_run(trainer, {PRUNED_TAG: f"at epoch {epoch}"})
            trainer.should_stop = True
