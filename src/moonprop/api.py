"""moonprop from Python: the runs the command line makes, from a script or a notebook.

    import moonprop

    result = moonprop.run(["data=circles", "optimizer=adam", "schedule.start=0.05"])
    result.metrics["test/acc"], result.run_id, result.model_uri, result.run_dir
    module, data = moonprop.build(["model.activation=tanh"])  # for a Trainer of your own
    moonprop.evaluate(model_uri=result.model_uri, overrides=["data.noise=0.2"]).metrics["test/acc"]

`run` takes the overrides the command line takes, checks them as the CLI does (a bad value raises
moonprop.ConfigError with the same one-line message, before anything exists), and runs the app
through Hydra as `@hydra.main` would: the same run folder, the same MLflow record. It never exits
the interpreter, leaves signal handlers and logging as it found them, and can be called again.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from hydra.types import RunMode
from omegaconf import DictConfig

from moonprop import cli, hydra_internals, preflight
from moonprop.config import ConfigError
from moonprop.jobs import Result

if TYPE_CHECKING:
    from moonprop.data import MoonsDataModule
    from moonprop.module import MoonsClassifier


def run(overrides: Sequence[str] = ()) -> Result:
    """Train and record one run of the config `overrides` make, as `moonprop OVERRIDES` does."""
    argv = list(overrides)
    configs = preflight.check(argv, cli.APP)
    args = hydra_internals.args_parser().parse_args(argv)
    if args.multirun or preflight.only_prints(args) or not configs:
        raise ConfigError("overrides", " ".join(argv), "the overrides of one run (a sweep: moonprop -m on the "
                                                       "command line)")
    results: list[Result] = []

    def task(cfg: DictConfig) -> None:
        this = cli.task(cfg, argv)
        result = cli.train_task(this)
        assert result is not None  # a single run raises what stopped it
        results.append(result)

    config_name = args.config_name or cli.CONFIG_NAME  # `-cd myconf --config-name myexp`, as the CLI takes them
    with _as_found(), hydra_internals.app_hydra(task, args.config_path or cli.CONFIG_PATH, args.config_dir) as hydra:
        if hydra_internals.mode_of(hydra, config_name, args.overrides) == RunMode.MULTIRUN:
            raise ConfigError("overrides", " ".join(argv), "the overrides of one run: this config is a sweep "
                                                           "(hydra.mode: MULTIRUN); run it with moonprop")
        hydra_internals.run(hydra, config_name, task, args.overrides).return_value  # noqa: B018 - raises its error
    return results[0]


class Evaluation(NamedTuple):
    """What `evaluate` left: its MLflow run, `test/acc` and `test/loss`, and the run the scored
    network came from (None where the checkpoint names none)."""

    run_id: str
    metrics: dict[str, float]
    evaluated_run_id: str | None


def evaluate(ckpt_path: str | Path | None = None, model_uri: str | None = None,
             overrides: Sequence[str] = ()) -> Evaluation:
    """Score a checkpoint (`ckpt_path`) or a run's MLflow model (`model_uri`) on the test set of
    the config `overrides` make (`data.test_size=5000`, `seed=7`, ...), recorded as an MLflow run
    of its own, as `moonprop-eval` does; a bad value raises moonprop.ConfigError."""
    given = {k: str(v) for k, v in (("ckpt_path", ckpt_path), ("model_uri", model_uri)) if v is not None}
    command = ["moonprop-eval", *(f"{k}={v}" for k, v in given.items()), *overrides]
    network, done, _ = cli.evaluation(given, list(overrides), command)
    return Evaluation(done.run_id, done.metrics, network.run_id)


def build(overrides: Sequence[str] = ()) -> tuple[MoonsClassifier, MoonsDataModule]:
    """The LightningModule and the DataModule of the config `overrides` make, for a Trainer of
    your own; a bad value raises moonprop.ConfigError."""
    from moonprop.train import build as build_config

    (config,) = preflight.configs(list(overrides), cli.APP)
    return build_config(config)


@contextlib.contextmanager
def _as_found() -> Iterator[None]:
    """Signal handlers and the root logger as they were: Hydra configures logging for its run."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    level, root_handlers = root.level, list(root.handlers)
    try:
        yield
    finally:
        for s, handler in handlers.items():
            signal.signal(s, handler)
        for handler in root.handlers:
            if handler not in root_handlers:
                handler.close()
        root.handlers[:] = root_handlers
        root.setLevel(level)
