"""Many jobs of a sweep trained as one model (hydra/launcher=batched).

A job's network has 337 parameters: its arithmetic is nothing, its cost is the per-step overhead
of Python, Lightning and the recorder. Stacking K jobs' weights into [K, in, out] tensors and
multiplying them with one `baddbmm` per layer trains K networks for about the price of one.

Each job stays what it would be alone: its own initial weights (drawn from its seed exactly as
`model.MLP` draws them), its own data stream (data.py, from its seed and noise), its own loss
weight and learning-rate schedule. Jobs of different widths are padded to the widest layers;
a mask keeps every padded weight out of the forward pass, so that its gradient is zero and the
padded units stay exactly zero. The summed loss is a sum of independent terms: each job's
gradient is the one it would have alone.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from moonprop.config import Config
from moonprop.data import Batch, MoonsDataModule, _OneBatchPerEpoch
from moonprop.model import MLP
from moonprop.schedule import learning_rate


def stack_key(cfg: Config) -> tuple[Any, ...]:
    """What jobs must share to train together: the depth of the network (widths are padded), the
    shape of the data (batches, their size, the test set) and the device. Everything else
    (seed, noise, schedule, loss weight, widths, pictures) may differ within a batch."""
    return (len(cfg.model.hidden), cfg.data.num_batches, cfg.data.batch_size, cfg.data.test_size,
            cfg.trainer.accelerator, cfg.trainer.threads)


class StackedMLP(nn.Module):
    """K MLPs of one depth as stacked weights: layer l holds weight [K, in, out] and bias [K, 1, out],
    padded to the widest job's layer, with masks that are 1 where a job's network has a weight."""

    def __init__(self, hidden: list[list[int]], seeds: list[int]) -> None:
        super().__init__()
        self.hidden = [list(h) for h in hidden]
        depth = {len(h) for h in hidden}
        if len(depth) != 1:
            raise ValueError(f"networks of one depth stack, not {sorted(depth)}")
        widths = [2, *(max(h[i] for h in hidden) for i in range(depth.pop())), 1]
        k, shapes = len(hidden), list(zip(widths, widths[1:], strict=False))
        self.weights = nn.ParameterList(torch.zeros(k, n_in, n_out) for n_in, n_out in shapes)
        self.biases = nn.ParameterList(torch.zeros(k, 1, n_out) for _, n_out in shapes)
        masks = [torch.zeros(k, n_in, n_out) for n_in, n_out in shapes]
        with torch.no_grad():
            for j, (h, seed) in enumerate(zip(hidden, seeds, strict=True)):
                # the same draws, in the same order, as MLP(h, Generator().manual_seed(seed))
                generator = torch.Generator().manual_seed(seed)
                sizes = [2, *h, 1]
                for layer, (n_in, n_out) in enumerate(zip(sizes, sizes[1:], strict=False)):
                    weight = torch.empty(n_out, n_in).uniform_(-1.0, 1.0, generator=generator)
                    self.weights[layer][j, :n_in, :n_out] = weight.T
                    masks[layer][j, :n_in, :n_out] = 1.0
        for layer, mask in enumerate(masks):
            self.register_buffer(f"mask{layer}", mask)
            self.register_buffer(f"bias_mask{layer}", mask.amax(1, keepdim=True))  # [K, 1, out]

    def _layers(self, jobs: Tensor | None = None) -> list[tuple[Tensor, Tensor]]:
        """Each layer's masked (weight, bias), of the jobs given (all of them by default)."""
        layers = []
        for layer, (weight, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            w, b = weight * getattr(self, f"mask{layer}"), bias * getattr(self, f"bias_mask{layer}")
            layers.append((w, b) if jobs is None else (w[jobs], b[jobs]))
        return layers

    def forward(self, x: Tensor, jobs: Tensor | None = None) -> Tensor:
        """Scores [K, n] of points x [K, n, 2], each job's points through its own network."""
        layers = self._layers(jobs)
        for i, (w, b) in enumerate(layers):
            x = torch.baddbmm(b, x, w)
            if i < len(layers) - 1:
                x = torch.relu_(x)  # in place: at K x 1,000 test points a pass over memory saved
        return x.squeeze(-1)

    def squared_norms(self) -> Tensor:
        """sum(p^2) over each job's parameters, [K]."""
        return sum((w * w).sum((1, 2)) + (b * b).sum((1, 2)) for w, b in self._layers())  # type: ignore[return-value]

    def network(self, job: int) -> MLP:
        """Job `job`'s network alone, as a plain MLP of its own widths."""
        mlp = MLP(self.hidden[job])
        linears = [m for m in mlp if isinstance(m, nn.Linear)]
        with torch.no_grad():
            for linear, (w, b) in zip(linears, self._layers(), strict=True):
                n_out, n_in = linear.weight.shape
                linear.weight.copy_(w[job, :n_in, :n_out].T)
                linear.bias.copy_(b[job, 0, :n_out])
        return mlp


class BatchedMoonsData(pl.LightningDataModule):
    """The jobs' data, stacked: each job's batch of epoch k and test set are the ones its own
    MoonsDataModule gives, from its seed and noise."""

    def __init__(self, cfgs: list[Config]) -> None:
        super().__init__()
        self.jobs = [MoonsDataModule(cfg.data, cfg.seed) for cfg in cfgs]
        self.test = (torch.stack([dm.test[0] for dm in self.jobs]), torch.stack([dm.test[1] for dm in self.jobs]))

    def train_batch(self, epoch: int) -> Batch:
        batches = [dm.train_batch(epoch) for dm in self.jobs]
        return torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])

    def train_dataloader(self) -> _OneBatchPerEpoch:
        return _OneBatchPerEpoch(self)  # type: ignore[arg-type]

    def val_dataloader(self) -> DataLoader:
        return DataLoader([self.test], batch_size=None)  # one batch, as it is


