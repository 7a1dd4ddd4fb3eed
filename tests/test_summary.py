"""Sound answers: a validation set that chooses and a test set that only reports, configurations
summarised over their seeds, runs MLflow can group and parents that sort; read back with MLflow's
own `mlflow.search_runs` and `mlflow.load_table`."""

from __future__ import annotations

import csv
import io
import math
import statistics

import mlflow
import pytest
import torch
from scipy.stats import t, ttest_rel

from moonprop import stats
from moonprop.config import MoonsData
from moonprop.data import MoonsDataModule

from .conftest import default_store, moonprop, only_run, sweep_runs


def test_the_validation_set_is_its_own_and_the_test_history_is_unchanged(workdir):
    dm = MoonsDataModule(MoonsData(val_size=300, test_size=300), seed=1)
    assert dm.val[0].shape == (300, 2) and not torch.equal(dm.val[0], dm.test[0])
    assert not any(torch.equal(dm.val[0][:50], dm.train_batch(k)[0]) for k in range(5))
    assert torch.equal(dm.val[0], MoonsDataModule(MoonsData(val_size=300, test_size=300), seed=1).val[0])
    # the test set only reports: with or without a validation set, its history number for number
    moonprop("data.num_batches=20", "tracking.run_name=with", cwd=workdir)
    moonprop("data.num_batches=20", "tracking.run_name=without", "data.val_size=0", cwd=workdir)
    client = default_store(workdir)
    runs = {r.info.run_name: r for r in client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])}

    def history(name: str, key: str) -> list[tuple[int, float]]:
        return sorted((m.step, m.value) for m in client.get_metric_history(runs[name].info.run_id, key))

    for key in ("test/acc", "test/loss", "train/loss"):
        assert history("with", key) == history("without", key)
    assert [s for s, _ in history("with", "val/acc")] == list(range(21))
    assert "val/acc" not in runs["without"].data.metrics
    contexts = {d.tags[0].value: d.dataset.name for d in runs["with"].inputs.dataset_inputs}
    assert contexts == {"train": "moons-train", "test": "moons-test", "val": "moons-val"}


