"""Checks made before Hydra starts: every job's config, the output folders, the tracking store.

Hydra creates a run folder before it calls the task, and a sweep creates jobs before any of them
validates, so bad input would leave folders, runs or half a sweep behind. So the command line is
first taken through Hydra's own machinery, as `@hydra.main` will take it: the same argument
parser, the same search path (the packaged conf, `--config-dir`, `--config-path`, `--config-name`,
`hydra.searchpath`), the same composition, and for a sweep the jobs as the configured sweeper
generates them (command line and `hydra.sweeper.params` alike). Every job is validated, and what it
needs outside its config asked of environment.py once per distinct need; Hydra's own errors become
one line.

Checking hundreds of jobs stays cheap: a job's config groups and Hydra keys are composed once per
distinct combination (composing is the costly part), and each job's plain values are applied to
that composed config together, and validated, once for each distinct set of them: one value's
range may depend on another's (data.train_size on data.batch_size).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import MissingConfigException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from moonprop import hydra_internals
from moonprop.config import (
    GROUP_BASES,
    GROUPS,
    OWN_TRAINER_ARGS,
    RECORD_LOGGER,
    Config,
    ConfigError,
    extends,
    first_line,
    habit,
    recorded,
    unknown_key_message,
    validate,
)
from moonprop.environment import (
    check_environment,
    check_loggers,
    check_trainer,
    check_trainer_names,
    writable,
)
from moonprop.hydra_internals import Hydra
from moonprop.jobs import Sweeper, sweep_overrides

# ---- the command line, as Hydra reads it ---------------------------------------------------------

def parse(overrides: list[str]) -> list[Override]:
    """Hydra's parse of overrides, its syntax errors as one line that says how to write it."""
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as e:
            raise syntax_error(override, e) from None
    return parser.parse_overrides(overrides)


def syntax_error(override: str, e: Exception) -> ConfigError:
    key, _, value = override.partition("=")
    reason = str(e).splitlines()[0]
    if not override.isascii():
        reason = "quote text that is not ASCII, as in key='läuft' (in the shell: \"key='läuft'\")"
    elif value.count("[") != value.count("]") or value.endswith(","):
        # `model.hidden=[32, 32]` unquoted reaches us as `model.hidden=[32,` and `32]`
        reason = f"write a list without spaces, {key}=[32,32], or quote it: '{key}=[32, 32]'"
    elif "^" in value:  # Playground's x1^2: Hydra's grammar has no ^
        reason = f"{reason} (Hydra's grammar has no ^: model.features names x1^2 sq_x1 and x2^2 sq_x2)"
    return ConfigError(key, value, reason)


def only_prints(args: Any) -> bool:
    """--help, --cfg, --info and completion print and create nothing: Hydra answers them."""
    return bool(args.help or args.hydra_help or args.cfg or args.info or args.shell_completion)


class App(NamedTuple):
    """The Hydra app a command line is for, as `@hydra.main` was given it."""

    task_function: Callable[..., Any]
    config_path: str
    config_name: str


@contextlib.contextmanager
def app_hydra(app: App, args: Any) -> Iterator[tuple[Hydra, str]]:
    """The Hydra instance `@hydra.main` builds for `app` with these arguments (`--config-path`,
    `--config-dir`, `--config-name`), and the primary config's name."""
    if args.config_dir is not None and not os.path.isdir(args.config_dir):
        raise ConfigError("--config-dir", args.config_dir, "an existing folder of configs")
    with hydra_internals.app_hydra(app.task_function, args.config_path or app.config_path, args.config_dir) as hydra:
        yield hydra, args.config_name or app.config_name


def compose(hydra: Hydra, config_name: str | None, overrides: list[str], mode: RunMode) -> DictConfig:
    """Hydra's composition of the primary config, its errors as one line."""
    def composed(lines: list[str]) -> DictConfig:
        return hydra_internals.compose(hydra, config_name, lines, mode)

    with hydra_errors(hydra, config_name, overrides, composed):
        refuse_sweeps(parse(overrides), mode)
        return composed(overrides)


