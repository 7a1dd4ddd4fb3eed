"""The LightningModule: the MLP, its loss, plain SGD and the learning-rate schedule.

Pure maths: MLflow and plotting live in callbacks (callbacks.py).
"""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from moonprop.config import LossConfig, ModelConfig, ScheduleConfig
from moonprop.model import MLP, accuracy, hinge_l2_loss
from moonprop.schedule import schedule_fn


class NonFiniteLoss(ArithmeticError):
    """Training diverged: the loss is NaN or infinite."""


class MoonsClassifier(pl.LightningModule):
    def __init__(self, model: ModelConfig, loss: LossConfig, schedule: ScheduleConfig,
                 num_batches: int, seed: int) -> None:
        super().__init__()
        self.alpha, self.schedule, self.num_batches = loss.alpha, schedule, num_batches
        self.net = MLP(model.hidden, torch.Generator().manual_seed(seed))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def _common_step(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = batch
        scores = self(x)
        return hinge_l2_loss(scores, y, list(self.parameters()), self.alpha), scores

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        loss, _ = self._common_step(batch)
        if not math.isfinite(loss.item()):
            raise NonFiniteLoss(f"loss is {loss.item()} at epoch {self.current_epoch + 1}")
        lr = self.trainer.optimizers[0].param_groups[0]["lr"]
        if self.trainer.progress_bar_callback is not None:
            self.log("train/loss", loss, prog_bar=True, batch_size=len(batch[0]))
        return {"loss": loss, "lr": lr}

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> dict[str, Any]:
        loss, scores = self._common_step(batch)
        acc = accuracy(scores, batch[1])
        if self.trainer.progress_bar_callback is not None:
            self.log_dict({"test/loss": loss, "test/acc": acc}, prog_bar=True, batch_size=len(batch[0]))
        return {"loss": loss, "acc": acc}

    def configure_optimizers(self) -> dict[str, Any]:
        # Plain SGD at base rate 1.0; LambdaLR sets the absolute rate of step k before it is taken.
        optimizer = torch.optim.SGD(self.parameters(), lr=1.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule_fn(self.schedule, self.num_batches))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
