"""A sweep's parent run in MLflow: opened before the first job, closed with the sweep's answer.

These run in the recorder process (recorder.py), which has MLflow imported already: the process
that launches the sweep never imports MLflow, and opening the store overlaps with its start-up.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any, NamedTuple

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from PIL import Image

from moonprop import logged_model, plot, report, stats
from moonprop.jobs import (
    CHECKPOINT_TAG,
    CONFIG_TAG,
    PRUNED_TAG,
    RACE_FILE,
    SUPERSEDED_TAG,
    SWEEP_FILE,
    given_values,
    short_names,
    swept_values,
)
from moonprop.tracking import prepare


def open_parent(uri: str, experiment: str, name: str, sweep_id: str, keys: list[str], overrides: str) -> str:
    """Create the store if needed (once, before parallel jobs could race to create it) and the
    sweep's parent run; its id."""
    client, experiment_id = prepare(uri, experiment)
    run = client.create_run(experiment_id, run_name=name,
                            tags={"sweep.id": sweep_id, "sweep.overrides": overrides, "sweep.keys": ",".join(keys),
                                  "mlflow.note.content": f"moonprop -m {overrides}"})
    # what the sweep holds fixed, as params: the runs table compares sweeps by them
    fixed = {k: v for k, v in given_values(overrides.split()).items() if k not in keys}
    if fixed:
        client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in fixed.items()])
    return run.info.run_id


def reopen_parent(uri: str, parent: str, jobs: bool) -> dict[str, dict[str, Any]]:
    """A stopped sweep's parent run, running again for the jobs that continue. With `jobs` (a
    launcher that trains each job on its own), what each of its jobs does now, by job number:
    `kept`, a finished job's final validation accuracy (test, without a validation set), which it
    returns without training again; `resume`, an interrupted job's checkpoint, from which it
    continues into its own run. A job that failed, or was killed with no checkpoint, runs again
    in a new run: its old run stays, tagged SUPERSEDED_TAG, and the summary counts the new one."""
    client = MlflowClient(uri)
    client.update_run(parent, status="RUNNING")
    with contextlib.suppress(MlflowException):  # the interruption is over
        client.delete_tag(parent, "error")
    kept: dict[str, float] = {}
    resume: dict[str, str] = {}
    if not jobs:
        return {"kept": kept, "resume": resume}
    for run in _children(client, parent):
        job, metrics, tags = run.data.tags.get("sweep.job", ""), run.data.metrics, run.data.tags
        value = metrics.get("val/acc", metrics.get("test/acc"))
        if run.info.status == "FINISHED" and value is not None and job not in kept:
            kept[job] = value
        elif run.info.status == "KILLED" and Path(tags.get(CHECKPOINT_TAG, "/nonexistent")).is_file():
            resume[job] = tags[CHECKPOINT_TAG]
        else:
            if run.info.status == "RUNNING":  # its process died with no word: it is not running now
                client.set_terminated(run.info.run_id, "KILLED")
            client.set_tag(run.info.run_id, SUPERSEDED_TAG, "true")
    return {"kept": kept, "resume": resume}


def _children(client: MlflowClient, parent: str) -> list[Any]:
    """The runs of a sweep's jobs, newest first, but those a continued sweep ran again."""
    exp = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'", max_results=10000,
                              order_by=["attributes.start_time DESC"])
    return [r for r in runs if SUPERSEDED_TAG not in r.data.tags]


def close_parent(uri: str, parent: str, sweep_dir: str, registered_model: str | None = None) -> tuple[str, int]:
    """Write the summary on the parent run (registering the best job's model under
    `registered_model`, if given: the best job of the best configuration, both chosen on the
    validation set) and end it; the text to show and the number of jobs that did not finish."""
    client = MlflowClient(uri)
    jobs, text = summarise(client, parent, Path(sweep_dir), registered_model)
    failed = sum(map(_failed, jobs))
    client.set_terminated(parent, "FAILED" if failed or not jobs else "FINISHED")
    return text, failed


