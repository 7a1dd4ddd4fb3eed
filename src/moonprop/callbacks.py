"""Lightning callbacks: what a run records, handed to the recorder process (recorder.py).

Step 0 is the untrained network (Lightning's sanity check runs the test set once before training,
as the seed's animation starts from the random initialisation); step k is the network after k
batches. Boundary images go out with a key and a step, so that MLflow's UI shows them in its image
grid with a step slider beside `test/acc`.
"""

from __future__ import annotations

import io
import time
from typing import Any

import pytorch_lightning as pl
import torch

from moonprop import plot
from moonprop.config import PlotConfig
from moonprop.model import save_weights
from moonprop.recorder import Recorder

BOUNDARY_KEY = "test/boundary"  # the prefix puts the image grid next to the test/acc chart


class MlflowCallback(pl.Callback):
    def __init__(self, recorder: Recorder, test: tuple[torch.Tensor, torch.Tensor], plot_cfg: PlotConfig,
                 num_epochs: int) -> None:
        self.recorder, self.cfg, self.num_epochs = recorder, plot_cfg, num_epochs
        self.points, self.labels = test[0].numpy(), test[1].numpy()
        self.grid = torch.from_numpy(plot.grid(plot_cfg.resolution))
        self.test_acc: list[float] = []

    def _step(self, trainer: pl.Trainer) -> int:
        return 0 if trainer.sanity_checking else trainer.current_epoch + 1

    def _send_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.recorder.send("metrics", metrics, step, int(time.time() * 1000))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._send_metrics({"train/loss": outputs["loss"].item(), "lr": outputs["lr"]}, self._step(trainer))

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        step = self._step(trainer)
        acc, loss = outputs["acc"].item(), outputs["loss"].item()
        self.test_acc.append(acc)
        self._send_metrics({"test/acc": acc, "test/loss": loss}, step)
        if step % self.cfg.every_n_epochs == 0 or step == self.num_epochs:
            with torch.no_grad():
                scores = pl_module(self.grid.to(pl_module.device)).cpu().numpy()
            image = plot.boundary(scores, self.points, self.labels, self.cfg.resolution,
                                  f"epoch {step}  acc {acc:.3f}")
            self.recorder.send("image", image, BOUNDARY_KEY, step, self.num_epochs)
        self.recorder.check()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        buf = io.BytesIO()
        save_weights(pl_module.net, buf)
        self.recorder.send("file", "model/weights.pt", buf.getvalue())
