"""The plain PyTorch reference for the benchmark: the seed experiment with nothing else.

Same data (sklearn's make_moons, a fresh batch per epoch), model (2-16-16-1, ReLU, uniform(-1, 1)
weights, zero biases), loss (hinge + 1e-4 L2), schedule (1.0 -> 0.1 linear) and per-epoch test
evaluation as moonprop's default run; no tracking, no images, one thread. It shares no code with
moonprop, so that it measures what the experiment itself costs.

    python benchmarks/reference.py      # prints {"loop_s": ..., "test_acc": ...} as JSON
"""

import json
import time

import torch
from sklearn.datasets import make_moons
from torch import nn

N, BATCH, TEST, NOISE, ALPHA = 150, 50, 1000, 0.1, 1e-4


def moons(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = make_moons(n_samples=n, noise=NOISE, random_state=seed)
    return torch.tensor(x, dtype=torch.float32), torch.tensor(2 * y - 1, dtype=torch.float32)


def main() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 1))
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.uniform_(-1, 1)
                m.bias.zero_()
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    x_test, y_test = moons(TEST, seed=1_000_000)

    def loss_fn(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        scores = net(x).squeeze(-1)
        loss = torch.relu(1 - y * scores).mean() + ALPHA * sum((p * p).sum() for p in net.parameters())
        return loss, ((scores > 0) == (y > 0)).float().mean()

    start = time.perf_counter()
    history = []
    with torch.no_grad():
        history.append(loss_fn(x_test, y_test)[1].item())  # epoch 0: the untrained network
    for k in range(N):
        x, y = moons(BATCH, seed=k)
        for group in opt.param_groups:
            group["lr"] = 1.0 - 0.9 * k / N
        loss, _ = loss_fn(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            test_loss, acc = loss_fn(x_test, y_test)
            history.append(acc.item())
            test_loss.item()
    print(json.dumps({"loop_s": time.perf_counter() - start, "test_acc": history[-1]}))


if __name__ == "__main__":
    main()
