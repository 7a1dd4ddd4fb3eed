"""moonprop against a plain PyTorch reference, side by side, on this machine.

    make bench                           # or: python benchmarks/bench.py [--reps 3] [--sweep-jobs 20]

Prints a table and writes it to outputs/benchmark.json. Every figure comes from this one
invocation, so that ratios compare like with like; single runs are medians over --reps:
  - the reference (benchmarks/reference.py): whole process, and its training loop alone;
  - `moonprop` with the default experiment and full tracking into a fresh SQLite store;
  - sweeps of --sweep-jobs default jobs (seed=0..N-1), once each, through the in-process launcher
    and through joblib with 2 workers; the marginal cost of a job is (sweep - one run) / (N - 1).
    Their CPU seconds (all processes) over their wall time say how many cores each kept busy:
    2 workers on 2 cores can be at most 2 / (that of the in-process sweep) times faster;
  - a 30-trial search (hydra/sweeper=search) with its default pruner and without: wall time, best
    accuracy, trials pruned;
  - hydra/launcher=batched: a 40-seed sweep (a picture every 10 epochs) beside the in-process
    launcher's, both also through a tracking server on PostgreSQL (where scripts/postgres runs), a
    200-job one for the marginal cost of a job ((200 jobs - 40 jobs) / 160), and the batched
    training loop alone (benchmarks/batched_loop.py) for 1 and for 100 models;
  - the same experiment written the plain way (benchmarks/plain.py): one run and 10 seeds, beside
    moonprop's 10-seed sweep (the in-process launcher);
  - what the validation set adds to an epoch (its forward pass, loss and accuracy);
  - one boundary frame's rendering, a default run's artifact bytes, the peak memory of a run
    (trainer and recorder together, PSS), and `moonprop --help` / `--cfg job`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from mlflow_server import postgres_database, serving  # noqa: E402  (scripts/, shared with the tests)

MOONPROP = [sys.executable, "-m", "moonprop"]


def tree_pss_kb(pid: int) -> int:
    """Memory of a process and all its descendants, in KB: the proportional set size, which
    counts a page shared by the trainer and its recorder (libc, numpy, ...) once, not twice."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            rollup = Path(f"/proc/{p}/smaps_rollup").read_text()
            total += int(next(line.split()[1] for line in rollup.splitlines() if line.startswith("Pss:")))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def timed(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> tuple[float, int, str, float]:
    """Wall seconds, peak memory (KB) of the process tree, stdout, and CPU seconds of the process and
    every descendant it waited for (a sweep's workers and recorders); fails loudly on an error."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=err, text=True, env={**os.environ, **(env or {})})
        peak, done = 0, threading.Event()

        def sample() -> None:
            nonlocal peak
            while not done.wait(0.05):
                peak = max(peak, tree_pss_kb(proc.pid))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, usage = os.wait4(proc.pid, 0)  # wait4, not wait: it reports the CPU time too
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{err.read()[-3000:]}")
        return wall, peak, out.read(), usage.ru_utime + usage.ru_stime


@contextlib.contextmanager
def tracking_server(root: Path) -> Iterator[str | None]:
    """`mlflow server` on 127.0.0.1 with a fresh database on scripts/postgres's PostgreSQL and the
    artifacts it serves (the cluster recipe); None where there is no PostgreSQL."""
    database = postgres_database("moonprop_bench")
    if database is None:
        yield None
        return
    root.mkdir(parents=True, exist_ok=True)
    with serving("server", "--backend-store-uri", database, "--artifacts-destination", str(root / "art"),
                 log=root / "server.log") as url:
        yield url


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def artifact_bytes(store_dir: Path) -> int:
    return sum(f.stat().st_size for f in (store_dir / "mlartifacts").rglob("*") if f.is_file())


def frame_ms() -> float:
    """Median time to render one default boundary frame: the grid's forward pass and the picture."""
    import torch

    from moonprop import plot
    from moonprop.config import MoonsData
    from moonprop.data import MoonsDataModule
    from moonprop.model import MLP

    torch.set_num_threads(1)
    x, y = MoonsDataModule(MoonsData(), 0).test
    pictures = plot.Boundary(x.numpy(), y.numpy(), 480)  # once a run, as callbacks.py makes it
    net, grid = MLP([16, 16]), torch.from_numpy(pictures.grid)
    times = []
    for _ in range(200):
        t = time.perf_counter()
        with torch.no_grad():
            scores = net(grid).numpy()
        pictures.draw(scores, "epoch 150   test acc 0.999")
        times.append(time.perf_counter() - t)
    return 1000 * median(times)


def validation_ms() -> float:
    """Median time of what the validation set adds to an epoch: its forward pass, loss and accuracy
    (1,000 points through the default network, one thread)."""
    import torch

    from moonprop.config import MoonsData
    from moonprop.data import MoonsDataModule
    from moonprop.model import MLP, accuracy, loss

    torch.set_num_threads(1)
    x, y = MoonsDataModule(MoonsData(), 0).val
    net, times = MLP([16, 16]), []
    params = list(net.parameters())
    for _ in range(500):
        t = time.perf_counter()
        with torch.no_grad():
            scores = net(x)
            loss(scores, y, params, 1e-4).item()
            accuracy(scores, y)
        times.append(time.perf_counter() - t)
    return 1000 * median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--sweep-jobs", type=int, default=20)
    args = parser.parse_args()
    n = args.sweep_jobs
    results: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        ref = [timed([sys.executable, str(ROOT / "benchmarks" / "reference.py")], tmp_path)
               for _ in range(max(args.reps, 5))]
        results["reference_process_s"] = median([w for w, _, _, _ in ref])
        results["reference_loop_s"] = median([json.loads(out)["loop_s"] for _, _, out, _ in ref])
        results["reference_test_acc"] = json.loads(ref[0][2])["test_acc"]

        runs, peaks = [], []
        for i in range(args.reps):
            cwd = tmp_path / f"run{i}"  # a fresh store every time
            cwd.mkdir()
            wall, peak, _, _ = timed(MOONPROP, cwd)
            runs.append(wall)
            peaks.append(peak)
        results["moonprop_run_s"] = median(runs)
        results["moonprop_peak_mb"] = max(peaks) / 1024
        results["artifact_mb"] = artifact_bytes(tmp_path / "run0" / "outputs") / 1e6

        seeds = f"seed=range(0,{n})"
        for name, extra in (("sweep", []), ("sweep_joblib2", ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])):
            cwd = tmp_path / name
            cwd.mkdir()
            timed(MOONPROP + ["data.num_batches=1"], cwd)  # the store exists, as in day-to-day use
            wall, _, _, cpu = timed(MOONPROP + ["-m", seeds, *extra], cwd)
            results[f"{name}_s"], results[f"{name}_cpu_s"] = wall, cpu
            # cores kept busy on average: 2 / this bounds what 2 workers can gain over it
            results[f"{name}_cores_used"] = cpu / wall
        results["sweep_marginal_per_job_s"] = (results["sweep_s"] - results["moonprop_run_s"]) / (n - 1)

        # a 30-trial search, pruned and not: what pruning saves, and what it costs in the answer
        for name, extra in (("search30", []), ("search30_unpruned", ["hydra.sweeper.pruner=none"])):
            cwd = tmp_path / name
            cwd.mkdir()
            timed(MOONPROP + ["data.num_batches=1"], cwd)
            results[f"{name}_s"] = timed(MOONPROP + ["-m", "hydra/sweeper=search", "hydra.sweeper.n_trials=30",
                                                     *extra], cwd)[0]
            (answer,) = cwd.glob("outputs/sweeps/*/optimization_results.yaml")
            results[f"{name}_best_acc"] = float(re.search(r"best_value: ([0-9.]+)", answer.read_text()).group(1))
            results[f"{name}_pruned"] = float(re.search(r"pruned: (\d+)", answer.read_text()).group(1))

        # hydra/launcher=batched: a 40-seed sweep beside the in-process launcher, both with a picture
        # every 10 epochs; a 200-job batched sweep for the marginal cost of a job; the loop alone
        # for 1 and 100 models in one batch
        for name, extra, jobs in (("sweep40", [], 40), ("sweep40_batched", ["hydra/launcher=batched"], 40),
                                  ("sweep200_batched", ["hydra/launcher=batched"], 200)):
            cwd = tmp_path / name
            cwd.mkdir()
            timed(MOONPROP + ["data.num_batches=1"], cwd)
            sweep = ["-m", f"seed=range(0,{jobs})", "plot.every_n_epochs=10", *extra]
            wall, peak, _, cpu = timed(MOONPROP + sweep, cwd)
            results[f"{name}_s"], results[f"{name}_cpu_s"], results[f"{name}_peak_mb"] = wall, cpu, peak / 1024
        results["batched_marginal_per_job_s"] = (results["sweep200_batched_s"] - results["sweep40_batched_s"]) / 160
        # the same 40 seeds through a tracking server on PostgreSQL (scripts/postgres start, as root)
        with tracking_server(tmp_path / "server") as uri:
            if uri is None:
                print("no PostgreSQL (scripts/postgres start): the tracking-server rows are left out", file=sys.stderr)
            for name, extra in (("sweep40_server", []), ("sweep40_batched_server", ["hydra/launcher=batched"])):
                if uri is None:
                    break
                cwd = tmp_path / name
                cwd.mkdir()
                sweep = ["-m", "seed=range(0,40)", "plot.every_n_epochs=10", f"tracking.uri={uri}",
                         f"tracking.experiment={name}", *extra]
                wall, peak, _, cpu = timed(MOONPROP + sweep, cwd)
                results[f"{name}_s"], results[f"{name}_cpu_s"] = wall, cpu
        for models in (1, 100):
            loops = [json.loads(timed([sys.executable, str(ROOT / "benchmarks" / "batched_loop.py"), str(models)],
                                      tmp_path)[2]) for _ in range(args.reps)]
            results[f"batched_loop_{models}_s"] = median([loop["loop_s"] for loop in loops])
            results[f"batched_loop_{models}_worst_acc"] = loops[0]["worst_test_acc"]

        # the same experiment written the plain way (benchmarks/plain.py: self.log, MLFlowLogger, a
        # matplotlib callback with log_image every epoch): one run, and ten seeds one after another
        for name, extra in (("plain_run", []), ("plain_sweep10", ["-m", "seed=range(0,10)"]),
                            ("sweep10", ["-m", "seed=range(0,10)"])):
            cwd = tmp_path / name
            cwd.mkdir()
            command = MOONPROP if name == "sweep10" else [sys.executable, str(ROOT / "benchmarks" / "plain.py")]
            results[f"{name}_s"] = timed(command + extra, cwd)[0]

        results["frame_ms"] = frame_ms()
        results["validation_pass_ms"] = validation_ms()
        results["help_s"] = median([timed(MOONPROP + ["--help"], tmp_path)[0] for _ in range(args.reps)])
        results["cfg_job_s"] = median([timed(MOONPROP + ["--cfg", "job"], tmp_path)[0] for _ in range(args.reps)])

    ratios = {
        "run / reference process": (results["moonprop_run_s"] / results["reference_process_s"], 1.5, "<="),
        "sweep marginal / reference loop": (results["sweep_marginal_per_job_s"] / results["reference_loop_s"], 8.0,
                                            "<="),
        "sequential / 2 workers": (results["sweep_s"] / results["sweep_joblib2_s"], 1.6, ">="),
        "batched / in-process, 40 seeds": (results["sweep40_batched_s"] / results["sweep40_s"], 0.35, "<="),
        "100 models in a batch / 1": (results["batched_loop_100_s"] / results["batched_loop_1_s"], 3.0, "<="),
        "100 models in a batch / reference loop": (results["batched_loop_100_s"] / results["reference_loop_s"], 3.0,
                                                   "<="),
        "moonprop run / plain-way run": (results["moonprop_run_s"] / results["plain_run_s"], 1.0, "<="),
        "moonprop 10 seeds / plain-way 10 seeds": (results["sweep10_s"] / results["plain_sweep10_s"], 1.0, "<="),
    }
    limits = {"frame_ms": (5.0, "<="), "artifact_mb": (4.0, "<="), "help_s": (1.5, "<="),
              "batched_marginal_per_job_s": (0.1, "<="),
              "cfg_job_s": (1.5, "<="), "moonprop_peak_mb": (700.0, "<=")}
    machine = {"cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                            if line.startswith("model name")), platform.processor()),
               "cores": len(os.sched_getaffinity(0)), "python": platform.python_version()}
    import torch

    machine["torch"] = torch.__version__

    rows = [(k, f"{v:.3f}", "", "") for k, v in results.items()]
    rows += [(k, f"{v:.2f}", f"{op} {target}", "ok" if (v <= target if op == "<=" else v >= target) else "MISSED")
             for k, (v, target, op) in ratios.items()]
    rows = [(k, v, *(([f"{limits[k][1]} {limits[k][0]}",
                       "ok" if float(v) <= limits[k][0] else "MISSED"]) if k in limits else [t, s]))
            for k, v, t, s in rows]
    width = max(len(r[0]) for r in rows)
    print(f"machine: {machine}")
    print(f"{'measure':<{width}}  {'value':>10}  {'target':>8}  status")
    for k, v, target, status in rows:
        print(f"{k:<{width}}  {v:>10}  {target:>8}  {status}")
    out = ROOT / "outputs" / "benchmark.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"machine": machine, "results": results,
                               "ratios": {k: v[0] for k, v in ratios.items()}}, indent=2))
    print(f"written: {out}")


if __name__ == "__main__":
    main()
