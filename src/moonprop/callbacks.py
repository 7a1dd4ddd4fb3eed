"""Lightning callbacks: what a run records, handed to the recorder process (recorder.py).

Step 0 is the untrained network (Lightning's sanity check runs the test set once before training,
as the seed's animation starts from the random initialisation); step k is the network after k
batches. Boundary images go out with a key and a step, so that MLflow's UI shows them in its image
grid with a step slider beside `test/acc`.
"""

from __future__ import annotations

import contextlib
import copy
import io
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from PIL import Image
from pytorch_lightning.loggers import Logger

from moonprop import plot
from moonprop.config import PlotConfig
from moonprop.jobs import Interrupted
from moonprop.model import MLP, POINT, expand
from moonprop.recorder import Run

BOUNDARY_KEY = "test/boundary"  # the prefix puts the image grid next to the test/acc chart
FEATURES_RESOLUTION = 160  # each feature's tile in features.png


def shortest(x: float) -> float:
    """A float32 result as the shortest decimal that reads back as the same float32: a loss of
    float32 0.1 is recorded as 0.1, not as its float64 expansion 0.10000000149011612."""
    return float(str(np.float32(x)))


def step_of(trainer: pl.Trainer) -> int:
    """The record's step: 0 for the untrained network (the sanity check), k after k batches."""
    return 0 if trainer.sanity_checking else trainer.current_epoch + 1


def features_picture(network: MLP, plane: plot.Plane) -> Image.Image | None:
    """`features.png`, for a network that sees more than the point: each feature over the plane and
    the weight the network gives it (plot.features)."""
    if network.features == POINT:
        return None
    points = torch.from_numpy(plot.grid(FEATURES_RESOLUTION, plane)).float()
    values = expand(points, network.features).T.numpy()
    first = network[0].weight.detach().float().cpu()  # [out, features]
    signed = first.shape[0] == 1  # no hidden layer: each feature's own weight into the score
    weights = first[0].tolist() if signed else first.abs().sum(0).tolist()
    return plot.features(network.features, values, weights, signed, FEATURES_RESOLUTION, plane)


def grid_input(points: np.ndarray, pl_module: pl.LightningModule) -> torch.Tensor:
    """Points to score, on the module's device and in its precision (`trainer.precision=64`)."""
    dtype = next(pl_module.parameters()).dtype
    return torch.from_numpy(points).to(device=pl_module.device, dtype=dtype)


