"""The LightningModule: the MLP, its loss, the optimizer and the learning-rate schedule.

Pure maths: MLflow and plotting live in callbacks (callbacks.py). It logs its metrics the
Lightning way, `self.log` at every step (train/loss, lr; test/acc and test/loss when the test set
is scored, val/acc and val/loss for the validation set), so that it works under any `pl.Trainer`
with Lightning's own loggers and callbacks:

    module, data = moonprop.build(["optimizer=adam", "schedule.start=0.05"])
    pl.Trainer(max_epochs=data.cfg.num_batches, logger=CSVLogger("logs"),
               callbacks=[EarlyStopping("val/acc", mode="max")]).fit(module, datamodule=data)
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from moonprop.config import (
    OPTIMIZERS,
    SCHEDULES,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    ScheduleConfig,
)
from moonprop.model import MLP, accuracy, loss
from moonprop.schedule import schedule_fn


class NonFiniteLoss(ArithmeticError):
    """Training diverged: the loss is NaN or infinite."""


def optimizer(cfg: OptimizerConfig, params: Any) -> torch.optim.Optimizer:
    """torch's optimizer of `cfg` at base rate 1.0 (the schedule, LambdaLR, sets each step's rate):
    the class its `torch_class` names, each other field the argument of that name."""
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in asdict(cfg).items() if k != "name"}
    return getattr(torch.optim, cfg.torch_class)(params, lr=1.0, **args)


def _typed(value: Any, kind: type | dict[str, type]) -> Any:
    """A config section as its dataclass: a checkpoint keeps it as a plain dict (hparams), which
    `load_from_checkpoint` hands back to __init__. A dict of kinds picks one by the section's name."""
    if isinstance(value, dict):
        return (kind[value["name"]] if isinstance(kind, dict) else kind)(**value)
    return value


class MoonsClassifier(pl.LightningModule):
    def __init__(self, model: ModelConfig, loss: LossConfig, optimizer: OptimizerConfig, schedule: ScheduleConfig,
                 num_batches: int, seed: int) -> None:
        super().__init__()
        model, loss = _typed(model, ModelConfig), _typed(loss, LossConfig)
        optimizer, schedule = _typed(optimizer, OPTIMIZERS), _typed(schedule, SCHEDULES)
        # what Lightning's loggers record of the module, as plain values: a checkpoint holding
        # dataclasses would not load under torch.load(weights_only=True), as Lightning resumes
        self.save_hyperparameters({"model": asdict(model), "loss": asdict(loss), "optimizer": asdict(optimizer),
                                   "schedule": asdict(schedule), "num_batches": num_batches, "seed": seed})
        self.loss_cfg, self.optimizer_cfg, self.schedule, self.num_batches = loss, optimizer, schedule, num_batches
        self.net = MLP(model.hidden, torch.Generator().manual_seed(seed), model.activation, model.init, model.features)
        # Under any Trainer the module logs. moonprop's own runs turn it off where nothing would
        # read what it logs (no callback but moonprop's, no progress bar, logger=False): Lightning's
        # self.log costs a noticeable share of a 150-epoch run (docs/speed.md), and its record goes through
        # moonprop's callbacks.
        self.log_metrics = True
        # where self.log's values go besides the callbacks: to the loggers, as under any Trainer,
        # unless a callback hands them each step's metrics itself (moonprop's MlflowCallback)
        self.log_to_loggers = True

    @property
    def _to_loggers(self) -> bool | None:
        # None is Lightning's default: to the loggers if there are any, without its warning if not
        return None if self.log_to_loggers else False

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _common_step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        scores = self(x)
        cfg = self.loss_cfg
        return loss(scores, y, list(self.parameters()), cfg.alpha, cfg.name, cfg.penalty), scores

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        value, _ = self._common_step(batch)
        if not math.isfinite(value.item()):
            raise NonFiniteLoss(f"loss is {value.item()} at epoch {self.current_epoch + 1}")
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        if self.log_metrics:
            # an epoch is one batch: logged per epoch, so that every logger writes every step's value
            # (per step, Lightning's loggers write only every `log_every_n_steps`)
            self.log_dict({"train/loss": value, "lr": lr}, on_step=False, on_epoch=True, prog_bar=True,
                          logger=self._to_loggers, batch_size=len(batch[0]))
        return {"loss": value, "lr": lr}

    def validation_step(self, batch: dict[str, tuple[Tensor, Tensor]], batch_idx: int) -> dict[str, Any]:
        """The fixed sets (data.scored): the validation set, what is chosen on, the test set, which
        only reports, and a finite training set's accuracy (train/acc; train/loss is each step's
        batch's)."""
        out: dict[str, Any] = {}
        for split, prefix in (("val", "val_"), ("test", "")):
            if split in batch:
                value, scores = self._common_step(batch[split])
                acc = accuracy(scores, batch[split][1])
                if self.log_metrics:
                    self.log_dict({f"{split}/loss": value, f"{split}/acc": acc}, prog_bar=True,
                                  logger=self._to_loggers, batch_size=len(scores))
                out |= {f"{prefix}loss": value, f"{prefix}acc": acc}
        if "train" in batch:  # its accuracy alone: no loss to compute
            x, y = batch["train"]
            out["train_acc"] = accuracy(self(x), y)
            if self.log_metrics:
                self.log("train/acc", out["train_acc"], prog_bar=True, logger=self._to_loggers, batch_size=len(y))
        return out

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        """`trainer.test(module, datamodule=data)`: the test set's loss and accuracy, logged as
        test/loss and test/acc, the keys of a run's record."""
        value, scores = self._common_step(batch)
        acc = accuracy(scores, batch[1])
        self.log_dict({"test/loss": value, "test/acc": acc}, logger=self._to_loggers, batch_size=len(scores))
        return {"loss": value, "acc": acc}

    def configure_optimizers(self) -> dict[str, Any]:
        # base rate 1.0; LambdaLR sets the absolute rate of step k before it is taken
        step = optimizer(self.optimizer_cfg, self.parameters())
        scheduler = torch.optim.lr_scheduler.LambdaLR(step, schedule_fn(self.schedule, self.num_batches))
        return {"optimizer": step, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
