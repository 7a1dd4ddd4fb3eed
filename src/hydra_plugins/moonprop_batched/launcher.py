"""hydra/launcher=batched: a sweep's jobs trained together as one batched model (moonprop.batched).

Every job is set up as Hydra's own launchers set it up (`run_job`: its composed config, its folder
with .hydra/, HydraConfig, Hydra's callbacks), but instead of training there, the launcher collects
what the job would train (`moonprop.cli.sweep_task`). Jobs that can share a model (batched.stack_key)
then train as one, in this process, on `trainer.accelerator`; each job is recorded as its own
MLflow run under the sweep's parent, and Hydra gets each job's final validation accuracy back, NaN for
a job that failed, as from the in-process launcher.

Kept light at import: Hydra imports every plugin module to discover it, even for `--help`.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.core.utils import JobReturn, JobStatus, configure_log, run_job, setup_globals
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, open_dict

if TYPE_CHECKING:
    from moonprop.recorder import Recorder


class BatchedLauncher(Launcher):
    def __init__(self, max_batch: int = 1000, recorders: int = 1) -> None:
        from moonprop.config import check_positive_int

        check_positive_int("hydra.launcher.max_batch", max_batch)
        check_positive_int("hydra.launcher.recorders", recorders)
        self.max_batch = max_batch  # jobs per model
        self.recorders = recorders  # processes that write the runs
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        # the app's task function is not called: cli.sweep_task gives what it would train, and the
        # jobs train here, together
        self.config, self.hydra_context = config, hydra_context

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        from moonprop.cli import sweep_task
        from moonprop.config import resolve_uri
        from moonprop.recorder import Recorder, shared

        assert self.config is not None and self.hydra_context is not None
        # Writing a run costs more than training it: where cores are spare, more processes than the
        # sweep's recorder write the runs. They start now, to import MLflow while the jobs are set up.
        recorders = [shared(), *(Recorder() for _ in range(self.recorders - 1))]
        for recorder in recorders[1:]:
            recorder.prepare(resolve_uri(self.config.tracking.uri, self.config.hydra.runtime.cwd),
                             self.config.tracking.experiment)
        setup_globals()
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        returns: list[JobReturn] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = sweep_config.hydra.job.num = idx
            returns.append(run_job(hydra_context=self.hydra_context, task_function=sweep_task, config=sweep_config,
                                   job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir"))
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        for ret in returns:  # a job whose config failed its checks: recorded FAILED by sweep_task
            if ret.status == JobStatus.COMPLETED and ret.return_value is None:
                ret.return_value = float("nan")  # what a search sampler takes as a failed trial
        ready = [(idx, ret) for idx, ret in enumerate(returns) if ret.status == JobStatus.COMPLETED
                 and not isinstance(ret.return_value, float)]
        batches = self._batches(ready)
        print(f"moonprop: {len(ready)} jobs in {len(batches)} batched model{'s' * (len(batches) != 1)}",
              file=sys.stderr)
        from moonprop.sweep import how_to_continue  # an interrupted sweep: the same command in the same folder

        try:
            for number, batch in enumerate(batches):
                checkpoint = sweep_dir / "checkpoints" / f"batch-{initial_job_idx + number}.ckpt"
                self._train(batch, recorders, checkpoint, how_to_continue(sweep_dir))
        finally:
            for recorder in recorders[1:]:  # the sweep's own recorder is drained before its summary
                recorder.close()
        return returns

    def _batches(self, jobs: list[tuple[int, JobReturn]]) -> list[list[tuple[int, JobReturn]]]:
        from moonprop.batched import stack_key

        groups: dict[Any, list[tuple[int, JobReturn]]] = {}
        for idx, ret in jobs:
            groups.setdefault(stack_key(ret.return_value.cfg, idx), []).append((idx, ret))
        return [group[i:i + self.max_batch] for group in groups.values()
                for i in range(0, len(group), self.max_batch)]

    def _train(self, batch: list[tuple[int, JobReturn]], recorders: list[Recorder], checkpoint: Path,
               how_to_continue: str) -> None:
        """Train one batch and give each job its result; a batch that finished before an
        interruption is not trained again when the sweep continues."""
        from moonprop.train import train_batched

        tasks = [ret.return_value for _, ret in batch]
        start = time.perf_counter()
        done = checkpoint.with_suffix(".done.json")
        if done.is_file():
            results = json.loads(done.read_text())
        else:
            results = train_batched(tasks, recorders, checkpoint, how_to_continue)
            done.parent.mkdir(parents=True, exist_ok=True)
            done.write_text(json.dumps(results))
            checkpoint.unlink(missing_ok=True)  # what remains of an interruption, now continued
        took = time.perf_counter() - start
        for (_, ret), run, result in zip(batch, tasks, results, strict=True):
            job = f"job {ret.hydra_cfg.hydra.job.num} ({run.job.name})"
            if isinstance(result, str):
                print(f"moonprop: {job} FAILED: {result}", file=sys.stderr)
                ret.return_value = float("nan")  # what a search sampler takes as a failed trial
            else:
                print(f"moonprop: {job} FINISHED: val acc {result:.3f} ({len(batch)} jobs in {took:.1f} s)",
                      file=sys.stderr)
                ret.return_value = result
