import io

import numpy as np
import pytest
import torch

from moonprop import config
from moonprop.callbacks import torchscript
from moonprop.model import ACTIVATIONS, FEATURES, MLP, accuracy, expand, loss, stacked_forward


def test_seed_network_has_337_parameters():
    net = MLP([16, 16])
    assert sum(p.numel() for p in net.parameters()) == 337  # 16*2+16 + 16*16+16 + 16+1


@pytest.mark.parametrize("hidden, expected", [
    ([], 3),
    ([8], 8 * 2 + 8 + 8 + 1),
    ([4, 3, 2], (2 * 4 + 4) + (4 * 3 + 3) + (3 * 2 + 2) + (2 + 1)),
])
def test_parameter_count_follows_hidden_sizes(hidden, expected):
    assert sum(p.numel() for p in MLP(hidden).parameters()) == expected


def test_init_is_uniform_weights_and_zero_biases():
    net = MLP([16, 16], torch.Generator().manual_seed(0))
    weights = torch.cat([p.flatten() for n, p in net.named_parameters() if n.endswith("weight")])
    biases = torch.cat([p.flatten() for n, p in net.named_parameters() if n.endswith("bias")])
    assert weights.min() >= -1 and weights.max() <= 1
    assert weights.min() < -0.9 and weights.max() > 0.9  # spans the range, not a narrower init
    assert abs(weights.mean()) < 0.15
    assert torch.all(biases == 0)


def test_relu_between_layers_none_on_output():
    net = MLP([4])
    kinds = [type(m).__name__ for m in net]
    assert kinds == ["Linear", "ReLU", "Linear"]
    with torch.no_grad():  # an output layer that can go negative proves there is no ReLU after it
        net[2].weight.fill_(-1.0)
        net[2].bias.fill_(-1.0)
    assert net(torch.ones(3, 2)).max() < 0


def test_same_generator_seed_same_network():
    a, b = (MLP([16, 16], torch.Generator().manual_seed(7)) for _ in range(2))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_loss_against_hand_computed_values():
    scores = torch.tensor([2.0, -0.5, 0.3])
    y = torch.tensor([1.0, 1.0, -1.0])
    params = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    # hinge: relu(1-2)=0, relu(1+0.5)=1.5, relu(1+0.3)=1.3 -> mean 2.8/3; L2: 1+4+9 = 14
    assert loss(scores, y, params, alpha=0.0).item() == pytest.approx(2.8 / 3)
    assert loss(scores, y, params, alpha=1e-2).item() == pytest.approx(2.8 / 3 + 0.14)


def test_loss_gradient_matches_numpy_reference():
    """The gradient of the L2 term is 2*alpha*p (weight_decay would give alpha*p)."""
    net = MLP([3], torch.Generator().manual_seed(1))
    x, y = torch.randn(5, 2, generator=torch.Generator().manual_seed(2)), torch.tensor([1.0, -1, 1, -1, 1])
    alpha = 0.5
    value = loss(net(x), y, list(net.parameters()), alpha)
    value.backward()
    # numpy reference of the same function, differentiated by finite differences
    params = [p.detach().numpy().astype(np.float64).copy() for p in net.parameters()]

    def f(ps):
        w1, b1, w2, b2 = ps
        h = np.maximum(x.numpy() @ w1.T + b1, 0)
        s = (h @ w2.T + b2).ravel()
        return np.maximum(1 - y.numpy() * s, 0).mean() + alpha * sum((p * p).sum() for p in ps)

    for i, p in enumerate(net.parameters()):
        numeric = np.zeros_like(params[i])
        for idx in np.ndindex(params[i].shape):
            plus = [q.copy() for q in params]
            minus = [q.copy() for q in params]
            plus[i][idx] += 1e-6
            minus[i][idx] -= 1e-6
            numeric[idx] = (f(plus) - f(minus)) / 2e-6
        np.testing.assert_allclose(p.grad.numpy(), numeric, atol=1e-4)


