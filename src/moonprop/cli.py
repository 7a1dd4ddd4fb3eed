"""The `moonprop` command: a Hydra app, with the config checked before Hydra creates anything.

    moonprop                                     # the seed experiment
    moonprop model.hidden=[32,32] schedule=cosine data.num_batches=300
    moonprop -m seed=0,1,2 schedule=linear,cosine  # a sweep

Hydra makes the run folder before it calls the task, so bad input is caught here first, in one
line, before any folder, store or run exists. Torch, Lightning and MLflow are imported only once a
run starts: `moonprop --help` and `--cfg job` stay quick.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from moonprop import preflight, sweep
from moonprop.config import ConfigError, first_line, one_line, recorded, redact, resolve_uri, validate
from moonprop.jobs import (
    CONFIG_TAG,
    SWEEP_FILE,
    Interrupted,
    Launcher,
    Result,
    Task,
    config_name,
    given_values,
    this_job,
)
from moonprop.recorder import close_shared, shared

if TYPE_CHECKING:
    from moonprop.config import Config
    from moonprop.evaluation import Evaluated, Network

EXIT_BAD_INPUT = 2
CONFIG_PATH, CONFIG_NAME = "conf", "config"  # the packaged configs
CONFIG_MODULE = "moonprop.conf"  # where Hydra finds CONFIG_PATH, as its config sources name it


def task(cfg: DictConfig, command: list[str] | None = None) -> Task:
    """The run of the job Hydra is running (HydraConfig): its checked config, folder and tags.
    `command`: its arguments, if not this process's (moonprop.run's overrides)."""
    config = validate(cfg)  # again: a Python caller or a search sampler may get here directly
    hc = HydraConfig.get()
    run_dir, overrides = Path(hc.runtime.output_dir), list(hc.overrides.task)
    config.trainer.threads = min(config.trainer.threads, threads_per_job(hc))
    if config.resume:  # a path on the command line means one in the folder moonprop was started in
        config.resume = str(Path(hc.runtime.cwd, config.resume))
    tags = {"hydra.job.name": hc.job.name, "hydra.output_dir": str(run_dir)}
    alone = run_alone(hc)
    if hc.mode != RunMode.MULTIRUN:
        arguments = sys.argv[1:] if command is None else command
        tags["mlflow.source.name"] = shlex.join(["moonprop", *(redact(a) for a in arguments)])  # as run
        tags[CONFIG_TAG] = config_name([redact(o) for o in overrides], [])
        return Task(config, run_dir, overrides, tags, None, hc.runtime.cwd, alone)
    job = this_job(config.tracking.run_name)
    if job.resume:  # a continued sweep's interrupted job: into its own run, from its checkpoint
        config.resume = job.resume
    tags["mlflow.source.name"] = shlex.join(["moonprop", *job.overrides])  # what runs this job alone
    return Task(config, run_dir, overrides, tags, job, hc.runtime.cwd, alone)


def run_alone(hc: DictConfig) -> list[str]:
    """The arguments that run Hydra's job `hc` alone, from the folder moonprop was started in: its
    config folder and name as given, its overrides (a `resume=` of its own left out), and for a
    sweep's job `hydra.mode=RUN` (an experiment file may make its config a sweep)."""
    flags = []
    for source in hc.runtime.config_sources:
        if source.provider == "command-line":
            flags.append(f"--config-dir={source.path}")
        elif source.provider == "main" and source.path != CONFIG_MODULE:
            flags.append(f"--config-path={source.path}")
    if hc.job.config_name != CONFIG_NAME:
        flags.append(f"--config-name={hc.job.config_name}")
    overrides = [o for o in hc.overrides.task if o.lstrip("+~").partition("=")[0] != "resume"]
    return flags + overrides + ["hydra.mode=RUN"] * (hc.mode == RunMode.MULTIRUN)