def compose_job(hydra: Hydra, master: DictConfig, overrides: list[str]) -> DictConfig:
    """A sweep job's config, as Hydra's launchers compose it from the sweep's config."""
    def composed(lines: list[str]) -> DictConfig:
        return hydra.config_loader.load_sweep_config(master, lines)

    with hydra_errors(hydra, master.hydra.job.config_name, overrides, composed):
        return composed(overrides)


def refuse_sweeps(overrides: list[Override], mode: RunMode) -> None:
    """What Hydra refuses of swept values, said the way to write them: a sweep without -m, a sweep
    over Hydra's own settings."""
    for o in overrides:
        if not o.is_sweep_override():
            continue
        key, _, value = (o.input_line or "").partition("=")
        if mode == RunMode.RUN:
            raise ConfigError(key, value, f"a sweep needs -m (moonprop -m {o.input_line}); a list is written "
                                          f"{key}=[{value}]")
        if o.is_hydra_override():
            raise ConfigError(key, value, f"Hydra's settings take one value (to sweep, give the app's key: "
                                          f"{key.rpartition('.')[2]}={value})")


@contextlib.contextmanager
def hydra_errors(hydra: Hydra, config_name: str | None, overrides: list[str],
                 composed: Callable[[list[str]], DictConfig] | None = None) -> Iterator[None]:
    """Turn Hydra's and OmegaConf's multi-line composition errors into one ConfigError line;
    `composed` composes again (with other overrides) to find the override at fault."""
    try:
        yield
    except ConfigError:
        raise
    except OverrideParseException as e:
        parse(overrides)  # raises the first unparsable override's own line
        raise syntax_error(" ".join(overrides), e) from None
    except MissingConfigException as e:
        group, _, name = (e.missing_cfg_file or "").rpartition("/")
        if e.options:
            raise ConfigError(group, name, f"one of {', '.join(e.options)}") from None
        if not group:
            raise ConfigError("--config-name", name, f"{first_line(e)} (see --config-dir)") from None
        raise ConfigError(group or "config", name, first_line(e)) from None
    except Exception as e:  # HydraException, OmegaConf's errors, and a few asserts and TypeErrors
        cause = e.__cause__ or e
        if isinstance(cause, ConfigError):  # a plugin's own one-line refusal (hydra/launcher=batched)
            raise cause from None
        kind = getattr(e.__cause__ or e.__context__, "object_type", None)  # Hydra raises it in an except
        if group := next((g for g, base in GROUP_BASES.items() if kind is base), None):
            # an option of the user's that extends no schema: its keys are not the base's
            raise ConfigError(group, _override_of(group, overrides) or "", extends(group)) from None
        key = getattr(cause, "full_key", None) or getattr(e, "full_key", None)
        if key and (value := _override_of(key, overrides)) is not None:
            raise key_error(hydra, config_name, overrides, key, value, cause) from None
        if key and hasattr(cause, "value"):  # an element of a list: model.hidden[0]
            raise ConfigError(key, cause.value, first_line(cause)) from None
        raise added_twice(overrides, composed) or ConfigError("overrides", " ".join(overrides), first_line(e)) \
            from None


def _override_of(key: str, overrides: list[str]) -> str | None:
    """The value the command line gave `key`, if it gave one."""
    for o in overrides:
        name, eq, value = o.lstrip("+~").partition("=")
        if eq and name == key:
            return value
    return None


