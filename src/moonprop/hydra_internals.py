"""What moonprop takes from Hydra's internals (`hydra._internal`), all of it here, and why.

moonprop checks a command line before `@hydra.main` acts on it (preflight.py), so that bad input
creates nothing. To check what Hydra will do it must do as Hydra does: read the arguments with
Hydra's own parser, build the app's search path (`--config-path`, `--config-dir`, the packaged
configs), compose a single run's or a sweep's config in its run mode, compose each job from the
sweep's config, and list a grid sweep's jobs as Hydra's basic sweeper will; and moonprop.run runs
the app from Python as `@hydra.main` runs it from the command line. Hydra's public API
(`hydra.compose` under `initialize_config_*`) composes a single run's task config only: no run
mode, no `hydra.mode` from an experiment file, no sweep. So these come from `hydra._internal`,
which no release promises to keep.

What would break: a renamed or re-signed function below fails on import or first call; a changed
composition shows as a config that is not the one Hydra runs. tests/test_internals.py checks each
against the installed Hydra (the same config as `--cfg job` prints, the same jobs as a real sweep
runs), and pyproject.toml keeps hydra-core below its next minor release.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

from hydra._internal.callbacks import Callbacks
from hydra._internal.core_plugins import basic_sweeper
from hydra._internal.hydra import Hydra
from hydra._internal.utils import (
    create_automatic_config_search_path,
    detect_calling_file_or_module_from_task_function,
    detect_task_name,
    get_args_parser,
)
from hydra.core.config_search_path import SearchPathQuery
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.types import Override
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, RunMode
from omegaconf import DictConfig

__all__ = ["Hydra", "app_hydra", "args_parser", "compose", "grid_jobs", "mode_of", "run", "sweeper_of"]


def args_parser() -> argparse.ArgumentParser:
    """The parser `@hydra.main` reads the command line with (`-m`, `--cfg`, `-cd`, overrides ...):
    Hydra has no public one, and its flags must be read exactly as it reads them."""
    return get_args_parser()


@contextlib.contextmanager
def app_hydra(task_function: Callable[..., Any], config_path: str | None, config_dir: str | None) -> Iterator[Hydra]:
    """The Hydra instance `@hydra.main` builds for the app `task_function` (as
    hydra._internal.utils._run_hydra does): its config path, then `--config-dir` before the schemas.
    The public `initialize_config_*` take one config source and no `--config-dir`."""
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(task_function)
    search_path = create_automatic_config_search_path(calling_file, calling_module, config_path)
    if config_dir is not None:
        search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(config_dir)}",
                            anchor=SearchPathQuery(provider="schema"))
    try:
        yield Hydra.create_main_hydra2(detect_task_name(calling_file, calling_module), search_path)
    finally:
        GlobalHydra.instance().clear()


def compose(hydra: Hydra, config_name: str | None, overrides: list[str], mode: RunMode) -> DictConfig:
    """The config (Hydra's part included) that Hydra composes for the app in `mode`: the public
    `hydra.compose` composes in RUN mode only, so a sweep's config (its sweeper, its params) is not
    the one it gives."""
    return hydra.compose_config(config_name, overrides, run_mode=mode, with_log_configuration=False)


def mode_of(hydra: Hydra, config_name: str | None, overrides: list[str]) -> RunMode:
    """RUN or MULTIRUN, as Hydra decides it: `-m`, or `hydra.mode` in the composed config (an
    experiment file may say MULTIRUN); Hydra's rule is not public."""
    return hydra.get_mode(config_name, overrides)


def run(hydra: Hydra, config_name: str | None, task_function: Callable[[DictConfig], Any],
        overrides: list[str]) -> JobReturn:
    """One run of the app, as `@hydra.main` runs it: its folder, `.hydra/`, logging, HydraConfig;
    what the task returned or raised is in the JobReturn. `@hydra.main` itself reads sys.argv and
    exits, which a Python caller (moonprop.run) must not."""
    return hydra.run(config_name=config_name, task_function=task_function, overrides=overrides)


def sweeper_of(hydra: Hydra, master: DictConfig) -> Sweeper:
    """The sweeper a sweep's config names, set up as Hydra sets it up but with no callbacks: a
    sweeper's setup creates nothing (Hydra's creates its launcher; moonprop's search opens its study
    only when it runs). `Plugins` is public; the context it needs (Callbacks) is not."""
    context = HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks())
    return Plugins.instance().instantiate_sweeper(config=master, hydra_context=context, task_function=lambda cfg: None)


def grid_jobs(overrides: list[Override]) -> list[list[str]]:
    """The override lists of the jobs Hydra's basic sweeper runs for `overrides`, in its order: its
    product, which Hydra does not expose but in its core plugin. (Its class is looked up when
    called: Hydra's plugin discovery executes the module again, so a class held since import would
    be a stale copy.)"""
    return [job for batch in basic_sweeper.BasicSweeper.split_arguments(overrides, None) for job in batch]