def train_task(this: Task) -> Result | None:
    """Train and record the run `this`, and say so on stderr; None for a sweep's job that failed
    (recorded FAILED: the other jobs go on, the summary counts it)."""
    if this.cfg.trainer.lightning.get("fast_dev_run"):
        return quick_check(this)
    if not recorded(this.cfg):  # a single run (preflight refuses such a sweep)
        return unrecorded_run(this)
    # The recorder starts first: it imports MLflow and opens the store on the other core while
    # this process imports Lightning (seconds each on a fresh store).
    recorder = shared()
    recorder.prepare(resolve_uri(this.cfg.tracking.uri, this.launch_dir), this.cfg.tracking.experiment)
    from moonprop.train import train

    start = time.perf_counter()
    if this.job is None:
        result = train(*this, recorder)
        print(f"moonprop: run {recorder.last.name} FINISHED: {accuracies(result)} in "  # type: ignore[union-attr]
              f"{time.perf_counter() - start:.1f} s (run id {result.run_id}, folder {this.run_dir})", file=sys.stderr)
        return result
    job = f"job {HydraConfig.get().job.num} ({this.job.name})"
    try:
        # Only the in-process launcher runs the next job in this process, and drains the recorder
        # before the summary: a joblib worker or a SLURM job may be ended as soon as it returns.
        in_process = Launcher.of(HydraConfig.get().launcher) is Launcher.IN_PROCESS
        result = train(*this, recorder, close_in_background=in_process)
    except Exception as e:
        print(f"moonprop: {job} FAILED in {time.perf_counter() - start:.1f} s: {one_line(e)}", file=sys.stderr)
        return None
    print(f"moonprop: {job} FINISHED: {accuracies(result)} in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return result


def quick_check(this: Task) -> Result:
    """`+trainer.fast_dev_run=true`: Lightning's quick check of a single run, which records nothing."""
    from moonprop.train import dev_run

    start = time.perf_counter()
    result = Result("", dev_run(this.cfg, this.run_dir), None, this.run_dir)
    print(f"moonprop: fast_dev_run FINISHED: {accuracies(result)} after one step in "
          f"{time.perf_counter() - start:.2f} s; nothing recorded (Lightning's fast_dev_run; debug=fdr records "
          f"two epochs in a store of their own)", file=sys.stderr)
    return result


def unrecorded_run(this: Task) -> Result:
    """`logger=[csv]`: a run that MLflow does not record, written only by the loggers the user chose."""
    from moonprop.train import train

    start = time.perf_counter()
    result = train(*this, None)
    print(f"moonprop: run FINISHED: {accuracies(result)} in {time.perf_counter() - start:.1f} s, not recorded in "
          f"MLflow (logger={list(this.cfg.logger)}; folder {this.run_dir})", file=sys.stderr)
    return result


def accuracies(result: Result) -> str:
    val = result.metrics.get("val/acc")
    return f"{'' if val is None else f'val acc {val:.3f}, '}test acc {result.metrics['test/acc']:.3f}"


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name=CONFIG_NAME)
def app(cfg: DictConfig) -> float:
    """The final validation accuracy, what a sweeper maximises (the test set only reports; a run
    without a validation set, its test accuracy); NaN for a job that failed, which a search's
    sampler takes as a failed trial."""
    this = task(cfg) if HydraConfig.get().mode != RunMode.MULTIRUN else sweep_task(cfg)
    if isinstance(this, float):  # a continued sweep's job that had finished
        return this
    result = train_task(this) if this is not None else None
    if result is None:
        return float("nan")
    return result.metrics.get("val/acc", result.metrics["test/acc"])


def sweep_task(cfg: DictConfig) -> Task | float | None:
    """The run of a sweep's job (`task`); in a continued sweep, the result of a job that had
    finished (kept, not trained again); or None for a job whose config fails its checks: it is
    recorded all the same, FAILED under the sweep's parent with the reason, and said on stderr,
    so that the summary counts it. Every launcher's jobs come through here."""
    try:
        this = task(cfg)
        if this.job is not None and this.job.kept is not None:
            print(f"moonprop: job {HydraConfig.get().job.num} ({this.job.name}) had FINISHED: val acc "
                  f"{this.job.kept:.3f}, kept", file=sys.stderr)
            return this.job.kept
        return this
    except Exception as e:
        hc = HydraConfig.get()
        job = this_job(OmegaConf.select(cfg, "tracking.run_name", default=None))
        print(f"moonprop: job {hc.job.num} ({job.name}) FAILED: {one_line(e)}", file=sys.stderr)
        uri = resolve_uri(OmegaConf.select(cfg, "tracking.uri", default=None), hc.runtime.cwd)
        experiment = OmegaConf.select(cfg, "tracking.experiment", default=None) or "moonprop"
        recorder = shared()
        from moonprop.train import record_failed_job

        record_failed_job(recorder, uri, experiment, job, given_values(job.overrides), e)
        return None


