"""The GPU check: a default run and a 1,000-job batched sweep, each on the GPU and on the CPU, every
job's final accuracy compared between the two, the times and differences written as JSON and as a
table for docs/team.md. On a machine without a CUDA device it says so in one line and exits 0.

    make gpu-check                                    # or: python scripts/gpu_check.py
    python scripts/gpu_check.py --jobs 200 --out outputs/gpu-check
    python scripts/gpu_check.py --accelerators cpu,cpu --jobs 3   # the comparison itself, anywhere

Every run is recorded, as any run is, in a SQLite store of its own under --out: the default run's
whole metric history and each sweep job's final validation and test accuracy are compared by run
name. The sweep draws a picture only at its first and last epoch (plot.every_n_epochs=150), so
that pictures do not dominate, and writes through cores / 3 recorder processes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOONPROP = [sys.executable, "-m", "moonprop"]


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    proc = subprocess.run(MOONPROP + args, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"gpu-check: moonprop {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return time.perf_counter() - start


def finals(store: Path, experiment: str) -> dict[str, dict[str, float]]:
    """Each run's final metrics by run name (a sweep's parent left out)."""
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=5000)
    return {r.info.run_name: r.data.metrics for r in runs if "mlflow.parentRunId" in r.data.tags}


def history(store: Path, experiment: str, key: str) -> list[float]:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{store}")
    (run,) = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    return [m.value for m in sorted(client.get_metric_history(run.info.run_id, key), key=lambda m: m.step)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000, help="jobs of the batched sweep")
    parser.add_argument("--accelerators", default="gpu,cpu", help="the two to compare")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "gpu-check")
    args = parser.parse_args()
    first, second = args.accelerators.split(",")
    if "gpu" in (first, second):
        import torch

        if not torch.cuda.is_available():
            print(f"gpu-check: no CUDA device on this machine (torch {torch.__version__}): nothing to compare")
            return
        device = torch.cuda.get_device_name(0)
    else:
        device = "none (a CPU against itself)"
    args.out.mkdir(parents=True, exist_ok=True)
    store = (args.out / "mlflow.db").resolve()
    store.unlink(missing_ok=True)
    recorders = max(1, len(os.sched_getaffinity(0)) // 3)
    results: dict[str, object] = {"device": device, "jobs": args.jobs, "recorders": recorders}
    started = time.perf_counter()
    for accelerator, name in ((first, "first"), (second, "second")):
        common = [f"trainer.accelerator={accelerator}", f"tracking.uri=sqlite:///{store}"]
        results[f"run_{name}_s"] = timed([*common, f"tracking.experiment=run-{name}"], args.out)
        results[f"sweep_{name}_s"] = timed(["-m", f"seed=range(0,{args.jobs})", "hydra/launcher=batched",
                                            f"hydra.launcher.recorders={recorders}", "plot.every_n_epochs=150",
                                            *common, f"tracking.experiment=sweep-{name}"], args.out)
    results["total_s"] = time.perf_counter() - started
    # the default run: its whole test/acc history, epoch by epoch; the sweep: each job's final values
    a, b = history(store, "run-first", "test/acc"), history(store, "run-second", "test/acc")
    results["run_test_acc_max_diff"] = max(abs(x - y) for x, y in zip(a, b, strict=True))
    sweep_a, sweep_b = finals(store, "sweep-first"), finals(store, "sweep-second")
    assert sweep_a.keys() == sweep_b.keys() and len(sweep_a) == args.jobs, "the two sweeps ran other jobs"
    for key in ("test/acc", "val/acc"):
        diffs = [abs(sweep_a[job][key] - sweep_b[job][key]) for job in sweep_a]
        results[f"sweep_{key.replace('/', '_')}_same"] = sum(d == 0 for d in diffs)
        results[f"sweep_{key.replace('/', '_')}_max_diff"] = max(diffs)
    (args.out / "gpu-check.json").write_text(json.dumps(results, indent=2))
    table = "\n".join([
        f"| on {device} | {first} | {second} |",
        "|---|---|---|",
        f"| one default run, whole process | {results['run_first_s']:.1f} s | {results['run_second_s']:.1f} s |",
        f"| {args.jobs}-job batched sweep (`plot.every_n_epochs=150`, {recorders} recorders) | "
        f"{results['sweep_first_s']:.1f} s | {results['sweep_second_s']:.1f} s |",
        f"| default run's test/acc, every epoch | largest difference {results['run_test_acc_max_diff']:.2g} | |",
        f"| sweep: jobs whose final test/acc is the same | {results['sweep_test_acc_same']} of {args.jobs} "
        f"(largest difference {results['sweep_test_acc_max_diff']:.2g}) | |",
        f"| sweep: jobs whose final val/acc is the same | {results['sweep_val_acc_same']} of {args.jobs} "
        f"(largest difference {results['sweep_val_acc_max_diff']:.2g}) | |",
    ])
    (args.out / "gpu-check.md").write_text(table + "\n")
    print(table)
    print(f"gpu-check: {results['total_s']:.0f} s in all; written: {args.out}/gpu-check.json, gpu-check.md")


if __name__ == "__main__":
    main()
