"""One training run: config -> data module -> module -> Lightning trainer -> MLflow (via the recorder)."""

from __future__ import annotations

import contextlib
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger

from moonprop.batched import BatchedMoonsClassifier, BatchedMoonsData
from moonprop.callbacks import BatchedMlflowCallback, GracefulStop, MlflowCallback, shortest
from moonprop.config import (
    Config,
    ConfigError,
    as_dict,
    check_same_params,
    one_line,
    params,
    recorded,
    redact,
    redacted,
    resolve_uri,
)
from moonprop.data import MoonsDataModule
from moonprop.jobs import CHECKPOINT_TAG, Interrupted, Job, Result, Task
from moonprop.loggers import loggers_of, record_of
from moonprop.module import MoonsClassifier
from moonprop.recorder import Recorder, Run


def checkpoint_state(path: str | Path, callback: type[pl.Callback] = MlflowCallback) -> dict[str, Any]:
    """What `callback` kept in a checkpoint: MlflowCallback its run id and the run's params,
    BatchedMlflowCallback its runs, params and failed jobs."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)  # our own file
    return checkpoint["callbacks"][callback.__qualname__]


def run_spec(cfg: Config, datamodule: MoonsDataModule, overrides: list[str], tags: dict[str, str],
             job: Job | None, launch_dir: str | None) -> dict[str, Any]:
    """What the recorder opens a run with (tracking.RunWriter.open): its name, params, tags, texts,
    datasets and place in its sweep. A relative SQLite store is the one in `launch_dir`."""
    overrides = [redact(o) for o in overrides]
    return dict(
        uri=resolve_uri(cfg.tracking.uri, launch_dir), experiment=cfg.tracking.experiment,
        run_name=job.name if job else cfg.tracking.run_name, params=params(cfg),
        tags={**cfg.tracking.tags, **tags, **(job.tags if job else {})},
        texts={"config.yaml": OmegaConf.to_yaml(OmegaConf.create(as_dict(redacted(cfg)))),
               "overrides.yaml": OmegaConf.to_yaml(overrides)},
        parent_run_id=job.parent if job else None, plot_every=cfg.plot.every_n_epochs,
        num_epochs=cfg.data.num_batches, start_time_ms=int(time.time() * 1000), datasets=datamodule.datasets(),
        registered_model=None if job else cfg.tracking.registered_model,  # a sweep registers its best
        system_metrics=cfg.tracking.system_metrics)


def build(cfg: Config) -> tuple[MoonsClassifier, MoonsDataModule]:
    """The LightningModule and the DataModule of `cfg`, for any Trainer."""
    module = MoonsClassifier(cfg.model, cfg.loss, cfg.optimizer, cfg.schedule, cfg.data.num_batches, cfg.seed)
    return module, MoonsDataModule(cfg.data, cfg.seed)


def trainer(cfg: Config, callbacks: list[pl.Callback], loggers: list[Logger] | None = None,
            run_dir: Path | None = None, resuming: bool = False) -> pl.Trainer:
    """Lightning's Trainer as moonprop runs it, with the user's own arguments (`trainer.NAME`):
    what Lightning keeps on disk (checkpoints, a profiler's report) goes into `run_dir`."""
    lightning = dict(cfg.trainer.lightning)
    # Lightning checkpoints where asked to: a ModelCheckpoint among the callbacks (callbacks=[checkpoint]),
    # or trainer.enable_checkpointing=true (its default one). GracefulStop's checkpoint is apart.
    checkpointing = lightning.pop("enable_checkpointing", any(isinstance(c, ModelCheckpoint) for c in callbacks))
    run = pl.Trainer(
        accelerator=cfg.trainer.accelerator,
        devices=1,
        max_epochs=cfg.data.num_batches,  # one epoch = one freshly drawn batch, as in the seed
        # the untrained network is step 0 of the record; a resumed run has it already
        num_sanity_val_steps=0 if resuming else 1,
        logger=loggers or False,
        enable_checkpointing=checkpointing,
        enable_model_summary=False,
        enable_progress_bar=sys.stderr.isatty(),
        callbacks=callbacks,
        default_root_dir=run_dir,
        # an epoch is one step: what a callback logs per step (LearningRateMonitor) reaches the loggers every step
        log_every_n_steps=lightning.pop("log_every_n_steps", 1),
        **lightning,  # deterministic, precision, gradient_clip_val, ... (config.OWN_TRAINER_ARGS refused)
    )
    for checkpoint in run.checkpoint_callbacks:  # Lightning would nest them in the logger's name and version
        if checkpoint.dirpath is None and run_dir is not None:
            checkpoint.dirpath = str(run_dir / "checkpoints")
    return run


def callbacks_of(cfg: Config, job: Job | None) -> list[pl.Callback]:
    """The Lightning callbacks of the config's `callbacks` group, then the sweeper's for this job
    (a search's pruner): each instantiated from its `_target_`."""
    return [instantiate(c) for c in cfg.callbacks.values()] + [instantiate(c) for c in (job.callbacks if job else [])]


def fit(trainer: pl.Trainer, stopper: GracefulStop, *args: Any, **kwargs: Any) -> None:
    try:
        trainer.fit(*args, **kwargs)
    except SystemExit:
        if stopper.signum == signal.SIGINT:  # a second Ctrl-C, which Lightning turns into exit(1)
            raise KeyboardInterrupt from None
        raise


def dev_run(cfg: Config, run_dir: Path) -> dict[str, float]:
    """Lightning's `fast_dev_run`: a step of training and one of validation through the run's
    module, data and callbacks, to find what breaks; nothing recorded (Lightning itself turns the
    loggers and checkpoints off). The metrics of that step, by their keys."""
    torch.set_num_threads(cfg.trainer.threads)
    module, datamodule = build(cfg)
    loggers = loggers_of(cfg.logger, run_dir)
    module.log_to_loggers = bool(loggers)  # Lightning warns of a self.log for loggers with none
    quick = trainer(cfg, callbacks_of(cfg, None), loggers, run_dir)
    quick.fit(module, datamodule=datamodule)
    return {key: shortest(float(value)) for key, value in quick.callback_metrics.items()}


def train(cfg: Config, run_dir: Path, overrides: list[str], tags: dict[str, str], job: Job | None,
          launch_dir: str | None, command: list[str], recorder: Recorder | None, close_in_background: bool = False
          ) -> Result:
    """Train and record one run (its final test accuracy is what a sweeper maximises).

    Interrupted by Ctrl-C or SIGTERM, it writes `run_dir/checkpoints/last.ckpt` and says how to
    continue: `moonprop COMMAND resume=` that path continues the same MLflow run where it stopped
    (`command`: the arguments that run this job alone). A sweep's `job` names the run, nests it
    under the sweep's parent and adds its sweeper's callbacks (a search's pruner, which may stop it
    early). With
    `close_in_background` (a sweep's jobs in one process), the next job trains while the recorder
    closes this run. A relative SQLite store is the one in `launch_dir`, where moonprop was started
    (a job may run elsewhere). Without `mlflow` among its loggers (`logger=[csv]`, no `recorder`
    needed), a single run is written by its other loggers only.
    """
    torch.set_num_threads(cfg.trainer.threads)  # more threads make this tiny model slower, many times over
    try:
        module, datamodule = build(cfg)
        spec = run_spec(cfg, datamodule, overrides, tags, job, launch_dir)
        resume_run_id = checkpoint_state(cfg.resume)["run_id"] if cfg.resume else None
        extra = callbacks_of(cfg, job)
        others = loggers_of(cfg.logger, run_dir)
    except Exception as e:
        if job is not None and recorder is not None:
            record_failed_job(recorder, resolve_uri(cfg.tracking.uri, launch_dir), cfg.tracking.experiment, job,
                              params(cfg), e)
        raise
    checkpoint = run_dir / "checkpoints" / "last.ckpt"
    stopper = GracefulStop(checkpoint, shlex.join(["moonprop", *command, f"resume={checkpoint}"]))
    module.log_metrics = bool(extra) or sys.stderr.isatty()  # what reads self.log: callbacks, the progress bar
    module.log_to_loggers = False  # MlflowCallback hands every step's metrics to the loggers
    recording = recorder is not None and recorded(cfg)  # logger=[csv]: a run MLflow does not record
    with stopper.handling_signals(), (recorder.run(close_in_background, **spec, resume_run_id=resume_run_id)
                                      if recording else contextlib.nullcontext()) as run:
        tracker = MlflowCallback(run, datamodule.test, cfg.plot, cfg.data.num_batches, spec["params"],
                                 datamodule.plane, datamodule.train)
        record = [record_of(cfg.logger, run, spec["uri"], run_dir, cfg.tracking.experiment)] if run else []
        try:
            fit(trainer(cfg, [tracker, stopper, *extra], [*record, *others], run_dir, bool(cfg.resume)), stopper,
                module, datamodule=datamodule, ckpt_path=cfg.resume)
        except Interrupted:
            if run:
                run.send("tags", {CHECKPOINT_TAG: str(checkpoint)})  # the one `resume=` continues from now
            raise
    model_uri = f"models:/{run.model_id}" if run and run.model_id else None
    return Result(run.id if run else "", tracker.last, model_uri, run_dir)


def record_failed_job(recorder: Recorder, uri: str, experiment: str, job: Job, params: dict[str, str],
                      error: Exception) -> None:
    """A sweep's job that failed before its run opened (its config, a callback's constructor, its
    data): its run all the same, under the sweep's parent, FAILED with the reason, so that the
    sweep's summary counts it. Called while `error` is handled (its traceback is kept)."""
    texts = {"overrides.yaml": OmegaConf.to_yaml(job.overrides)}
    run = recorder.start(uri=uri, experiment=experiment, run_name=job.name, params=params, tags=job.tags,
                         texts=texts, parent_run_id=job.parent)
    run.end_with(error)


def train_batched(tasks: list[Task], recorders: list[Recorder], checkpoint: Path,
                  how_to_continue: str) -> list[float | str]:
    """Train the jobs `tasks` (of one batched.stack_key) as one batched model, each recorded as its
    own run, as `train` would record it; for each job its final validation accuracy (what a sweeper
    chooses on; the test accuracy without a validation set), or why it failed (a batch that fails
    before it trains, its data or a callback's constructor, fails each of its jobs, recorded FAILED).
    The runs are shared out among the `recorders` (processes: recording a run costs more than training it).

    Interrupted by Ctrl-C or SIGTERM, every running job's run ends KILLED after a checkpoint of the
    whole batch at `checkpoint`; called again with that checkpoint there, the same jobs continue
    their runs where they stopped.
    """
    cfgs = [t.cfg for t in tasks]
    torch.set_num_threads(cfgs[0].trainer.threads)
    try:
        datamodule = BatchedMoonsData(cfgs)
        module = BatchedMoonsClassifier(cfgs)
        specs = [run_spec(t.cfg, data, t.overrides, t.tags, t.job, t.launch_dir)
                 for t, data in zip(tasks, datamodule.jobs, strict=True)]
        # a job with callbacks or loggers of its own trains in a batch of one (batched.stack_key): they are its
        alone = len(cfgs) == 1
        extra = callbacks_of(cfgs[0], None) if alone else []
        others = loggers_of(cfgs[0].logger, tasks[0].run_dir) if alone else []
    except Exception as e:
        for t in tasks:
            assert t.job is not None
            record_failed_job(recorders[0], resolve_uri(t.cfg.tracking.uri, t.launch_dir), t.cfg.tracking.experiment,
                              t.job, params(t.cfg), e)
        return [one_line(e)] * len(tasks)
    saved = resumed_batch(checkpoint, [spec["params"] for spec in specs]) if checkpoint.is_file() else None
    runs = _batch_runs(specs, recorders, saved)
    tracker = BatchedMlflowCallback(runs, datamodule.test, [c.plot for c in cfgs], cfgs[0].data.num_batches,
                                    [spec["params"] for spec in specs], [data.plane for data in datamodule.jobs],
                                    datamodule.train)
    stopper = GracefulStop(checkpoint, how_to_continue)
    module.log_metrics = bool(extra)
    loggers: list[Logger] = []
    if alone and runs[0] is not None:  # its record and its other loggers, for its callbacks (LearningRateMonitor)
        t = tasks[0]
        loggers = [record_of(t.cfg.logger, runs[0], specs[0]["uri"], t.run_dir, t.cfg.tracking.experiment), *others]
        tracker.loggers = others
    try:
        with stopper.handling_signals():
            fit(trainer(cfgs[0], [tracker, stopper, *extra], loggers, tasks[0].run_dir if alone else None,
                        resuming=saved is not None), stopper, module,
                datamodule=datamodule, ckpt_path=checkpoint if saved else None)
    except BaseException as e:  # every job still training ends with the batch
        for job, run in enumerate(runs):
            if run is not None and job not in tracker.errors:
                run.end_with(e, wait=False)
        raise
    for job, run in enumerate(runs):
        if run is not None and job not in tracker.errors:
            run.end("FINISHED", wait=False)
    chosen = tracker.val_acc if cfgs[0].data.val_size else tracker.test_acc
    return [tracker.errors.get(job, chosen[job]) for job in range(len(tasks))]  # type: ignore[misc]


def _batch_runs(specs: list[dict[str, Any]], recorders: list[Recorder],
                saved: dict[str, Any] | None) -> list[Run | None]:
    """Each job's run, shared out among the recorders: new, or, continuing an interrupted batch
    (`saved`), the run it had (None for a job whose run had ended FAILED before)."""
    runs: list[Run | None] = []
    for job, spec in enumerate(specs):
        recorder = recorders[job % len(recorders)]
        if saved is None:
            runs.append(recorder.start(**spec))
        elif job in saved["errors"]:
            runs.append(None)
        else:
            runs.append(recorder.start(**spec, resume_run_id=saved["run_ids"][job]))
    return runs


def resumed_batch(checkpoint: Path, params: list[dict[str, str]]) -> dict[str, Any]:
    """What BatchedMlflowCallback kept in an interrupted batch's checkpoint: its runs, and the jobs
    that had failed. The jobs must be the same, with the same settings."""
    saved = checkpoint_state(checkpoint, BatchedMlflowCallback)
    folder = checkpoint.parent.parent
    if len(saved["params"]) != len(params):
        raise ConfigError("hydra.sweep.dir", str(folder), f"a sweep of the same jobs: its interrupted batch "
                          f"has {len(saved['params'])} jobs, this one {len(params)}")
    for job, (before, now) in enumerate(zip(saved["params"], params, strict=True)):
        check_same_params(before, now, f"job {job} of the interrupted sweep {folder}")
    return saved
