"""The typed configuration: Hydra's schema and the range checks that types cannot express.

The dataclasses are registered in Hydra's ConfigStore, so a wrong type or an unknown key fails at
composition. `validate` adds what a type cannot say (a batch size of 0, a negative noise) and turns
the composed config into these dataclasses. This module imports neither torch nor Lightning:
`moonprop --help` and `--cfg job` stay fast.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value outside what is allowed; its message is one line: key, value, what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"invalid config: {key}={value}: {allowed}")
        self.key, self.value, self.allowed = key, value, allowed  # for a Python caller that handles it


def option(default: Any, help: str) -> Any:
    """A config field and what it means; scripts/config_reference.py turns these into docs/config.md."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    """A dataset of two classes in the plane, labelled -1 and +1; `name` picks it (data.py draws it)."""

    name: str = MISSING
    num_batches: int = option(150, "training epochs; each is one batch of freshly drawn points (from the training "
                                   "set, with train_size)")
    batch_size: int = option(50, "points per training batch")
    test_size: int = option(1000, "points in the fixed test set, evaluated after every epoch: it only reports")
    val_size: int = option(1000, "points in the fixed validation set, scored every epoch: what a sweep's best, a "
                                 "search and early stopping choose on (0: none, for a single run that chooses nothing)")
    train_size: int | None = option(None, "null: a fresh batch every epoch (the seed's); N: a fixed training set of "
                                          "N points, each epoch's batch taken from it, a pass over it in a shuffled "
                                          "order every train_size / batch_size epochs, its accuracy logged as "
                                          "train/acc (TensorFlow Playground's ratio of training to test data is "
                                          "train_size against test_size)")

    def check(self) -> None:
        """Refuse, in one line, a value outside what its key allows (every section has one)."""
        for key in ("num_batches", "batch_size", "test_size"):
            check_positive_int(f"data.{key}", getattr(self, key))
        _check(self.val_size == 0 or _positive_int(self.val_size), "data.val_size", self.val_size, "an integer >= 0")
        _check(self.train_size is None or (_positive_int(self.train_size) and self.train_size >= self.batch_size),
               "data.train_size", self.train_size,
               f"null (a fresh batch every epoch) or a number of points >= data.batch_size ({self.batch_size})")
        noise = self.noise  # type: ignore[attr-defined]  # every dataset has its own default
        _check(_finite(noise) and noise >= 0, "data.noise", noise, "a finite number >= 0")


@dataclass
class MoonsData(DataConfig):
    name: str = option("moons", "two interlocking half circles (sklearn's make_moons): upper -1, lower +1")
    noise: float = option(0.1, "standard deviation of the Gaussian noise added to every point")


@dataclass
class CirclesData(DataConfig):
    name: str = option("circles", "a circle inside another (sklearn's make_circles): outer -1, inner +1")
    noise: float = option(0.05, "standard deviation of the Gaussian noise added to every point")
    factor: float = option(0.5, "the inner circle's radius, the outer one's being 1 (0 < factor < 1)")

    def check(self) -> None:
        super().check()
        _check(_finite(self.factor) and 0 < self.factor < 1, "data.factor", self.factor, "a number between 0 and 1")


@dataclass
class BlobsData(DataConfig):
    name: str = option("blobs", "two Gaussian blobs (sklearn's make_blobs) at (-offset, -offset): -1, "
                                "and (offset, offset): +1")
    noise: float = option(0.6, "standard deviation of each blob")
    offset: float = option(1.0, "the blobs' centres are (-offset, -offset) and (offset, offset)")

    def check(self) -> None:
        super().check()
        _check(_finite(self.offset) and self.offset > 0, "data.offset", self.offset, "a finite number > 0")


@dataclass
class XorData(DataConfig):
    name: str = option("xor", "points uniform in [-1, 1]^2, +1 where x * y > 0 (quadrants 1 and 3), else -1")
    noise: float = option(0.05, "standard deviation of the Gaussian noise added to every point (after labelling)")


@dataclass
class SpiralData(DataConfig):
    name: str = option("spiral", "two interleaved spiral arms of radius 1: -1 and +1")
    noise: float = option(0.05, "standard deviation of the Gaussian noise added to every point")
    turns: float = option(1.0, "turns of each arm from the centre to radius 1")

    def check(self) -> None:
        super().check()
        _check(_finite(self.turns) and self.turns > 0, "data.turns", self.turns, "a finite number > 0")


@dataclass
class ModelConfig:
    hidden: list[int] = option([16, 16], "hidden layer sizes (input 2, output 1); [] is a linear classifier")
    activation: str = option("relu", "between layers, never on the output: relu, tanh, sigmoid, identity, gelu "
                                      "or leaky_relu (slope 0.01)")
    init: str = option("uniform", "weights: uniform (U(-1, 1), the seed's), kaiming or xavier (uniform, with the "
                                  "activation's gain); biases 0")
    features: list[str] = option(["x1", "x2"], "what the first layer sees of a point (x1, x2), TensorFlow "
                                               "Playground's inputs: x1, x2, sq_x1 (x1^2), sq_x2, x1x2 (x1 * x2), "
                                               "sin_x1, sin_x2; [sq_x1,sq_x2] with hidden=[] separates the circles")

    def check(self) -> None:
        for i, h in enumerate(self.hidden):
            check_positive_int(f"model.hidden[{i}]", h)
        for i, name in enumerate(self.features):
            _check(name in FEATURES, f"model.features[{i}]", name, f"one of {', '.join(FEATURES)}"
                   + (f" ({name} is {PLAYGROUND_FEATURES[name]})" if name in PLAYGROUND_FEATURES else ""))
        _check(bool(self.features) and len(set(self.features)) == len(self.features), "model.features",
               self.features, "one or more features, each once")
        _one_of("model.activation", self.activation, ACTIVATIONS)
        _one_of("model.init", self.init, INITS)


@dataclass
class LossConfig:
    name: str = option("hinge", "the data term, chosen with loss=NAME: hinge (the seed's max-margin, "
                                "mean(relu(1 - y f))), logistic (mean(log(1 + exp(-y f)))) or squared_hinge "
                                "(mean(relu(1 - y f)^2))")
    alpha: float = option(1e-4, "weight of the penalty over all parameters")
    penalty: str = option("l2", "l2: alpha * sum(p^2), the seed's; l1: alpha * sum(|p|); none")

    def check(self) -> None:
        _one_of("loss", self.name, LOSSES)
        _one_of("loss.penalty", self.penalty, PENALTIES)
        _check(_finite(self.alpha) and self.alpha >= 0, "loss.alpha", self.alpha, "a finite number >= 0")


@dataclass
class OptimizerConfig:
    """How a step follows the gradient; `name` picks it. The schedule sets the rate of every step;
    every other field is an argument of torch's optimizer `torch_class` (module.optimizer)."""

    torch_class: ClassVar[str]
    name: str = MISSING
    weight_decay: float = option(0.0, "torch's weight_decay (on top of the loss's penalty)")

    def check(self) -> None:
        _check(_finite(self.weight_decay) and self.weight_decay >= 0, "optimizer.weight_decay", self.weight_decay,
               "a finite number >= 0")


