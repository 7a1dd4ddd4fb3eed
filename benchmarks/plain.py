"""The seed experiment written the plain way, as Lightning's and MLflow's docs show it: a Hydra app,
a LightningModule that logs with `self.log`, Lightning's MLFlowLogger, and a callback that draws the
decision boundary with matplotlib and logs it with `log_image(key, step)` every epoch. What moonprop
is measured against (benchmarks/bench.py); not part of moonprop.

    python benchmarks/plain.py                       # one run, into outputs/plain.db
    python benchmarks/plain.py -m 'seed=range(0,10)' # a 10-seed sweep, one after another
"""

from __future__ import annotations

from dataclasses import dataclass

import hydra
import matplotlib
import numpy as np
import pytorch_lightning as pl
import torch
from hydra.core.config_store import ConfigStore
from pytorch_lightning.loggers import MLFlowLogger
from sklearn.datasets import make_moons
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 - after choosing the backend


class Moons(pl.LightningDataModule):
    def __init__(self, seed: int, batches: int, batch_size: int, test_size: int, noise: float) -> None:
        super().__init__()
        self.seed, self.batches, self.batch_size, self.noise = seed, batches, batch_size, noise
        x, y = make_moons(test_size, noise=noise, random_state=seed + 10_000)
        self.test = (torch.tensor(x, dtype=torch.float32), torch.tensor(2.0 * y - 1, dtype=torch.float32))

    def train_dataloader(self):
        # 150 batches of 50 fresh points, drawn up front: one pass over them is the seed's training
        x, y = make_moons(self.batches * self.batch_size, noise=self.noise, random_state=self.seed)
        points = TensorDataset(torch.tensor(x, dtype=torch.float32), torch.tensor(2.0 * y - 1, dtype=torch.float32))
        return DataLoader(points, batch_size=self.batch_size)

    def val_dataloader(self):
        return DataLoader(TensorDataset(*self.test), batch_size=len(self.test[0]))


class MLPClassifier(pl.LightningModule):
    def __init__(self, hidden: list[int], alpha: float, start: float, end: float, steps: int, seed: int) -> None:
        super().__init__()
        self.save_hyperparameters()
        torch.manual_seed(seed)
        sizes, layers = [2, *hidden, 1], []
        for n_in, n_out in zip(sizes, sizes[1:], strict=False):
            linear = nn.Linear(n_in, n_out)
            nn.init.uniform_(linear.weight, -1, 1)
            nn.init.zeros_(linear.bias)
            layers += [linear, nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def _loss(self, scores, y):
        return torch.relu(1 - y * scores).mean() + self.hparams.alpha * sum((p * p).sum() for p in self.parameters())

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self._loss(self(x), y)
        self.log("train/loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        scores = self(x)
        self.log("test/loss", self._loss(scores, y))
        self.log("test/acc", ((scores > 0) == (y > 0)).float().mean())

    def configure_optimizers(self):
        h = self.hparams
        optimizer = torch.optim.SGD(self.parameters(), lr=h.start)
        linear = lambda k: (h.start - (h.start - h.end) * k / h.steps) / h.start  # noqa: E731 - the seed's decay
        decay = torch.optim.lr_scheduler.LambdaLR(optimizer, linear)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": decay, "interval": "step"}}


class BoundaryImages(pl.Callback):
    """The decision boundary after every epoch, drawn with matplotlib, logged with log_image."""

    def __init__(self, test) -> None:
        self.x, self.y = test[0].numpy(), test[1].numpy()
        xs, ys = np.meshgrid(np.linspace(-1.5, 2.5, 160), np.linspace(-1.0, 1.5, 100))
        self.grid = (xs, ys, torch.tensor(np.stack([xs.ravel(), ys.ravel()], axis=1), dtype=torch.float32))

    def on_validation_epoch_end(self, trainer, pl_module):
        xs, ys, points = self.grid
        with torch.no_grad():
            scores = pl_module(points).numpy().reshape(xs.shape)
        fig, ax = plt.subplots(figsize=(4.8, 3.0), dpi=100)
        ax.contourf(xs, ys, scores, levels=20, cmap="coolwarm")
        ax.contour(xs, ys, scores, levels=[0], colors="k")
        ax.scatter(self.x[:, 0], self.x[:, 1], c=self.y, s=3, cmap="coolwarm")
        ax.set_title(f"epoch {trainer.current_epoch}")
        fig.canvas.draw()
        image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
        plt.close(fig)
        trainer.logger.experiment.log_image(trainer.logger.run_id, image, key="test/boundary",
                                            step=trainer.global_step)


@dataclass
class PlainConfig:
    seed: int = 0
    uri: str = "sqlite:///outputs/plain.db"


ConfigStore.instance().store(name="plain", node=PlainConfig)


@hydra.main(version_base="1.3", config_path=None, config_name="plain")
def main(cfg: PlainConfig) -> float:
    torch.set_num_threads(1)
    data = Moons(cfg.seed, 150, 50, 1000, 0.1)
    module = MLPClassifier([16, 16], 1e-4, 1.0, 0.1, 150, cfg.seed)
    logger = MLFlowLogger(experiment_name="plain", tracking_uri=cfg.uri, log_model=False)
    # an epoch per batch, as the seed's: 150 epochs of one batch each
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, logger=logger, val_check_interval=1,
                         check_val_every_n_epoch=None, callbacks=[BoundaryImages(data.test)],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False)
    trainer.fit(module, datamodule=data)
    return float(trainer.callback_metrics["test/acc"])


if __name__ == "__main__":
    main()
