"""`make ui`: MLflow's UI on moonprop's default store, bound to this machine, and the addresses
that open each experiment on its runs.

    python scripts/ui.py [--store outputs/mlflow.db] [--port 5000]

MLflow 3.17 opens an experiment in its GenAI view (traces, latency, token usage) unless the address
says `?workflowType=machine_learning` or the browser was switched to "Model training" once (the
switch at the top left, which the browser remembers). The choice is the browser's alone: nothing a
run or an experiment records steers it (see docs/record.md), so the addresses below carry it.
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
from pathlib import Path


def experiments(store: Path) -> list[tuple[str, str]]:
    """(id, name) of the store's active experiments that have runs, read with SQLite alone:
    importing MLflow here would cost a second before the UI itself starts."""
    if not store.exists():
        return []
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        return db.execute("SELECT e.experiment_id, e.name FROM experiments e WHERE e.lifecycle_stage = 'active' "
                          "AND EXISTS (SELECT 1 FROM runs r WHERE r.experiment_id = e.experiment_id) "
                          "ORDER BY e.experiment_id").fetchall()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("outputs/mlflow.db"))
    parser.add_argument("--port", type=int, default=5000)
    args = parser.parse_args()
    url = f"http://127.0.0.1:{args.port}"
    print(f"MLflow UI on {url}; each experiment's runs (MLflow's model-training view):")
    for experiment_id, name in experiments(args.store) or [("1", "moonprop")]:
        print(f"  {name}: {url}/#/experiments/{experiment_id}/runs?workflowType=machine_learning")
    sys.stdout.flush()
    mlflow = Path(sys.executable).with_name("mlflow")
    # one worker and no job runner: the defaults start ~15 processes for features moonprop never uses
    os.environ["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    os.execv(mlflow, [str(mlflow), "ui", "--backend-store-uri", f"sqlite:///{args.store.resolve()}",
                      "--host", "127.0.0.1", "--port", str(args.port), "--workers", "1"])


if __name__ == "__main__":
    main()