def redraw(uri: str, target: str) -> str:
    """`moonprop report`: the summary of an existing sweep written again, report.html with it, from
    its folder (`target`, holding the sweep file) or its parent run's id; the line that says where."""
    client = MlflowClient(uri)
    folder = Path(target)
    if (folder / SWEEP_FILE).is_file():
        parent = json.loads((folder / SWEEP_FILE).read_text())["parent"]
    else:
        parent = target
        try:
            client.get_run(parent)
        except MlflowException:
            raise LookupError(f"{target}: neither a sweep's folder nor a run in {uri}") from None
        # the jobs ran in the sweep's folder: it holds what the sweep said of itself (sweep.within, a race)
        children = _children(client, parent)
        folder = Path(children[0].data.tags.get("hydra.output_dir", ".")).parent if children else Path(".")
    with tempfile.TemporaryDirectory() as tmp:
        here = folder if folder.is_dir() else Path(tmp)
        rows, _ = summarise(client, parent, here)
    if not rows:
        raise LookupError(f"{target}: its parent run {parent} has no job's run to show")
    return f"report.html on the parent run {parent}" + (f" and in {here}" if here == folder else "")


def end_parent(uri: str, parent: str, status: str, reason: str, orphans: bool, sweep_dir: str | None = None) -> str:
    """A sweep stopped before its end (Ctrl-C, SIGTERM, an error outside any job's training): its
    parent run ends `status` with the reason as its `error` tag, not RUNNING forever. With
    `orphans`, so do its jobs' runs still RUNNING: joblib ends its workers with their recorders.
    With `sweep_dir`, the jobs that did run are summarised first; the text to show."""
    client = MlflowClient(uri)
    if orphans:
        experiment = client.get_run(parent).info.experiment_id
        running = f"tags.mlflow.parentRunId = '{parent}' and attributes.status = 'RUNNING'"
        for run in client.search_runs([experiment], running):
            client.set_tag(run.info.run_id, "error", f"the sweep ended {status} while this job ran: {reason}")
            client.set_terminated(run.info.run_id, status)
    client.set_tag(parent, "error", reason[:5000])
    text = ""
    if sweep_dir is not None:
        with contextlib.suppress(Exception):  # the store may be what failed: the end matters more
            rows, text = summarise(client, parent, Path(sweep_dir))
            text = text if rows else ""  # a sweep that ran no job: its one line says enough
    client.set_terminated(parent, status)
    return text


def _rows(client: MlflowClient, parent: str) -> list[dict[str, Any]]:
    runs = _children(client, parent)
    rows = []
    for run in sorted(runs, key=lambda r: int(r.data.tags.get("sweep.job", 0))):
        end = run.info.end_time or run.info.start_time
        metrics = run.data.metrics
        rows.append({
            "job": int(run.data.tags.get("sweep.job", 0)),
            "name": run.info.run_name,
            "config": run.data.tags.get(CONFIG_TAG, run.info.run_name),
            "overrides": run.data.tags.get("sweep.overrides", ""),
            # a search's trial stopped early by its pruner is FINISHED in MLflow, PRUNED here
            "status": "PRUNED" if PRUNED_TAG in run.data.tags else run.info.status,
            "val_acc": metrics.get("val/acc"),
            "val_loss": metrics.get("val/loss"),
            "test_acc": metrics.get("test/acc"),
            "test_loss": metrics.get("test/loss"),
            "train_acc": metrics.get("train/acc"),  # a finite training set's (data.train_size), else None
            "wall_s": round((end - run.info.start_time) / 1000, 2),  # training and recording
            "run_id": run.info.run_id,
            "seed": int(run.data.params.get("seed", 0)),  # what pairs two configurations' jobs in the verdict
        })
    return rows


def _finished(row: dict[str, Any]) -> bool:
    """A job that ran to its end (a pruned trial did not) and left its final accuracy."""
    return row["status"] == "FINISHED" and row["test_acc"] is not None


def _failed(row: dict[str, Any]) -> bool:
    """A job that did not end as planned: failed, killed or never finished (a pruned trial did)."""
    return row["status"] not in ("FINISHED", "PRUNED")