def test_accuracy_counts_sign_agreement():
    assert accuracy(torch.tensor([0.5, -2.0, 1.0, -0.1]), torch.tensor([1.0, -1.0, -1.0, 1.0])) == 0.5
    assert accuracy(torch.ones(1000), torch.tensor([1.0] * 999 + [-1.0])) == 0.999  # the exact ratio


def test_the_network_as_torchscript_scores_any_number_of_points(tmp_path):
    """What a run's MLflow model holds: the network traced on two points (callbacks.py), saved and
    loaded without moonprop's code, scoring as many points as it is given."""
    net = MLP([5, 3], torch.Generator().manual_seed(3)).eval()
    torch.jit.save(torch.jit.trace(net, torch.zeros(2, 2)), tmp_path / "model.pth")
    loaded = torch.jit.load(tmp_path / "model.pth")
    for n in (1, 10, 1000):
        x = torch.randn(n, 2)
        assert torch.equal(net(x), loaded(x)) and loaded(x).shape == (n,)


@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_stacked_forward_scores_each_network_as_its_own_forward(activation):
    """What a batched sweep trains with is MLP.forward over a leading job dimension, for every
    activation an MLP can have (a new one without its stacked twin fails here)."""
    nets = [MLP([16, 8], torch.Generator().manual_seed(seed), activation, init="kaiming") for seed in range(3)]
    params = [torch.stack(ps) for ps in zip(*(net.parameters() for net in nets), strict=True)]
    points = torch.randn(3, 50, 2)
    scores = stacked_forward(params, points, activation)
    for job, net in enumerate(nets):
        torch.testing.assert_close(scores[job], net(points[job]))


def test_features_are_playgrounds_computed_from_the_point():
    x = torch.tensor([[0.5, -2.0], [3.0, 0.25]])
    expected = {"x1": x[:, 0], "x2": x[:, 1], "sq_x1": x[:, 0] ** 2, "sq_x2": x[:, 1] ** 2, "x1x2": x[:, 0] * x[:, 1],
                "sin_x1": torch.sin(x[:, 0]), "sin_x2": torch.sin(x[:, 1])}
    assert set(expected) == set(FEATURES) == set(config.FEATURES)  # the config's names are the model's
    names = tuple(expected)
    torch.testing.assert_close(expand(x, names), torch.stack(list(expected.values()), dim=-1))
    assert expand(x, ("x1", "x2")) is x  # the seed's: the points themselves, untouched


def test_features_are_part_of_the_network_which_takes_points(tmp_path):
    """The first layer sees the features; the network, and its TorchScript (a run's MLflow model),
    take points (n, 2). Networks of one shape with other features do not share a trace."""
    features = ("sq_x1", "sq_x2", "x1x2")
    net = MLP([4], torch.Generator().manual_seed(0), features=features).eval()
    assert net[0].weight.shape == (4, 3) and [n for n, _ in net.named_parameters()][0] == "0.weight"
    x = torch.randn(7, 2)
    by_hand = torch.relu(expand(x, features) @ net[0].weight.T + net[0].bias) @ net[2].weight.T + net[2].bias
    torch.testing.assert_close(net(x), by_hand.squeeze(-1))
    traced: dict = {}
    other = MLP([4], torch.Generator().manual_seed(0), features=("x1", "x2", "sin_x1")).eval()
    for network in (net, other):
        loaded = torch.jit.load(io.BytesIO(torchscript(network, traced)))
        torch.testing.assert_close(loaded(x), network(x))
    assert len(traced) == 2


def test_stacked_forward_computes_the_features_as_each_network_does():
    features = ("x1", "sin_x2", "sq_x1")
    nets = [MLP([8], torch.Generator().manual_seed(seed), features=features) for seed in range(2)]
    params = [torch.stack(ps) for ps in zip(*(net.parameters() for net in nets), strict=True)]
    points = torch.randn(2, 30, 2)
    scores = stacked_forward(params, points, "relu", features)
    for job, net in enumerate(nets):
        torch.testing.assert_close(scores[job], net(points[job]))
