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

from moonprop import plot
from moonprop.config import PlotConfig
from moonprop.recorder import Recorder

BOUNDARY_KEY = "test/boundary"  # the prefix puts the image grid next to the test/acc chart


def shortest(x: float) -> float:
    """A float32 result as the shortest decimal that reads back as the same float32: a loss of
    float32 0.1 is recorded as 0.1, not as its float64 expansion 0.10000000149011612."""
    return float(str(np.float32(x)))


class MlflowCallback(pl.Callback):
    def __init__(self, recorder: Recorder, test: tuple[torch.Tensor, torch.Tensor], plot_cfg: PlotConfig,
                 num_epochs: int, params: dict[str, str]) -> None:
        self.recorder, self.cfg, self.num_epochs, self.params = recorder, plot_cfg, num_epochs, params
        self.pictures = plot.Boundary(test[0].numpy(), test[1].numpy(), plot_cfg.resolution)
        self.grid = torch.from_numpy(self.pictures.grid)
        self.test_acc: float | None = None  # the latest: what the run returns

    def _step(self, trainer: pl.Trainer) -> int:
        return 0 if trainer.sanity_checking else trainer.current_epoch + 1

    def _send_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.recorder.send("metrics", metrics, step, int(time.time() * 1000))

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._send_metrics({"train/loss": shortest(outputs["loss"].item()), "lr": outputs["lr"]}, self._step(trainer))

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        step = self._step(trainer)
        acc, loss = outputs["acc"], shortest(outputs["loss"].item())
        self.test_acc = acc
        self._send_metrics({"test/acc": acc, "test/loss": loss}, step)
        if step % self.cfg.every_n_epochs == 0 or step == self.num_epochs:
            with torch.no_grad():
                scores = pl_module(self.grid.to(pl_module.device)).cpu().numpy()
            image = self.pictures.draw(scores, f"epoch {step}   test acc {acc:.3f}")
            # Encoding the picture is the recorder's job, unless it is behind (opening a fresh
            # store, say): then the trainer, which would only wait for it at the end, does it.
            encoded = plot.webp(image) if self.recorder.backlog() > 2 else None
            self.recorder.send("image", image, BOUNDARY_KEY, step, encoded)
        self.recorder.check()

    def state_dict(self) -> dict[str, Any]:
        # A checkpoint names its run, so that a resumed run continues the same MLflow record,
        # and keeps the params, so that it continues with the same settings.
        return {"run_id": self.recorder.current_run_id(), "params": self.params, "test_acc": self.test_acc}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.test_acc = state_dict["test_acc"]

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # The trained network as TorchScript, which MLflow loads without moonprop's code; the
        # recorder logs it as the run's MLflow model (logged_model.py).
        network = copy.deepcopy(pl_module.net).cpu().eval()
        buffer = io.BytesIO()
        with torch.no_grad():
            torch.jit.save(torch.jit.trace(network, torch.zeros(2, 2)), buffer)
        self.recorder.send("model", buffer.getvalue(), str(torch.__version__))


class PruneHopeless(pl.Callback):
    """A search's trial (hydra/sweeper=search): every epoch's test accuracy goes to the trial's
    Optuna study, and when the study's pruner judges the trial hopeless, training stops at that
    epoch's end (Lightning's own stop: the run ends, records and logs its model as usual)."""

    def __init__(self, storage: str, study: str, trial_id: int, pruner: Any) -> None:
        import optuna

        from hydra_plugins.moonprop_search.search import pruner_of, storage_of

        loaded = optuna.load_study(study_name=study, storage=storage_of(storage), pruner=pruner_of(pruner))
        self.trial = optuna.trial.Trial(loaded, trial_id)
        self.pruned_at: int | None = None

    def on_validation_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any,
                                batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if trainer.sanity_checking:  # step 0, the untrained network: nothing to judge yet
            return
        epoch = trainer.current_epoch + 1
        self.trial.report(outputs["acc"], epoch)
        if self.trial.should_prune():
            from hydra_plugins.moonprop_search.search import PRUNED_AT

            self.pruned_at = epoch
            self.trial.set_user_attr(PRUNED_AT, epoch)
            trainer.should_stop = True


class Interrupted(BaseException):
    """Training stopped on a signal (SIGINT, SIGTERM) at an epoch's end, after a checkpoint.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it;
    the CLI exits with 128 + the signal's number, as a shell reports a process ended by it.
    """

    def __init__(self, signum: int, epoch: int, checkpoint: Path) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after epoch {epoch}; "
                         f"continue with: moonprop resume={checkpoint}")
        self.signum = signum


class GracefulStop(pl.Callback):
    """Ctrl-C and SIGTERM (a cluster's `scancel`, preemption) stop training at the end of the
    current epoch, a few milliseconds away, with a checkpoint to resume from; a second Ctrl-C
    stops at once. Lightning alone exits 0 on SIGTERM and 1 on Ctrl-C, and checkpoints neither."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.signum: int | None = None

    @contextlib.contextmanager
    def handling_signals(self) -> Iterator[None]:
        def note(signum: int, frame: Any) -> None:
            if self.signum == signal.SIGINT and signum == signal.SIGINT:
                raise KeyboardInterrupt
            self.signum = signum

        previous = {s: signal.signal(s, note) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def _stop_if_signalled(self, trainer: pl.Trainer) -> None:
        if self.signum is not None:
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            trainer.save_checkpoint(self.checkpoint)
            epoch = 0 if trainer.sanity_checking else trainer.current_epoch + 1
            raise Interrupted(self.signum, epoch, self.checkpoint)

    def on_sanity_check_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_signalled(trainer)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._stop_if_signalled(trainer)