@dataclass
class SgdOptimizer(OptimizerConfig):
    torch_class = "SGD"
    name: str = option("sgd", "plain SGD, the seed's: p -= lr * grad")


@dataclass
class MomentumOptimizer(OptimizerConfig):
    torch_class = "SGD"
    name: str = option("momentum", "SGD with momentum (torch.optim.SGD)")
    momentum: float = option(0.9, "the momentum factor, 0 <= momentum < 1")
    dampening: float = option(0.0, "dampening of the momentum, 0 <= dampening <= 1")
    nesterov: bool = option(False, "Nesterov momentum (needs dampening 0)")

    def check(self) -> None:
        super().check()
        _check(_finite(self.momentum) and 0 <= self.momentum < 1, "optimizer.momentum", self.momentum,
               "a number in [0, 1)")
        _check(_finite(self.dampening) and 0 <= self.dampening <= 1, "optimizer.dampening", self.dampening,
               "a number in [0, 1]")
        _check(not self.nesterov or (self.momentum > 0 and self.dampening == 0), "optimizer.nesterov", self.nesterov,
               "false, or true with momentum > 0 and dampening 0 (torch's Nesterov)")


@dataclass
class AdamOptimizer(OptimizerConfig):
    torch_class = "Adam"
    name: str = option("adam", "Adam (torch.optim.Adam); its weight_decay adds to the gradient")
    betas: list[float] = option([0.9, 0.999], "decay rates of the gradient's running averages, each in [0, 1)")
    eps: float = option(1e-8, "added to the denominator, > 0")
    amsgrad: bool = option(False, "the AMSGrad variant")

    def check(self) -> None:
        super().check()
        _check(len(self.betas) == 2 and all(_finite(b) and 0 <= b < 1 for b in self.betas), "optimizer.betas",
               self.betas, "two numbers in [0, 1)")
        _check(_finite(self.eps) and self.eps > 0, "optimizer.eps", self.eps, "a finite number > 0")


