"""Checks made before Hydra starts: every job's config, the output folders, the tracking store.

Hydra creates a run folder before it calls the task, and a sweep creates jobs before any of them
validates, so bad input would leave folders, runs or half a sweep behind. So the command line is
first taken through Hydra's own machinery, as `@hydra.main` will take it: the same argument
parser, the same search path (the packaged conf, `--config-dir`, `--config-path`, `--config-name`,
`hydra.searchpath`), the same composition, and for a sweep the jobs as the configured sweeper
generates them (command line and `hydra.sweeper.params` alike). Every job is validated; Hydra's own
errors become one line.

Checking hundreds of jobs stays cheap: a job's config groups and Hydra keys are composed once per
distinct combination (composing is the costly part), and each job's plain values are applied to
that composed config together, and validated, once for each distinct set of them: one value's
range may depend on another's (data.train_size on data.batch_size).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import sqlite3
import tempfile
import urllib.error
import urllib.parse
import urllib.request
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
    TRAINER_DEFAULTS,
    Config,
    ConfigError,
    check_same_params,
    extends,
    first_line,
    habit,
    params,
    recorded,
    redact,
    resolve_uri,
    unknown_key_message,
    validate,
)
from moonprop.hydra_internals import Hydra
from moonprop.jobs import CHECKPOINT_TAG, Sweeper, sweep_overrides

SERVER_TIMEOUT_S = 5
SHIPPED_LOGGERS = {RECORD_LOGGER: {"_target_": "moonprop.loggers.MlflowRecord"}}  # conf/logger/mlflow.yaml


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
    node = OmegaConf.select(master, key, default=None)
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


# ---- what the schema cannot know -----------------------------------------------------------------

def writable(path: Path) -> bool:
    """Whether `path` (a folder, existing or not) could be created and written, creating nothing.

    os.access alone says yes to root on a read-only file system, so a temporary file is tried.
    """
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return False
    try:
        with tempfile.TemporaryFile(dir=existing):
            return True
    except OSError:
        return False


def check_server(uri: str, experiment: str) -> None:
    """Fail fast on an unreachable tracking server (MLflow's own retries take about 4 minutes), and
    on one with authentication (`mlflow server --app-name basic-auth`) that refuses these
    credentials, or lets them only read `experiment`: each is one line before anything starts,
    where it would otherwise be a failed run, or a sweep's parent, after Hydra has begun."""
    base = re.sub(r"(?<=://)[^/@]+@", "", uri).rstrip("/")  # /health asks for no credentials
    try:
        with urllib.request.urlopen(base + "/health", timeout=SERVER_TIMEOUT_S):
            pass
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError("tracking.uri", redact(uri), f"a reachable MLflow server ({reason})") from None
    user, headers = credentials(uri)
    who = user or "no credentials"
    status, found = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?"
                         f"{urllib.parse.urlencode({'experiment_name': experiment})}", headers)
    if status == 401:
        said = f"these credentials ({user})" if user else "no credentials: set MLFLOW_TRACKING_USERNAME and " \
                                                          "MLFLOW_TRACKING_PASSWORD"
        raise ConfigError("tracking.uri", redact(uri), f"the tracking server refused {said}: 401")
    if status == 403:
        raise ConfigError("tracking.experiment", experiment, f"an experiment {who} may write to: the tracking "
                                                             f"server refused to let {who} read it (403)")
    if status != 200 or not isinstance(found, dict):  # a new experiment: its creator manages it
        return
    experiment_id = found.get("experiment", {}).get("experiment_id")
    status, mine = _get(f"{base}/api/3.0/mlflow/users/current/permissions", headers)  # basic-auth's only
    if status != 200 or not isinstance(mine, dict) or mine.get("is_admin"):
        return
    granted = {p["permission"] for p in mine.get("permissions", [])
               if p.get("resource_type") == "experiment" and p.get("resource_pattern") in (experiment_id, "*")}
    if granted and granted <= {"READ", "NO_PERMISSIONS"}:
        raise ConfigError("tracking.experiment", experiment, f"an experiment {who} may write to: the tracking "
                                                             f"server lets {who} only {' and '.join(sorted(granted))} "
                                                             f"it and refuses its runs (403); ask its admin for EDIT")