class Layout(NamedTuple):
    """What a sweep varies, as its summary reads it."""

    keys: list[str]  # the swept keys, as given (`model.hidden`)
    tasks: list[str]  # those among them that change the task (`sweep.within`): nothing is compared across
    grid: bool  # every combination of given values (not a search's trials): effects can be read off it
    alpha: float  # the verdict's level: a race's, shared out over its looks, is lower

    @classmethod
    def of(cls, client: MlflowClient, parent: str, sweep_dir: Path) -> Layout:
        keys = [k for k in client.get_run(parent).data.tags.get("sweep.keys", "").split(",") if k]
        known = json.loads((sweep_dir / SWEEP_FILE).read_text()) if (sweep_dir / SWEEP_FILE).is_file() else {}
        within = known.get("within", ["data"])
        race = yaml.safe_load((sweep_dir / RACE_FILE).read_text()) if (sweep_dir / RACE_FILE).is_file() else {}
        alpha = race.get("settings", {}).get("alpha", stats.ALPHA)
        return cls(keys, [k for k in keys if k in within], not known.get("numbered", False), alpha)

    @property
    def factors(self) -> list[str]:
        """The keys whose effects a grid sweep reads: what it varies but the seed and the task."""
        return [k for k in self.keys if k != "seed" and k not in self.tasks]


def _values(row: dict[str, Any], keys: list[str]) -> dict[str, str]:
    """A job's values of `keys`, by their names in the whole sweep's words (`hidden`)."""
    given = given_values(row["overrides"].split())
    return {short: given.get(key, "-") for key, short in short_names(keys).items()}


def _task(row: dict[str, Any], layout: Layout) -> str:
    """`data=circles`: the task a job learns, where the sweep varies it; "" where it does not."""
    names = short_names(layout.keys)
    return " ".join(f"{names[k]}={v}" for k, v in zip(layout.tasks, _values(row, layout.tasks).values(), strict=True))


def configurations(rows: list[dict[str, Any]], layout: Layout) -> list[dict[str, Any]]:
    """The jobs that differ only in their seed, grouped (by their `moonprop.config` tag): for each,
    its task (if the sweep varies it), its finished jobs' count `n`, the mean and spread of their
    final test and validation accuracy, and the verdict on it within its task (`_judge`)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["config"], []).append(row)
    out = []
    for config, jobs in groups.items():
        finished = [r for r in jobs if _finished(r)]
        test_mean, test_std, test_ci = stats.interval([r["test_acc"] for r in finished])
        val_mean, val_std, _ = stats.interval([r["val_acc"] for r in finished if r["val_acc"] is not None])
        out.append({"config": config, **({"task": _task(jobs[0], layout)} if layout.tasks else {}),
                    "n": len(finished), "jobs": len(jobs), "test_acc_mean": test_mean, "test_acc_std": test_std,
                    "test_acc_ci95": test_ci, "val_acc_mean": val_mean, "val_acc_std": val_std,
                    "vs_best": None, "p_holm": None, "verdict": "", "seeds_to_decide": None})
    return out


def _scored(rows: list[dict[str, Any]], config: str) -> list[dict[str, Any]]:
    """A configuration's finished jobs with a final val_acc: what the verdict, effects, best and report read."""
    return [r for r in rows if r["config"] == config and _finished(r) and r["val_acc"] is not None]


def _by_seed(rows: list[dict[str, Any]], config: str) -> dict[int, float]:
    return {r["seed"]: r["val_acc"] for r in _scored(rows, config)}


def _judge(rows: list[dict[str, Any]], configs: list[dict[str, Any]], alpha: float) -> list[str]:
    """The verdict within each task, written into its configurations' rows: the best (by mean
    val_acc) against every other, Holm-corrected (stats.verdict); the sentences that say it."""
    sentences = []
    for task in dict.fromkeys(c.get("task", "") for c in configs):
        mine = [c for c in configs if c.get("task", "") == task]
        judged = stats.verdict({c["config"]: _by_seed(rows, c["config"]) for c in mine}, alpha)
        if judged is None:
            continue
        best, comparisons = judged
        by_name = {c["config"]: c for c in mine}
        by_name[best]["verdict"] = "best"
        for k in comparisons:
            by_name[k.config].update(vs_best=k.difference, p_holm=k.p_holm, seeds_to_decide=k.seeds,
                                     verdict="worse" if k.decided else "untested" if k.test is None else "undecided")
        sentences.append(_sentence(task, best, by_name[best]["n"], comparisons, alpha))
    return sentences


def _names(configs: list[str], most: int = 6) -> str:
    shown = configs[:most] + ([f"{len(configs) - most} more"] if len(configs) > most else [])
    return shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " and " + shown[-1]


