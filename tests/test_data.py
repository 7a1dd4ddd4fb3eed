import numpy as np
import pytest
import sklearn.datasets
import torch

from moonprop.config import DATASETS, BlobsData, CirclesData, MoonsData, SpiralData, XorData
from moonprop.data import GENERATORS, MoonsDataModule, plane, points


@pytest.mark.parametrize("n, noise, seed", [(50, 0.1, 0), (1000, 0.1, 123456789), (51, 0.3, 7), (1, 0.0, 2**32 - 1)])
def test_moons_are_sklearns_number_for_number(n, noise, seed):
    x, y = GENERATORS["moons"](MoonsData(noise=noise), n, np.random.RandomState(seed))
    expected_x, expected_y = sklearn.datasets.make_moons(n_samples=n, noise=noise, random_state=seed)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)


@pytest.mark.parametrize("n, noise, seed", [(50, 0.1, 0), (1000, 0.05, 123456789), (51, 0.3, 7), (1, 0.0, 2**32 - 1)])
def test_circles_and_blobs_are_sklearns_number_for_number(n, noise, seed):
    rng = np.random.RandomState(seed)
    x, y = GENERATORS["circles"](CirclesData(noise=noise, factor=0.3), n, rng)
    expected_x, expected_y = sklearn.datasets.make_circles(n_samples=n, noise=noise, factor=0.3, random_state=seed)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)
    rng.seed(seed)
    x, y = GENERATORS["blobs"](BlobsData(noise=noise + 0.5, offset=1.5), n, rng)
    expected_x, expected_y = sklearn.datasets.make_blobs(n_samples=n, centers=[[-1.5, -1.5], [1.5, 1.5]],
                                                         cluster_std=noise + 0.5, random_state=seed)
    np.testing.assert_array_equal(x, expected_x)
    np.testing.assert_array_equal(y, expected_y)


def test_xor_and_spiral_label_by_their_shape():
    x, y = points(XorData(noise=0.0), 500, seed=0, stream=0)
    assert torch.equal(y, torch.where(x[:, 0] * x[:, 1] > 0, 1.0, -1.0)) and x.abs().max() <= 1
    x, y = points(SpiralData(noise=0.0, turns=1.0), 500, seed=0, stream=0)
    r = x.norm(dim=1)
    angle = torch.atan2(x[:, 1], x[:, 0])
    arm = torch.remainder(angle - 2 * torch.pi * r - torch.pi * (y > 0), 2 * torch.pi)  # 0 on its own arm
    assert torch.all((arm < 1e-4) | (arm > 2 * torch.pi - 1e-4)) and (y > 0).sum() == 250


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_every_dataset_keeps_the_contract(name):
    """A fresh batch every epoch from its own seed, a fixed test set, labels -1 / +1, both classes,
    a picture's plane that holds the points, and recorded inputs whose digest follows the values."""
    cfg = DATASETS[name](test_size=400)
    dm = MoonsDataModule(cfg, seed=3)
    assert set(dm.test[1].tolist()) == {-1.0, 1.0} and abs(dm.test[1].mean()) < 0.1
    assert not torch.equal(dm.train_batch(0)[0], dm.train_batch(1)[0])
    assert torch.equal(dm.train_batch(4)[0], MoonsDataModule(cfg, seed=3).train_batch(4)[0])
    assert not torch.equal(dm.test[0], MoonsDataModule(cfg, seed=4).test[0])
    x0, x1, y0, y1 = plane(cfg)
    inside = (dm.test[0][:, 0] > x0) & (dm.test[0][:, 0] < x1) & (dm.test[0][:, 1] > y0) & (dm.test[0][:, 1] < y1)
    assert inside.float().mean() > 0.99
    noisier = MoonsDataModule(DATASETS[name](test_size=400, noise=cfg.noise + 0.1), seed=3)
    assert {d["name"] for d in dm.datasets()} == {f"{name}-test", f"{name}-train", f"{name}-val"}
    assert {d["digest"] for d in dm.datasets()}.isdisjoint({d["digest"] for d in noisier.datasets()})


def test_the_moons_plane_is_the_seeds():
    assert plane(MoonsData()) == (-1.5, 2.5, -1.0, 1.5) == plane(MoonsData(noise=0.3))


def test_shapes_dtypes_and_labels():
    x, y = points(MoonsData(noise=0.1), 50, seed=0, stream=0)
    assert x.shape == (50, 2) and y.shape == (50,)
    assert x.dtype == torch.float32 and y.dtype == torch.float32
    assert set(y.tolist()) == {-1.0, 1.0}
    assert (y == 1).sum() == 25  # make_moons balances the two moons


