"""Sweeps: a parent MLflow run per Hydra multirun, every job nested under it, and the answer.

`SweepCallback` is a Hydra callback (conf/config.yaml registers it), so it works the same for
every launcher: it runs in the process that launches, before the first job and after the last.
Jobs find their parent through a file in the sweep folder, which every launcher (in-process,
joblib workers, SLURM jobs on a shared file system) can read.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

PARENT_FILE = ".mlflow_parent_run_id"
failed_jobs = 0  # set by on_multirun_end; the CLI exits non-zero when it is not 0
_open_parent: tuple[str, str] | None = None  # (tracking URI, run id) of a sweep under way


def end_interrupted() -> None:
    """A sweep stopped by Ctrl-C or SIGTERM: its parent run ends KILLED, not RUNNING forever."""
    if _open_parent is not None:
        from mlflow import MlflowClient

        uri, run_id = _open_parent
        MlflowClient(uri).set_terminated(run_id, "KILLED")


def parent_run_id(sweep_dir: str) -> str | None:
    """The sweep's parent run, for a job of that sweep."""
    path = Path(sweep_dir) / PARENT_FILE
    return path.read_text().strip() if path.exists() else None


def job_tags() -> dict[str, str]:
    """What a job's run carries to find it in its sweep: the sweep, its number, its overrides."""
    from moonprop.config import redact

    hc = HydraConfig.get()
    return {"sweep.id": Path(str(hc.sweep.dir)).name, "sweep.job": str(hc.job.num),
            "sweep.overrides": " ".join(redact(o) for o in hc.overrides.task)}


class SweepCallback(Callback):
    """Opens the sweep's parent run before any job and writes the sweep's answer after the last."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        from mlflow import MlflowClient

        from moonprop.config import redact, resolve_uri
        from moonprop.tracking import ensure_store, get_experiment

        uri = resolve_uri(config.tracking.uri)
        ensure_store(uri)  # once, before parallel jobs could race to create it
        client = MlflowClient(uri)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        overrides = " ".join(redact(o) for o in config.hydra.overrides.task)
        run = client.create_run(get_experiment(client, config.tracking.experiment, uri),
                                run_name=f"sweep {sweep_dir.name}",
                                tags={"sweep.id": sweep_dir.name, "sweep.overrides": overrides,
                                      "mlflow.note.content": f"moonprop -m {overrides}"})
        (sweep_dir / PARENT_FILE).write_text(run.info.run_id)
        global _open_parent
        _open_parent = (uri, run.info.run_id)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        global failed_jobs, _open_parent
        from moonprop.config import resolve_uri

        if "joblib" in str(config.hydra.launcher.get("_target_", "")):
            # joblib keeps its workers (and their recorders) for 5 idle minutes, holding the
            # terminal's output open: a finished sweep should be finished.
            from joblib.externals.loky import get_reusable_executor

            get_reusable_executor().shutdown(wait=True)

        from mlflow import MlflowClient

        from moonprop.recorder import drain_shared

        drain_shared()  # in-process jobs: their last runs may still be closing
        sweep_dir = Path(str(config.hydra.sweep.dir))
        parent = parent_run_id(str(sweep_dir))
        if parent is None:
            return
        client = MlflowClient(resolve_uri(config.tracking.uri))
        jobs = summarise(client, parent, sweep_dir)
        failed_jobs = sum(job["status"] != "FINISHED" for job in jobs)
        client.set_terminated(parent, "FAILED" if failed_jobs or not jobs else "FINISHED")
        _open_parent = None


def _rows(client: Any, parent: str) -> list[dict[str, Any]]:
    exp = client.get_run(parent).info.experiment_id
    runs = client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'", max_results=10000)
    rows = []
    for run in sorted(runs, key=lambda r: int(r.data.tags.get("sweep.job", 0))):
        end = run.info.end_time or run.info.start_time
        rows.append({
            "job": int(run.data.tags.get("sweep.job", 0)),
            "overrides": run.data.tags.get("sweep.overrides", ""),
            "status": run.info.status,
            "test_acc": run.data.metrics.get("test/acc"),
            "test_loss": run.data.metrics.get("test/loss"),
            "wall_s": round((end - run.info.start_time) / 1000, 2),
            "run_id": run.info.run_id,
        })
    return rows


def _markdown(rows: list[dict[str, Any]], best: dict[str, Any] | None) -> str:
    def fmt(v: Any) -> str:
        return "-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v)

    keys = ["job", "overrides", "status", "test_acc", "test_loss", "wall_s", "run_id"]
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    if best:
        lines += ["", f"best: job {best['job']} ({best['overrides']}), test_acc {best['test_acc']:.4f}"]
    return "\n".join(lines) + "\n"


def summarise(client: Any, parent: str, sweep_dir: Path) -> list[dict[str, Any]]:
    """The sweep's answer on its parent run: a table (CSV, Markdown, the terminal), the best job,
    every final boundary side by side and the accuracy curves overlaid."""
    from PIL import Image

    from moonprop import plot

    rows = _rows(client, parent)
    finished = [r for r in rows if r["status"] == "FINISHED" and r["test_acc"] is not None]
    best = max(finished, key=lambda r: r["test_acc"]) if finished else None
    table = _markdown(rows, best)
    print(f"\nsweep {sweep_dir.name}: {len(finished)} of {len(rows)} jobs finished\n{table}", file=sys.stderr)

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["job"])
    writer.writeheader()
    writer.writerows(rows)
    client.log_text(parent, buf.getvalue(), "summary.csv")
    client.log_text(parent, table, "summary.md")
    if best:
        client.set_tag(parent, "best_run_id", best["run_id"])
        client.set_tag(parent, "best_overrides", best["overrides"])
        client.log_metric(parent, "best/test_acc", best["test_acc"])

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
        grid = plot.small_multiples([(r["overrides"], r["status"], r["test_acc"], boundaries[r["job"]])
                                     for r in rows])
        grid.save(Path(tmp) / "boundaries.png")
        plot.curves([(r["overrides"], curves[r["job"]]) for r in rows]).save(Path(tmp) / "curves.png")
        client.log_artifact(parent, str(Path(tmp) / "boundaries.png"))
        client.log_artifact(parent, str(Path(tmp) / "curves.png"))
    print(f"summary: {sweep_dir}/summary.md and the parent run {parent}", file=sys.stderr)
    (sweep_dir / "summary.md").write_text(table)
    return rows
