"""The network and its loss, as in micrograd: an MLP scored with a max-margin loss plus L2 (the
seed's), or the other activations, initialisations, losses and penalties people try next."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

LEAKY_SLOPE = 0.01  # leaky_relu's, torch's default
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "identity": nn.Identity, "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(LEAKY_SLOPE),
}
# the same, as functions, in place where torch has it: stacked_forward's K x 1,000 points x 16 units
# would otherwise be allocated anew at every layer
STACKED_ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "relu": torch.relu_, "tanh": torch.tanh_, "sigmoid": torch.sigmoid_, "identity": lambda x: x,
    "gelu": nn.functional.gelu, "leaky_relu": lambda x: nn.functional.leaky_relu_(x, LEAKY_SLOPE),
}
# The inputs the first layer sees, computed from a point (x1, x2): TensorFlow Playground's seven,
# named as Hydra's grammar takes them unquoted (`^` is not in it): sq_x1 is x1^2, x1x2 is x1 * x2.
FEATURES: dict[str, Callable[[Tensor], Tensor]] = {
    "x1": lambda x: x[..., 0], "x2": lambda x: x[..., 1],
    "sq_x1": lambda x: x[..., 0] * x[..., 0], "sq_x2": lambda x: x[..., 1] * x[..., 1],
    "x1x2": lambda x: x[..., 0] * x[..., 1],
    "sin_x1": lambda x: torch.sin(x[..., 0]), "sin_x2": lambda x: torch.sin(x[..., 1]),
}
POINT = ("x1", "x2")  # the seed's: the point itself


def expand(x: Tensor, features: tuple[str, ...]) -> Tensor:
    """Points [..., 2] -> their features [..., F] in the order given; the seed's (x1, x2) are the
    points themselves, untouched."""
    if features == POINT:
        return x
    return torch.stack([FEATURES[name](x) for name in features], dim=-1)


# each activation's name in torch.nn.init.calculate_gain, for kaiming and xavier (GELU's is ReLU's)
GAINS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "identity": "linear", "gelu": "relu",
         "leaky_relu": "leaky_relu"}


def init_weight(weight: Tensor, init: str, activation: str, generator: torch.Generator | None) -> None:
    """Draw a layer's weight [out, in] in place: uniform(-1, 1) as micrograd and the seed do, or
    kaiming / xavier uniform with the gain of the activation that follows it ("linear" for the
    output layer)."""
    if init == "uniform":
        weight.uniform_(-1.0, 1.0, generator=generator)
    elif init == "kaiming":
        nn.init.kaiming_uniform_(weight, a=LEAKY_SLOPE if activation == "leaky_relu" else 0.0,
                                 nonlinearity=GAINS.get(activation, "linear"), generator=generator)
    elif init == "xavier":
        gain = nn.init.calculate_gain(GAINS.get(activation, "linear"),
                                      LEAKY_SLOPE if activation == "leaky_relu" else None)
        nn.init.xavier_uniform_(weight, gain=gain, generator=generator)
    else:
        raise ValueError(f"unknown init {init!r}")


class MLP(nn.Sequential):
    """A point (x1, x2) -> its `features` -> hidden layers, each followed by `activation` -> 1 raw
    score (no activation on the output). The features are part of the network, so that it takes
    points (n, 2) whatever they are: its MLflow model too.

    By default the seed's: the point itself, ReLU, weights uniform(-1, 1) and biases 0, as in micrograd.
    """

    def __init__(self, hidden: list[int], generator: torch.Generator | None = None, activation: str = "relu",
                 init: str = "uniform", features: tuple[str, ...] | list[str] = POINT) -> None:
        sizes = [len(features), *hidden, 1]
        layers: list[nn.Module] = []
        for i, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
            linear = nn.Linear(n_in, n_out)
            with torch.no_grad():
                init_weight(linear.weight, init, activation if i < len(hidden) else "output", generator)
                linear.bias.zero_()
            layers += [linear, ACTIVATIONS[activation]()]
        super().__init__(*layers[:-1])  # no activation on the output
        self.features = tuple(features)  # no parameters: the layers keep the seed's names (0.weight, ...)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(expand(x, self.features)).squeeze(-1)


def stacked_forward(params: list[Tensor], x: Tensor, activation: str = "relu",
                    features: tuple[str, ...] = POINT) -> Tensor:
    """MLP's forward for K networks of one shape at once: `params` are MLP's parameters in its order
    (weight [out, in], bias [out], ...), each with a leading job dimension; points x [K, n, 2] ->
    scores [K, n]. A batched sweep trains its jobs with it (batched.py). torch.func.vmap over
    MLP.forward gives the same scores at more than twice the cost of a validation pass
    (docs/speed.md: its linear is a batched matmul and an unfused add, its activations not in place)."""
    act = STACKED_ACTIVATIONS[activation]
    x = expand(x, features)
    for i in range(0, len(params), 2):
        x = torch.baddbmm(params[i + 1].unsqueeze(1), x, params[i].transpose(1, 2))
        if i < len(params) - 2:
            x = act(x)
    return x.squeeze(-1)


def data_loss(name: str, scores: Tensor, y: Tensor) -> Tensor:
    """The data term, per point (labels -1 / +1): hinge, the seed's max-margin relu(1 - y f);
    logistic, log(1 + exp(-y f)); squared_hinge, relu(1 - y f)^2."""
    if name == "hinge":
        return torch.relu(1 - y * scores)
    if name == "logistic":
        return nn.functional.softplus(-y * scores)
    if name == "squared_hinge":
        return torch.relu(1 - y * scores) ** 2
    raise ValueError(f"unknown loss {name!r}")


def penalty(name: str, params: list[Tensor]) -> Tensor:
    """l2: sum(p^2) over all parameters, the seed's; l1: sum(|p|); none: 0."""
    if name == "l2":
        return sum((p * p).sum() for p in params)  # type: ignore[return-value]
    if name == "l1":
        return sum(p.abs().sum() for p in params)  # type: ignore[return-value]
    if name == "none":
        return torch.zeros(())
    raise ValueError(f"unknown penalty {name!r}")


def loss(scores: Tensor, y: Tensor, params: list[Tensor], alpha: float, name: str = "hinge",
         penalty_name: str = "l2") -> Tensor:
    """mean(data term) + alpha * penalty; by default micrograd's "svm max-margin" loss,
    mean(relu(1 - y * f(x))) + alpha * sum(p^2).

    The L2 term is explicit rather than an optimizer's weight_decay, which would add alpha * p to
    the gradient where this adds 2 * alpha * p.
    """
    return data_loss(name, scores, y).mean() + alpha * penalty(penalty_name, params)


def accuracy(scores: Tensor, y: Tensor) -> float:
    """Share of points on the right side of the zero level (labels are -1 / +1), as the exact
    ratio: 999 of 1000 is 0.999, where a float32 mean would be 0.9990000128746033."""
    return int(((scores > 0) == (y > 0)).sum()) / len(y)
