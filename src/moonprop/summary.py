"""A sweep's parent run in MLflow: opened before the first job, closed with the sweep's answer.

These run in the recorder process (recorder.py), which has MLflow imported already: the process
that launches the sweep never imports MLflow, and opening the store overlaps with its start-up.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from PIL import Image

from moonprop import logged_model, plot
from moonprop.jobs import CONFIG_TAG, PRUNED_TAG, given_values, swept_values
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


def reopen_parent(uri: str, parent: str) -> str:
    """An interrupted sweep's parent run, running again for the jobs that continue; its id."""
    client = MlflowClient(uri)
    client.update_run(parent, status="RUNNING")
    with contextlib.suppress(MlflowException):  # the interruption is over
        client.delete_tag(parent, "error")
    return parent


def close_parent(uri: str, parent: str, sweep_dir: str, registered_model: str | None = None) -> tuple[str, int]:
    """Write the summary on the parent run (registering the best job's model under
    `registered_model`, if given: the best job of the best configuration, both chosen on the
    validation set) and end it; the text to show and the number of jobs that did not finish."""
    client = MlflowClient(uri)
    jobs, text = summarise(client, parent, Path(sweep_dir), registered_model)
    failed = sum(map(_failed, jobs))
    client.set_terminated(parent, "FAILED" if failed or not jobs else "FINISHED")
    return text, failed


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
    exp = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'", max_results=10000)
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
        })
    return rows


def _finished(row: dict[str, Any]) -> bool:
    """A job that ran to its end (a pruned trial did not) and left its final accuracy."""
    return row["status"] == "FINISHED" and row["test_acc"] is not None


def _failed(row: dict[str, Any]) -> bool:
    """A job that did not end as planned: failed, killed or never finished (a pruned trial did)."""
    return row["status"] not in ("FINISHED", "PRUNED")


def _spread(values: list[float]) -> tuple[float | None, float | None, float | None]:
    """The mean, the sample standard deviation and the half-width of the 95% interval of the
    mean (Student's t with n - 1 degrees of freedom); the last two None for a single value."""
    if not values:
        return None, None, None
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, None, None
    std = statistics.stdev(values)
    from scipy.stats import t  # MLflow's own dependency; imported for a sweep's end only

    return mean, std, float(t.ppf(0.975, len(values) - 1)) * std / math.sqrt(len(values))


def configurations(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The jobs that differ only in their seed, grouped (by their `moonprop.config` tag): for each,
    its finished jobs' count `n`, the mean and spread of their final test and validation accuracy."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(row["config"], []).append(row)
    out = []
    for config, jobs in groups.items():
        finished = [r for r in jobs if _finished(r)]
        test_mean, test_std, test_ci = _spread([r["test_acc"] for r in finished])
        val_mean, val_std, _ = _spread([r["val_acc"] for r in finished if r["val_acc"] is not None])
        out.append({"config": config, "n": len(finished), "jobs": len(jobs), "test_acc_mean": test_mean,
                    "test_acc_std": test_std, "test_acc_ci95": test_ci, "val_acc_mean": val_mean,
                    "val_acc_std": val_std})
    return out


def _best(rows: list[dict[str, Any]], configs: list[dict[str, Any]]) -> tuple[dict | None, dict | None]:
    """The best configuration, by its mean validation accuracy, and its best job, by its own: the
    test set only reports (choosing on it would bias the accuracy reported upward)."""
    scored = [c for c in configs if c["val_acc_mean"] is not None]
    if not scored:
        return None, None
    best = max(scored, key=lambda c: c["val_acc_mean"])
    jobs = [r for r in rows if r["config"] == best["config"] and _finished(r) and r["val_acc"] is not None]
    return best, max(jobs, key=lambda r: r["val_acc"])


def _fmt(key: str, v: Any) -> str:
    digits = {"val_acc": 3, "val_loss": 4, "test_acc": 3, "test_loss": 4, "train_acc": 3, "wall_s": 2,
              "test_acc_mean": 4, "test_acc_std": 4, "test_acc_ci95": 4, "val_acc_mean": 4, "val_acc_std": 4}
    return "-" if v is None else f"{v:.{digits[key]}f}" if key in digits else str(v)


def _table(rows: list[dict[str, Any]], keys: list[str]) -> list[str]:
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *("| " + " | ".join(_fmt(k, r[k]) for k in keys) + " |" for r in rows)]


def _markdown(rows: list[dict[str, Any]], configs: list[dict[str, Any]], best: dict | None,
              best_job: dict | None) -> str:
    lines = ["configurations (the jobs that differ only in their seed): final accuracy, mean and sample standard "
             "deviation over the seeds, and the 95% interval of the mean (mean +- ci95)", "",
             *_table(configs, ["config", "n", "test_acc_mean", "test_acc_std", "test_acc_ci95", "val_acc_mean",
                               "val_acc_std"]),
             "", "jobs", "",
             *_table(rows, ["job", "name", "status", "val_acc", "test_acc", "test_loss",
                            *(["train_acc"] if any(r["train_acc"] is not None for r in rows) else []), "wall_s",
                            "run_id"])]
    if best and best_job:
        ci95 = best["test_acc_ci95"]
        spread = "" if ci95 is None else f" +- {ci95:.4f} (95% interval of the mean)"
        lines += ["", f"best configuration, by mean val_acc {best['val_acc_mean']:.4f}: {best['config']} "
                      f"(n={best['n']}): test_acc {best['test_acc_mean']:.4f}{spread}",
                  f"its best job, by val_acc {best_job['val_acc']:.3f}: job {best_job['job']} ({best_job['name']}), "
                  f"test_acc {best_job['test_acc']:.3f}"]
        if lead := _lead(best, configs):
            lines.append(lead)
    return "\n".join(lines) + "\n"


