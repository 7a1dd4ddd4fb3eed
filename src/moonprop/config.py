"""The typed configuration: Hydra's schema and the range checks that types cannot express.

The dataclasses are registered in Hydra's ConfigStore, so a wrong type or an unknown key fails at
composition. `validate` adds what a type cannot say (a batch size of 0, a negative noise) and turns
the composed config into these dataclasses. This module imports neither torch nor Lightning:
`moonprop --help` and `--cfg job` stay fast.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf


class ConfigError(ValueError):
    """A config value outside what is allowed; its message is one line: key, value, what is allowed."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        super().__init__(f"invalid config: {key}={value}: {allowed}")
        self.key, self.value = key, value  # for a Python caller that handles it


def option(default: Any, help: str) -> Any:
    """A config field and what it means; scripts/config_reference.py turns these into docs/config.md."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class DataConfig:
    num_batches: int = option(150, "training epochs; each is one batch of freshly drawn points")
    batch_size: int = option(50, "points per training batch")
    test_size: int = option(1000, "points in the fixed test set, evaluated after every epoch")
    noise: float = option(0.1, "standard deviation of the Gaussian noise of sklearn's make_moons")


@dataclass
class ModelConfig:
    hidden: list[int] = option([16, 16], "hidden layer sizes (input 2, output 1); [] is a linear classifier")


@dataclass
class LossConfig:
    alpha: float = option(1e-4, "weight of the L2 term alpha * sum(p^2) over all parameters")


@dataclass
class ScheduleConfig:
    """Learning rate for step k of N; `name` picks the formula (see schedule.py)."""

    name: str = MISSING


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


@dataclass
class TrainerConfig:
    accelerator: str = option("auto", "auto, cpu or gpu (Lightning's accelerator)")
    threads: int = option(1, "torch threads per job, capped so that parallel workers x threads fit the cores")


@dataclass
class TrackingConfig:
    uri: str | None = option(None, "MLflow tracking URI; null is the SQLite store outputs/mlflow.db")
    experiment: str = option("moonprop", "MLflow experiment name")
    run_name: str | None = option(None, "MLflow run name; null: MLflow picks one, a sweep names each job by its values")
    registered_model: str | None = option(None, "register the run's model as a new version of this MLflow "
                                                "registered model; in a sweep only the best job's, aliased sweep-best")


@dataclass
class PlotConfig:
    every_n_epochs: int = option(1, "a boundary image every n epochs (the first and last always)")
    resolution: int = option(480, "width of the boundary pictures and animation in pixels (height follows the plane)")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: Any = MISSING  # a ScheduleConfig, chosen by the `schedule` config group
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    plot: PlotConfig = field(default_factory=PlotConfig)
    seed: int = option(0, "seeds the initial weights, the training batches and the test set")
    resume: str | None = option(None, "checkpoints/last.ckpt of an interrupted run: continue that MLflow run")


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

    walk("", asdict(redacted(cfg)))
    del out["resume"]
    return out


def check_same_params(before: dict[str, str], now: dict[str, str], where: str) -> None:
    """Refuse, in one line, settings other than those a checkpoint was trained with (`before`, its
    params): what continues a run must be the run it continues. `where` names that run. A key the
    checkpoint does not know (added to moonprop since) is not compared."""
    for key in before:
        if now.get(key) != before[key]:
            raise ConfigError(key, now.get(key), f"must be {before[key]}, as in {where}")


SCHEDULES: dict[str, type[ScheduleConfig]] = {
    "linear": LinearSchedule,
    "constant": ConstantSchedule,
    "cosine": CosineSchedule,
    "step": StepSchedule,
}
ACCELERATORS = ("auto", "cpu", "gpu")


def _positive_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x > 0


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(key, value, allowed)


def check_positive_int(key: str, value: Any) -> None:
    """The one-line refusal of `key` unless `value` is a positive integer (plugins' settings too)."""
    _check(_positive_int(value), key, value, "a positive integer")


def validate(cfg: DictConfig) -> Config:
    """Check what the types cannot and return the config as dataclasses; raise ConfigError."""
    schedule_name = OmegaConf.select(cfg, "schedule.name")
    _check(schedule_name in SCHEDULES, "schedule", schedule_name, f"one of {', '.join(SCHEDULES)}")
    schema = _schema(schedule_name)
    _check_known_keys(cfg, schema)  # `+key=value` gets past Hydra's struct flag, not past this
    try:
        typed = OmegaConf.merge(schema, cfg)
    except Exception as e:  # omegaconf's errors carry the full key on many lines
        key = getattr(e, "full_key", "") or "?"
        value = OmegaConf.select(cfg, re.sub(r"\[(\d+)\]", r".\1", key), default=None)
        raise ConfigError(key, value, first_line(e)) from None
    c: Config = OmegaConf.to_object(typed)  # type: ignore[assignment]

    d, s = c.data, c.schedule
    for key in ("num_batches", "batch_size", "test_size"):
        check_positive_int(f"data.{key}", getattr(d, key))
    _check(_finite(d.noise) and d.noise >= 0, "data.noise", d.noise, "a finite number >= 0")
    for i, h in enumerate(c.model.hidden):
        check_positive_int(f"model.hidden[{i}]", h)
    _check(_finite(c.loss.alpha) and c.loss.alpha >= 0, "loss.alpha", c.loss.alpha, "a finite number >= 0")
    for key in ("start", "end", "lr"):
        if hasattr(s, key):
            v = getattr(s, key)
            _check(_finite(v) and v > 0, f"schedule.{key}", v, "a finite learning rate > 0")
    if isinstance(s, StepSchedule):
        _check(_finite(s.gamma) and s.gamma > 0, "schedule.gamma", s.gamma, "a finite number > 0")
        check_positive_int("schedule.every", s.every)
    _check(c.trainer.accelerator in ACCELERATORS, "trainer.accelerator", c.trainer.accelerator,
           f"one of {', '.join(ACCELERATORS)}")
    check_positive_int("trainer.threads", c.trainer.threads)
    _check(bool(c.tracking.experiment), "tracking.experiment", c.tracking.experiment, "a non-empty name")
    _check(c.tracking.registered_model is None or bool(c.tracking.registered_model.strip()),
           "tracking.registered_model", c.tracking.registered_model, "null or a non-empty name")
    check_positive_int("plot.every_n_epochs", c.plot.every_n_epochs)
    _check(_positive_int(c.plot.resolution) and 16 <= c.plot.resolution <= 2048, "plot.resolution",
           c.plot.resolution, "an integer from 16 to 2048 (pixels)")
    return c


@functools.cache  # building it costs more than the rest of a validation; merge does not change it
def _schema(schedule: str) -> DictConfig:
    return OmegaConf.structured(Config(schedule=SCHEDULES[schedule]()))


def _check_known_keys(cfg: DictConfig, schema: DictConfig, prefix: str = "") -> None:
    for key in cfg:
        if key not in schema:
            raise ConfigError(f"{prefix}{key}", cfg[key], unknown_key_message(schema))
        if isinstance(cfg[key], DictConfig) and isinstance(schema[key], DictConfig):
            _check_known_keys(cfg[key], schema[key], f"{prefix}{key}.")


def unknown_key_message(parent: DictConfig) -> str:
    return f"unknown key; the keys here are {', '.join(str(k) for k in parent)}"


def first_line(e: BaseException) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


# The schema that conf/config.yaml extends (`defaults: [config_schema]`). The schedules are not
# registered: a ConfigStore entry in the `schedule` group would be offered as a schedule (in --help,
# completion, `schedule=`); `validate` types a schedule by its `name` instead.
ConfigStore.instance().store(name="config_schema", node=Config)