def added_twice(overrides: list[str], composed: Callable[[list[str]], DictConfig] | None) -> ConfigError | None:
    """The refusal of a `+key=value` (or `+group=option`) whose key the config already has, found
    by composing it without its `+`: Hydra refuses to add what is there, in words of its own."""
    if composed is None:
        return None
    for i, line in enumerate(overrides):
        if not line.startswith("+") or line.startswith("++"):
            continue
        try:
            composed([*overrides[:i], line[1:], *overrides[i + 1:]])
        except Exception:
            continue
        key, _, value = line.partition("=")
        return ConfigError(key, value, f"{key[1:]} is already in the config: set it without '+', {line[1:]}")
    return None


def key_error(hydra: Hydra, config_name: str | None, overrides: list[str], key: str, value: object,
              cause: BaseException) -> ConfigError:
    """One line for an override that OmegaConf refused; an unknown key lists the keys beside it,
    or names the choice of its config group that has it (`schedule.gamma` is step's)."""
    if not isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        return ConfigError(key, value, first_line(cause))
    parent_key, _, name = key.rpartition(".")
    if parent_key == "hydra.sweeper.params":
        return ConfigError(key, value, f"a new entry of the sweeper's params: add it with +{key}={value}")
    if parent_key == "trainer":  # one of Lightning's arguments, not in the config until added
        if name in OWN_TRAINER_ARGS:
            return ConfigError(key, value, f"moonprop sets it: use {OWN_TRAINER_ARGS[name]}")
        try:
            check_trainer_names({name: value})
        except ConfigError as misspelt:
            return misspelt
        return ConfigError(key, value, f"one of Lightning's Trainer arguments: add it with +{key}={value}")
    known = [o for o in overrides if _override_of(key, [o]) is None]
    with contextlib.suppress(Exception):
        job = hydra_internals.compose(hydra, config_name, known, RunMode.RUN)
        parent = OmegaConf.select(job, parent_key) if parent_key else without_hydra(job)
        group = parent_key.replace(".", "/")
        choice = OmegaConf.select(job, f"hydra.runtime.choices.{group}") if parent_key else None
        if choice is not None:
            having = [option for option in hydra.config_loader.get_group_options(group, config_name=config_name)
                      if option != choice and _has_key(hydra, config_name, known, group, option, key)]
            if having:
                return ConfigError(key, value, f"a key of {group}={' or '.join(having)}, not of {group}={choice} "
                                               f"(choose it with {group}={having[0]})")
        if isinstance(parent, DictConfig):
            return ConfigError(key, value, unknown_key_message(parent))
    return ConfigError(key, value, first_line(cause))


def _has_key(hydra: Hydra, config_name: str | None, overrides: list[str], group: str, option: str,
             key: str) -> bool:
    try:
        job = hydra_internals.compose(hydra, config_name, [*overrides, f"{group}={option}"], RunMode.RUN)
    except Exception:
        return False
    parent_key, _, name = key.rpartition(".")
    parent = OmegaConf.select(job, parent_key)
    return isinstance(parent, DictConfig) and name in parent


def without_hydra(job: DictConfig) -> DictConfig:
    """The task's part of a composed config, as Hydra hands it to the app."""
    return OmegaConf.masked_copy(job, [k for k in job if k != "hydra"])


# ---- a sweep's jobs -------------------------------------------------------------------------------

def sweep_jobs(hydra: Hydra, master: DictConfig) -> list[list[str]]:
    """The override lists of a sweep's jobs, as its configured sweeper will generate them.

    Hydra's basic sweeper: every job of the product of `hydra.sweeper.params` and the command line.
    A sweeper that searches (moonprop's `search`, or any with a `jobs_to_check(arguments)`) cannot
    know its jobs before their results, so it names the jobs that bound its space: each choice and
    both ends of each interval. Another sweeper gets each value of its sweeps, one at a time.
    """
    with hydra_errors(hydra, master.hydra.job.config_name, []):
        sweeper = hydra_internals.sweeper_of(hydra, master)
    arguments = list(master.hydra.overrides.task)
    if hasattr(sweeper, "jobs_to_check"):
        return sweeper.jobs_to_check(arguments)
    overrides = sweep_overrides(master.hydra.sweeper.get("params"), arguments, hydra.config_loader)
    if Sweeper.of(master.hydra.sweeper) is Sweeper.GRID:
        with hydra_errors(hydra, master.hydra.job.config_name, [o.input_line for o in overrides]):
            return hydra_internals.grid_jobs(overrides)
    return one_value_at_a_time(overrides)


