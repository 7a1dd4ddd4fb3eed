"""The network and its loss, as in micrograd: an MLP scored with a max-margin loss plus L2."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MLP(nn.Sequential):
    """2 inputs -> hidden layers with ReLU -> 1 raw score (no activation on the output).

    Weights are uniform(-1, 1) and biases 0, as in micrograd and the seed post.
    """

    def __init__(self, hidden: list[int], generator: torch.Generator | None = None) -> None:
        sizes = [2, *hidden, 1]
        layers: list[nn.Module] = []
        for n_in, n_out in zip(sizes, sizes[1:], strict=False):
            linear = nn.Linear(n_in, n_out)
            with torch.no_grad():
                linear.weight.uniform_(-1.0, 1.0, generator=generator)
                linear.bias.zero_()
            layers += [linear, nn.ReLU()]
        super().__init__(*layers[:-1])  # no ReLU on the output

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(x).squeeze(-1)


def hinge_l2_loss(scores: Tensor, y: Tensor, params: list[Tensor], alpha: float) -> Tensor:
    """mean(relu(1 - y * f(x))) + alpha * sum(p^2): micrograd's "svm max-margin" loss.

    The L2 term is explicit rather than SGD's weight_decay, which would add alpha * p to the
    gradient where this adds 2 * alpha * p.
    """
    data_loss = torch.relu(1 - y * scores).mean()
    reg_loss = alpha * sum((p * p).sum() for p in params)
    return data_loss + reg_loss


def accuracy(scores: Tensor, y: Tensor) -> float:
    """Share of points on the right side of the zero level (labels are -1 / +1), as the exact
    ratio: 999 of 1000 is 0.999, where a float32 mean would be 0.9990000128746033."""
    return int(((scores > 0) == (y > 0)).sum()) / len(y)