class BatchedMoonsClassifier(pl.LightningModule):
    """K jobs' MoonsClassifier as one module: the loss is the sum of the jobs' losses, and each
    job's gradient is scaled by its own learning rate before plain SGD at rate 1.0 steps (the
    same update as SGD at that rate).

    A job whose loss stops being finite is set inactive: its gradient is zero from then on, its
    later losses are no one's concern, and `diverged` says when, for its run to end FAILED.
    """

    def __init__(self, cfgs: list[Config]) -> None:
        super().__init__()
        self.num_batches = cfgs[0].data.num_batches
        self.net = StackedMLP([cfg.model.hidden for cfg in cfgs], [cfg.seed for cfg in cfgs])
        self.register_buffer("alpha", torch.tensor([cfg.loss.alpha for cfg in cfgs]))
        # each job's rate of every step, as Python floats (what its run records) and as a tensor
        self.rates = [[learning_rate(cfg.schedule, k, self.num_batches) for k in range(self.num_batches)]
                      for cfg in cfgs]
        self.register_buffer("rate_table", torch.tensor(self.rates).T.contiguous())  # [N, K]
        self.register_buffer("active", torch.ones(len(cfgs), dtype=torch.bool))
        self.diverged: dict[int, str] = {}  # job -> why it stopped

    def forward(self, x: Tensor, jobs: Tensor | None = None) -> Tensor:
        return self.net(x, jobs)

    def losses(self, scores: Tensor, y: Tensor) -> Tensor:
        """Each job's hinge + L2 loss, [K]: model.hinge_l2_loss, job by job."""
        return torch.relu(1 - y * scores).mean(1) + self.alpha * self.net.squared_norms()

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        losses = self.losses(self(x), y)
        diverging = self.active & ~torch.isfinite(losses)
        if diverging.any():
            for job in diverging.nonzero().flatten().tolist():
                self.diverged[job] = f"NonFiniteLoss: loss is {losses[job].item()} at epoch {self.current_epoch + 1}"
            self.active &= ~diverging
        step = self.current_epoch  # one batch per epoch
        return {"loss": torch.where(self.active, losses, 0.0).sum(), "losses": losses.detach(),
                "rates": [rates[step] for rates in self.rates]}

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # each job's own rate; an inactive job's gradient (NaN, if its loss was) is zero
        rate, active = self.rate_table[self.current_epoch].view(-1, 1, 1), self.active.view(-1, 1, 1)
        for p in self.parameters():
            if p.grad is not None:
                p.grad = torch.where(active, p.grad * rate, 0.0)

    def validation_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        scores = self(x)
        return {"losses": self.losses(scores, y), "correct": ((scores > 0) == (y > 0)).sum(1)}

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=1.0)