def override_values(o: Override) -> list[str]:
    """An override's values as strings; a search interval (`interval(a,b)`) by its two ends."""
    if o.is_interval_sweep():
        interval = o.value()
        return [str(interval.start), str(interval.end)]  # type: ignore[union-attr]
    return list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]


def one_value_at_a_time(parsed: list[Override]) -> list[list[str]]:
    """The first value of every key, then each other value with the others' first: enough to
    check every value of a search space whose jobs are not known in advance."""
    def line(o: Override, value: str) -> str:
        return o.get_key_element() if o.is_delete() else f"{o.get_key_element()}={value}"

    choices = [override_values(o) for o in parsed]
    base = [line(o, c[0]) for o, c in zip(parsed, choices, strict=True)]
    jobs = [base]
    for i, (o, values) in enumerate(zip(parsed, choices, strict=True)):
        jobs += [base[:i] + [line(o, value)] + base[i + 1:] for value in values[1:]]
    return jobs


def plain(master: DictConfig, override: Override) -> bool:
    """An override that sets one value of the task's config (`seed=3`, `model.hidden=[8]`), which
    can be applied to a composed config instead of composing again. Config groups
    (`schedule=cosine`, `+experiment=x`), Hydra's keys, packages and deletions need composing."""
    key = override.key_or_group
    if override.is_delete() or override.package is not None or "/" in key or key.startswith("hydra"):
        return False
    # a value is not resolved here: the sweep's `${hydra:job.num}` is None until a job has its number
    node = OmegaConf.select(master, key, default=None, throw_on_resolution_failure=False)
    if isinstance(node, DictConfig) or key in OmegaConf.select(master, "hydra.runtime.choices", default={}):
        return False
    return "." in key or key in master  # a top-level name that is not a key may be a group


def vary(task: DictConfig, plain_overrides: list[Override], hydra: Hydra, config_name: str | None,
         overrides: list[str]) -> DictConfig:
    """A job's task config with its plain values set, as composition would set them."""
    task = copy.deepcopy(task)
    for override in plain_overrides:
        key = override.key_or_group
        try:
            OmegaConf.update(task, key, override.value(), force_add=override.is_add() or override.is_force_add())
        except Exception as e:  # a wrong type or an unknown key, as composition would have said
            raise key_error(hydra, config_name, overrides, key, override.get_value_element_as_str(), e) from None
    return task


def checked_jobs(hydra: Hydra, master: DictConfig, jobs: list[list[str]]) -> list[Config]:
    """Compose and validate every job: each distinct composition once, and each job's plain values
    on it together, since one value's range may depend on another's (data.train_size on
    data.batch_size, optimizer.nesterov on optimizer.dampening)."""
    parser = OverridesParser.create(config_loader=hydra.config_loader)
    composed: dict[tuple[str, ...], DictConfig] = {}  # the task's part of each composition
    checked: dict[tuple[tuple[str, ...], tuple[str, ...]], Config] = {}
    for number, job in enumerate(jobs):
        overrides = parser.parse_overrides(job)
        refuse_group_names(overrides)
        structure = tuple(o.input_line for o in overrides if not plain(master, o))
        if structure not in composed:
            job_config = compose_job(hydra, master, list(structure))
            with open_dict(job_config):  # as the launcher numbers it
                job_config.hydra.job.num = number
            HydraConfig.instance().set_config(job_config)  # what `${hydra:...}` in a value reads
            composed[structure] = without_hydra(job_config)
            checked[(structure, ())] = validate(composed[structure])
        values = [o for o in overrides if plain(master, o)]
        lines = tuple(o.input_line for o in values)
        if (structure, lines) not in checked:
            varied = vary(composed[structure], values, hydra, master.hydra.job.config_name, [*structure, *lines])
            checked[(structure, lines)] = validate(varied)
    return list(checked.values())