def credentials(uri: str) -> tuple[str | None, dict[str, str]]:
    """Whom MLflow's client will say it is to a tracking server, and the header that says it: its
    own variables (MLFLOW_TRACKING_USERNAME and _PASSWORD, or MLFLOW_TRACKING_TOKEN), else the
    URI's `user:password@`."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or None  # empty is unset, as MLflow reads it
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user is None and (given := urllib.parse.urlsplit(uri)).username:
        user, password = urllib.parse.unquote(given.username), urllib.parse.unquote(given.password or "")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        return user, {"Authorization": f"Basic {token}"}
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return "the token of MLFLOW_TRACKING_TOKEN", {"Authorization": f"Bearer {token}"}
    return None, {}


def _get(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    """A GET's status and JSON answer (None where it is not JSON)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=SERVER_TIMEOUT_S) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def check_resume(config: Config) -> None:
    """A checkpoint to resume must be one of ours, and the settings those it was trained with."""
    if not Path(config.resume).is_file():
        raise ConfigError("resume", config.resume, "the path of an interrupted run's checkpoints/last.ckpt")
    from moonprop.train import checkpoint_state

    try:
        saved = checkpoint_state(config.resume)
    except Exception:
        raise ConfigError("resume", config.resume, "a checkpoint written by moonprop") from None
    check_same_params(saved["params"], params(config), "the run being resumed")
    check_resumable(config, saved)


def check_resumable(config: Config, saved: dict[str, Any]) -> None:
    """A run is written once: only an interrupted run (KILLED) continues, in its own store, and
    only from the step its record has reached (an older checkpoint would write steps twice)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri, run_id = resolve_uri(config.tracking.uri), saved["run_id"]
    if run_id is None:  # a run that MLflow did not record (logger=[csv]): nothing to write twice there
        return
    try:
        client = MlflowClient(uri)
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError("resume", config.resume, f"a checkpoint of a run in this store, {redact(uri)}: its run "
                                                   f"{run_id} is not there (see tracking.uri)") from None
    name, status = f"{run.info.run_name} ({run_id})", run.info.status
    if status != "KILLED":
        raise ConfigError("resume", config.resume, f"a checkpoint of an interrupted run: its run {name} has ended "
                                                   f"{status}, and a run is written once")
    recorded = max((m.step for m in client.get_metric_history(run_id, "test/acc")), default=-1)
    if recorded > saved.get("step", recorded):
        newest = run.data.tags.get(CHECKPOINT_TAG)
        raise ConfigError("resume", config.resume, f"the run's newest checkpoint{f', {newest}' if newest else ''}: "
                                                   f"its run {name} is recorded to step {recorded}, this checkpoint "
                                                   f"stops at step {saved['step']}")


def check_schema(uri: str, db: Path) -> None:
    """A store a newer MLflow has opened is migrated one way; this MLflow then refuses it with advice
    to upgrade it (`mlflow db upgrade`), which cannot help. Its revisions are the files of MLflow's
    migration folder, read without importing MLflow (which takes a second)."""
    if not db.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            (revision,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except (sqlite3.Error, TypeError, ValueError):
        return  # not an MLflow store (yet): MLflow says what it finds
    (package,) = importlib.util.find_spec("mlflow").submodule_search_locations
    known = {f.name.partition("_")[0] for f in Path(package, "store", "db_migrations", "versions").glob("*.py")}
    if revision not in known:
        raise ConfigError("tracking.uri", uri, f"a store MLflow {importlib.metadata.version('mlflow')} can open (a "
                                               f"newer MLflow migrated this one, one way, to schema {revision}: "
                                               "open it with that release, or choose another store)")


def check_environment(job: DictConfig, config: Config, multirun: bool, experiment: str) -> None:
    """What the schema cannot know: folders, the GPU, the tracking server (and whether it lets
    these credentials write to `experiment`)."""
    run_dir = OmegaConf.select(job, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    if not writable(Path(str(run_dir))):
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        raise ConfigError(key, str(run_dir), "a folder that can be created and written")
    uri = config.tracking.uri
    if recorded(config):  # logger=[csv]: no store to check
        if uri is None or uri.startswith("sqlite:"):
            db = Path(resolve_uri(uri).removeprefix("sqlite:///"))
            if not writable(db.parent):
                raise ConfigError("tracking.uri", uri, f"a store in a writable folder ({db.parent} is not)")
            check_schema(resolve_uri(uri), db)
        elif uri.startswith(("http://", "https://")):
            check_server(uri, experiment)
    if config.resume:
        check_resume(config)
    if config.trainer.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", "gpu", "auto or cpu: this machine has no GPU")


def check_trainer_names(args: dict[str, Any]) -> None:
    """Each name one of the arguments of Lightning's Trainer, or one line naming the nearest."""
    import difflib
    import inspect

    import pytorch_lightning as pl

    known = [name for name in inspect.signature(pl.Trainer.__init__).parameters if name != "self"]
    for name, value in args.items():
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"trainer.{name}", value, "not an argument of Lightning's Trainer"
                              + (f"; did you mean trainer.{near[0]}?" if near else ""))