def threads_per_job(hc: DictConfig) -> int:
    """Torch threads a job may use so that parallel workers x threads never exceed the cores."""
    cores = len(os.sched_getaffinity(0))
    workers = hc.launcher.get("n_jobs", 1) if hc.mode == RunMode.MULTIRUN else 1
    workers = cores if workers is None or workers < 0 else workers  # joblib: -1 means all cores
    return max(1, cores // max(1, workers))


# the app as `@hydra.main` was given it, for the checks that go through Hydra before it
APP = preflight.App(app, CONFIG_PATH, CONFIG_NAME)


def main() -> None:
    if sys.argv[1:2] == ["report"]:
        report_main(sys.argv[2:])
    try:
        preflight.check(sys.argv[1:], APP)
    except ConfigError as e:
        print(f"moonprop: {e}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    # Outside a run's training (between a sweep's jobs, say) SIGTERM ends the process through the
    # handlers below, like Ctrl-C, instead of killing it with an open sweep left RUNNING.
    signal.signal(signal.SIGTERM, _terminated)
    # Hydra prints an error that escapes the app as a traceback and exits 1, with nothing to end
    # the sweep it stopped. With HYDRA_FULL_ERROR it hands the error on, to be handled below; the
    # traceback is printed only if the user asked for it.
    show_traceback = os.environ.get("HYDRA_FULL_ERROR") == "1"
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        app()  # a sweep with a failed job ends in SystemExit(1), after its summary
    except SystemExit as e:
        if e.code == 128 + signal.SIGTERM and (stopped := sweep.end_interrupted(signal.SIGTERM)):
            print(f"moonprop: {stopped}", file=sys.stderr)
        exit_now(e.code if isinstance(e.code, int) else int(e.code is not None))
    except KeyboardInterrupt:
        if stopped := sweep.end_interrupted(signal.SIGINT):
            print(f"moonprop: {stopped}", file=sys.stderr)
        exit_now(128 + signal.SIGINT)
    except BaseException as e:
        if isinstance(e, Interrupted):  # a sweep's job: the sweep continues, not the job alone
            print(f"moonprop: {sweep.end_interrupted(e.signum) or e}", file=sys.stderr)
            exit_now(128 + e.signum)
        if not isinstance(e, Exception):
            raise
        # Outside any run's training: a launcher that could not submit, a sweeper's error, a job
        # that died outside `train`. A sweep under way ends FAILED with the reason.
        reason = f"{type(e).__name__}: {first_line(e)}"
        if show_traceback:
            traceback.print_exc()
        ended = sweep.end_failed(reason)
        print(f"moonprop: {ended + ' FAILED: ' if ended else ''}{reason}", file=sys.stderr)
        exit_now(EXIT_BAD_INPUT if isinstance(e, ConfigError) else 1)
    exit_now(0)


REPORT_USAGE = """usage: moonprop report SWEEP_FOLDER | PARENT_RUN_ID [tracking.uri=URI]

Write an existing sweep's summary again on its parent run, with report.html (every configuration's
boundary on one slider, the sweep's answer under it), from its folder or its parent run's id:

  moonprop report outputs/sweeps/2026-12-06_10-00-00
  moonprop report 0123456789abcdef0123456789abcdef tracking.uri=http://127.0.0.1:5000"""


def report_main(argv: list[str]) -> None:
    """`moonprop report`: a sweep's summary and report.html drawn again (summary.redraw)."""
    if any(a in ("-h", "--help") for a in argv):
        print(REPORT_USAGE)
        exit_now(0)
    given = dict(a.partition("=")[::2] for a in argv if "=" in a)
    targets = [a for a in argv if "=" not in a]
    if len(targets) != 1 or set(given) - {"tracking.uri"}:
        print(f"moonprop report: {shlex.join(argv) or '(nothing)'}: a sweep's folder or its parent run's id, and "
              f"at most tracking.uri=URI (moonprop report --help)", file=sys.stderr)
        exit_now(EXIT_BAD_INPUT)
    target = targets[0]
    if not (Path(target) / SWEEP_FILE).is_file() and not re.fullmatch(r"[0-9a-f]{32}", target):
        print(f"moonprop report: {target}: a sweep's folder (it holds {SWEEP_FILE}) or its parent run's id",
              file=sys.stderr)
        exit_now(EXIT_BAD_INPUT)
    try:
        said = shared().call("redraw", uri=resolve_uri(given.get("tracking.uri")), target=target)
    except Exception as e:
        print(f"moonprop report: {first_line(e)}", file=sys.stderr)
        exit_now(1)
    print(f"moonprop report: {said}", file=sys.stderr)
    exit_now(0)


EVAL_USAGE = """usage: moonprop-eval ckpt_path=PATH | model_uri=models:/MODEL_ID [OVERRIDE ...]

Score a checkpoint moonprop wrote, or a run's MLflow model, on a test set drawn from the config the
overrides make (data=, data.test_size=, data.noise=, seed=, ...), recorded as an MLflow run of its
own (tracking.*), tagged moonprop.evaluated_run with the run the network came from:

  moonprop-eval ckpt_path=outputs/runs/2026-12-06_10-00-00/checkpoints/best.ckpt data.test_size=10000 seed=7
  moonprop-eval model_uri=models:/m-0123456789abcdef data.noise=0.2"""


def evaluate_main(argv: list[str] | None = None) -> None:
    """`moonprop-eval`: lightning-hydra-template's eval.py, on moonprop's overrides (no run folder:
    nothing is written but the evaluation's MLflow run)."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(EVAL_USAGE)
        exit_now(0)
    given = {k: v for k, _, v in (a.partition("=") for a in argv) if k in ("ckpt_path", "model_uri")}
    overrides = [a for a in argv if a.partition("=")[0] not in given]
    try:
        network, done, config = evaluation(given, overrides, ["moonprop-eval", *argv])
    except ConfigError as e:
        print(f"moonprop-eval: {e}", file=sys.stderr)
        exit_now(EXIT_BAD_INPUT)
    except Exception as e:
        print(f"moonprop-eval: FAILED: {one_line(e)}", file=sys.stderr)
        exit_now(1)
    of = f" of run {network.run_id}" if network.run_id else ""
    print(f"moonprop-eval: run {done.run_name} FINISHED: test acc {done.metrics['test/acc']:.3f}, test loss "
          f"{done.metrics['test/loss']:.4f} on {config.data.test_size} points of {config.data.name} (seed "
          f"{config.seed}){of} (run id {done.run_id})", file=sys.stderr)
    exit_now(0)


def evaluation(given: dict[str, str], overrides: list[str], command: list[str]) -> tuple[Network, Evaluated, Config]:
    """Score the checkpoint or MLflow model `given` (`ckpt_path` or `model_uri`) on the test set of
    the config `overrides` make, and record it (`command`: how it was asked for). Bad input raises
    ConfigError before any run exists."""
    if len(given) != 1 or not next(iter(given.values())):
        raise ConfigError("ckpt_path", given.get("ckpt_path"), "a checkpoint's path, or model_uri= an MLflow "
                                                              "model's URI (one of them)")
    configs = preflight.check(overrides, APP)
    if len(configs) != 1 or any(a in ("-m", "--multirun") for a in overrides):
        raise ConfigError("overrides", " ".join(overrides), "the overrides of one config (no sweep, no --cfg)")
    config = configs[0]
    from moonprop.evaluation import evaluate, from_checkpoint, from_model

    uri = resolve_uri(config.tracking.uri)
    network = from_checkpoint(given["ckpt_path"]) if "ckpt_path" in given else from_model(given["model_uri"], uri)
    recorder = shared()
    recorder.prepare(uri, config.tracking.experiment)
    return network, evaluate(network, config, recorder, shlex.join(redact(a) for a in command)), config


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def exit_now(code: int) -> None:
    """Exit without the interpreter's teardown, which spends about a second unloading torch and
    Lightning; by now the recorder has written and closed everything."""
    close_shared()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
