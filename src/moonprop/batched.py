"""Many jobs of a sweep trained as one model (hydra/launcher=batched).

A job's network has 337 parameters: its arithmetic is nothing, its cost is the per-step overhead
of Python, Lightning and the recorder. Stacking K jobs' weights into [K, out, in] tensors and
scoring them with `model.stacked_forward` (MLP's forward over a leading job dimension, one
`baddbmm` a layer) trains K networks for about the price of one.

Each job stays what it would be alone, by the same definitions: its network is its own `model.MLP`
(its widths, drawn from its seed with its own init) stacked, its data stream its own (data.py), its
loss `model.loss` (mapped over the jobs with torch.func.vmap: its own data term, penalty and
weight), its rate `schedule.learning_rate` of its own schedule. Jobs of different widths are padded
to the widest layers, jobs of different features to all of them; a mask keeps every padded weight
out of the forward pass, so that its gradient is zero and the padded units stay exactly zero. The
summed loss is a sum of independent terms: each job's gradient is the one it would have alone, and
StackedOptimizer steps each job's slice as torch's optimizer steps the job alone. torch's own
optimizers would need a parameter group per job, so each job's parameters apart and stacked at
every step: measured, that costs more than it may (docs/speed.md: "one model for one job and for K").

What must be the same for a batch (stack_key): the depth, the shape of the data, the device, the
activation, the kind of optimizer and Lightning's arguments. A job with callbacks or loggers of its
own, or whose gradients are clipped by their norm (which would be the norm over the whole batch), trains in
a batch of one: alone, as it would in-process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.utils.data import DataLoader

from moonprop.config import (
    RECORD_LOGGER,
    AdamOptimizer,
    AdamWOptimizer,
    Config,
    MomentumOptimizer,
    SgdOptimizer,
)
from moonprop.data import Batch, MoonsDataModule, _OneBatchPerEpoch, scored
from moonprop.model import MLP, POINT, loss, stacked_forward
from moonprop.schedule import learning_rate


def stack_key(cfg: Config, job: int) -> tuple[Any, ...]:
    """What jobs must share to train together: the depth of the network (widths and features are
    padded), the shape of the data (batches, their size, the test and validation sets), the device,
    the activation, the kind of optimizer and Lightning's arguments. Everything else (seed, dataset,
    noise, init, loss, penalty, its weight, the optimizer's values, schedule, widths, features,
    training sets, pictures) may differ within a batch. A job with its own callbacks or loggers, or
    whose gradients are clipped by their norm, is alone (`job`)."""
    lightning = cfg.trainer.lightning
    alone = bool(cfg.callbacks) or set(cfg.logger) != {RECORD_LOGGER} or (lightning.get("gradient_clip_val") is not None
                                    and lightning.get("gradient_clip_algorithm") != "value")
    return (len(cfg.model.hidden), cfg.data.num_batches, cfg.data.batch_size, cfg.data.test_size,
            cfg.data.val_size, cfg.trainer.accelerator, cfg.trainer.threads, cfg.model.activation, cfg.optimizer.name,
            json.dumps(lightning, sort_keys=True, default=str), job if alone else None)


class StackedMLP(nn.Module):
    """K `model.MLP` networks of one depth as stacked parameters: each of MLP's parameters (`0.weight`
    [out, in], `0.bias` [out], ...) as one [K, ...] tensor, padded to the widest job's layer, with
    masks that are 1 where a job's network has a weight. Jobs that see different features share
    a first layer over all of them (`self.features`, in the order they first appear), each job's
    weights in its own features' columns, the others masked."""

    def __init__(self, hidden: list[list[int]], seeds: list[int], activation: str = "relu",
                 inits: list[str] | None = None, features: list[tuple[str, ...]] | None = None) -> None:
        super().__init__()
        self.hidden, self.activation = [list(h) for h in hidden], activation
        inits = inits or ["uniform"] * len(hidden)
        self.job_features = [tuple(f) for f in features] if features else [POINT] * len(hidden)
        self.features = tuple(dict.fromkeys(name for f in self.job_features for name in f))
        depth = {len(h) for h in hidden}
        if len(depth) != 1:
            raise ValueError(f"networks of one depth stack, not {sorted(depth)}")
        with torch.device("meta"):  # only its parameters' names and shapes are used
            template = MLP([max(h[i] for h in hidden) for i in range(depth.pop())], activation=activation,
                           features=self.features)
        self.names = [name for name, _ in template.named_parameters()]
        self.stack = nn.ParameterList(torch.zeros(len(hidden), *p.shape) for p in template.parameters())
        self.padded = len({tuple(h) for h in hidden}) > 1 or len(set(self.job_features)) > 1
        masks = [torch.zeros_like(p) for p in self.stack]
        with torch.no_grad():
            for job, (h, seed, init, f) in enumerate(zip(hidden, seeds, inits, self.job_features, strict=True)):
                alone = MLP(h, torch.Generator().manual_seed(seed), activation, init, f)  # its own draws
                for i, (stacked, mask, p) in enumerate(zip(self.stack, masks, alone.parameters(), strict=True)):
                    stacked[self._at(job, i, p.shape)] = p
                    mask[self._at(job, i, p.shape)] = 1.0
        if self.padded:  # jobs of one shape (a sweep over seeds, say) need no masks
            for i, mask in enumerate(masks):
                self.register_buffer(f"mask{i}", mask)

    def _at(self, job: int, i: int, shape: torch.Size) -> tuple[Any, ...]:
        """Where job `job`'s parameter `i` of `shape` sits in its stacked tensor: its leading slice,
        the first layer's columns those of its features."""
        if i == 0:
            columns = torch.tensor([self.features.index(name) for name in self.job_features[job]])
            return job, slice(0, shape[0]), columns
        return job, *map(slice, shape)

    def stacked(self) -> dict[str, Tensor]:
        """The parameters by MLP's names, [K, ...], padding masked out."""
        if not self.padded:
            return dict(zip(self.names, self.stack, strict=True))
        return {name: p * getattr(self, f"mask{i}")
                for i, (name, p) in enumerate(zip(self.names, self.stack, strict=True))}

    def scores(self, params: dict[str, Tensor], x: Tensor) -> Tensor:
        """Scores [K, n] of points x [K, n, 2], each job's points through its own network."""
        return stacked_forward(list(params.values()), x, self.activation, self.features)

    def forward(self, x: Tensor, jobs: Tensor | None = None) -> Tensor:
        """Scores [K, n] of points x [K, n, 2]; of the jobs `jobs` only, if given."""
        params = self.stacked()
        return self.scores(params if jobs is None else {k: v[jobs] for k, v in params.items()}, x)

    def network(self, job: int) -> MLP:
        """Job `job`'s network alone, as a plain MLP of its own widths."""
        mlp = MLP(self.hidden[job], activation=self.activation, features=self.job_features[job])
        with torch.no_grad():
            for i, (p, stacked) in enumerate(zip(mlp.parameters(), self.stack, strict=True)):
                p.copy_(stacked[self._at(job, i, p.shape)])
        return mlp