def refuse_group_names(overrides: list[Override]) -> None:
    """`schedule.name=cosine` would give the linear schedule's values the cosine's name."""
    for o in overrides:
        group, _, key = o.key_or_group.partition(".")
        if key == "name" and (group in GROUPS or group == "loss") and not o.is_delete():
            value = o.get_value_element_as_str()
            raise ConfigError(o.key_or_group, value, f"the {group} is a config group: choose it with {group}={value}")


def refuse_targets(overrides: list[str]) -> None:
    """No command line makes moonprop instantiate a callable of its choosing: a `_target_` (a
    callback's) comes from a config file, the user's own or moonprop's. Hydra's own keys
    (`hydra.launcher._target_`, ...) are Hydra's business, as in plain Hydra."""
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        own = not key.startswith("hydra.") or key.startswith("hydra.sweeper.params.")
        if own and "_target_" in override:
            group = "logger" if key.startswith("logger") else "callbacks"
            raise ConfigError(key, value, f"a _target_ comes from a config file, not the command line: put it in "
                                          f"your config folder's {group}/ (docs/lightning.md)")


def check_chooses_on_validation(config: Config, multirun: bool) -> None:
    """What chooses (a sweep's best configuration, a search, a callback that monitors val/...)
    chooses on the validation set: never on the test set, whose accuracy would then be biased."""
    if config.data.val_size:
        return
    if multirun:
        raise ConfigError("data.val_size", 0, "a validation set of at least 1 point: a sweep chooses its best "
                                              "configuration on it (the test set only reports)")
    for name, callback in config.callbacks.items():
        if str(callback.get("monitor", "")).startswith("val/"):
            raise ConfigError("data.val_size", 0, f"a validation set of at least 1 point: callbacks.{name} "
                                                  f"monitors {callback['monitor']}")


def check_search(job: DictConfig) -> None:
    """The app returns the validation accuracy: a search that minimises it would find the worst model."""
    sweeper = OmegaConf.select(job, "hydra.sweeper")
    direction = str(sweeper.get("direction", "")).rpartition(".")[2].lower()  # Direction.minimize -> minimize
    if Sweeper.of(sweeper) is Sweeper.SEARCH and direction != "maximize":
        raise ConfigError("hydra.sweeper.direction", direction, "maximize: moonprop returns the validation accuracy")


def check(argv: list[str], app: App) -> list[Config]:
    """Validate every job the command line `argv` of `app` describes, and what they need outside
    their config (folders, the store, the GPU); raise ConfigError. Returns their configs."""
    configs, master, multirun = _compose_and_validate(argv, app)
    if configs:  # the folder Hydra creates: the sweep's, or the run's
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        if not writable(Path(folder := str(OmegaConf.select(master, key)))):
            raise ConfigError(key, folder, "a folder that can be created and written")
    environments, trainers, loggers = set(), set(), set()
    for config in configs:
        # A sweep's values are checked one at a time, each on the composition it changes: the
        # experiment its store is asked about is the sweep's own, with every fixed value applied.
        experiment = str(master.tracking.experiment) if multirun else config.tracking.experiment  # type: ignore[union-attr]
        key = (config.tracking.uri, experiment, config.trainer.accelerator, config.resume)
        if key not in environments:
            environments.add(key)
            check_environment(config, experiment)
        if (args := json.dumps(config.trainer.lightning, sort_keys=True, default=str)) not in trainers:
            trainers.add(args)
            check_trainer(config)
        if (names := json.dumps(config.logger, sort_keys=True, default=str)) not in loggers:
            loggers.add(names)
            check_loggers(config)
        check_chooses_on_validation(config, multirun)
        if multirun and not recorded(config):
            wanted = ",".join([RECORD_LOGGER, *config.logger])
            raise ConfigError("logger", list(config.logger), f"a list with mlflow in a sweep, whose jobs are compared "
                                                             f"in MLflow: logger=[{wanted}]")
        if multirun and (quick := config.trainer.lightning.get("fast_dev_run")):
            raise ConfigError("trainer.fast_dev_run", quick, "false in a sweep, whose jobs are recorded: it is a "
                                                             "single run's check that records nothing (debug=fdr)")
    return configs


