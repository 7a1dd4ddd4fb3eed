"""The moons: a fresh training batch every epoch and one fixed test set, each from its own seed."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from moonprop.config import DataConfig

Batch = tuple[Tensor, Tensor]
_TRAIN, _TEST = 0, 1  # seed streams: batches and test set never share random numbers


def moons(n: int, noise: float, seed: int, stream: int, index: int = 0) -> Batch:
    """n points of sklearn's two moons, labelled -1 (upper moon) and +1 (lower moon)."""
    state = np.random.SeedSequence(seed, spawn_key=(stream, index)).generate_state(1)[0]
    x, y = make_moons(n, noise, int(state))
    return torch.from_numpy(x).float(), torch.from_numpy(2.0 * y - 1.0).float()


def make_moons(n: int, noise: float, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's `make_moons(n, noise=noise, random_state=random_state)`, number for number (a
    test compares them): importing scikit-learn for it cost every run 0.45 s and 80 MB."""
    rng = _RNG
    rng.seed(random_state)  # as RandomState(random_state), at a tenth of the cost of a new one
    x, y = _noiseless_moons(n)
    order = np.arange(n)
    rng.shuffle(order)  # sklearn.utils.shuffle, with the same generator
    x, y = x[order], y[order]
    x += rng.normal(scale=noise, size=x.shape)
    return x, y


@functools.cache  # the same for every draw of n points: a batched sweep draws K batches an epoch
def _noiseless_moons(n: int) -> tuple[np.ndarray, np.ndarray]:
    n_out = n // 2
    upper, lower = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    x = np.vstack([np.append(np.cos(upper), 1 - np.cos(lower)),
                   np.append(np.sin(upper), 1 - np.sin(lower) - 0.5)]).T
    y = np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n - n_out, dtype=np.intp)])
    x.flags.writeable = y.flags.writeable = False  # shared: every draw indexes a copy out of them
    return x, y


_RNG = np.random.RandomState()  # reseeded for every draw: a batched sweep draws K batches an epoch


class _OneBatchPerEpoch:
    """The training "loader": epoch k yields batch k, drawn from its own seed, so that a resumed
    run sees the same data as an uninterrupted one."""

    def __init__(self, dm: MoonsDataModule) -> None:
        self.dm = dm

    def __len__(self) -> int:
        return 1

    def __iter__(self) -> Iterator[Batch]:
        yield self.dm.train_batch(self.dm.trainer.current_epoch)


class MoonsDataModule(pl.LightningDataModule):
    def __init__(self, cfg: DataConfig, seed: int) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.test = moons(cfg.test_size, cfg.noise, seed, _TEST)

    def datasets(self) -> list[dict[str, Any]]:
        """The test set and the training stream as a run records them (MLflow dataset inputs): a
        name, the context, how to draw them again, and a digest that changes whenever they would."""
        cfg, seed = self.cfg, self.seed
        how = {"generator": "moonprop.data.moons: sklearn.datasets.make_moons, labels -1 (upper) / +1 (lower)",
               "noise": str(cfg.noise), "seed": str(seed)}
        specs = [("moons-test", "test", {**how, "stream": f"SeedSequence({seed}, spawn_key=({_TEST}, 0))",
                                         "points": str(cfg.test_size)}),
                 ("moons-train", "train", {**how, "stream": f"SeedSequence({seed}, spawn_key=({_TRAIN}, epoch))",
                                           "batches": str(cfg.num_batches), "points_per_batch": str(cfg.batch_size)})]
        return [{"name": name, "context": context, "source": source,
                 "digest": hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:8]}
                for name, context, source in specs]

    def train_batch(self, epoch: int) -> Batch:
        return moons(self.cfg.batch_size, self.cfg.noise, self.seed, _TRAIN, epoch)

    def train_dataloader(self) -> _OneBatchPerEpoch:
        return _OneBatchPerEpoch(self)

    def val_dataloader(self) -> DataLoader:
        # The whole test set is one batch (1000 points x 337 weights is tiny); batch_size=None
        # hands it over as it is, without collating 1000 samples every epoch.
        return DataLoader([self.test], batch_size=None)