class MlflowCallback(pl.Callback):
    """A run's record: each step's metrics to every logger of the trainer, and to its MLflow run
    (`run`) the boundary pictures and the trained network. Without a run (`logger=[csv]`, a run
    MLflow does not record) it only hands the loggers their metrics."""

    def __init__(self, run: Run | None, test: tuple[torch.Tensor, torch.Tensor], plot_cfg: PlotConfig,
                 num_epochs: int, params: dict[str, str], plane: plot.Plane = plot.MOONS,
                 train: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.run, self.cfg, self.num_epochs, self.params = run, plot_cfg, num_epochs, params
        self.pictures = plot.Boundary(test[0].numpy(), test[1].numpy(), plot_cfg.resolution, plane,
                                      (train[0].numpy(), train[1].numpy()) if train is not None else None)
        self.test_acc: float | None = None  # the latest: what the run returns
        self.last: dict[str, float] = {}  # every metric's latest value, by its key
        self.drawn = -1  # the step of the latest picture
        self.step = -1  # the latest step recorded: a checkpoint continues from it

    def _send_metrics(self, trainer: pl.Trainer, metrics: dict[str, float], step: int) -> None:
        """To every logger of the trainer: moonprop's record (loggers.MlflowRecord) and those beside it."""
        self.last.update(metrics)
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._send_metrics(trainer, {"train/loss": shortest(outputs["loss"].item()), "lr": outputs["lr"]},
                           step_of(trainer))

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        step = self.step = step_of(trainer)
        self.test_acc = outputs["acc"]
        metrics = {"test/acc": outputs["acc"], "test/loss": shortest(outputs["loss"].item())}
        if "val_acc" in outputs:
            metrics |= {"val/acc": outputs["val_acc"], "val/loss": shortest(outputs["val_loss"].item())}
        if "train_acc" in outputs:  # a finite training set's, whole
            metrics["train/acc"] = outputs["train_acc"]
        self._send_metrics(trainer, metrics, step)
        if self.run is None:
            return
        if step % self.cfg.every_n_epochs == 0 or step == self.num_epochs:
            self._picture(pl_module, step)
        self.run.check()

    def _picture(self, pl_module: pl.LightningModule, step: int) -> None:
        with torch.no_grad():
            scores = pl_module(grid_input(self.pictures.grid, pl_module)).float().cpu().numpy()
        image = self.pictures.draw(scores, f"epoch {step}   test acc {self.test_acc:.3f}")
        # Encoding the picture is the recorder's job, unless it is behind (opening a fresh
        # store, say): then the trainer, which would only wait for it at the end, does it.
        encoded = plot.webp(image) if self.run.recorder.backlog() > 2 else None
        self.run.send("image", image, BOUNDARY_KEY, step, encoded)
        self.drawn = step

    def state_dict(self) -> dict[str, Any]:
        # A checkpoint names its run, so that a resumed run continues the same MLflow record,
        # keeps the params, so that it continues with the same settings, and its step, so that a
        # run recorded past it is not written twice.
        run_id = self.run.id if self.run else None
        return {"run_id": run_id, "params": self.params, "test_acc": self.test_acc, "step": self.step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.test_acc = state_dict["test_acc"]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.run is None:
            return
        step = trainer.current_epoch  # the last epoch trained: fewer than planned if a callback stopped it
        if self.drawn != step and self.test_acc is not None:  # its picture ends the run's record
            self._picture(pl_module, step)
        if (inputs := features_picture(pl_module.net, self.pictures.plane)) is not None:
            self.run.send("picture", inputs, "features.png")
        self.run.send("model", torchscript(pl_module.net), str(torch.__version__), step)


def tag_run(trainer: pl.Trainer, tags: dict[str, str]) -> None:
    """Tag the run that `trainer` records: for another callback with something to say of the run
    (a search's pruner, which stopped it early). Without moonprop's recording, nothing to tag."""
    for callback in trainer.callbacks:  # type: ignore[attr-defined]
        if isinstance(callback, MlflowCallback) and callback.run is not None:
            callback.run.send("tags", tags)


class BatchedMlflowCallback(pl.Callback):
    """MlflowCallback for the jobs of a batched sweep (batched.py): each job's metrics, pictures
    and model go to its own run, the same record it would have trained alone. The boundary
    pictures of all jobs due for one come from one forward pass on the grid (in chunks of jobs,
    to bound memory), and are encoded here: after the few seconds of training, this process has
    the time, and the recorder does not.

    A job that diverges (batched.BatchedMoonsClassifier.diverged), or whose run the store refuses
    to write, leaves the batch: its run ends FAILED with the reason, the others go on.
    """

    CHUNK = 8  # jobs per forward pass on the grid: 8 x 24,000 points x 16 units is 12 MB a layer
    BACKLOG = 2000  # messages waiting for a recorder: ~100 pictures, ~15 MB

    def __init__(self, runs: list[Run | None], test: tuple[torch.Tensor, torch.Tensor],
                 plot_cfgs: list[PlotConfig], num_epochs: int, params: list[dict[str, str]],
                 planes: list[plot.Plane], train: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        self.runs, self.cfgs, self.num_epochs, self.params = runs, plot_cfgs, num_epochs, params
        # each job's finite training set, its padding (label 0) taken off, for its pictures and train/acc
        trains = [(x[y != 0].numpy(), y[y != 0].numpy()) for x, y in zip(*train, strict=True)] \
            if train is not None else [(np.zeros((0, 2)), np.zeros(0))] * len(runs)
        self.train_sizes = [len(y) for _, y in trains]
        self.pictures = [plot.Boundary(x.numpy(), y.numpy(), cfg.resolution, plane,
                                       trains[job] if self.train_sizes[job] else None)
                         for job, (x, y, cfg, plane) in enumerate(zip(*test, plot_cfgs, planes, strict=True))]
        self.drawn = [-1] * len(runs)  # each job's latest picture
        self.test_size = test[1].shape[1]
        self.test_acc: list[float | None] = [None] * len(runs)
        self.val_acc: list[float | None] = [None] * len(runs)  # what a sweeper chooses on
        self.errors: dict[int, str] = {}  # job -> why its run ended FAILED
        self.loggers: list[Logger] = []  # a batch of one: its job's loggers beside its run, given its metrics

    def _active(self, pl_module: pl.LightningModule) -> list[int]:
        return pl_module.active.nonzero().flatten().tolist()

    def fail(self, pl_module: pl.LightningModule, job: int, error: str, details: str | None = None) -> None:
        """Take `job` out of the batch and end its run FAILED."""
        pl_module.active[job] = False
        self.errors[job] = error
        self.runs[job].end("FAILED", error, details, wait=False)

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        for job, reason in pl_module.diverged.items():
            if job not in self.errors:
                self.fail(pl_module, job, reason)
        step, now = step_of(trainer), int(time.time() * 1000)
        losses = outputs["losses"].tolist()
        for job in self._active(pl_module):
            metrics = {"train/loss": shortest(losses[job]), "lr": outputs["rates"][job]}
            self._send_metrics(job, metrics, step, now)

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._wait_for_recorders()
        step, now = step_of(trainer), int(time.time() * 1000)
        losses, correct = outputs["losses"].tolist(), outputs["correct"].tolist()
        val = (outputs["val_losses"].tolist(), outputs["val_correct"].tolist()) if "val_losses" in outputs else None
        active = self._active(pl_module)
        for job in active:
            self.test_acc[job] = correct[job] / self.test_size  # the exact ratio, as model.accuracy
            metrics = {"test/acc": self.test_acc[job], "test/loss": shortest(losses[job])}
            if val:
                self.val_acc[job] = val[1][job] / batch["val"][1].shape[1]
                metrics |= {"val/acc": self.val_acc[job], "val/loss": shortest(val[0][job])}
            if self.train_sizes[job]:  # a finite training set's, whole
                metrics["train/acc"] = outputs["train_correct"][job].item() / self.train_sizes[job]
            self._send_metrics(job, metrics, step, now)
        due = [job for job in active if step % self.cfgs[job].every_n_epochs == 0 or step == self.num_epochs]
        for chunk in range(0, len(due), self.CHUNK):
            self._pictures(pl_module, due[chunk:chunk + self.CHUNK], step)
        for job in active:  # a store error fails the job it touches
            if error := self.runs[job].error():
                self.fail(pl_module, job, f"RecorderError: {error}")
        if not pl_module.active.any():
            trainer.should_stop = True

    def _send_metrics(self, job: int, metrics: dict[str, float], step: int, now: int) -> None:
        self.runs[job].send("metrics", metrics, step, now)  # type: ignore[union-attr]
        for logger in self.loggers:
            logger.log_metrics(metrics, step)

    def _wait_for_recorders(self) -> None:
        """Training outruns the recorders many times over: past BACKLOG messages waiting for one,
        wait, so that what waits in memory (pictures, mostly) stays bounded. The recorders are
        what the sweep waits for in the end anyway."""
        recorders = {run.recorder for run in self.runs if run is not None}
        while any(recorder.backlog() > self.BACKLOG for recorder in recorders):
            time.sleep(0.01)

    def _pictures(self, pl_module: pl.LightningModule, jobs: list[int], step: int) -> None:
        by_grid: dict[tuple[int, plot.Plane], list[int]] = {}  # jobs whose pictures share a grid
        for job in jobs:
            by_grid.setdefault((self.cfgs[job].resolution, self.pictures[job].plane), []).append(job)
        for group in by_grid.values():
            grid = grid_input(self.pictures[group[0]].grid, pl_module)
            with torch.no_grad():
                index = torch.tensor(group, device=pl_module.device)
                scores = pl_module(grid.expand(len(group), *grid.shape), index).float().cpu().numpy()
            for job, job_scores in zip(group, scores, strict=True):
                image = self.pictures[job].draw(job_scores, f"epoch {step}   test acc {self.test_acc[job]:.3f}")
                self.runs[job].send("image", image, BOUNDARY_KEY, step, plot.webp(image))
                self.drawn[job] = step

    def state_dict(self) -> dict[str, Any]:
        return {"run_ids": [run.id if run else None for run in self.runs], "params": self.params,
                "test_acc": self.test_acc, "val_acc": self.val_acc, "errors": self.errors}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.test_acc, self.errors = state_dict["test_acc"], state_dict["errors"]
        self.val_acc = state_dict.get("val_acc", self.val_acc)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        step = trainer.current_epoch  # the last epoch trained: fewer than planned if a callback stopped it
        active = self._active(pl_module)
        undrawn = [job for job in active if self.drawn[job] != step and self.test_acc[job] is not None]
        for chunk in range(0, len(undrawn), self.CHUNK):  # the last picture ends each job's record
            self._pictures(pl_module, undrawn[chunk:chunk + self.CHUNK], step)
        traced: dict[tuple[int, ...], torch.jit.ScriptModule] = {}  # tracing is costly: once per shape
        for job in active:
            network = pl_module.net.network(job)
            if (inputs := features_picture(network, self.pictures[job].plane)) is not None:
                self.runs[job].send("picture", inputs, "features.png")
            self.runs[job].send("model", torchscript(network, traced), str(torch.__version__), step)


def torchscript(network: torch.nn.Module, traced: dict[tuple[int, ...], Any] | None = None) -> bytes:
    """A network as TorchScript, which MLflow loads without moonprop's code; the recorder logs it
    as the run's MLflow model (logged_model.py). With `traced`, networks of one shape share one
    trace, given each network's weights before it is saved."""
    traced = {} if traced is None else traced
    network = copy.deepcopy(network).float().cpu().eval()  # float32, as its signature says, whatever the precision
    shape = (getattr(network, "features", None), *(p.numel() for p in network.parameters()))
    with torch.no_grad():
        if shape in traced:
            traced[shape].load_state_dict(network.state_dict())
        else:
            traced[shape] = torch.jit.trace(network, torch.zeros(2, 2))
    buffer = io.BytesIO()
    torch.jit.save(traced[shape], buffer)
    return buffer.getvalue()


class GracefulStop(pl.Callback):
    """Ctrl-C and SIGTERM (a cluster's `scancel`, preemption) stop training at the end of the
    current epoch, a few milliseconds away, with a checkpoint to resume from; a second Ctrl-C
    stops at once. Lightning alone exits 0 on SIGTERM and 1 on Ctrl-C, and checkpoints neither."""

    def __init__(self, checkpoint: Path, how_to_continue: str) -> None:
        self.checkpoint = checkpoint
        self.how_to_continue = how_to_continue  # the command, printed when stopped
        self.signum: int | None = None
        self._note: Any = None  # the handler, while handling_signals is on

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        def note(signum: int, frame: Any) -> None:
            if self.signum == signal.SIGINT and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.signum = signum

        self._note = note
        previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _take_back_sigterm(self) -> None:
        # Lightning adds its own SIGTERM handler as training starts, which ends fit() from within
        # the epoch with a SystemExit: no checkpoint, exit code 0, the run left for us to guess.
        # Which one acted first depended on where in the epoch the signal fell: this one decides.
        if self._note is not None:
            signal.signal(signal.SIGTERM, self._note)

    def on_sanity_check_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_back_sigterm()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._take_back_sigterm()

    def _stop_if_signalled(self, trainer: pl.Trainer) -> None:
        if self.signum is not None:
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(self.checkpoint)
            epoch = step_of(trainer)
            raise Interrupted(self.signum, epoch, self.how_to_continue)

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_signalled(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_signalled(trainer)