def check_trainer(config: Config) -> None:
    """Lightning's own arguments (`trainer.NAME`), against the Trainer's signature, then by the
    Trainer itself, which checks their values (Lightning is imported only for arguments other than
    the shipped defaults: the default run's checks stay light)."""
    args = config.trainer.lightning
    shipped = {k: v for k, v in TRAINER_DEFAULTS.items() if k not in ("accelerator", "threads")}
    if args == shipped:
        return
    check_trainer_names(args)
    from moonprop.train import trainer

    try:
        trainer(config, [])
    except Exception as e:  # Lightning's word on a value, often on several lines
        changed = [name for name in args if args[name] != shipped.get(name, object())]
        name = next((n for n in changed if n in str(e)), changed[0])
        raise ConfigError(f"trainer.{name}", args[name], first_line(e)) from None


def check_loggers(config: Config) -> None:
    """The `logger` group's loggers, made as a run makes them (into a folder of no consequence):
    a missing package (TensorBoard's) or a wrong argument stops the command, not each run. The
    `mlflow` entry must stay moonprop's record, which a run hands its MLflow run. Lightning is
    imported only for loggers other than the shipped record: the default run's checks stay light."""
    if config.logger == SHIPPED_LOGGERS:
        return
    from hydra.utils import get_class

    from moonprop.loggers import MlflowRecord, loggers_of

    if recorded(config):
        key, target = f"logger.{RECORD_LOGGER}", config.logger[RECORD_LOGGER]["_target_"]
        try:
            record = get_class(target)
        except Exception as e:
            raise ConfigError(f"{key}._target_", target, first_line(e)) from None
        if not (isinstance(record, type) and issubclass(record, MlflowRecord)):
            raise ConfigError(f"{key}._target_", target, "moonprop.loggers.MlflowRecord or a subclass: others go "
                                                         "beside it (logger=[mlflow,csv])")
        given = {k: v for k, v in config.logger[RECORD_LOGGER].items() if k != "_target_"}
        try:
            inspect.signature(record).bind(run=None, uri="", save_dir="", experiment_name="", **given)
        except TypeError as e:
            raise ConfigError(key, given, f"{target}'s arguments: {e}") from None
    for name, logger in config.logger.items():
        if name != RECORD_LOGGER:
            with tempfile.TemporaryDirectory() as folder:
                try:
                    loggers_of({name: logger}, Path(folder))
                except Exception as e:  # Hydra's InstantiationException says why in its cause
                    raise ConfigError(f"logger.{name}", logger["_target_"], first_line(e.__cause__ or e)) from None


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
    environments, trainers, loggers = set(), set(), set()
    for config in configs:
        # A sweep's values are checked one at a time, each on the composition it changes: the
        # experiment its store is asked about is the sweep's own, with every fixed value applied.
        experiment = str(master.tracking.experiment) if multirun else config.tracking.experiment  # type: ignore[union-attr]
        key = (config.tracking.uri, experiment, config.trainer.accelerator, config.resume)
        if key not in environments:
            environments.add(key)
            check_environment(master, config, multirun, experiment)  # type: ignore[arg-type]
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
