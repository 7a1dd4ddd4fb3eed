"""The datasets: a fresh training batch every epoch (the seed's) or batches from a fixed training set
(`data.train_size`), and fixed validation and test sets, each from its own seed stream.

Every dataset is two classes in the plane, labelled -1 and +1, drawn with numpy's RandomState as
scikit-learn draws them, number for number where scikit-learn has the generator (moons, circles,
blobs; a test compares them): importing scikit-learn costs every run 0.8 s and 80 MB, more than a
default run's training. xor and spiral, which scikit-learn lacks, follow TensorFlow Playground's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from moonprop.config import BlobsData, CirclesData, DataConfig, MoonsData, SpiralData, XorData

Batch = tuple[Tensor, Tensor]
Plane = tuple[float, float, float, float]  # x0, x1, y0, y1: what a boundary picture shows
# seed streams: batches, test, validation and training sets, and the passes' orders never share random numbers
_TRAIN, _TEST, _VAL, _TRAIN_SET, _PASS = 0, 1, 2, 3, 4
_SIZES = ("name", "num_batches", "batch_size", "test_size", "val_size", "train_size")  # not how a point is drawn


def points(cfg: DataConfig, n: int, seed: int, stream: int, index: int = 0) -> Batch:
    """n points of the dataset `cfg`, labelled -1 and +1, from `seed`'s stream `stream` (batch
    `index` of it): the same points whatever else was drawn before."""
    state = np.random.SeedSequence(seed, spawn_key=(stream, index)).generate_state(1)[0]
    _RNG.seed(int(state))  # as RandomState(state), at a tenth of the cost of a new one
    x, y = GENERATORS[cfg.name](cfg, n, _RNG)
    return torch.from_numpy(x).float(), torch.from_numpy(2.0 * y - 1.0).float()


def batch_of_passes(n: int, size: int, seed: int, index: int) -> Tensor:
    """Which of a finite set's n points batch `index` holds: passes over the set, each in its own
    shuffled order (from `seed`'s stream of passes), cut into consecutive batches of `size` <= n.
    Where `size` does not divide n, a batch takes the end of one pass and the start of the next (as
    TensorFlow Playground carries the remainder over), so that every step sees `size` points."""
    first, offset = divmod(index * size, n)
    orders = [_order(n, seed, p) for p in range(first, first + 1 + (offset + size > n))]
    return torch.from_numpy(np.concatenate(orders)[offset:offset + size])


def _order(n: int, seed: int, pass_: int) -> np.ndarray:
    _RNG.seed(int(np.random.SeedSequence(seed, spawn_key=(_PASS, pass_)).generate_state(1)[0]))
    return _RNG.permutation(n)


def _shuffled_with_noise(x: np.ndarray, y: np.ndarray, noise: float,
                         rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """sklearn.utils.shuffle with the same generator, then Gaussian noise: make_moons' and
    make_circles' last steps."""
    order = np.arange(len(y))
    rng.shuffle(order)
    x, y = x[order], y[order]
    x += rng.normal(scale=noise, size=x.shape)
    return x, y


def _moons(cfg: MoonsData, n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's make_moons(n, noise=cfg.noise)."""
    return _shuffled_with_noise(*_noiseless(_moon_shapes, n), cfg.noise, rng)


def _circles(cfg: CirclesData, n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's make_circles(n, noise=cfg.noise, factor=cfg.factor)."""
    x, y = _noiseless(_circle_shapes, n)
    return _shuffled_with_noise(x * np.where(y == 1, cfg.factor, 1.0)[:, None], y, cfg.noise, rng)


def _blobs(cfg: BlobsData, n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """sklearn's make_blobs(n, centers=[[-offset, -offset], [offset, offset]], cluster_std=cfg.noise)."""
    sizes = [n // 2 + n % 2, n // 2]  # the first centre takes the odd point, as sklearn's does
    x = np.concatenate([rng.normal(loc=centre, scale=cfg.noise, size=(size, 2))
                        for centre, size in zip((-cfg.offset, cfg.offset), sizes, strict=True)])
    y = np.repeat([0, 1], sizes)
    order = np.arange(n)
    rng.shuffle(order)
    return x[order], y[order]


def _xor(cfg: XorData, n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """TensorFlow Playground's XOR: uniform in the square, +1 where x * y > 0; then noise."""
    x = rng.uniform(-1.0, 1.0, size=(n, 2))
    y = (x[:, 0] * x[:, 1] > 0).astype(np.intp)
    return x + rng.normal(scale=cfg.noise, size=x.shape), y


def _spiral(cfg: SpiralData, n: int, rng: np.random.RandomState) -> tuple[np.ndarray, np.ndarray]:
    """TensorFlow Playground's two spirals: each point at a random place along its arm (radius r
    from 0 to 1, turned 2 pi turns r; the second arm half a turn on), then noise."""
    y = rng.permutation(np.repeat([0, 1], [n // 2, n - n // 2]))
    r = rng.uniform(0.0, 1.0, size=n)
    angle = 2 * np.pi * cfg.turns * r + np.pi * y
    x = np.stack([r * np.cos(angle), r * np.sin(angle)], axis=1)
    return x + rng.normal(scale=cfg.noise, size=x.shape), y


def _moon_shapes(n: int) -> tuple[np.ndarray, np.ndarray]:
    n_out = n // 2
    upper, lower = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n - n_out)
    x = np.vstack([np.append(np.cos(upper), 1 - np.cos(lower)),
                   np.append(np.sin(upper), 1 - np.sin(lower) - 0.5)]).T
    return x, np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n - n_out, dtype=np.intp)])


def _circle_shapes(n: int) -> tuple[np.ndarray, np.ndarray]:
    n_out = n // 2
    outer = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
    inner = np.linspace(0, 2 * np.pi, n - n_out, endpoint=False)
    x = np.vstack([np.append(np.cos(outer), np.cos(inner)), np.append(np.sin(outer), np.sin(inner))]).T
    return x, np.hstack([np.zeros(n_out, dtype=np.intp), np.ones(n - n_out, dtype=np.intp)])


@functools.cache  # the same for every draw of n points: a batched sweep draws K batches an epoch
def _noiseless(shapes: Callable[[int], tuple[np.ndarray, np.ndarray]], n: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = shapes(n)
    x.flags.writeable = y.flags.writeable = False  # shared: every draw indexes a copy out of them
    return x, y


# What a run's dataset inputs say of how their points were drawn. The moons' words are those
# earlier runs recorded (their function is `points` now): they are part of the digest, which must
# change only when the points do.
GENERATED_AS = {
    "moons": "moonprop.data.moons: sklearn.datasets.make_moons, labels -1 (upper) / +1 (lower)",
    "circles": "moonprop.data.points: sklearn.datasets.make_circles, labels -1 (outer) / +1 (inner)",
    "blobs": "moonprop.data.points: sklearn.datasets.make_blobs at (-offset, -offset) -1 and (offset, offset) +1",
    "xor": "moonprop.data.points: uniform in [-1, 1]^2, +1 where x * y > 0, then noise",
    "spiral": "moonprop.data.points: two spiral arms of radius 1, -1 and +1, then noise",
}
GENERATORS: dict[str, Callable[[Any, int, np.random.RandomState], tuple[np.ndarray, np.ndarray]]] = {
    "moons": _moons, "circles": _circles, "blobs": _blobs, "xor": _xor, "spiral": _spiral,
}
_RNG = np.random.RandomState()  # reseeded for every draw: a batched sweep draws K batches an epoch


def plane(cfg: DataConfig) -> Plane:
    """The part of the plane a boundary picture shows: the dataset's shape, three noise deviations
    around it and a margin, so that nearly every point is in the picture. The moons' is the seed's."""
    if isinstance(cfg, MoonsData):
        return (-1.5, 2.5, -1.0, 1.5)
    reach = {"circles": 1.0, "blobs": getattr(cfg, "offset", 0.0), "xor": 1.0, "spiral": 1.0}[cfg.name]
    half = float(np.ceil((reach + 3 * cfg.noise + 0.1) * 4) / 4)  # a multiple of 0.25
    return (-half, half, -half, half)


def scored(dm: Any) -> dict[str, Batch]:
    """The sets scored after every epoch, as one validation batch: {"test": (x, y), "val": ..., "train":
    ...}, "val" without a validation set and "train" without a finite training set."""
    return {"test": dm.test, **({"val": dm.val} if dm.val is not None else {}),
            **({"train": dm.train} if dm.train is not None else {})}


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
    """Any of the datasets (`cfg.name`), as the seed's moons: a fresh batch every epoch, a fixed
    validation set (what is chosen on) and a fixed test set (what is reported), each from `seed`'s
    own stream. Both fixed sets are scored after every epoch, in one validation batch
    {"test": (x, y), "val": (x, y)} ("val" absent with `val_size=0`).

    With `train_size`, TensorFlow Playground's finite training set: its points drawn once from
    their own stream, each batch taken from them (batch_of_passes), and the whole set scored with
    the others ("train" in the validation batch), so that over-fitting shows."""

    def __init__(self, cfg: DataConfig, seed: int) -> None:
        super().__init__()
        self.cfg, self.seed = cfg, seed
        self.plane = plane(cfg)
        self.test = points(cfg, cfg.test_size, seed, _TEST)
        self.val = points(cfg, cfg.val_size, seed, _VAL) if cfg.val_size else None
        self.train = points(cfg, cfg.train_size, seed, _TRAIN_SET) if cfg.train_size else None

    def datasets(self) -> list[dict[str, Any]]:
        """The test and validation sets and the training stream as a run records them (MLflow
        dataset inputs): a name, the context, how to draw them again, and a digest that changes
        whenever they would."""
        cfg, seed = self.cfg, self.seed
        how = {"generator": GENERATED_AS[cfg.name], "seed": str(seed),
               **{f.name: str(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in _SIZES}}
        if cfg.train_size:
            train = {"stream": f"SeedSequence({seed}, spawn_key=({_TRAIN_SET}, 0))", "points": str(cfg.train_size),
                     "passes": f"SeedSequence({seed}, spawn_key=({_PASS}, pass)) orders each pass"}
        else:
            train = {"stream": f"SeedSequence({seed}, spawn_key=({_TRAIN}, epoch))"}
        specs = [(f"{cfg.name}-test", "test", {**how, "stream": f"SeedSequence({seed}, spawn_key=({_TEST}, 0))",
                                               "points": str(cfg.test_size)}),
                 (f"{cfg.name}-train", "train", {**how, **train, "batches": str(cfg.num_batches),
                                                 "points_per_batch": str(cfg.batch_size)})]
        if cfg.val_size:
            specs.append((f"{cfg.name}-val", "val", {**how, "stream": f"SeedSequence({seed}, spawn_key=({_VAL}, 0))",
                                                     "points": str(cfg.val_size)}))
        return [{"name": name, "context": context, "source": source,
                 "digest": hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:8]}
                for name, context, source in specs]

    def train_batch(self, epoch: int) -> Batch:
        if self.train is None:
            return points(self.cfg, self.cfg.batch_size, self.seed, _TRAIN, epoch)
        index = batch_of_passes(self.cfg.train_size, self.cfg.batch_size, self.seed, epoch)
        return self.train[0][index], self.train[1][index]

    def train_dataloader(self) -> _OneBatchPerEpoch:
        return _OneBatchPerEpoch(self)

    def val_dataloader(self) -> DataLoader:
        # Both sets are one batch (1000 points x 337 weights is tiny); batch_size=None hands it
        # over as it is, without collating 1000 samples every epoch.
        return DataLoader([scored(self)], batch_size=None)

    def test_dataloader(self) -> DataLoader:
        """The test set alone, one batch: `trainer.test(module, datamodule=data)`."""
        return DataLoader([self.test], batch_size=None)