class BatchedMoonsData(pl.LightningDataModule):
    """The jobs' data, stacked: each job's batch of epoch k and test set are the ones its own
    MoonsDataModule gives, from its seed and noise. Finite training sets of any sizes are padded to
    the largest with points labelled 0 (no class): a job without one is all padding."""

    def __init__(self, cfgs: list[Config]) -> None:
        super().__init__()
        self.jobs = [MoonsDataModule(cfg.data, cfg.seed) for cfg in cfgs]
        self.test, self.val = (_stacked([getattr(dm, split) for dm in self.jobs]) for split in ("test", "val"))
        self.train = _padded([dm.train for dm in self.jobs])

    def train_batch(self, epoch: int) -> Batch:
        batches = [dm.train_batch(epoch) for dm in self.jobs]
        return torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches])

    def train_dataloader(self) -> _OneBatchPerEpoch:
        return _OneBatchPerEpoch(self)  # type: ignore[arg-type]

    def val_dataloader(self) -> DataLoader:
        # one batch, as it is: {"test": (x, y), "val": (x, y), "train": (x, y)}, each [K, n, ...]
        return DataLoader([scored(self)], batch_size=None)


def _stacked(sets: list[Batch | None]) -> Batch | None:
    if sets[0] is None:  # no job has it: one shape for a batch (stack_key)
        return None
    return torch.stack([x for x, _ in sets]), torch.stack([y for _, y in sets])  # type: ignore[misc]


def _padded(sets: list[Batch | None]) -> Batch | None:
    if all(s is None for s in sets):
        return None
    n = max(len(s[1]) for s in sets if s is not None)
    x, y = torch.zeros(len(sets), n, 2), torch.zeros(len(sets), n)
    for job, s in enumerate(sets):
        if s is not None:
            x[job, :len(s[1])], y[job, :len(s[1])] = s
    return x, y


