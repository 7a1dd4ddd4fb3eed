"""Lightning callbacks: the MLflow record of a run, with its pictures.

Metrics are batched (one `log_batch` a second instead of a 10 ms `log_metric` per value); boundary
images are logged with a key and a step, so that the UI's image grid shows them with a step slider.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from moonprop import plot
from moonprop.config import PlotConfig
from moonprop.model import save_weights
from moonprop.tracking import Run

BOUNDARY_KEY = "test/boundary"  # the prefix puts the image grid next to the test/acc chart


class MlflowCallback(pl.Callback):
    """Records a run in MLflow: per-epoch metrics and boundary images, then the final image, the
    animation and the weights. Step 0 is the untrained network (Lightning's sanity check), step k
    the network after k batches."""

    def __init__(self, run: Run, test: tuple[torch.Tensor, torch.Tensor], plot_cfg: PlotConfig,
                 num_epochs: int) -> None:
        self.run, self.cfg, self.num_epochs = run, plot_cfg, num_epochs
        self.points, self.labels = test[0].numpy(), test[1].numpy()
        self.grid = torch.from_numpy(plot.grid(plot_cfg.resolution))
        self.history: dict[str, list[float]] = {"test/acc": [], "test/loss": []}
        self.frames: list[Any] = []

    def _step(self, trainer: pl.Trainer) -> int:
        return 0 if trainer.sanity_checking else trainer.current_epoch + 1

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self.run.log_metrics({"train/loss": outputs["loss"].item(), "lr": outputs["lr"]},
                             step=self._step(trainer))

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        step = self._step(trainer)
        acc, loss = outputs["acc"].item(), outputs["loss"].item()
        self.history["test/acc"].append(acc)
        self.history["test/loss"].append(loss)
        self.run.log_metrics({"test/acc": acc, "test/loss": loss}, step=step)
        if step % self.cfg.every_n_epochs == 0 or step == self.num_epochs:
            with torch.no_grad():
                scores = pl_module(self.grid.to(pl_module.device)).cpu().numpy()
            image = plot.boundary(scores, self.points, self.labels, self.cfg.resolution,
                                  f"epoch {step}  acc {acc:.3f}")
            self.run.log_image(image, BOUNDARY_KEY, step)
            self.frames.append(plot.animation_frame(image, self.history["test/acc"],
                                                    self.history["test/loss"], self.num_epochs))

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.run.flush()
        client, run_id = self.run.client, self.run.id
        with tempfile.TemporaryDirectory() as tmp:
            final = Path(tmp, "boundary.png")
            self.frames[-1].crop((0, 0, *plot.frame_size(self.cfg.resolution))).save(final)
            plot.gif(self.frames, str(Path(tmp, "training.gif")))
            save_weights(pl_module.net, Path(tmp, "weights.pt"))
            for name in ("boundary.png", "training.gif"):
                client.log_artifact(run_id, str(Path(tmp, name)))
            client.log_artifact(run_id, str(Path(tmp, "weights.pt")), "model")