def _sentence(task: str, best: str, n: int, comparisons: list[stats.Comparison], alpha: float) -> str:
    """The verdict in one sentence: which configurations the best is decidedly better than, which
    it cannot yet be told from (and how many seeds would likely tell), which had too few seeds."""
    tested = [k for k in comparisons if k.test is not None]
    decided = [k.config for k in tested if k.decided]
    open_ = sorted((k for k in tested if not k.decided), key=lambda k: k.p_holm or 1.0)
    kinds = {k.test.name for k in tested}  # type: ignore[union-attr]
    how = ("paired t-tests over the seeds" if kinds == {"paired"} else "Welch's t-tests" if kinds == {"welch"}
           else "t-tests, paired where the seeds are the same")
    head = (f"verdict{f' for {task}' if task else ''} (final val_acc; {how}, Holm-corrected over {len(tested)} "
            f"comparison{'s' * (len(tested) != 1)} at {_level(alpha)}): the best, {best} (n={n}), ")
    if not tested:
        head = f"verdict{f' for {task}' if task else ''}: the best, {best} (n={n}), "
        return head + "has no configuration to be tested against: one seed on a side (sweep seed too, seed=0,1,2)"
    parts = []
    if decided:
        parts.append("is decidedly better than " + ("every other" if len(decided) == len(comparisons)
                                                     else _names(decided)))
    if open_:
        def seeds(k: stats.Comparison) -> str:
            if k.seeds is None:
                return "no difference in their means"
            return f">{stats.MAX_SEEDS} seeds" if k.seeds > stats.MAX_SEEDS else f"~{k.seeds} seeds"
        parts.append("cannot yet be told from " + _names([f"{k.config} (p={k.p_holm:.2g}, {seeds(k)})" for k in open_])
                     + f" (~N seeds: how many each would likely take to decide it, at {stats.POWER:.0%} power)")
    if single := [k.config for k in comparisons if k.test is None]:
        parts.append(f"is not compared with {_names(single)} (a single seed)")
    return head + "; it ".join(parts)


def _level(alpha: float) -> str:
    if alpha == stats.ALPHA:
        return f"{alpha:.0%}"
    looks = round(stats.ALPHA / alpha)
    return f"{alpha * 100:.3g}%, the race's {stats.ALPHA:.0%} shared out over the {looks} verdicts it may take"


def _effects(rows: list[dict[str, Any]], configs: list[dict[str, Any]], layout: Layout) -> list[dict[str, Any]]:
    """Each swept key's effect within each task, where a grid sweep varies two keys or more but
    the seed (stats.effects): one row per key and value."""
    if not layout.grid or len(layout.factors) < 2:
        return []
    names = list(short_names(layout.keys).values())
    factors = [names[layout.keys.index(k)] for k in layout.factors]
    out = []
    for task in dict.fromkeys(c.get("task", "") for c in configs):
        given = {}
        for c in configs:
            jobs = _scored(rows, c["config"]) if c.get("task", "") == task else []
            if jobs:
                given[c["config"]] = (_values(jobs[0], layout.keys), {r["seed"]: (r["val_acc"], r["test_acc"])
                                                                     for r in jobs})
        if len(given) > 1:
            out += [{**({"task": task} if layout.tasks else {}), **e._asdict()} for e in stats.effects(given, factors)]
    return out


def _best(rows: list[dict[str, Any]], configs: list[dict[str, Any]]) -> list[tuple[dict, dict]]:
    """Each task's best configuration, by its mean validation accuracy (the verdict's), and its best
    job, by its own: the test set only reports (choosing on it would bias the accuracy reported upward)."""
    out = []
    for task in dict.fromkeys(c.get("task", "") for c in configs):
        scored = [c for c in configs if c.get("task", "") == task and c["val_acc_mean"] is not None]
        if scored:
            best = next((c for c in scored if c["verdict"] == "best"), scored[0])
            jobs = _scored(rows, best["config"])
            out.append((best, max(jobs, key=lambda r: r["val_acc"])))
    return out


def _fmt(key: str, v: Any) -> str:
    digits = {"val_acc": 3, "val_loss": 4, "test_acc": 3, "test_loss": 4, "train_acc": 3, "wall_s": 2, "p_holm": 2}
    if v is None:
        return "-"
    if key == "p_holm":
        return f"{v:.2g}"
    if key == "seeds_to_decide" and v > stats.MAX_SEEDS:
        return f">{stats.MAX_SEEDS}"
    if isinstance(v, float):
        return f"{v:.{digits.get(key, 4)}f}"
    return str(v)