class BatchedMoonsClassifier(pl.LightningModule):
    """K jobs' MoonsClassifier as one module: the loss is the sum of the jobs' `model.loss` (each
    its own data term, penalty and weight), and StackedOptimizer steps each job as its own optimizer
    would, at its own rate.

    A job whose loss stops being finite is set inactive: it moves no more, its later losses are no
    one's concern, and `diverged` says when, for its run to end FAILED. A batch of one logs its
    metrics as MoonsClassifier does (`self.log`), for Lightning callbacks of its own (its loggers get
    them from BatchedMlflowCallback).
    """

    def __init__(self, cfgs: list[Config]) -> None:
        super().__init__()
        self.cfgs = cfgs
        self.net = StackedMLP([cfg.model.hidden for cfg in cfgs], [cfg.seed for cfg in cfgs],
                              cfgs[0].model.activation, [cfg.model.init for cfg in cfgs],
                              [tuple(cfg.model.features) for cfg in cfgs])
        self.register_buffer("alpha", torch.tensor([cfg.loss.alpha for cfg in cfgs]))
        self.loss_kinds = _jobs_by([(cfg.loss.name, cfg.loss.penalty) for cfg in cfgs])  # -> its jobs
        num_batches = cfgs[0].data.num_batches
        # each job's rate of every step, as Python floats (what its run records) and as a tensor
        self.rates = [[learning_rate(cfg.schedule, k, num_batches) for k in range(num_batches)] for cfg in cfgs]
        self.register_buffer("rate_table", torch.tensor(self.rates).T.contiguous())  # [N, K]
        self.register_buffer("active", torch.ones(len(cfgs), dtype=torch.bool))
        self.diverged: dict[int, str] = {}  # job -> why it stopped
        self.log_metrics = False  # a batch of one with callbacks of its own: logged as MoonsClassifier logs

    def forward(self, x: Tensor, jobs: Tensor | None = None) -> Tensor:
        return self.net(x, jobs)

    def losses(self, params: dict[str, Tensor], x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Each job's loss [K] (model.loss, job by job) and its scores [K, n]."""
        scores = self.net.scores(params, x)

        def job_losses(kind: tuple[str, str], *args: Any) -> Tensor:
            name, penalty = kind
            return vmap(lambda s, y, p, alpha: loss(s, y, list(p.values()), alpha, name, penalty))(*args)

        if len(self.loss_kinds) == 1:
            return job_losses(next(iter(self.loss_kinds)), scores, y, params, self.alpha), scores
        out = scores.new_empty(len(self.alpha))
        for kind, jobs in self.loss_kinds.items():
            index = torch.tensor(jobs, device=scores.device)
            out[index] = job_losses(kind, scores[index], y[index], {k: v[index] for k, v in params.items()},
                                    self.alpha[index])
        return out, scores

    def training_step(self, batch: Batch, batch_idx: int) -> dict[str, Any]:
        x, y = batch
        losses, _ = self.losses(self.net.stacked(), x, y)
        diverging = self.active & ~torch.isfinite(losses)
        if diverging.any():
            for job in diverging.nonzero().flatten().tolist():
                self.diverged[job] = f"NonFiniteLoss: loss is {losses[job].item()} at epoch {self.current_epoch + 1}"
            self.active &= ~diverging
        rates = [rates[self.current_epoch] for rates in self.rates]  # one batch per epoch
        if self.log_metrics:
            self.log_dict({"train/loss": losses[0], "lr": rates[0]}, on_step=False, on_epoch=True, logger=False,
                          batch_size=x.shape[1])
        return {"loss": torch.where(self.active, losses, 0.0).sum(), "losses": losses.detach(), "rates": rates}

    def validation_step(self, batch: dict[str, Batch], batch_idx: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        params = self.net.stacked()
        for split, prefix in (("val", "val_"), ("test", "")):
            if split in batch:
                x, y = batch[split]
                losses, scores = self.losses(params, x, y)
                correct = ((scores > 0) == (y > 0)).sum(1)
                if self.log_metrics:
                    self.log_dict({f"{split}/loss": losses[0], f"{split}/acc": int(correct[0]) / y.shape[1]},
                                  logger=False, batch_size=y.shape[1])
                out |= {f"{prefix}losses": losses, f"{prefix}correct": correct}
        if "train" in batch:  # training sets padded with points labelled 0: their accuracy alone, over real points
            x, y = batch["train"]
            out["train_correct"] = (((self.net.scores(params, x) > 0) == (y > 0)) & (y != 0)).sum(1)
            if self.log_metrics:
                self.log("train/acc", int(out["train_correct"][0]) / int((y[0] != 0).sum()), logger=False)
        return out

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return StackedOptimizer(self.parameters(), [cfg.optimizer for cfg in self.cfgs],
                                lambda: self.rate_table[self.current_epoch], self.active)


def _jobs_by(kinds: list[Any]) -> dict[Any, list[int]]:
    jobs: dict[Any, list[int]] = {}
    for job, kind in enumerate(kinds):
        jobs.setdefault(kind, []).append(job)
    return jobs


class StackedOptimizer(torch.optim.Optimizer):
    """The jobs' own optimizers over stacked parameters ([K, ...], a job a slice): each job's slice
    steps as torch's optimizer of its kind steps the job alone (torch.optim.SGD, with momentum or
    not, Adam, AdamW; their single-tensor formulas), with its own values and its own rate, `rate()`
    [K] at this step. Jobs no longer `active` do not move. One kind for a batch (stack_key)."""

    def __init__(self, params: Iterable[Tensor], cfgs: list[Any], rate: Callable[[], Tensor], active: Tensor) -> None:
        super().__init__(params, {})
        self.kind, self.rate, self.active = type(cfgs[0]), rate, active
        if not issubclass(self.kind, (SgdOptimizer, MomentumOptimizer, AdamOptimizer)):  # not SGD's step silently
            raise TypeError(f"no stacked step for {self.kind.__name__}: write it beside these (tests/test_batched.py "
                            "compares each with torch's own)")

        def values(of: Callable[[Any], float]) -> Tensor:  # each job's, in float64 as torch's Python floats
            return torch.tensor([float(of(c)) for c in cfgs], dtype=torch.float64)

        self.hyper = {key: values(lambda c, key=key: getattr(c, key, 0.0))
                      for key in ("weight_decay", "momentum", "dampening", "nesterov", "eps", "amsgrad")}
        self.hyper["beta1"] = values(lambda c: getattr(c, "betas", [0.0, 0.0])[0])
        self.hyper["beta2"] = values(lambda c: getattr(c, "betas", [0.0, 0.0])[1])
        self.decays = bool(self.hyper["weight_decay"].any())

    def _job(self, key: str, p: Tensor) -> Tensor:
        """A per-job value (float64), shaped to broadcast over `p` ([K, 1, 1]), on its device (moved
        there once)."""
        if self.hyper[key].device != p.device:
            self.hyper = {k: v.to(p.device) for k, v in self.hyper.items()}
        return self.hyper[key].view(-1, *[1] * (p.dim() - 1))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        rate64 = self.rate().to(torch.float64)
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                shape = (-1, *[1] * (p.dim() - 1))
                rate = rate64.view(shape)
                active = self.active.view(shape)
                if issubclass(self.kind, AdamOptimizer):
                    self._adam(p, p.grad, rate, active)
                elif issubclass(self.kind, MomentumOptimizer):
                    self._momentum(p, p.grad, rate, active)
                else:  # plain SGD: the rate scales the gradient, then a step at 1.0
                    grad = p.grad.add(p * self._job("weight_decay", p).to(p.dtype)) if self.decays else p.grad
                    p.add_(torch.where(active, grad * rate.to(p.dtype), 0.0), alpha=-1.0)
        return loss

    def _momentum(self, p: Tensor, grad: Tensor, rate: Tensor, active: Tensor) -> None:
        state = self.state[p]
        if self.decays:
            grad = grad.add(p * self._job("weight_decay", p).to(p.dtype))
        momentum = self._job("momentum", p).to(p.dtype)
        buf = state.get("momentum_buffer")
        if buf is None:  # the first step, as torch's: the buffer is the gradient
            buf = state["momentum_buffer"] = grad.clone()
        else:
            buf.mul_(momentum).add_(grad * (1 - self._job("dampening", p)).to(p.dtype))
        update = torch.where(self._job("nesterov", p) > 0, grad + momentum * buf, buf)
        p.add_(torch.where(active, update * rate.to(p.dtype), 0.0), alpha=-1.0)

    def _adam(self, p: Tensor, grad: Tensor, rate: Tensor, active: Tensor) -> None:
        state = self.state[p]
        if not state:
            state["step"] = 0
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
            state["max_exp_avg_sq"] = torch.zeros_like(p)
        state["step"] += 1
        step = state["step"]
        decay = self._job("weight_decay", p)
        if issubclass(self.kind, AdamWOptimizer):  # decoupled: p *= 1 - lr * weight_decay
            p.copy_(torch.where(active, p * (1 - rate * decay).to(p.dtype), p))
        elif self.decays:
            grad = grad.add(p * decay.to(p.dtype))
        beta1, beta2 = self._job("beta1", p), self._job("beta2", p)
        exp_avg, exp_avg_sq, max_sq = state["exp_avg"], state["exp_avg_sq"], state["max_exp_avg_sq"]
        exp_avg.lerp_(grad, (1 - beta1).to(p.dtype))
        exp_avg_sq.mul_(beta2.to(p.dtype)).add_(grad * grad * (1 - beta2).to(p.dtype))
        torch.maximum(max_sq, exp_avg_sq, out=max_sq)
        second = torch.where(self._job("amsgrad", p) > 0, max_sq, exp_avg_sq)
        step_size = (rate / (1 - beta1 ** step)).to(p.dtype)
        denom = (second.sqrt() / ((1 - beta2 ** step) ** 0.5).to(p.dtype)).add_(self._job("eps", p).to(p.dtype))
        p.sub_(torch.where(active, step_size * exp_avg / denom, 0.0))