def test_upper_moon_is_minus_one():
    x, y = points(MoonsData(noise=0.0), 1000, seed=0, stream=0)
    upper, lower = x[y == -1], x[y == 1]
    assert upper[:, 1].min() >= -1e-6 and upper[:, 0].max() <= 1 + 1e-6  # x=cos t, y=sin t
    assert lower[:, 1].max() <= 0.5 + 1e-6 and lower[:, 0].min() >= -1e-6  # x=1-cos t, y=.5-sin t


def test_seeding_is_reproducible_and_streams_are_independent():
    cfg = MoonsData(noise=0.1)
    a, b = points(cfg, 50, seed=3, stream=0, index=4), points(cfg, 50, seed=3, stream=0, index=4)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], points(MoonsData(noise=0.1), 50, seed=3, stream=0, index=5)[0])  # next epoch
    assert not torch.equal(a[0], points(MoonsData(noise=0.1), 50, seed=4, stream=0, index=4)[0])  # other seed
    assert not torch.equal(a[0], points(MoonsData(noise=0.1), 50, seed=3, stream=1, index=4)[0])  # test stream


def test_datamodule_fixed_test_set_and_one_fresh_batch_per_epoch():
    dm = MoonsDataModule(MoonsData(batch_size=20, test_size=300), seed=1)
    assert dm.test[0].shape == (300, 2)
    (batch,) = list(dm.val_dataloader())
    tx, ty = batch["test"]
    assert torch.equal(tx, dm.test[0]) and torch.equal(ty, dm.test[1])
    assert dm.train_batch(0)[0].shape == (20, 2)
    assert not torch.equal(dm.train_batch(0)[0], dm.train_batch(1)[0])
    # the test set is sklearn's moons from the seed's own stream, the same whatever else is drawn
    state = int(np.random.SeedSequence(1, spawn_key=(1, 0)).generate_state(1)[0])
    x, y = sklearn.datasets.make_moons(300, noise=0.1, random_state=state)
    dm.train_batch(7)
    assert np.allclose(dm.test[0].numpy(), x.astype(np.float32)) and np.array_equal(dm.test[1].numpy(), 2 * y - 1)
    (again, _) = next(iter(dm.val_dataloader()))["test"]  # every epoch's validation sees the same points
    assert torch.equal(again, tx)


def test_noise_moves_points_off_the_curves():
    x0, _ = points(MoonsData(noise=0.0), 200, seed=0, stream=0)
    x1, _ = points(MoonsData(noise=0.3), 200, seed=0, stream=0)
    assert (x0 - x1).abs().mean() > 0.1


def test_a_finite_training_set_is_passed_over_in_shuffled_batches():
    """data.train_size: the batches come from one set drawn from its own stream; each pass over it
    is a fresh shuffle of all its points; a batch that does not fit a pass takes the next one's start."""
    dm = MoonsDataModule(MoonsData(batch_size=10, train_size=30), seed=3)
    x, y = dm.train
    assert x.shape == (30, 2) and not torch.equal(x, points(MoonsData(), 30, seed=3, stream=0)[0])

    def rows(batch):
        return [tuple(p) for p in batch[0].tolist()]

    every = [tuple(p) for p in x.tolist()]
    passes = [sum((rows(dm.train_batch(3 * p + k)) for k in range(3)), []) for p in range(3)]
    for one_pass in passes:
        assert sorted(one_pass) == sorted(every)  # every point once a pass
    assert passes[0] != passes[1] != passes[2]  # in a new order each time
    again = MoonsDataModule(MoonsData(batch_size=10, train_size=30), seed=3)
    assert torch.equal(dm.train_batch(4)[0], again.train_batch(4)[0])  # the same batch, whatever came before
    straddling = MoonsDataModule(MoonsData(batch_size=20, train_size=30), seed=3)
    first, second = rows(straddling.train_batch(0)), rows(straddling.train_batch(1))
    assert len(second) == 20 and sorted(first + second[:10]) == sorted(every)  # the pass ends 10 points in
    (scored,) = list(dm.val_dataloader())
    assert torch.equal(scored["train"][0], x)  # scored whole after every epoch: train/acc
    assert "train" not in next(iter(MoonsDataModule(MoonsData(), seed=3).val_dataloader()))  # the seed's way