def _table(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join(_fmt(k, r[k]) for k in keys) + " |" for r in rows)]


def _markdown(rows: list[dict[str, Any]], configs: list[dict[str, Any]], bests: list[tuple[dict, dict]],
              verdicts: list[str], effects: list[dict[str, Any]]) -> str:
    tasks = ["task"] if "task" in configs[0] else []
    lines = ["configurations (the jobs that differ only in their seed): final accuracy, mean and sample standard "
             "deviation over the seeds, and the 95% interval of the mean (mean +- ci95); against the best of "
             "its task, its mean val_acc behind (vs_best), the p of the verdict's test after Holm's correction, "
             "and the seeds each would likely take to decide it", "",
             *_table(configs, ["config", *tasks, "n", "test_acc_mean", "test_acc_std", "test_acc_ci95", "val_acc_mean",
                               "val_acc_std", "vs_best", "p_holm", "verdict", "seeds_to_decide"])]
    if effects:
        lines += ["", "effects: each swept key's values, over the other keys' values and the seeds: the mean of their "
                      "configurations' mean final accuracy with its 95% interval, and the share of the variation "
                      "across configurations (val_acc) the key explains, with its 95% bootstrap interval", "",
                  *_table([{**e, "val_acc": _around(e, "val"), "test_acc": _around(e, "test"),
                            "share": _share(e)} for e in effects],
                          [*tasks, "key", "value", "configs", "jobs", "val_acc", "test_acc", "share"])]
    lines += ["", "jobs", "",
              *_table(rows, ["job", "name", "seed", "status", "val_acc", "test_acc", "test_loss",
                             *(["train_acc"] if any(r["train_acc"] is not None for r in rows) else []), "wall_s",
                             "run_id"])]
    for best, best_job in bests:
        ci95 = best["test_acc_ci95"]
        spread = "" if ci95 is None else f" +- {ci95:.4f} (95% interval of the mean)"
        task = f" for {best['task']}" if best.get("task") else ""
        lines += ["", f"best configuration{task}, by mean val_acc {best['val_acc_mean']:.4f}: {best['config']} "
                      f"(n={best['n']}): test_acc {best['test_acc_mean']:.4f}{spread}",
                  f"its best job, by val_acc {best_job['val_acc']:.3f}: job {best_job['job']} ({best_job['name']}), "
                  f"test_acc {best_job['test_acc']:.3f}"]
    lines += ["", *verdicts] if verdicts else []
    return "\n".join(lines) + "\n"


def _around(effect: dict[str, Any], metric: str) -> str:
    lo, hi = effect[f"{metric}_lo"], effect[f"{metric}_hi"]
    return f"{effect[f'{metric}_acc']:.4f}" + ("" if lo is None else f" [{lo:.4f}, {hi:.4f}]")