def _lead(best: dict[str, Any], configs: list[dict[str, Any]]) -> str | None:
    """How far the best configuration is ahead of the next, against the spread over their seeds:
    a lead within two standard errors of the difference could be the seeds' luck."""
    others = [c for c in configs if c is not best and c["val_acc_mean"] is not None]
    if not others:
        return None
    second = max(others, key=lambda c: c["val_acc_mean"])
    lead = best["val_acc_mean"] - second["val_acc_mean"]
    if best["val_acc_std"] is None or second["val_acc_std"] is None:
        return (f"its lead over the next ({second['config']}) is {lead:.4f} in mean val_acc, with one seed each: "
                f"no spread to weigh it against (sweep seed too)")
    error = math.sqrt(best["val_acc_std"] ** 2 / best["n"] + second["val_acc_std"] ** 2 / second["n"])
    verdict = ("more than two standard errors: more than the seeds' luck" if lead > 2 * error
               else "within two standard errors of the difference: it could be the seeds' luck")
    return f"its lead over the next ({second['config']}): {lead:.4f} in mean val_acc, {verdict} ({error:.4f})"


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
    configs = configurations(rows)
    best, best_job = _best(rows, configs)
    finished = [r for r in rows if _finished(r)]
    table = _markdown(rows, configs, best, best_job)
    client.log_text(parent, _csv(configs), "summary.csv")
    client.log_text(parent, _csv(rows), "jobs.csv")
    client.log_text(parent, table, "summary.md")
    client.log_table(parent, {k: [c[k] for c in configs] for k in configs[0]}, "summary.json")
    _record_best(client, parent, rows, best, best_job, sweep_dir.name, registered_model)
    _pictures(client, parent, rows, configs, best_job)
    (sweep_dir / "summary.md").write_text(table)
    _record_search(client, parent, sweep_dir / "optimization_results.yaml")
    pruned = sum(r["status"] == "PRUNED" for r in rows)
    text = (f"\nsweep {sweep_dir.name}: {len(finished)} of {len(rows)} jobs finished in {len(configs)} "
            f"configuration{'s' * (len(configs) != 1)}"
            f"{f', {pruned} pruned' if pruned else ''}\n{table}\n"
            f"summary: {sweep_dir}/summary.md and the parent run {parent}")
    return rows, text


def _record_best(client: MlflowClient, parent: str, rows: list[dict[str, Any]], best: dict[str, Any] | None,
                 best_job: dict[str, Any] | None, sweep_id: str, registered_model: str | None) -> None:
    """The jobs counted and the best as the parent's metrics (so that the runs table sorts and
    charts sweeps against each other) and tags; the best job's model registered, if asked."""
    counts = {"jobs/finished": sum(map(_finished, rows)), "jobs/failed": sum(map(_failed, rows))}
    chosen: dict[str, Any] = {}
    tags: dict[str, str] = {}
    if best and best_job:
        chosen = {"best/val_acc": best_job["val_acc"], "best/test_acc": best_job["test_acc"],
                  "best/test_acc_mean": best["test_acc_mean"], "best/test_acc_std": best["test_acc_std"]}
        tags = {"best_run_id": best_job["run_id"], "best_name": best_job["name"], "best_config": best["config"],
                "best_overrides": best_job["overrides"], "best_test_acc": str(best_job["test_acc"])}
    now = int(time.time() * 1000)
    client.log_batch(parent, metrics=[Metric(k, float(v), now, 0) for k, v in {**counts, **chosen}.items()
                                      if v is not None], tags=[RunTag(k, v) for k, v in tags.items()])
    if best_job and registered_model and (model_id := logged_model.model_id_of(client, best_job["run_id"])):
        version = logged_model.register(client, registered_model, model_id, best_job["run_id"],
                                        alias=logged_model.BEST_ALIAS,
                                        tags={"sweep.id": sweep_id, "val_acc": str(best_job["val_acc"]),
                                              "test_acc": str(best_job["test_acc"])})
        client.set_tag(parent, "best_model_version", f"{registered_model}/{version}")


def _pictures(client: MlflowClient, parent: str, rows: list[dict[str, Any]], configs: list[dict[str, Any]],
              best_job: dict[str, Any] | None) -> None:
    """boundaries.png (every job's final boundary, laid out by the swept values) and curves.png
    (each configuration's mean test/acc curve with its spread, and its train/acc where the jobs
    have a finite training set) on the parent."""
    keys = [k for k in client.get_run(parent).data.tags.get("sweep.keys", "").split(",") if k]
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
                  f"acc {r['test_acc']:.3f}" if r in finished else r["status"], boundaries[r["job"]], r is best_job)
                 for r in rows]
        plot.small_multiples(cells).save(Path(tmp) / "boundaries.png")
        by_config = {c["config"]: [r["job"] for r in finished if r["config"] == c["config"]] for c in configs}
        by_config = {config: jobs for config, jobs in by_config.items() if jobs}
        train = [[curves.get((job, "train/acc"), []) for job in jobs] for jobs in by_config.values()]
        plot.curves([(config, [curves[job, "test/acc"] for job in jobs]) for config, jobs in by_config.items()],
                    train=train if all(all(runs) for runs in train) else None).save(Path(tmp) / "curves.png")
        client.log_artifact(parent, str(Path(tmp) / "boundaries.png"))
        client.log_artifact(parent, str(Path(tmp) / "curves.png"))


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
