"""Checks made before Hydra starts: every job's config, the output folders, the tracking store.

Hydra creates a run folder before it calls the task, and a sweep creates jobs before any of them
validates, so bad input would leave folders, runs or half a sweep behind. Here each value of a
sweep is composed and validated once (the base job, then one swept value at a time: the sum of the
values, not their product), and the errors of Hydra's own composition become one line.
"""

from __future__ import annotations

import copy
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.utils import get_args_parser
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Override
from hydra.errors import HydraException, MissingConfigException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from moonprop.config import (
    Config,
    ConfigError,
    first_line,
    params,
    redact,
    resolve_uri,
    unknown_key_message,
    validate,
)

CONF_DIR = Path(__file__).parent / "conf"
SERVER_TIMEOUT_S = 5


def parse(overrides: list[str]) -> list[Override]:
    """Hydra's parse of the command line, its syntax errors as one line."""
    parser = OverridesParser.create()
    for override in overrides:
        try:
            parser.parse_overrides([override])
        except OverrideParseException as e:
            reason = str(e).splitlines()[0]
            if not override.isascii():
                reason = "quote text that is not ASCII, as in key='läuft' (in the shell: \"key='läuft'\")"
            key, _, value = override.partition("=")
            raise ConfigError(key, value, reason) from None
    return parser.parse_overrides(overrides)


def override_values(o: Override) -> list[str]:
    """An override's values as strings; a search interval (`interval(a,b)`) by its two ends."""
    if o.is_interval_sweep():
        interval = o.value()
        return [str(interval.start), str(interval.end)]  # type: ignore[union-attr]
    return list(o.sweep_string_iterator()) if o.is_sweep_override() else [o.get_value_element_as_str()]


def job_overrides(overrides: list[str]) -> list[list[str]]:
    """The override lists to check: the first value of every swept key, then each other value."""
    parsed = parse(overrides)
    choices = [override_values(o) for o in parsed]
    keys = [o.get_key_element() for o in parsed]
    deletes = {i for i, o in enumerate(parsed) if o.is_delete()}

    def line(i: int, value: str) -> str:
        return keys[i] if i in deletes else f"{keys[i]}={value}"

    base = [line(i, c[0]) for i, c in enumerate(choices)]
    jobs = [base]
    for i, values in enumerate(choices):
        for value in values[1:]:
            jobs.append(base[:i] + [line(i, value)] + base[i + 1:])
    return jobs


def compose_job(overrides: list[str], config_name: str = "config") -> DictConfig:
    """Compose like Hydra does, turning its multi-line composition errors into one line."""
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides, return_hydra_config=True)
    except MissingConfigException as e:
        group, _, name = (e.missing_cfg_file or "").rpartition("/")
        if e.options:
            options = [o for o in e.options if not o.endswith("_schema")]
            raise ConfigError(group, name, f"one of {', '.join(options)}") from None
        raise ConfigError("config", e.missing_cfg_file, str(e).splitlines()[0]) from None
    except HydraException as e:
        cause = e.__cause__ or e
        key = getattr(cause, "full_key", None) or getattr(e, "full_key", None)
        value = next((o.split("=", 1)[1] for o in overrides
                      if key and o.lstrip("+~").split("=", 1)[0] == key and "=" in o), None)
        if key:
            raise key_error(compose_job([], config_name), key, value, cause) from None
        raise ConfigError("overrides", " ".join(overrides), first_line(cause)) from None


def key_error(job: DictConfig, key: str, value: object, cause: BaseException) -> ConfigError:
    """One line for an override that OmegaConf refused: an unknown key lists the keys beside it."""
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)):
        parent = without_hydra(job) if "." not in key else OmegaConf.select(job, key.rpartition(".")[0])
        if isinstance(parent, DictConfig):
            return ConfigError(key, value, unknown_key_message(parent))
    return ConfigError(key, value, first_line(cause))


def without_hydra(job: DictConfig) -> DictConfig:
    """The task's part of a composed config, as Hydra hands it to the app."""
    return OmegaConf.masked_copy(job, [k for k in job if k != "hydra"])


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


