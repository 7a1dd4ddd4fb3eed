"""The vocabulary of jobs and sweeps: what a job is and is called, what its sweep folder tells every
job, which launcher and sweeper run it, and how a sweep's overrides are read.

Neither torch nor MLflow, and Hydra only where a function needs it: the CLI (before `--help`), the
recorder (for a sweep's summary) and Hydra's plugins all read it.
"""

from __future__ import annotations

import enum
import json
import re
import signal
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from moonprop.config import Config, redact

if TYPE_CHECKING:
    from hydra.core.override_parser.types import Override
    from omegaconf import DictConfig

SWEEP_FILE = ".moonprop_sweep.json"  # the parent run and the swept keys: what every job needs to know
RACE_FILE = "race.yaml"  # hydra/sweeper=race's rounds, in the sweep folder and on the parent run
TRIALS_FILE = ".moonprop_trials.json"  # a sweeper's word on each job it launches (see Trial)
PRUNED_TAG = "optuna.pruned"  # a job its sweeper stopped early (a search's pruner): PRUNED in the summary
CHECKPOINT_TAG = "moonprop.checkpoint"  # an interrupted run's newest checkpoint, which `resume=` takes
SUPERSEDED_TAG = "sweep.superseded"  # a job's run that a continued sweep ran again, in a new run
CONFIG_TAG = "moonprop.config"  # a run's settings but its seed: what MLflow's "Group by" groups seeds by


class Launcher(enum.Enum):
    """The launchers moonprop treats apart, by the class their config's `_target_` names (Hydra's
    plugin discovery loads its own copies of the classes: the name is what compares)."""

    IN_PROCESS = "BasicLauncher"  # Hydra's default: every job in this process, one after another
    BATCHED = "BatchedLauncher"  # hydra/launcher=batched: the jobs as one model, in this process
    JOBLIB = "JoblibLauncher"  # worker processes, killed with their recorders when a sweep is stopped
    SLURM = "SlurmLauncher"  # submitit: jobs on a cluster, which a stopped sweep must cancel
    OTHER = ""

    @classmethod
    def of(cls, node: DictConfig) -> Launcher:
        return _kind(cls, node)

    @property
    def trains_here(self) -> bool:
        """Whether the jobs train in the process that launches them."""
        return self in (Launcher.IN_PROCESS, Launcher.BATCHED)


class Sweeper(enum.Enum):
    GRID = "BasicSweeper"  # Hydra's default: every combination of the values given
    SEARCH = "SearchSweeper"  # hydra/sweeper=search: Optuna asks for each job's values
    RACE = "RaceSweeper"  # hydra/sweeper=race: a grid's configurations, with seeds added where they decide
    OTHER = ""

    @classmethod
    def of(cls, node: DictConfig) -> Sweeper:
        return _kind(cls, node)


def _kind(kinds: Any, node: DictConfig) -> Any:
    name = str(node.get("_target_", "")).rsplit(".", 1)[-1]
    return next((kind for kind in kinds if kind.value == name), kinds.OTHER)


def sweep_overrides(params: Mapping[str, Any] | None, arguments: list[str],
                    config_loader: Any = None) -> list[Override]:
    """A sweep's overrides as Hydra's sweepers read them: `hydra.sweeper.params`, then the command
    line; a key given in both keeps its first place and takes the command line's value."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    lines = [f"{k}={v}" for k, v in (params or {}).items()] + list(arguments)
    by_key: dict[str, Override] = {}
    for override in OverridesParser.create(config_loader=config_loader).parse_overrides(lines):
        by_key[override.get_key_element()] = override  # a dict keeps a key's first place
    return list(by_key.values())


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: those with several values (`a,b`, `range()`, `choice()`,
    `interval()`) on the command line or in `hydra.sweeper.params`; a race's seeds too."""
    overrides = sweep_overrides(config.hydra.sweeper.get("params"), list(config.hydra.overrides.task))
    keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
    return keys + ["seed"] if Sweeper.of(config.hydra.sweeper) is Sweeper.RACE else keys  # the race sweeps seeds


def short_names(keys: list[str]) -> dict[str, str]:
    """`model.hidden` -> `hidden` where no other swept key ends the same way."""
    last = [k.rpartition(".")[2] for k in keys]
    return {k: short if last.count(short) == 1 else k for k, short in zip(keys, last, strict=True)}


