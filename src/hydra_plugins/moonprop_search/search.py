"""`hydra/sweeper=search`: a Hydra sweeper on a maintained Optuna (>= 4).

It reads its search space as Hydra's Optuna sweeper does (`hydra.sweeper.params` and the command
line: `choice(...)`, `a,b,c`, `range(...)`, `interval(a,b)`, `tag(log, interval(a,b))`), so that
plugin's docs and habits carry over, and adds what that plugin cannot on optuna 2:

- the study lives in a storage (`outputs/optuna.db` by default, any Optuna storage URL, or
  `journal:PATH` for a cluster's shared file system), and the same command continues it: the
  study's name is derived from the search unless `study_name` is given;
- trials are asked `n_jobs` at a time, so that a parallel launcher (joblib, SLURM) runs a batch;
- each trial reports its validation accuracy to the study as it trains, and the pruner (MedianPruner by
  default) stops hopeless trials at an epoch's end (`_trial.PruneHopeless`, a Lightning callback
  the sweeper hands to each job through the sweep's trials file, `moonprop.jobs.Trial`).

Hydra requires sweepers to live in the `hydra_plugins` package, and imports every module there on
every start but those whose names start with `_`: Optuna is imported only when a search runs, and
Lightning only in a trial (`_trial.py`).
"""

from __future__ import annotations

import contextlib
import logging
import math
from pathlib import Path
from typing import Any

from hydra.core.override_parser.types import Override, Transformer
from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from moonprop.jobs import Trial, study_name, sweep_overrides, write_trials

log = logging.getLogger(__name__)

PRUNED_AT = "pruned_at"  # the user attribute a pruned trial's job sets: the epoch it stopped after
PRUNER = "hydra_plugins.moonprop_search._trial.PruneHopeless"  # each trial's callback, in its job


def distribution(override: Override) -> Any:
    """The Optuna distribution of a swept override, or None for a fixed value (as Hydra's Optuna
    sweeper maps them; values of a choice are encoded as the command line writes them)."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    if not override.is_sweep_override():
        return None
    value = override.value()
    if override.is_choice_sweep() or (override.is_range_sweep() and value.shuffle):
        return CategoricalDistribution(list(override.sweep_iterator(transformer=Transformer.encode)))
    if override.is_range_sweep():  # range(start, stop, step): stop excluded, as Hydra's range is
        if any(isinstance(x, float) for x in (value.start, value.stop, value.step)):
            steps = math.floor((value.stop - value.start) / value.step - 1e-9)
            return FloatDistribution(value.start, value.start + steps * value.step, step=value.step)
        return IntDistribution(int(value.start), int(value.stop) - int(value.step), step=int(value.step))
    if override.is_interval_sweep():
        log_scale = "log" in value.tags
        if isinstance(value.start, int) and isinstance(value.end, int):
            return IntDistribution(value.start, value.end, log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)
    raise ValueError(f"{override.input_line}: not a search space hydra/sweeper=search knows")


def space_of(params: dict[str, Any], arguments: list[str]) -> tuple[dict[str, Override], dict[str, str]]:
    """The swept overrides by key, and the fixed ones (`key=value`), `hydra.sweeper.params` and then
    the command line as Hydra's sweepers read them: `model.hidden=[16,16]` fixes what params sweep."""
    swept: dict[str, Override] = {}
    fixed: dict[str, str] = {}
    for override in sweep_overrides(params, arguments):
        if override.is_sweep_override():
            swept[override.get_key_element()] = override
        else:
            fixed[override.get_key_element()] = override.get_value_element_as_str()
    return swept, fixed


def storage_of(url: str) -> Any:
    """An Optuna storage from its URL; `journal:PATH` is a journal file (NFS-friendly)."""
    from optuna.storages import JournalStorage, get_storage
    from optuna.storages.journal import JournalFileBackend

    if url.startswith("journal:"):
        Path(url.removeprefix("journal:")).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return get_storage(url)