def check_server(uri: str) -> None:
    """Fail fast on an unreachable tracking server: MLflow's own retries take about 4 minutes."""
    try:
        without_credentials = re.sub(r"(?<=://)[^/@]+@", "", uri)  # /health asks for none
        with urllib.request.urlopen(without_credentials.rstrip("/") + "/health", timeout=SERVER_TIMEOUT_S):
            pass
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError("tracking.uri", redact(uri), f"a reachable MLflow server ({reason})") from None


def check_resume(config: Config) -> None:
    """A checkpoint to resume must be one of ours, and the settings those it was trained with."""
    if not Path(config.resume).is_file():
        raise ConfigError("resume", config.resume, "the path of an interrupted run's checkpoints/last.ckpt")
    from moonprop.train import checkpoint_state

    try:
        saved = checkpoint_state(config.resume)["params"]
    except Exception:
        raise ConfigError("resume", config.resume, "a checkpoint written by moonprop") from None
    for key, value in params(config).items():
        if key in saved and saved[key] != value:
            raise ConfigError(key, value, f"must be {saved[key]}, as in the run being resumed") from None


def check_environment(job: DictConfig, config: Config, multirun: bool) -> None:
    """What the schema cannot know: folders, the GPU, the tracking server."""
    run_dir = OmegaConf.select(job, "hydra.sweep.dir" if multirun else "hydra.run.dir")
    if not writable(Path(str(run_dir))):
        key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
        raise ConfigError(key, str(run_dir), "a folder that can be created and written")
    uri = config.tracking.uri
    if uri is None or uri.startswith("sqlite:"):
        db = Path(resolve_uri(uri).removeprefix("sqlite:///"))
        if not writable(db.parent):
            raise ConfigError("tracking.uri", uri, f"a store in a writable folder ({db.parent} is not)")
    elif uri.startswith(("http://", "https://")):
        check_server(uri)
    if config.resume:
        check_resume(config)
    if config.trainer.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", "gpu", "auto or cpu: this machine has no GPU")


def check_search(job: DictConfig) -> None:
    """The app returns test accuracy: a search that minimises it would find the worst model."""
    sweeper = OmegaConf.select(job, "hydra.sweeper")
    if "Optuna" in str(sweeper.get("_target_", "")) and str(sweeper.get("direction")).lower() != "maximize":
        raise ConfigError("hydra.sweeper.direction", sweeper.get("direction"),
                          "maximize: moonprop returns the test accuracy (or use hydra/sweeper=search)")


def check(argv: list[str]) -> list[Config]:
    """Validate every job the command line describes; raise ConfigError. Returns their configs."""
    args, _ = get_args_parser().parse_known_args(argv)
    if args.help or args.hydra_help or args.cfg or args.info or args.shell_completion:
        return []  # Hydra only prints: nothing is created
    config_name = args.config_name or "config"
    base, *variants = job_overrides(args.overrides)
    base_job = compose_job(base, config_name)
    jobs = [(base_job, validate(without_hydra(base_job)))]
    for overrides in variants:
        changed = next(line for line, base_line in zip(overrides, base, strict=True) if line != base_line)
        job = vary(base_job, changed) or compose_job(overrides, config_name)
        jobs.append((job, validate(without_hydra(job))))
    if args.multirun:
        check_search(base_job)
    checked = set()
    for job, config in jobs:
        if (key := (config.tracking.uri, config.trainer.accelerator)) not in checked:
            checked.add(key)
            check_environment(job, config, args.multirun)
    return [config for _, config in jobs]


def vary(base_job: DictConfig, line: str) -> DictConfig | None:
    """The base job with one plain value changed, without composing again (~50 ms a time, which
    `seed='range(0,300)'` would pay 300 times); None where composition is needed: a config group
    (`schedule=cosine`), one of Hydra's keys or a deletion."""
    override = OverridesParser.create().parse_override(line)
    key = override.key_or_group
    if (override.is_delete() or "/" in key or key.startswith("hydra") or override.package is not None
            or isinstance(OmegaConf.select(base_job, key, default=None), DictConfig)):
        return None
    job = copy.deepcopy(base_job)
    try:
        OmegaConf.update(job, key, override.value(), force_add=override.is_add() or override.is_force_add())
    except Exception as e:  # a wrong type or an unknown key, as composition would have said
        raise key_error(base_job, key, override.get_value_element_as_str(), e) from None
    return job