def _short_value(value: str) -> str:
    """A value as a name shows it: a search's 0.5306827194 as 0.5307."""
    if re.fullmatch(r"-?\d*\.\d{5,}(e-?\d+)?", value):
        return f"{float(value):.4g}"
    return value


def given_values(overrides: list[str]) -> dict[str, str]:
    """The values overrides give, by key: `+data.foo=1` and `data.foo=1` alike give data.foo."""
    return dict(o.lstrip("+~").split("=", 1) for o in overrides if "=" in o)


def swept_values(overrides: list[str], keys: list[str]) -> dict[str, str]:
    """A job's values of the swept keys, under their short names: {"hidden": "[8]", ...}."""
    given = given_values(overrides)
    return {short: given[key] for key, short in short_names(keys).items() if key in given}


def _words(overrides: list[str], keys: list[str]) -> str:
    """The values of `keys` as a name says them: `hidden=[8] schedule=cosine`."""
    return " ".join(f"{short}={_short_value(value)}" for short, value in swept_values(overrides, keys).items())


def job_name(overrides: list[str], keys: list[str], number: int, numbered: bool) -> str:
    """A sweep job's run name: the values it was given for the swept keys, `hidden=[8]
    schedule=cosine`; a search's trials (whose values may repeat) also by their number, `#3 ...`."""
    text = _words(overrides, keys)
    return f"#{number} {text}".strip() if numbered or not text else text


def config_name(overrides: list[str], keys: list[str]) -> str:
    """A run's settings without its seed, in the words of its job name (`hidden=[8] schedule=cosine`):
    the values of the swept keys but the seed; if the sweep varies only the seed, or for a single
    run, its other overrides; `default` for the default config. What only names or draws the run
    (`tracking.*`, `plot.*`, `sweep.*`) is no setting. The runs of one configuration share it, whatever their
    seeds."""
    def setting(key: str) -> bool:  # what changes what is trained: not the seed, the record, the pictures
        return key != "seed" and key != "resume" and not key.startswith(("tracking.", "plot.", "hydra.", "sweep."))

    others = [k for k in given_values(overrides) if setting(k) and k not in keys]
    return _words(overrides, [k for k in keys if setting(k)]) or _words(overrides, others) or "default"


def _span(override: Override) -> str:
    """How a name says a swept key's values: `0..9` for consecutive integers, else their count, `x3`."""
    if not (override.is_choice_sweep() or override.is_range_sweep()):
        return ""  # an interval: a search's, which is named by its study
    values = list(override.sweep_iterator())
    if len(values) > 1 and all(type(v) is int for v in values) and values == list(range(values[0], values[-1] + 1)):
        return f"{values[0]}..{values[-1]}"
    return f"x{len(values)}"


def sweep_name(config: DictConfig, sweep_id: str) -> str:
    """The parent run's name, which tells sweeps apart in the runs table: what it sweeps and over
    what, `sweep schedule x3, seed 0..2` (a race: `race schedule x3, seed`); a search by its study,
    `search search-1a2b3c4d5e`; its folder, if it sweeps no key. The runs table shows when it
    started, its `sweep.id` tag its folder."""
    sweeper = Sweeper.of(config.hydra.sweeper)
    if sweeper is Sweeper.SEARCH:
        return f"search {study_name(config)}"
    overrides = [o for o in sweep_overrides(config.hydra.sweeper.get("params"), list(config.hydra.overrides.task))
                 if o.is_sweep_override()]
    names = short_names([o.key_or_group for o in overrides])
    said = [f"{names[o.key_or_group]} {_span(o)}".strip() for o in overrides]
    if sweeper is Sweeper.RACE:  # its seeds are what it decides: `race hidden x3, schedule x2`
        return f"race {', '.join(said)}"
    return f"sweep {', '.join(said)}" if said else f"sweep {sweep_id}"


def study_name(config: DictConfig) -> str:
    """hydra/sweeper=search's study: `hydra.sweeper.study_name`, or derived from the search (its
    space, its fixed values, the direction and the primary config), so that the same command
    continues the same study."""
    import hashlib

    sweeper = config.hydra.sweeper
    if sweeper.get("study_name"):
        return str(sweeper.study_name)
    overrides = sweep_overrides(sweeper.get("params"), list(config.hydra.overrides.task))
    search = {"space": sorted(o.input_line for o in overrides if o.is_sweep_override()),
              "fixed": sorted((o.get_key_element(), o.get_value_element_as_str())
                              for o in overrides if not o.is_sweep_override()),
              "direction": sweeper.direction, "config": str(config.hydra.job.config_name)}
    return "search-" + hashlib.sha256(json.dumps(search).encode()).hexdigest()[:10]