@dataclass
class AdamWOptimizer(AdamOptimizer):
    torch_class = "AdamW"
    name: str = option("adamw", "AdamW (torch.optim.AdamW): weight decay decoupled from the gradient")
    weight_decay: float = option(0.01, "decoupled weight decay, p -= lr * weight_decay * p")


@dataclass
class ScheduleConfig:
    """Learning rate for step k of N; `name` picks the formula (see schedule.py)."""

    name: str = MISSING

    def check(self) -> None:
        for key in ("start", "end", "lr"):  # the rates, whichever the formula has
            if hasattr(self, key):
                v = getattr(self, key)
                _check(_finite(v) and v > 0, f"schedule.{key}", v, "a finite learning rate > 0")


@dataclass
class LinearSchedule(ScheduleConfig):
    name: str = option("linear", "lr = start - (start - end) * k / N, the seed's schedule")
    start: float = option(1.0, "learning rate of the first step")
    end: float = option(0.1, "learning rate reached after the last step")


@dataclass
class ConstantSchedule(ScheduleConfig):
    name: str = option("constant", "lr = lr at every step")
    lr: float = option(0.5, "the learning rate")


@dataclass
class CosineSchedule(ScheduleConfig):
    name: str = option("cosine", "lr = end + (start - end) * (1 + cos(pi * k / N)) / 2")
    start: float = option(1.0, "learning rate of the first step")
    end: float = option(0.1, "learning rate reached after the last step")


@dataclass
class StepSchedule(ScheduleConfig):
    name: str = option("step", "lr = start * gamma ** (k // every)")
    start: float = option(1.0, "learning rate of the first step")
    gamma: float = option(0.5, "factor applied every `every` steps")
    every: int = option(50, "steps between two changes of the rate")

    def check(self) -> None:
        super().check()
        _check(_finite(self.gamma) and self.gamma > 0, "schedule.gamma", self.gamma, "a finite number > 0")
        check_positive_int("schedule.every", self.every)


@dataclass
class TrainerConfig:
    """The Lightning Trainer: moonprop's own two keys, and any other argument of Lightning's Trainer
    (`+trainer.NAME=VALUE`, or without `+` for those in conf/trainer/default.yaml), in `lightning`."""

    accelerator: str = option("auto", "auto, cpu or gpu (Lightning's accelerator)")
    threads: int = option(1, "torch threads per job, capped so that parallel workers x threads fit the cores")
    lightning: dict[str, Any] = field(default_factory=dict, metadata={"help": "Lightning's own arguments"})

    def check(self) -> None:  # Lightning's own arguments are Lightning's to check (environment.check_trainer)
        _one_of("trainer.accelerator", self.accelerator, ACCELERATORS)
        check_positive_int("trainer.threads", self.threads)