def configs(argv: list[str], app: App) -> list[Config]:
    """The validated configs of every job the command line `argv` of `app` describes (nothing
    outside them checked); raise ConfigError."""
    return _compose_and_validate(argv, app)[0]


def _compose_and_validate(argv: list[str], app: App) -> tuple[list[Config], DictConfig | None, bool]:
    """Every job's config, the sweep's (or single run's) composed config, and whether it is a sweep."""
    args = hydra_internals.args_parser().parse_args(argv)
    found = HydraConfig.instance().cfg  # the checks set it, as Hydra does, for `${hydra:...}` in a value
    try:
        return _composed_and_validated(args, app)
    except ConfigError as e:
        raise with_habit(e, args.overrides) from None
    finally:
        HydraConfig.instance().cfg = found  # a Python caller's process keeps what it had


def with_habit(e: ConfigError, overrides: list[str]) -> ConfigError:
    """The refusal of an override that a neighbouring tool would take (`trainer=cpu`, `tags=[dev]`),
    with what to write in moonprop instead (config.habit)."""
    for line in overrides:
        try:
            (o,) = OverridesParser.create().parse_overrides([line])
        except Exception:
            continue
        key = o.key_or_group
        if e.key.lstrip("+") == key or e.key.startswith(f"{key}."):
            if hint := habit(key, o.value()):
                allowed = f"{e.allowed}; " if e.key.lstrip("+") == key else ""
                return ConfigError(key, o.get_value_element_as_str(), allowed + hint)
    return e


def _composed_and_validated(args: Any, app: App) -> tuple[list[Config], DictConfig | None, bool]:
    commands = ["--multirun"] * args.multirun + ["--cfg"] * bool(args.cfg) + ["--info"] * bool(args.info) \
        + ["--shell-completion"] * args.shell_completion + ["--run"] * args.run
    if len(commands) > 1:
        raise ConfigError("command", " ".join(commands), "one of --run, --multirun, --cfg, --info and "
                                                        "--shell-completion at a time")
    if only_prints(args):
        return [], None, False  # Hydra only prints: nothing is created
    refuse_targets(args.overrides)
    with app_hydra(app, args) as (hydra, config_name):
        # Hydra composes once to read hydra.mode (an experiment file may say MULTIRUN), then
        # again; a single run's composition tells the mode too, so it is composed once here.
        multirun, master = args.multirun, None
        if not multirun:
            try:
                master = compose(hydra, config_name, args.overrides, RunMode.RUN)
                multirun = master.hydra.mode == RunMode.MULTIRUN
            except ConfigError:  # a sweep's values without -m: an error, unless the config says MULTIRUN
                if hydra_internals.mode_of(hydra, config_name, args.overrides) != RunMode.MULTIRUN:
                    raise
                multirun = True
        if multirun:
            master = compose(hydra, config_name, args.overrides, RunMode.MULTIRUN)
            HydraConfig.instance().set_config(master)  # what `${hydra:...}` in a value reads, as in Hydra
            checked = checked_jobs(hydra, master, sweep_jobs(hydra, master))
            check_search(master)
            return checked, master, True
        refuse_group_names(parse(args.overrides))
        HydraConfig.instance().set_config(master)  # what `${hydra:...}` in a value reads
        return [validate(without_hydra(master))], master, False