class Trial(NamedTuple):
    """What a sweeper that picks its jobs' values says of one job (hydra/sweeper=search: its Optuna
    trial), in the sweep's trials file, for the job to read wherever it runs."""

    number: int  # the job's run is named by it (`#3 ...`): a search's values may repeat
    tags: dict[str, str]
    callbacks: list[dict[str, Any]]  # Lightning callbacks for its training, as configs with `_target_`


def write_trials(sweep_dir: Path, trials: Mapping[int, Trial]) -> None:
    """Add the jobs `trials` (by job number) to the sweep's trials file, before they launch."""
    path = sweep_dir / TRIALS_FILE
    known = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**known, **{str(job): trial._asdict() for job, trial in trials.items()}}))


def read_trial(sweep_dir: Path, job: int) -> Trial | None:
    path = sweep_dir / TRIALS_FILE
    found = json.loads(path.read_text()).get(str(job)) if path.exists() else None
    return Trial(**found) if found else None


class Job(NamedTuple):
    """How a job's run sits in its sweep."""

    parent: str | None  # the sweep's parent run
    name: str
    overrides: list[str]  # its own, credentials redacted
    tags: dict[str, str]
    callbacks: list[dict[str, Any]]  # its sweeper's callbacks for its training (a search's pruner)
    kept: float | None = None  # a continued sweep's job that had finished: its result, not trained again
    resume: str | None = None  # a continued sweep's job that was interrupted: the checkpoint it continues from


def this_job(run_name: str | None) -> Job:
    """The job Hydra is running: its parent run (from the sweep folder, which every launcher's
    jobs can read), its name (`run_name`, or the values it was given), the tags that find it in its
    sweep (the sweep, its number, its overrides), what its sweeper says of it (Trial) and, in a
    continued sweep, whether it had finished or was interrupted (summary.reopen_parent)."""
    from hydra.core.hydra_config import HydraConfig

    hc = HydraConfig.get()
    folder = Path(str(hc.sweep.dir))
    sweep = json.loads((folder / SWEEP_FILE).read_text()) if (folder / SWEEP_FILE).exists() else {}
    overrides = [redact(o) for o in hc.overrides.task]
    tags = {"sweep.id": folder.name, "sweep.job": str(hc.job.num), "sweep.overrides": " ".join(overrides)}
    trial = read_trial(folder, hc.job.num) or Trial(hc.job.num, {}, [])
    keys = sweep.get("keys", [])
    name = run_name or job_name(overrides, keys, trial.number, sweep.get("numbered", True))
    tags[CONFIG_TAG] = config_name(overrides, keys)
    number = str(hc.job.num)
    return Job(sweep.get("parent"), name, overrides, tags | trial.tags, trial.callbacks,
               sweep.get("kept", {}).get(number), sweep.get("resume", {}).get(number))


class Task(NamedTuple):
    """One run as Hydra's job gives it (cli.task): what `train.train` and `train.train_batched` take."""

    cfg: Config
    run_dir: Path
    overrides: list[str]
    tags: dict[str, str]
    job: Job | None  # in a sweep: how its run sits in it
    launch_dir: str  # where moonprop was started: a relative SQLite store is there
    command: list[str]  # the arguments that run it alone (its config folder, its overrides): how to continue it


class Result(NamedTuple):
    """What a run left: its MLflow run ("" for one MLflow does not record), each metric's final value
    by its logged key (`test/acc`, `val/acc`, `train/loss`, `lr`), its MLflow model (`models:/<id>`,
    for `mlflow.pyfunc.load_model`; None until the recorder has closed the run, which a sweep's
    jobs leave to the background) and its Hydra run folder. `moonprop.run` returns it."""

    run_id: str
    metrics: dict[str, float]
    model_uri: str | None
    run_dir: Path


class Interrupted(BaseException):
    """Training stopped on a signal (SIGINT, SIGTERM) at an epoch's end, after a checkpoint.

    A BaseException, like KeyboardInterrupt, so that no `except Exception` on the way swallows it;
    the CLI exits with 128 + the signal's number, as a shell reports a process ended by it.
    """

    def __init__(self, signum: int, epoch: int, how_to_continue: str) -> None:
        super().__init__(f"stopped by {signal.Signals(signum).name} after epoch {epoch}; "
                         f"continue with: {how_to_continue}")
        self.signum = signum