@pytest.mark.parametrize("args, says", [
    (["-m", "seed=0,1", "data.val_size=0"], "a sweep chooses its best configuration on it"),
    (["callbacks=[early_stopping]", "data.val_size=0"], "callbacks.early_stopping monitors val/acc"),
    (["-m", "hydra/sweeper=search", "data.val_size=0"], "a sweep chooses its best configuration on it"),
])
def test_nothing_chooses_without_a_validation_set(workdir, args, says):
    proc = moonprop(*args, cwd=workdir, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1 and says in proc.stderr
    assert not (workdir / "outputs").exists()


def test_seeds_are_summarised_per_configuration_and_the_parent_sorts(workdir):
    proc = moonprop("-m", "seed=0,1,2", "schedule=linear,cosine", "data.num_batches=10", "plot.every_n_epochs=5",
                    "tracking.registered_model=moons", cwd=workdir)
    client = default_store(workdir)
    parent, children = sweep_runs(client)
    assert {c.data.tags["moonprop.config"] for c in children} == {"schedule=linear", "schedule=cosine"}
    rows = list(csv.DictReader(io.StringIO(open(client.download_artifacts(parent.info.run_id, "summary.csv")).read())))
    assert [r["config"] for r in rows] == ["schedule=linear", "schedule=cosine"]
    for row in rows:
        runs = [c for c in children if c.data.tags["moonprop.config"] == row["config"]]
        tests, vals = [c.data.metrics["test/acc"] for c in runs], [c.data.metrics["val/acc"] for c in runs]
        assert int(row["n"]) == 3
        assert float(row["test_acc_mean"]) == pytest.approx(statistics.fmean(tests))
        assert float(row["test_acc_std"]) == pytest.approx(statistics.stdev(tests))
        assert float(row["val_acc_mean"]) == pytest.approx(statistics.fmean(vals))
        assert float(row["val_acc_std"]) == pytest.approx(statistics.stdev(vals))
        assert float(row["test_acc_ci95"]) == pytest.approx(t.ppf(0.975, 2) * statistics.stdev(tests) / math.sqrt(3))
    best = max(rows, key=lambda r: float(r["val_acc_mean"]))
    assert parent.data.tags["best_config"] == best["config"]
    assert parent.data.metrics["best/test_acc_mean"] == pytest.approx(float(best["test_acc_mean"]))
    assert parent.data.metrics["best/test_acc_std"] == pytest.approx(float(best["test_acc_std"]))
    # the registered model is the best job's of the best configuration, chosen on validation
    version = client.get_model_version_by_alias("moons", "sweep-best")
    assert version.run_id == parent.data.tags["best_run_id"]
    assert "| config | n | test_acc_mean |" in proc.stderr and "\nverdict (final val_acc; paired t-tests" in proc.stderr
    assert parent.info.run_name == "sweep seed 0..2, schedule x2"  # what it sweeps and over what
    assert [r["verdict"] for r in rows].count("best") == 1 and parent.data.tags["verdict"] in proc.stderr
    # the sweep's fixed values as params, its answers as metrics: MLflow's own search sorts sweeps by them
    assert parent.data.params == {"data.num_batches": "10", "plot.every_n_epochs": "5",
                                  "tracking.registered_model": "moons"}
    mlflow.set_tracking_uri(f"sqlite:///{workdir / 'outputs' / 'mlflow.db'}")
    parents = mlflow.search_runs(experiment_names=["moonprop"], filter_string="metrics.`jobs/finished` > 0",
                                 order_by=["metrics.`best/test_acc_mean` DESC"])
    assert list(parents["run_id"]) == [parent.info.run_id] and parents["metrics.jobs/finished"][0] == 6
    mlflow.set_experiment("moonprop")
    table = mlflow.load_table("summary.json", run_ids=[parent.info.run_id])
    assert list(table["config"]) == ["schedule=linear", "schedule=cosine"] and list(table["n"]) == [3, 3]


def test_a_single_run_is_tagged_by_its_configuration(workdir):
    moonprop("data.num_batches=2", "seed=4", "model.hidden=[8]", cwd=workdir)
    assert only_run(workdir).data.tags["moonprop.config"] == "num_batches=2 hidden=[8]"  # all but the seed


def test_a_sweep_of_two_keys_gives_each_its_effect_and_the_verdict_corrects(workdir):
    moonprop("-m", "seed=0,1", "schedule=linear,cosine", "model.hidden=[4],[16,16]", "data.num_batches=10",
             "plot.every_n_epochs=5", cwd=workdir)
    client = default_store(workdir)
    parent, children = sweep_runs(client)
    assert parent.info.run_name == "sweep seed 0..1, schedule x2, hidden x2"

    def read(name: str) -> list[dict]:
        return list(csv.DictReader(io.StringIO(open(client.download_artifacts(parent.info.run_id, name)).read())))

    effects = read("effects.csv")
    assert [(e["key"], e["value"]) for e in effects] == [("schedule", "linear"), ("schedule", "cosine"),
                                                         ("hidden", "[4]"), ("hidden", "[16,16]")]
    # a value's effect: the mean of its configurations' means (two each, of two seeds)
    for e in effects:
        key = "schedule" if e["key"] == "schedule" else "model.hidden"
        runs = [c for c in children if f"{key}={e['value']}" in c.data.tags["sweep.overrides"].split()]
        assert len(runs) == int(e["jobs"]) == 4 and int(e["configs"]) == 2
        assert float(e["test_acc"]) == pytest.approx(statistics.fmean(c.data.metrics["test/acc"] for c in runs))
        assert float(e["val_lo"]) <= float(e["val_acc"]) <= float(e["val_hi"])
        assert 0 <= float(e["share_lo"]) <= float(e["share_hi"]) <= 1
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"effects.csv", "effects.png"}
    summary = open(client.download_artifacts(parent.info.run_id, "summary.md")).read()
    assert "| key | value | configs | jobs | val_acc | test_acc | share |" in summary
    # the verdict's p-values: the paired tests of the best against the three others, Holm-corrected
    rows = read("summary.csv")
    best = next(r for r in rows if r["verdict"] == "best")

    def by_seed(config: str) -> list[float]:
        runs = sorted((c for c in children if c.data.tags["moonprop.config"] == config),
                      key=lambda c: int(c.data.params["seed"]))
        return [c.data.metrics["val/acc"] for c in runs]

    others = [r for r in rows if r is not best]
    raw = [ttest_rel(by_seed(best["config"]), by_seed(r["config"])).pvalue for r in others]
    raw = [1.0 if math.isnan(p) else p for p in raw]
    assert [float(r["p_holm"]) for r in others] == pytest.approx(stats.holm(raw))


def test_a_sweep_over_datasets_answers_within_each(workdir):
    proc = moonprop("-m", "data=moons,circles", "model.activation=relu,tanh", "seed=0,1", "data.num_batches=10",
                    "plot.every_n_epochs=5", "tracking.registered_model=m", cwd=workdir)
    client = default_store(workdir)
    parent, _ = sweep_runs(client)
    rows = list(csv.DictReader(io.StringIO(open(client.download_artifacts(parent.info.run_id, "summary.csv")).read())))
    assert {r["task"] for r in rows} == {"data=moons", "data=circles"}
    assert sorted(r["task"] for r in rows if r["verdict"] == "best") == ["data=circles", "data=moons"]
    assert "verdict for data=moons" in proc.stderr and "verdict for data=circles" in proc.stderr
    assert "best_run_id" not in parent.data.tags and "data=moons: " in parent.data.tags["best_config"]
    assert "nothing registered: the sweep has 2 tasks" in proc.stderr
    assert "effects.csv" not in {a.path for a in client.list_artifacts(parent.info.run_id)}  # one key but the task
