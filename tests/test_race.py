"""hydra/sweeper=race: against a simulated sweep whose answer is known, then for real."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from hydra_plugins.moonprop_race.race import looks, next_round
from moonprop import stats

from .conftest import default_store, moonprop, sweep_runs


def race(means: dict[str, float], spread: float, seeds: int = 3, step: int = 2, max_seeds: int = 10,
         budget: int | None = None, seed: int = 0) -> tuple[dict[str, dict[int, float]], int]:
    """A race over configurations whose seeds' final accuracies are drawn around known `means`,
    one seed the same luck for every configuration (as one seed draws the same batches and test
    set); the results and the jobs it ran."""
    rng = np.random.default_rng(seed)
    luck = rng.normal(0, spread, 100)  # shared by the seed
    own = {c: rng.normal(0, spread / 2, 100) for c in means}
    results: dict[str, dict[int, float]] = {c: {} for c in means}
    planned = {c: list(range(seeds)) for c in means}
    jobs = 0
    while planned:
        for config, seeds_ in planned.items():
            for s in seeds_:
                results[config][s] = float(means[config] + luck[s] + own[config][s])
                jobs += len([s])
        planned, _ = next_round(results, dict.fromkeys(means, ""), step, max_seeds,
                                None if budget is None else budget - jobs, stats.ALPHA / looks(seeds, step, max_seeds))
    return results, jobs


def test_clear_differences_are_decided_with_few_seeds_and_the_best_is_the_true_one():
    means = {"a": 0.99, "b": 0.95, "c": 0.93, "d": 0.90, "e": 0.85, "f": 0.80}
    for seed in range(20):
        results, jobs = race(means, 0.01, seed=seed)
        best, comparisons = stats.verdict(results)
        assert best == "a" and all(k.decided for k in comparisons), seed
        assert jobs < len(means) * 10  # the full grid at max_seeds would run 60
    # most decided at once: six configurations x three seeds, then a round or two for the close one
    assert race(means, 0.01)[1] <= 6 * 3 + 2 * 5


def test_close_contenders_get_the_seeds_and_the_race_stops_at_max_seeds():
    means = {"a": 0.950, "b": 0.950, "c": 0.80}  # a and b: equal, which no number of seeds can tell apart
    results, jobs = race(means, 0.01, max_seeds=10, seed=1)
    assert len(results["a"]) == len(results["b"]) == 10 and len(results["c"]) == 3
    assert jobs == 23
    _, comparisons = stats.verdict(results)
    assert [k.decided for k in comparisons if k.config == "c"] == [True]


def test_a_race_of_equal_configurations_declares_a_winner_no_more_often_than_the_verdicts_level():
    # it looks up to five times (3, 5, 7, 9, 10 seeds): each look at 1%, not 5%, or it would stop
    # on a chance lead about twice as often as its level says (measured: 11% at 5% a look)
    assert looks(3, 2, 10) == 5
    wrong = 0
    for seed in range(200):
        results, _ = race({"a": 0.95, "b": 0.95}, 0.01, seed=seed)
        wrong += stats.verdict(results, stats.ALPHA / 5)[1][0].decided
    assert wrong / 200 <= stats.ALPHA


def test_the_budget_is_never_passed_and_goes_to_the_best_and_the_closest():
    means = {"a": 0.950, "b": 0.949, "c": 0.948, "d": 0.80}
    results, jobs = race(means, 0.01, budget=16)
    assert jobs == 16 and len(results["d"]) == 3
    planned, said = next_round({"a": {0: 0.9, 1: 0.91}, "b": {0: 0.9, 1: 0.905}}, {"a": "", "b": ""}, 2, 10, 1, 0.05)
    assert sum(map(len, planned.values())) == 1 and said["all"]["contenders"] == ["b"]


def test_failed_jobs_count_as_run_and_tasks_are_raced_apart():
    results = {"a": {0: 0.9, 1: math.nan, 2: 0.91}, "b": {0: 0.5, 1: 0.52, 2: 0.51},
               "x": {0: 0.7, 1: 0.71, 2: 0.69}, "y": {0: 0.7, 1: 0.69, 2: 0.71}}
    planned, said = next_round(results, {"a": "data=moons", "b": "data=moons", "x": "data=xor", "y": "data=xor"},
                               2, 10, None, 0.05)
    assert said["data=moons"]["best"] == "a" and said["data=xor"]["contenders"]
    assert 1 not in planned.get("a", [])  # a failed seed is not run again
    assert set(planned) <= {"a", "b", "x", "y"} and planned["x"] == [3, 4]


def test_a_race_is_a_sweep_whose_parent_records_its_rounds(workdir):
    proc = moonprop("-m", "hydra/sweeper=race", "model.hidden=[1],[16,16]", "data.num_batches=40",
                    "plot.every_n_epochs=20", "hydra.sweeper.max_seeds=4", cwd=workdir)
    client = default_store(workdir)
    parent, children = sweep_runs(client)
    assert parent.info.run_name == "race hidden x2" and parent.info.status == "FINISHED"
    race_yaml = yaml.safe_load(open(client.download_artifacts(parent.info.run_id, "race.yaml")))
    assert race_yaml["jobs"] == len(children) == int(parent.data.tags["race.jobs"]) < 8
    assert race_yaml["rounds"][-1]["verdict"]["all"]["best"] == "hidden=[16,16]"
    assert {c.info.run_name for c in children} >= {"hidden=[1] seed=0", "hidden=[16,16] seed=2"}
    assert f"race: {len(children)} jobs in" in proc.stderr and "is decidedly better than every other" in proc.stderr
    assert "Holm-corrected over 1 comparison at 2.5%, the race's 5% shared out over the 2 verdicts" in proc.stderr


@pytest.mark.parametrize("args, says", [
    (["seed=0,1"], "seed=0,1: left to the race"),
    (["hydra.sweeper.seeds=1"], "hydra.sweeper.seeds=1: from 2"),
    (["hydra.sweeper.budget=0"], "hydra.sweeper.budget=0"),
    (["hydra.sweeper.budget=5"], "hydra.sweeper.budget=5: at least the first round's 6 jobs"),
])
def test_a_race_refuses_what_it_cannot_run(workdir, args, says):
    proc = moonprop("-m", "hydra/sweeper=race", "model.hidden=[1],[16,16]", *args, cwd=workdir, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr, proc.stderr
    assert not (workdir / "outputs").exists()