def _share(effect: dict[str, Any]) -> str:
    lo, hi = effect["share_lo"], effect["share_hi"]
    return f"{effect['share']:.0%}" + ("" if lo is None else f" [{lo:.0%}, {hi:.0%}]")


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def summarise(client: MlflowClient, parent: str, sweep_dir: Path,
              registered_model: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """The sweep's answer on its parent run: its configurations (summary.csv, and as an MLflow
    table, summary.json) and jobs (jobs.csv), both in summary.md (also in the sweep folder); the
    best configuration and its best job, both chosen on the validation set, as metrics and tags
    (its model registered under `registered_model`, aliased `sweep-best`); every final boundary
    laid out by the swept values and each configuration's mean accuracy curve with its spread.
    Returns the jobs and the text for the terminal."""
    rows = _rows(client, parent)
    if not rows:  # no job got as far as its run: nothing to summarise
        return rows, f"\nsweep {sweep_dir.name}: no job recorded a run"
    layout = Layout.of(client, parent, sweep_dir)
    configs = configurations(rows, layout)
    verdicts = _judge(rows, configs, layout.alpha)
    bests = _best(rows, configs)
    effects = _effects(rows, configs, layout)
    finished = [r for r in rows if _finished(r)]
    table = _markdown(rows, configs, bests, verdicts, effects)
    client.log_text(parent, _csv(configs), "summary.csv")
    client.log_text(parent, _csv(rows), "jobs.csv")
    client.log_text(parent, table, "summary.md")
    client.log_table(parent, {k: [c[k] for c in configs] for k in configs[0]}, "summary.json")
    if effects:
        client.log_text(parent, _csv(effects), "effects.csv")
    if verdicts:
        client.set_tag(parent, "verdict", "\n".join(verdicts)[:5000])
    registered = _record_best(client, parent, rows, bests, sweep_dir.name, registered_model)
    pictures = _pictures(client, parent, rows, configs, [job for _, job in bests], layout, effects)
    (sweep_dir / "summary.md").write_text(table)
    page = _report(client, parent, rows, configs, layout, pictures, verdicts, table)
    client.log_text(parent, page, "report.html")
    (sweep_dir / "report.html").write_text(page)
    _record_search(client, parent, sweep_dir / "optimization_results.yaml")
    raced = _record_race(client, parent, sweep_dir / RACE_FILE)
    pruned = sum(r["status"] == "PRUNED" for r in rows)
    text = (f"\nsweep {sweep_dir.name}: {len(finished)} of {len(rows)} jobs finished in {len(configs)} "
            f"configuration{'s' * (len(configs) != 1)}"
            f"{f', {pruned} pruned' if pruned else ''}\n{table}{registered}{raced}\n"
            f"summary: {sweep_dir}/summary.md and the parent run {parent}")
    return rows, text


def _record_best(client: MlflowClient, parent: str, rows: list[dict[str, Any]], bests: list[tuple[dict, dict]],
                 sweep_id: str, registered_model: str | None) -> str:
    """The jobs counted and the best as the parent's metrics (so that the runs table sorts and
    charts sweeps against each other) and tags; the best job's model registered, if asked. A sweep
    over tasks has a best for each, not one to record: the line that says so, else ""."""
    counts = {"jobs/finished": sum(map(_finished, rows)), "jobs/failed": sum(map(_failed, rows))}
    chosen: dict[str, Any] = {}
    tags: dict[str, str] = {}
    if len(bests) > 1:
        tags = {"best_config": "; ".join(f"{best['task']}: {best['config']}" for best, _ in bests)}
    elif bests:
        (best, best_job), = bests
        chosen = {"best/val_acc": best_job["val_acc"], "best/test_acc": best_job["test_acc"],
                  "best/test_acc_mean": best["test_acc_mean"], "best/test_acc_std": best["test_acc_std"]}
        tags = {"best_run_id": best_job["run_id"], "best_name": best_job["name"], "best_config": best["config"],
                "best_overrides": best_job["overrides"], "best_test_acc": str(best_job["test_acc"])}
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in {**counts, **chosen}.items()
                                      if v is not None], tags=[RunTag(k, v) for k, v in tags.items()])
    if not registered_model or not bests:
        return ""
    if len(bests) > 1:
        return (f"\ntracking.registered_model={registered_model}: nothing registered: the sweep has {len(bests)} "
                f"tasks, each with its own best (sweep one task to register its best)")
    (_, best_job), = bests
    if model_id := logged_model.model_id_of(client, best_job["run_id"]):
        version = logged_model.register(client, registered_model, model_id, best_job["run_id"],
                                        alias=logged_model.BEST_ALIAS,
                                        tags={"sweep.id": sweep_id, "val_acc": str(best_job["val_acc"]),
                                              "test_acc": str(best_job["test_acc"])})
        client.set_tag(parent, "best_model_version", f"{registered_model}/{version}")
    return ""


