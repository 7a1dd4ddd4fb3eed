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
from pathlib import Path
from typing import Any

import yaml
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from PIL import Image

from moonprop import logged_model, plot
from moonprop.jobs import PRUNED_TAG, swept_values
from moonprop.tracking import prepare


def open_parent(uri: str, experiment: str, name: str, sweep_id: str, keys: list[str], overrides: str) -> str:
    """Create the store if needed (once, before parallel jobs could race to create it) and the
    sweep's parent run; its id."""
    client, experiment_id = prepare(uri, experiment)
    run = client.create_run(experiment_id, run_name=name,
                            tags={"sweep.id": sweep_id, "sweep.overrides": overrides, "sweep.keys": ",".join(keys),
                                  "mlflow.note.content": f"moonprop -m {overrides}"})
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
    `registered_model`, if given) and end it; the text to show and the number of jobs that did
    not finish."""
    client = MlflowClient(uri)
    jobs, text = summarise(client, parent, Path(sweep_dir), registered_model)
    failed = sum(job["status"] not in ("FINISHED", "PRUNED") for job in jobs)
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
        rows.append({
            "job": int(run.data.tags.get("sweep.job", 0)),
            "name": run.info.run_name,
            "overrides": run.data.tags.get("sweep.overrides", ""),
            # a search's trial stopped early by its pruner is FINISHED in MLflow, PRUNED here
            "status": "PRUNED" if PRUNED_TAG in run.data.tags else run.info.status,
            "test_acc": run.data.metrics.get("test/acc"),
            "test_loss": run.data.metrics.get("test/loss"),
            "wall_s": round((end - run.info.start_time) / 1000, 2),  # training and recording
            "run_id": run.info.run_id,
        })
    return rows


def _markdown(rows: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    digits = {"test_acc": 3, "test_loss": 4, "wall_s": 2}

    def fmt(key: str, v: Any) -> str:
        return "-" if v is None else f"{v:.{digits[key]}f}" if key in digits else str(v)

    keys = ["job", "name", "status", "test_acc", "test_loss", "wall_s", "run_id"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(k, r[k]) for k in keys) + " |" for r in rows]
    if best:
        lines += ["", f"best: job {best['job']} ({best['name']}), test_acc {best['test_acc']:.3f}"]
    return "\n".join(lines) + "\n"


def summarise(client: MlflowClient, parent: str, sweep_dir: Path,
              registered_model: str | None = None) -> tuple[list[dict[str, Any]], str]:
    """The sweep's answer on its parent run: a table (CSV, Markdown, summary.md in the sweep
    folder), the best job named in tags (its model registered under `registered_model`, aliased
    `sweep-best`), every final boundary laid out by the swept values and the accuracy curves
    overlaid. Returns the jobs and the text for the terminal."""
    rows = _rows(client, parent)
    if not rows:  # no job got as far as its run: nothing to summarise
        return rows, f"\nsweep {sweep_dir.name}: no job recorded a run"
    finished = [r for r in rows if r["status"] == "FINISHED" and r["test_acc"] is not None]
    best = max(finished, key=lambda r: r["test_acc"]) if finished else None
    table = _markdown(rows, best)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["job"])
    writer.writeheader()
    writer.writerows(rows)
    client.log_text(parent, buf.getvalue(), "summary.csv")
    client.log_text(parent, table, "summary.md")
    if best:  # tags, not a metric: one value per sweep would only make a chart of a single bar
        for key, value in {"best_run_id": best["run_id"], "best_name": best["name"],
                           "best_overrides": best["overrides"], "best_test_acc": str(best["test_acc"])}.items():
            client.set_tag(parent, key, value)
        if registered_model and (model_id := logged_model.model_id_of(client, best["run_id"])):
            version = logged_model.register(client, registered_model, model_id, best["run_id"],
                                            alias=logged_model.BEST_ALIAS,
                                            tags={"sweep.id": sweep_dir.name, "test_acc": str(best["test_acc"])})
            client.set_tag(parent, "best_model_version", f"{registered_model}/{version}")

    keys = [k for k in client.get_run(parent).data.tags.get("sweep.keys", "").split(",") if k]
    boundaries: dict[int, Image.Image | None] = {}
    curves: dict[int, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in rows:
            try:
                path = client.download_artifacts(r["run_id"], "boundary.png", tmp)
                boundaries[r["job"]] = Image.open(path).copy()
            except Exception:  # a failed job has no final picture
                boundaries[r["job"]] = None
            history = client.get_metric_history(r["run_id"], "test/acc")
            curves[r["job"]] = [m.value for m in sorted(history, key=lambda m: m.step)]
        cells = [(swept_values(r["overrides"].split(), keys) if keys else {"job": r["name"]},
                  f"acc {r['test_acc']:.3f}" if r in finished else r["status"], boundaries[r["job"]], r is best)
                 for r in rows]
        plot.small_multiples(cells).save(Path(tmp) / "boundaries.png")
        plot.curves([(r["name"], curves[r["job"]]) for r in rows]).save(Path(tmp) / "curves.png")
        client.log_artifact(parent, str(Path(tmp) / "boundaries.png"))
        client.log_artifact(parent, str(Path(tmp) / "curves.png"))
    (sweep_dir / "summary.md").write_text(table)
    search = sweep_dir / "optimization_results.yaml"  # hydra/sweeper=search's answer
    if search.exists():
        results = yaml.safe_load(search.read_text())
        client.log_artifact(parent, str(search))
        for key in ("best_params", "importances", "trials"):
            if key in results:
                client.set_tag(parent, f"search.{key}", json.dumps(results[key]))
        client.set_tag(parent, "search.study", results["study"])
    pruned = sum(r["status"] == "PRUNED" for r in rows)
    text = (f"\nsweep {sweep_dir.name}: {len(finished)} of {len(rows)} jobs finished"
            f"{f', {pruned} pruned' if pruned else ''}\n{table}\n"
            f"summary: {sweep_dir}/summary.md and the parent run {parent}")
    return rows, text
