"""`hydra/sweeper=race`: seeds spent where they decide.

The swept keys read as Hydra's basic sweeper reads them (`a,b,c`, `range()`, `choice()`,
`hydra.sweeper.params`): every configuration of their product runs with `seeds` seeds first. Then,
round after round, the verdict of the sweep's summary (moonprop.stats.verdict: the best by mean
final val_acc against every other, t-tests Holm-corrected, within each task of `sweep.within`)
picks the configurations it cannot yet tell from the best, and only they, with the best, get
`step` seeds more, until the best is decided, each contender has `max_seeds`, or `budget` jobs have
run. Each round is a sweep step through the configured launcher (batched, joblib, SLURM ...), so
every job is an MLflow run under the sweep's one parent; the rounds are in race.yaml on it.
(F-race and successive halving race configurations; this races them over seeds.)

Hydra imports every module under `hydra_plugins` on every start: scipy is imported only when a
race runs.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

from moonprop.hydra_internals import grid_jobs
from moonprop.jobs import RACE_FILE, config_name, sweep_overrides

log = logging.getLogger(__name__)


def looks(seeds: int, step: int, max_seeds: int) -> int:
    """The verdicts a race may take before it must stop: after its first round, and after each
    round of `step` seeds more up to `max_seeds`."""
    return 1 + math.ceil((max_seeds - seeds) / step)


def next_round(results: Mapping[str, Mapping[int, float]], tasks: Mapping[str, str], step: int, max_seeds: int,
               budget: int | None, alpha: float) -> tuple[dict[str, list[int]], dict[str, Any]]:
    """The seeds each configuration runs next, given the final val_acc of those it has run by seed
    (NaN for a job that failed: it counts as run, not as a value), and what the verdict said; no
    seeds when the race is over. Within each task the best and the configurations the verdict
    cannot yet tell from it run up to `step` seeds more than the best has (never past
    `max_seeds`), the seeds the best has first, so that their comparisons stay paired. `budget`:
    the jobs left, given first to the best and then to the closest contenders. `alpha`: the level
    of each round's verdict; a race that looks again and again must ask more of each look (see
    RaceSweeper.alpha), or it would stop at a chance lead more often than the verdict says."""
    from moonprop import stats

    wanted: list[tuple[str, int]] = []
    said: dict[str, Any] = {}
    for task in dict.fromkeys(tasks.values()):
        mine = {c: {s: v for s, v in results[c].items() if math.isfinite(v)} for c in tasks if tasks[c] == task}
        judged = stats.verdict(mine, alpha)
        if judged is None:
            continue
        best, comparisons = judged
        contenders = sorted((k for k in comparisons if not k.decided), key=lambda k: -(k.p_holm or 1.0))
        said[task or "all"] = {"best": best, "decided": [k.config for k in comparisons if k.decided],
                               "contenders": [k.config for k in contenders]}
        if not contenders:
            continue
        target = min(max_seeds, len(results[best]) + step)
        for config in [best, *(k.config for k in contenders)]:
            wanted += [(config, s) for s in range(target) if s not in results[config]]
    if budget is not None:
        wanted = wanted[:max(0, budget)]
    planned: dict[str, list[int]] = {}
    for config, seed in wanted:
        planned.setdefault(config, []).append(seed)
    return planned, said


class RaceSweeper(Sweeper):
    def __init__(self, seeds: int, step: int, max_seeds: int, budget: int | None, params: DictConfig | None) -> None:
        self.seeds, self.step, self.max_seeds, self.budget = seeds, step, max_seeds, budget
        self.params = dict(params or {})
        self.config: DictConfig | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config)

    @property
    def alpha(self) -> float:
        """Each round's level: the verdict's ALPHA shared out over the looks the race may take
        (Bonferroni), so that a race whose configurations are equal stops on a chance lead no more
        often than the verdict's ALPHA (measured in tests/test_race.py)."""
        from moonprop import stats

        return stats.ALPHA / looks(self.seeds, self.step, self.max_seeds)

    def configurations(self, arguments: list[str]) -> dict[str, list[str]]:
        """Every configuration of the swept keys' product (Hydra's basic sweeper's order): its
        overrides, by its name in the summary (`hidden=[8] schedule=cosine`)."""
        from moonprop.config import ConfigError

        overrides = sweep_overrides(self.params, arguments)
        if seed := next((o for o in overrides if o.key_or_group == "seed"), None):
            raise ConfigError("seed", seed.input_line.partition("=")[2], "left to the race: it runs seeds 0, 1, ... "
                              "(hydra.sweeper.seeds, step, max_seeds)")
        keys = [o.key_or_group for o in overrides if o.is_sweep_override()]
        return {config_name(job, keys): job for job in grid_jobs(overrides)}

    def jobs_to_check(self, arguments: list[str]) -> list[list[str]]:
        """For moonprop's checks before the race starts: its own settings, and every configuration
        with its first seed."""
        from moonprop.config import ConfigError, check_positive_int

        for key in ("seeds", "step", "max_seeds"):
            check_positive_int(f"hydra.sweeper.{key}", getattr(self, key))
        if self.seeds < 2 or self.seeds > self.max_seeds:
            raise ConfigError("hydra.sweeper.seeds", self.seeds, f"from 2 (a test needs two seeds a side) to "
                              f"hydra.sweeper.max_seeds ({self.max_seeds})")
        configs = self.configurations(arguments)
        if self.budget is not None:
            check_positive_int("hydra.sweeper.budget", self.budget)
            if self.budget < len(configs) * self.seeds:
                raise ConfigError("hydra.sweeper.budget", self.budget, f"at least the first round's "
                                  f"{len(configs) * self.seeds} jobs ({len(configs)} configurations x "
                                  f"hydra.sweeper.seeds={self.seeds}), or null")
        return [[*job, "seed=0"] for job in configs.values()]

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        configs = self.configurations(arguments)
        tasks = self.tasks(configs)
        results: dict[str, dict[int, float]] = {c: {} for c in configs}
        planned: dict[str, list[int]] = {c: list(range(self.seeds)) for c in configs}
        rounds: list[dict[str, Any]] = []
        jobs = 0
        while planned:
            batch = [[*configs[c], f"seed={s}"] for c, seeds in planned.items() for s in seeds]
            self.validate_batch_is_legal(batch)
            log.info(f"Round {len(rounds)}: {len(batch)} jobs over {len(planned)} configurations")
            for (config, seed), ret in zip([(c, s) for c, seeds in planned.items() for s in seeds],
                                           self.launcher.launch(batch, initial_job_idx=jobs), strict=True):
                value = ret.return_value if ret.status.name == "COMPLETED" else None
                results[config][seed] = float(value) if isinstance(value, (int, float)) else math.nan
            jobs += len(batch)
            left = None if self.budget is None else self.budget - jobs
            planned, said = next_round(results, tasks, self.step, self.max_seeds, left, self.alpha)
            rounds.append({"round": len(rounds), "jobs": len(batch), "verdict": said})
            self.report(sweep_dir, rounds, results, len(configs), jobs)

    def tasks(self, configs: Mapping[str, list[str]]) -> dict[str, str]:
        """Each configuration's task (its values of the swept keys in `sweep.within`): the race
        compares configurations within a task only, as the summary does."""
        assert self.config is not None
        within = set(self.config.sweep.within)
        return {c: " ".join(o for o in job if o.lstrip("+~").partition("=")[0] in within)
                for c, job in configs.items()}

    def report(self, sweep_dir: Path, rounds: list[dict[str, Any]], results: Mapping[str, Mapping[int, float]],
               configs: int, jobs: int) -> None:
        """The race so far in the sweep folder (the summary puts it on the parent run)."""
        OmegaConf.save(OmegaConf.create({
            "name": "race", "jobs": jobs, "full_grid": configs * self.max_seeds,
            "settings": {"seeds": self.seeds, "step": self.step, "max_seeds": self.max_seeds, "budget": self.budget,
                         "alpha": self.alpha},
            "seeds": {c: len(r) for c, r in results.items()}, "rounds": rounds}), sweep_dir / RACE_FILE)