def _pictures(client: MlflowClient, parent: str, rows: list[dict[str, Any]], configs: list[dict[str, Any]],
              best_jobs: list[dict[str, Any]], layout: Layout, effects: list[dict[str, Any]]) -> dict[str, Image.Image]:
    """boundaries.png (every job's final boundary, laid out by the swept values, each task's best
    framed), curves.png (each configuration's mean test/acc curve with its spread, and its train/acc
    where the jobs have a finite training set) and effects.png (stats.effects, if any) on the parent;
    the last two, by what they show, for the report."""
    keys = layout.keys
    finished = [r for r in rows if _finished(r)]
    boundaries: dict[int, Image.Image | None] = {}
    curves: dict[tuple[int, str], list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in rows:
            try:
                path = client.download_artifacts(r["run_id"], "boundary.png", tmp)
                boundaries[r["job"]] = Image.open(path).copy()
            except Exception:  # a failed job has no final picture
                boundaries[r["job"]] = None
            # train/acc only where the job has a finite training set: one query a job less in other sweeps
            for key in ("test/acc", "train/acc") if r["train_acc"] is not None else ("test/acc",):
                history = client.get_metric_history(r["run_id"], key)
                curves[r["job"], key] = [m.value for m in sorted(history, key=lambda m: m.step)]
        cells = [(swept_values(r["overrides"].split(), keys) if keys else {"job": r["name"]},
                  f"acc {r['test_acc']:.3f}" if r in finished else r["status"], boundaries[r["job"]],
                  any(r is job for job in best_jobs))
                 for r in rows]
        plot.small_multiples(cells).save(Path(tmp) / "boundaries.png")
        by_config = {c["config"]: [r["job"] for r in finished if r["config"] == c["config"]] for c in configs}
        by_config = {config: jobs for config, jobs in by_config.items() if jobs}
        train = [[curves.get((job, "train/acc"), []) for job in jobs] for jobs in by_config.values()]
        plot.curves([(config, [curves[job, "test/acc"] for job in jobs]) for config, jobs in by_config.items()],
                    train=train if all(all(runs) for runs in train) else None).save(Path(tmp) / "curves.png")
        shown = {"test accuracy per epoch": Image.open(Path(tmp) / "curves.png").copy()}
        if effects:
            shown["effects"] = plot.effects(effects)
            shown["effects"].save(Path(tmp) / "effects.png")
        for name in ("boundaries.png", "curves.png", "effects.png")[:3 if effects else 2]:
            client.log_artifact(parent, str(Path(tmp) / name))
    return shown


def _report(client: MlflowClient, parent: str, rows: list[dict[str, Any]], configs: list[dict[str, Any]],
            layout: Layout, pictures: dict[str, Image.Image], verdicts: list[str], table: str) -> str:
    """report.html (report.build): each configuration by its median seed, laid out by the swept keys
    but the seed; a search's trials in the order of their final val/acc, best first."""
    keys = [k for k in layout.keys if k != "seed"]
    panels = []
    for c in configs:
        jobs = _scored(rows, c["config"])
        if jobs:
            shown = report.representative(jobs)
            title = shown["name"] if not layout.grid else c["config"]
            panels.append(report.Panel(title, shown["run_id"], shown["name"], shown["seed"], len(jobs),
                                       _values(shown, keys)))
    if not layout.grid:
        by_acc = {r["run_id"]: r["val_acc"] for r in rows}
        panels.sort(key=lambda p: -by_acc[p.run_id])
    name = client.get_run(parent).info.run_name
    return report.build(client, name, panels, list(short_names(keys).values()) if layout.grid else [], pictures,
                        verdicts, table)


def _record_search(client: MlflowClient, parent: str, search: Path) -> None:
    """hydra/sweeper=search's answer (its optimization_results.yaml) on the parent, if it is one."""
    if not search.exists():
        return
    results = yaml.safe_load(search.read_text())
    client.log_artifact(parent, str(search))
    for key in ("best_params", "importances", "trials"):
        if key in results:
            client.set_tag(parent, f"search.{key}", json.dumps(results[key]))
    client.set_tag(parent, "search.study", results["study"])


def _record_race(client: MlflowClient, parent: str, race: Path) -> str:
    """hydra/sweeper=race's rounds (its race.yaml) on the parent, if it is one; the line that says
    what the race spent against every configuration at its max_seeds, else ""."""
    if not race.exists():
        return ""
    results = yaml.safe_load(race.read_text())
    client.log_artifact(parent, str(race))
    rounds, jobs, full = len(results["rounds"]), results["jobs"], results["full_grid"]
    client.log_batch(parent, tags=[RunTag(k, str(v)) for k, v in
                                   {"race.rounds": rounds, "race.jobs": jobs, "race.full_grid": full}.items()])
    return (f"\nrace: {jobs} jobs in {rounds} round{'s' * (rounds != 1)}, against {full} for every configuration "
            f"at hydra.sweeper.max_seeds={results['settings']['max_seeds']}")