def trial_id(storage: Any, study: str, number: int) -> int:
    """The storage's id of the trial `number` of `study` (Optuna's storage API names trials by id)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study), number)


def pruner_of(config: Any) -> Any:
    """The pruner its config names (`_target_` and arguments); `none` or null: never prune."""
    import optuna

    if config is None or (isinstance(config, str) and config.lower() == "none"):
        return optuna.pruners.NopPruner()
    return instantiate(config)


def sampler_of(config: Any, earlier_trials: int) -> Any:
    """The sampler its config names. A study that goes on gets its seed moved on by the trials it
    has: the same seed again would ask for the first trials again (TPE starts at random)."""
    if earlier_trials and "seed" in config and config.seed is not None:
        return instantiate(config, seed=int(config.seed) + earlier_trials)
    return instantiate(config)


class SearchSweeper(Sweeper):
    def __init__(self, direction: str, study_name: str | None, storage: str | None, n_trials: int, n_jobs: int,
                 sampler: Any, pruner: Any, params: DictConfig | None) -> None:
        """`sampler` and `pruner` are configs (`_recursive_: false`): nothing imports Optuna until
        the search runs, and a study that goes on reseeds its sampler."""
        self.direction, self.study_name, self.storage_url = direction, study_name, storage
        self.n_trials, self.n_jobs = n_trials, n_jobs
        self.sampler, self.pruner = sampler, pruner
        self.params = dict(params or {})
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        """Creates nothing (moonprop checks every search before it starts): the study is opened
        when the search runs."""
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    def space(self, arguments: list[str]) -> tuple[dict[str, Override], dict[str, str]]:
        return space_of(self.params, arguments)

    def jobs_to_check(self, arguments: list[str]) -> list[list[str]]:
        """For moonprop's checks before the search starts, which create nothing: its own settings
        (raising moonprop's ConfigError), and the jobs that bound its space: the first value of
        every key, then each other choice and the other end of each interval."""
        from moonprop.config import ConfigError, check_positive_int, first_line
        from moonprop.preflight import one_value_at_a_time, parse, writable

        for key in ("n_trials", "n_jobs"):
            check_positive_int(f"hydra.sweeper.{key}", getattr(self, key))
        for key, config in (("sampler", self.sampler), ("pruner", self.pruner)):
            try:
                sampler_of(config, 0) if key == "sampler" else pruner_of(config)
            except Exception as e:
                raise ConfigError(f"hydra.sweeper.{key}", config, f"an Optuna {key}: its _target_ and arguments"
                                  + (", or none" if key == "pruner" else "") + f" ({first_line(e)})") from None
        url = self.storage()
        path = url.removeprefix("journal:").removeprefix("sqlite:///")
        if path != url and not writable(Path(path).parent):
            raise ConfigError("hydra.sweeper.storage", url, "a storage in a writable folder")
        swept, fixed = self.space(arguments)
        return one_value_at_a_time([*swept.values(), *parse([f"{k}={v}" for k, v in fixed.items()])])

    def study_id(self) -> str:
        """The study's name (moonprop.jobs.study_name: the parent run is named by it too)."""
        assert self.config is not None
        return study_name(self.config)

    def storage(self) -> str:
        """The storage's URL: `hydra.sweeper.storage`, or outputs/optuna.db where moonprop started."""
        assert self.config is not None
        return self.storage_url or f"sqlite:///{Path(self.config.hydra.runtime.cwd, 'outputs', 'optuna.db')}"

    def sweep(self, arguments: list[str]) -> Any:
        import optuna

        assert self.config is not None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        swept, fixed = self.space(arguments)
        distributions = {key: distribution(o) for key, o in swept.items()}
        name, url = self.study_id(), self.storage()
        storage = storage_of(url)
        study = optuna.create_study(study_name=name, storage=storage, direction=self.direction,
                                    pruner=pruner_of(self.pruner), load_if_exists=True)
        earlier = len(study.trials)
        study.sampler = sampler_of(self.sampler, earlier)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        log.info(f"Study {name} in {url}: {earlier} trials so far, {self.n_trials} more")
        job, crashed = 0, []
        while job < self.n_trials:
            trials = [study.ask(distributions) for _ in range(min(self.n_jobs, self.n_trials - job))]
            batch = [[*(f"{k}={v}" for k, v in trial.params.items()), *(f"{k}={v}" for k, v in fixed.items())]
                     for trial in trials]
            write_trials(sweep_dir, {job + i: self.trial_of_job(url, name, t.number) for i, t in enumerate(trials)})
            self.validate_batch_is_legal(batch)
            for trial, result in zip(trials, self.launcher.launch(batch, initial_job_idx=job), strict=True):
                self.tell(study, storage, trial, result)
                if result.status == JobStatus.FAILED:  # died outside training, which records its own failures
                    try:
                        result.return_value  # noqa: B018 - a failed job's return_value raises its error
                    except Exception as e:
                        crashed.append(f"trial {trial.number}: {type(e).__name__}: {e}")
            job += len(trials)
        self.report(study, sweep_dir)
        if crashed:  # as Hydra's basic sweeper does with a job's exception: the sweep fails
            raise RuntimeError(f"{len(crashed)} of {self.n_trials} trials failed: {crashed[0]}")

    def trial_of_job(self, url: str, study: str, number: int) -> Trial:
        """What the job of trial `number` needs to know: its number and tags, and its callback."""
        pruner = OmegaConf.to_container(self.pruner) if isinstance(self.pruner, DictConfig) else self.pruner
        return Trial(number, {"optuna.study": study, "optuna.trial": str(number)},
                     [{"_target_": PRUNER, "_recursive_": False,  # the pruner's config stays a config
                       "storage": url, "study": study, "number": number, "pruner": pruner}])

    @staticmethod
    def tell(study: Any, storage: Any, trial: Any, result: Any) -> None:
        """A trial's end: its validation accuracy, pruned (its job stopped it), or failed."""
        from optuna.trial import TrialState

        value = result.return_value if result.status == JobStatus.COMPLETED else None
        # read from the storage, where the job wrote it (the Trial object here keeps its own copy)
        if storage.get_trial(trial_id(storage, study.study_name, trial.number)).user_attrs.get(PRUNED_AT) is not None:
            study.tell(trial, state=TrialState.PRUNED)
        elif isinstance(value, (int, float)) and math.isfinite(value):
            study.tell(trial, float(value))
        else:
            study.tell(trial, state=TrialState.FAIL)

    def report(self, study: Any, sweep_dir: Path) -> None:
        """The study's answer in the sweep folder (as Hydra's Optuna sweeper writes it) and the log."""
        from optuna.trial import TrialState

        states = [t.state for t in study.trials]
        counts = {s.name.lower(): states.count(s) for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
        results: dict[str, Any] = {"name": "search", "study": study.study_name, "trials": counts}
        if counts["complete"]:
            best = study.best_trial
            results |= {"best_params": best.params, "best_value": best.value, "best_trial": best.number}
            log.info(f"Best trial: #{best.number} {best.params}, value {best.value}")
        if counts["complete"] >= 2:  # what mattered: Optuna's fANOVA importance of each parameter
            import optuna

            with contextlib.suppress(Exception):  # too few distinct values, say: no importances
                results["importances"] = {k: round(v, 4) for k, v in
                                          optuna.importance.get_param_importances(study).items()}
        OmegaConf.save(OmegaConf.create(results), sweep_dir / "optimization_results.yaml")