# the trainer's keys in every config, so that `trainer.precision=64` needs no `+`
TRAINER_DEFAULTS = {"accelerator": "auto", "threads": 1, "deterministic": True, "precision": "32-true",
                    "gradient_clip_val": None}


@dataclass
class TrackingConfig:
    uri: str | None = option(None, "MLflow tracking URI; null is the SQLite store outputs/mlflow.db")
    experiment: str = option("moonprop", "MLflow experiment name")
    run_name: str | None = option(None, "MLflow run name; null: MLflow picks one, a sweep names each job by its values")
    registered_model: str | None = option(None, "register the run's model as a new version of this MLflow "
                                                "registered model; in a sweep only the best job's, aliased sweep-best")
    tags: dict[str, str] = option({}, "MLflow tags on every run: +tracking.tags.team=moons")
    system_metrics: bool = option(False, "record MLflow's system metrics (CPU, memory, ...) beside the run's; "
                                         "MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING=true does the same")

    def check(self) -> None:
        _check_uri(self.uri)
        _check(bool(self.experiment), "tracking.experiment", self.experiment, "a non-empty name")
        _check(self.run_name is None or bool(self.run_name.strip()), "tracking.run_name", self.run_name,
               "null or a non-empty name")
        _check(self.registered_model is None or bool(self.registered_model.strip()), "tracking.registered_model",
               self.registered_model, "null or a non-empty name")


@dataclass
class PlotConfig:
    every_n_epochs: int = option(1, "a boundary image every n epochs (the first and last always)")
    resolution: int = option(480, "width of the boundary pictures and animation in pixels (height follows the plane)")

    def check(self) -> None:
        check_positive_int("plot.every_n_epochs", self.every_n_epochs)
        _check(_positive_int(self.resolution) and 16 <= self.resolution <= 2048, "plot.resolution", self.resolution,
               "an integer from 16 to 2048 (pixels)")


@dataclass
class SweepConfig:
    within: list[str] = option(["data"], "swept keys that change the task: a sweep's best, verdict and effects are "
                                         "given within each of their values, never across (sweep.within=[data,"
                                         "data.noise]); [] compares everything")

    def check(self) -> None:
        for i, key in enumerate(self.within):
            _check(isinstance(key, str) and bool(key.strip()) and "=" not in key, f"sweep.within[{i}]", key,
                   "a key as the command line sweeps it (data, data.noise, model.hidden)")


@dataclass
class Config:
    data: DataConfig = MISSING  # chosen by the `data` config group: a MoonsData, a CirclesData ...
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optimizer: OptimizerConfig = MISSING  # chosen by the `optimizer` config group
    schedule: ScheduleConfig = MISSING  # chosen by the `schedule` config group
    trainer: Any = field(default_factory=lambda: dict(TRAINER_DEFAULTS))  # see TrainerConfig
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    callbacks: dict[str, Any] = option({}, "Lightning callbacks, each a config with its _target_: "
                                           "callbacks=[early_stopping], or yours from your config folder")
    logger: dict[str, Any] = option({}, "Lightning loggers, each a config with its _target_: mlflow (moonprop's "
                                        "record) and Lightning's, logger=[mlflow,csv], or yours; logger=[csv]: "
                                        "a single run that MLflow does not record")
    seed: int = option(0, "seeds the initial weights, the training batches and the test set (0 to 2^32 - 1, "
                          "Lightning's range)")
    resume: str | None = option(None, "checkpoints/last.ckpt of an interrupted run: continue that MLflow run")

    def check(self) -> None:
        """Each section's ranges, then the whole config's: the callbacks, loggers, seed and resume."""
        for section in (self.data, self.model, self.loss, self.optimizer, self.schedule, self.trainer, self.tracking,
                        self.plot, self.sweep):
            section.check()
        for name, callback in self.callbacks.items():
            _check(isinstance(callback, dict) and isinstance(callback.get("_target_"), str), f"callbacks.{name}",
                   callback, "a Lightning callback's config, with its _target_ (see conf/callbacks/)")
        for name, logger in self.logger.items():
            _check(isinstance(logger, dict) and isinstance(logger.get("_target_"), str), f"logger.{name}",
                   logger, "a Lightning logger's config, with its _target_ (see conf/logger/)")
        _check(isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED, "seed", self.seed,
               f"an integer from 0 to {MAX_SEED}")
        _check(self.resume is None or bool(self.resume.strip()), "resume", self.resume,
               "null, or the path of an interrupted run's checkpoints/last.ckpt")


def resolve_uri(uri: str | None, cwd: str | Path | None = None) -> str:
    """The tracking URI, a SQLite path made absolute against `cwd`, the folder moonprop was started
    in (by default this one): with `hydra.job.chdir=true` a job runs inside its run folder, and its
    store must still be the one the user asked for. None is the embedded SQLite store under
    outputs/ (MLflow 3 refuses the plain folder store)."""
    base = Path(cwd or Path.cwd())
    if uri is None:
        return f"sqlite:///{(base / 'outputs' / 'mlflow.db').resolve()}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):  # MLflow: 3 slashes, relative
        return f"sqlite:///{(base / uri.removeprefix('sqlite:///')).resolve()}"
    return uri


def redact(uri: str) -> str:
    """The URI without credentials: `http://user:secret@host` -> `http://***@host`."""
    return re.sub(r"(?<=://)[^/@]+@", "***@", uri)


def redacted(cfg: Config) -> Config:
    """The config as it may be recorded: a tracking URI's credentials removed."""
    if cfg.tracking.uri is None:
        return cfg
    return replace(cfg, tracking=replace(cfg.tracking, uri=redact(cfg.tracking.uri)))


def as_dict(cfg: Config) -> dict[str, Any]:
    """The config as nested dicts, as the user writes it: Lightning's arguments under `trainer`."""
    out = asdict(cfg)
    out["trainer"] = {"accelerator": cfg.trainer.accelerator, "threads": cfg.trainer.threads, **cfg.trainer.lightning}
    return out


def params(cfg: Config) -> dict[str, str]:
    """Every resolved config value under its dotted key, as MLflow params (credentials redacted);
    `resume` is left out, so that a resumed run's params stay those it started with."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = str(node)

    walk("", as_dict(redacted(cfg)))
    del out["resume"]
    return out


RECORD_LOGGER = "mlflow"  # the `logger` group's entry that is moonprop's MLflow record (loggers.MlflowRecord)


def recorded(cfg: Config) -> bool:
    """Whether MLflow records the run: `logger=[csv]` asks for a single run that it does not."""
    return RECORD_LOGGER in cfg.logger


def check_same_params(before: dict[str, str], now: dict[str, str], where: str) -> None:
    """Refuse, in one line, settings other than those a checkpoint was trained with (`before`, its
    params): what continues a run must be the run it continues. `where` names that run. A key the
    checkpoint does not know (added to moonprop since) is not compared."""
    for key in before:
        if now.get(key) != before[key]:
            raise ConfigError(key, now.get(key), f"must be {before[key]}, as in {where}")


def _options(base: type) -> dict[str, type]:
    """Every dataclass that extends `base`, by its `name`, in the order they are defined: an option
    of a group is its dataclass here and its YAML in conf/<group>/, nothing else to register."""
    found: dict[str, type] = {}
    for option in base.__subclasses__():
        found[option.name] = option  # type: ignore[attr-defined]  # the field's default, as a dataclass sets it
        found.update(_options(option))
    return found


# the config groups whose options have schemas of their own (conf/<group>/<name>.yaml extends its)
GROUP_BASES: dict[str, type] = {"data": DataConfig, "optimizer": OptimizerConfig, "schedule": ScheduleConfig}
GROUPS: dict[str, dict[str, Any]] = {group: _options(base) for group, base in GROUP_BASES.items()}
DATASETS: dict[str, type[DataConfig]] = GROUPS["data"]
OPTIMIZERS: dict[str, type[OptimizerConfig]] = GROUPS["optimizer"]
SCHEDULES: dict[str, type[ScheduleConfig]] = GROUPS["schedule"]
LOSSES = ("hinge", "logistic", "squared_hinge")  # conf/loss/<name>.yaml: one LossConfig for all
PENALTIES = ("l2", "l1", "none")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "identity", "gelu", "leaky_relu")
FEATURES = ("x1", "x2", "sq_x1", "sq_x2", "x1x2", "sin_x1", "sin_x2")  # model.FEATURES computes them
PLAYGROUND_FEATURES = {"x1^2": "sq_x1", "x2^2": "sq_x2", "x1*x2": "x1x2", "sin(x1)": "sin_x1", "sin(x2)": "sin_x2"}
INITS = ("uniform", "kaiming", "xavier")
ACCELERATORS = ("auto", "cpu", "gpu")
# Lightning Trainer arguments that moonprop sets itself, and what to use instead
OWN_TRAINER_ARGS = {
    **dict.fromkeys(("max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches"),
                    "data.num_batches (an epoch is one freshly drawn batch)"),
    "overfit_batches": "data.train_size=50 (one batch of points, the same every epoch), or debug=overfit",
    **dict.fromkeys(("limit_val_batches", "val_check_interval", "check_val_every_n_epoch", "num_sanity_val_steps",
                     "reload_dataloaders_every_n_epochs", "limit_test_batches",
                     "limit_predict_batches"),
                    "data.test_size (the test set is scored before training and after every epoch)"),
    "logger": "the logger group (logger=[mlflow,csv], or yours in your config folder)",
    "callbacks": "the callbacks group (callbacks=[early_stopping], or yours in your config folder)",
    "default_root_dir": "hydra.run.dir",
    **dict.fromkeys(("devices", "num_nodes", "strategy"),
                    "trainer.accelerator (a run trains on one device; a sweep's jobs in parallel with hydra/launcher)"),
    **dict.fromkeys(("enable_progress_bar", "enable_model_summary", "barebones"),
                    "nothing: moonprop shows its progress on a terminal and records the rest"),
    "accelerator": "trainer.accelerator",
}


MAX_SEED = 2**32 - 1  # Lightning's seed_everything range, numpy's RandomState's too
# what users of neighbouring tools type, and what it is in moonprop: added to the line that refuses it
HABITS = {
    "trainer=ddp": "a run trains on one device; a sweep's jobs train in parallel with hydra/launcher=joblib "
                   "or hydra/launcher=batched",
    "tags": "MLflow tags are names with values: write {value}",
    "ckpt_path": "a run continues from its checkpoint with resume={value}",
    "optimizer.lr": "the schedule sets every step's rate: schedule=constant schedule.lr={value}, or schedule.start=",
    "data=gaussian": "two Gaussian blobs are data=blobs",
    "model.activation=linear": "no activation is model.activation=identity",
    "model.activation=none": "no activation is model.activation=identity",
}


def habit(key: str, value: Any) -> str | None:
    """What to write in moonprop for `key=value` as a neighbouring tool spells it (lightning-hydra-
    template's `trainer=cpu`, `tags=[dev]`, `ckpt_path=`, ...), or None."""
    if key == "tracking.tags" and isinstance(value, dict) and value:
        return "add each tag by its name: " + " ".join(f"+tracking.tags.{k}={v}" for k, v in value.items())
    if key == "tags":  # lightning-hydra-template's list of names
        value = " ".join(f"+tracking.tags.{name}=true" for name in (value if isinstance(value, list) else [value]))
    text = HABITS.get(f"{key}={value}", HABITS.get(key))
    return text.format(value=value) if text else None


# what one float of a point's pass through the network costs at most, in bytes (the activation
# and its gradient, float64 under precision 64) beside the float64 coordinates that drawing it
# copies a few times (numpy's generators, the shuffle, the noise)
_BYTES_PER_POINT = 64


def memory_estimate(c: Config) -> int:
    """Bytes that `c`'s largest tensors take at once: the parameters with their gradients and an
    optimizer's two moments, and the largest set of points (a training batch, the test or
    validation set, the boundary picture's grid) through every layer with its gradient."""
    width = 8 if str(c.trainer.lightning.get("precision", "32")).startswith("64") else 4
    layers = [len(c.model.features), *c.model.hidden, 1]
    parameters = sum((a + 1) * b for a, b in itertools.pairwise(layers))
    pixels = c.plot.resolution * c.plot.resolution  # a plane at most square
    points = max(c.data.batch_size, c.data.test_size, c.data.val_size, c.data.train_size or 0, pixels)
    return 4 * width * parameters + points * (2 * width * sum(layers) + _BYTES_PER_POINT)


def machine_memory() -> int:
    """The memory this process may use: the machine's, or its cgroup's limit where lower."""
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    with contextlib.suppress(OSError, ValueError):
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        total = min(total, int(limit)) if limit != "max" else total
    return total


def _positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


FLOAT32_MAX = 3.4028234663852886e38  # the network, its data and its rates are float32 tensors


def _finite(x: Any) -> bool:
    """A number, finite as a float32 holds it (1e300 is not: it becomes inf in the first tensor)."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and abs(x) <= FLOAT32_MAX


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        if isinstance(value, float) and math.isfinite(value) and abs(value) > FLOAT32_MAX:
            allowed += " that a float32 holds (|x| <= 3.4e38)"
        raise ConfigError(key, value, allowed)


def _one_of(key: str, value: Any, choices: Any) -> None:
    _check(value in choices, key, value, f"one of {', '.join(choices)}")


def check_positive_int(key: str, value: Any) -> None:
    """The one-line refusal of `key` unless `value` is a positive integer (plugins' settings too)."""
    _check(_positive_int(value), key, value, "a positive integer")


def validate(cfg: DictConfig) -> Config:
    """Check what the types cannot and return the config as dataclasses; raise ConfigError.

    Hydra has typed `cfg` as it composed it: each group's option extends its schema (an option's
    YAML names it in its defaults list), so a wrong type has failed there already."""
    _check_known_keys(cfg, Config)  # `+key=value` gets past Hydra's struct flag (it adds under open_dict)
    try:
        typed = OmegaConf.merge(_config_schema(), cfg)  # the root's type: Hydra's task config has none
    except Exception as e:  # omegaconf's errors carry the full key on many lines
        key = getattr(e, "full_key", "") or "?"
        value = OmegaConf.select(cfg, re.sub(r"\[(\d+)\]", r".\1", key), default=None)
        raise ConfigError(key, value, first_line(e)) from None
    c: Config = OmegaConf.to_object(typed)  # type: ignore[assignment]
    for group, base in GROUP_BASES.items():  # an option of the user's that extends no schema has the base
        _check(type(getattr(c, group)) is not base, group, getattr(c, group).name, extends(group))
    c.trainer = _trainer(c.trainer)
    c.check()
    _check_memory(c)
    return c


def _check_uri(uri: str | None) -> None:
    """A tracking URI MLflow takes: a store with its scheme (a plain folder is MLflow 3's file store,
    which it refuses unless MLFLOW_ALLOW_FILE_STORE=true)."""
    if uri is None:
        return
    folder = "://" not in uri or uri.startswith("file:")
    allowed = os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() in ("true", "1")
    _check(bool(uri.strip()) and (not folder or allowed), "tracking.uri", uri,
           "null (outputs/mlflow.db), sqlite:///PATH.db, http://HOST:PORT or a database URL: MLflow 3 "
           "refuses a folder store unless MLFLOW_ALLOW_FILE_STORE=true")


def _check_memory(c: Config) -> None:
    """A run whose tensors would not fit is refused now, not killed by the kernel minutes later.
    Half the machine is the bound: the interpreter, torch and the recorder need the rest."""
    need, have = memory_estimate(c), machine_memory()
    if need > have // 2:
        sizes = {"data.batch_size": c.data.batch_size, "data.test_size": c.data.test_size,
                 "data.val_size": c.data.val_size, "data.train_size": c.data.train_size, "model.hidden": c.model.hidden,
                 "plot.resolution": c.plot.resolution}
        key = max(sizes, key=lambda k: _size_share(c, k))
        raise ConfigError(key, sizes[key], f"a run that fits in memory: this one needs about {need / 2**30:.1f} GiB, "
                                           f"more than half of this machine's {have / 2**30:.1f} GiB")


def _size_share(c: Config, key: str) -> float:
    """How much of the estimate `key` is responsible for: the estimate with it at its default."""
    default = Config(data=DataConfig(), optimizer=OptimizerConfig(), schedule=ScheduleConfig())
    section, _, name = key.partition(".")
    shrunk = replace(c, **{section: replace(getattr(c, section), **{name: getattr(getattr(default, section), name)})})
    return memory_estimate(c) - memory_estimate(shrunk)


def _trainer(node: dict[str, Any]) -> TrainerConfig:
    """The trainer's keys: moonprop's own, and Lightning's arguments (those it sets itself refused)."""
    lightning = {k: v for k, v in node.items() if k not in ("accelerator", "threads")}
    for name, value in lightning.items():
        if name in OWN_TRAINER_ARGS:
            raise ConfigError(f"trainer.{name}", value, f"moonprop sets it: use {OWN_TRAINER_ARGS[name]}")
    deterministic = lightning.get("deterministic")  # Lightning takes any value and reads it as true
    _check(deterministic in (True, False, None, "warn"), "trainer.deterministic", deterministic,
           "true, false, warn or null")
    clip = lightning.get("gradient_clip_val")  # Lightning takes a negative one and clips nothing
    _check(clip is None or (_finite(clip) and clip >= 0), "trainer.gradient_clip_val", clip,
           "null or a finite number >= 0")
    return TrainerConfig(node.get("accelerator", "auto"), node.get("threads", 1), lightning)


@functools.cache  # built once: a merge does not change it
def _config_schema() -> DictConfig:
    return OmegaConf.structured(Config)


def _check_known_keys(cfg: DictConfig, kind: type, prefix: str = "") -> None:
    """Every key of `cfg` a field of its dataclass `kind`, into the sections typed by one (the
    trainer's, the callbacks', the loggers' and the tags' keys are the user's)."""
    known = [f.name for f in fields(kind)]
    for key in cfg:
        if key not in known:
            raise ConfigError(f"{prefix}{key}", cfg[key], unknown_key_message(known))
        child = OmegaConf.get_type(cfg, str(key))
        if isinstance(cfg[key], DictConfig) and is_dataclass(child):
            _check_known_keys(cfg[key], child, f"{prefix}{key}.")  # type: ignore[arg-type]


def unknown_key_message(keys: Iterable[Any]) -> str:
    return f"unknown key; the keys here are {', '.join(str(k) for k in keys)}"


def extends(group: str) -> str:
    """What an option of `group` must be: Hydra types it by the schema its YAML extends."""
    first = next(iter(GROUPS[group]))
    return (f"an option that extends one of moonprop's ({', '.join(GROUPS[group])}), as `defaults: [{first}, "
            f"_self_]` at the top of its YAML does: Hydra types it by that one's schema")


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


def one_line(e: BaseException) -> str:
    """`e` as one line, its name and every line of its message (Hydra's errors give their cause on
    the second)."""
    return f"{type(e).__name__}: {' '.join(str(e).split())}".rstrip(": ")


# Hydra's schemas: the one conf/config.yaml extends (`defaults: [config_schema]`), and each option's
# of the data, optimizer and schedule groups, which its YAML extends (conf/optimizer/adam.yaml:
# `defaults: [/optimizer_adam_schema@_here_, _self_]`), so that Hydra types every group's choice as
# it composes it. They are stored outside the groups: an entry in a group would be one of its
# options (in --help, completion, `optimizer=`), beside the YAML that is.
ConfigStore.instance().store(name="config_schema", node=Config)
for _group, _choices in GROUPS.items():
    for _name, _schema in _choices.items():
        ConfigStore.instance().store(name=f"{_group}_{_name}_schema", node=_schema)
