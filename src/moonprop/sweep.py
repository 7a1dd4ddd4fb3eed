"""Sweeps: a parent MLflow run per Hydra multirun, every job nested under it, and the answer.

`SweepCallback` is a Hydra callback (conf/config.yaml registers it), so it works the same for
every launcher: it runs in the process that launches, before the first job and after the last.
The MLflow side (summary.py) runs in that process's recorder. Jobs find their parent through a
file in the sweep folder, which every launcher (in-process, joblib workers, SLURM jobs on a
shared file system) can read.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any, NamedTuple

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from moonprop.config import ConfigError, first_line, redact, resolve_uri
from moonprop.jobs import SWEEP_FILE, Launcher, Sweeper, sweep_name, swept_keys
from moonprop.recorder import drain_shared, shared


class _Sweep(NamedTuple):
    """The sweep under way in this process, from its start to its end."""

    uri: str
    parent: str  # the parent run's id
    folder: Path  # hydra.sweep.dir
    launcher: Launcher
    slurm_jobs: Path | None  # submitit's folder of a SLURM sweep's jobs, named by job id


_under_way: _Sweep | None = None


def end_interrupted(signum: int) -> str | None:
    """A sweep stopped by Ctrl-C or SIGTERM: its parent run ends KILLED, not RUNNING forever, and
    so do the runs of jobs that ended with it (joblib's workers, killed with their recorders);
    a SLURM sweep's jobs are cancelled and end their runs KILLED themselves. The line that says how
    to continue it, or None if no sweep was under way."""
    if (under_way := _under_way) is None:
        return None
    _end("KILLED", f"stopped by {signal.Signals(signum).name}")
    return f"sweep {under_way.folder.name} stopped by {signal.Signals(signum).name}; continue with: " \
           f"{how_to_continue(under_way.folder)}"


def end_failed(reason: str) -> str | None:
    """A sweep stopped by an error outside its jobs' training (a launcher that could not submit, a
    sweeper's error, a job that died outside `train`): the parent run ends FAILED with the reason,
    after a summary of the jobs that ran. The sweep's name, or None if no sweep was under way."""
    under_way = _under_way
    if under_way is None:
        return None
    drain_shared()  # in-process jobs: their last runs may still be closing
    text = _end("FAILED", reason, summarise=True)
    if text:
        print(text, file=sys.stderr)
    return f"sweep {under_way.folder.name}"


def _end(status: str, reason: str, summarise: bool = False) -> str:
    global _under_way
    if (under_way := _under_way) is None:
        return ""
    _under_way = None
    if under_way.slurm_jobs is not None:
        cancel_slurm_jobs(under_way.slurm_jobs)
    return shared().call("end_parent", uri=under_way.uri, parent=under_way.parent, status=status, reason=reason,
                         orphans=under_way.launcher is Launcher.JOBLIB,
                         sweep_dir=str(under_way.folder) if summarise else None)


def cancel_slurm_jobs(folder: Path) -> None:
    """Cancel the jobs of an interrupted SLURM sweep, which submitit's launcher leaves running.
    scancel sends SIGTERM: a running job stops at the end of its epoch with a checkpoint, KILLED."""
    ids = sorted({p.name.split("_")[0] for p in folder.glob("*") if p.name.split("_")[0].isdigit()})
    if ids:
        subprocess.run(["scancel", *ids], check=False, timeout=30)


def earlier_sweep(sweep_dir: Path, sweeper: Sweeper, overrides: list[str]) -> str | None:
    """The parent run of the sweep that ran in `sweep_dir` before, which this command continues
    (None for a new folder); a command that would change its jobs is refused in one line."""
    if not (sweep_dir / SWEEP_FILE).is_file():
        return None
    earlier = json.loads((sweep_dir / SWEEP_FILE).read_text())
    if sweeper is Sweeper.SEARCH:  # its study goes on in its storage: the same command in a new folder
        raise ConfigError("hydra.sweep.dir", str(sweep_dir), "a new folder: a search continues its study with the "
                          "same command, not in the folder of an earlier one")
    if earlier.get("overrides", overrides) != overrides:
        raise ConfigError("hydra.sweep.dir", str(sweep_dir), f"the folder of a sweep of the same overrides, to "
                          f"continue it: it holds `{shlex.join(earlier['overrides'])}`, this command gives "
                          f"`{shlex.join(overrides)}` (another sweep takes another folder)")
    return earlier["parent"]


def how_to_continue(sweep_dir: Path) -> str:
    """The command that continues the sweep in `sweep_dir`: this one, in that folder."""
    return shlex.join(["moonprop", *(a for a in sys.argv[1:] if not a.startswith("hydra.sweep.dir=")),
                       f"hydra.sweep.dir={sweep_dir}"])


class SweepCallback(Callback):
    """Opens the sweep's parent run before any job and writes the sweep's answer after the last."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        # Hydra only warns of a callback's error and goes on: jobs would run with no parent to
        # count them, and the sweep exit 0. A sweep that cannot open its parent stops here.
        try:
            self._open(config)
        except ConfigError as e:
            print(f"moonprop: {e}", file=sys.stderr)
            raise SystemExit(2) from None
        except Exception as e:
            print(f"moonprop: the sweep's parent run could not be opened: {type(e).__name__}: {first_line(e)}",
                  file=sys.stderr)
            raise SystemExit(1) from None

    def _open(self, config: DictConfig) -> None:
        global _under_way
        launcher = Launcher.of(config.hydra.launcher)
        uri = resolve_uri(config.tracking.uri, config.hydra.runtime.cwd)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        keys = swept_keys(config)
        overrides = [redact(o) for o in config.hydra.overrides.task]
        earlier = earlier_sweep(sweep_dir, Sweeper.of(config.hydra.sweeper), overrides)
        recorder = shared()  # in-process jobs use it next; other launchers, for the summary
        if earlier:  # the same sweep again in its folder: it goes on
            ticket = recorder.ask("reopen_parent", uri=uri, parent=earlier, jobs=launcher is not Launcher.BATCHED)
        else:
            ticket = recorder.ask("open_parent", uri=uri, experiment=config.tracking.experiment,
                                  name=sweep_name(config, sweep_dir.name), sweep_id=sweep_dir.name, keys=keys,
                                  overrides=" ".join(overrides))
        if launcher.trains_here:
            # The jobs will import Lightning here anyway: do it while the recorder imports MLflow
            # and opens the store on the other core (seconds each).
            import moonprop.train  # noqa: F401
        answer = recorder.answer(ticket)
        parent, jobs = (earlier, answer) if earlier else (answer, {})
        # Hydra's grid and a race give every job its own values; a search may give two trials the same ones
        numbered = Sweeper.of(config.hydra.sweeper) not in (Sweeper.GRID, Sweeper.RACE)
        (sweep_dir / SWEEP_FILE).write_text(json.dumps({"parent": parent, "keys": keys, "numbered": numbered,
                                                        "within": list(config.sweep.within), "overrides": overrides,
                                                        **jobs}))
        slurm_jobs = Path(str(config.hydra.launcher.submitit_folder)).parent if launcher is Launcher.SLURM else None
        _under_way = _Sweep(uri, parent, sweep_dir, launcher, slurm_jobs)  # submitit_folder: .../%j

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The sweep's summary; a sweep with a failed job exits 1 (SystemExit passes through Hydra's
        callbacks, which only warn of an Exception)."""
        global _under_way
        if _under_way is None:
            return
        if _under_way.launcher is Launcher.JOBLIB:
            # joblib keeps its workers (and their recorders) for 5 idle minutes, holding the
            # terminal's output open: a finished sweep should be finished. reuse=True fetches
            # joblib's own executor as it is (with other arguments loky would replace it by a new
            # one, max_workers=1 never starts a worker only to stop it), and terminate() removes
            # its shared-memory folder too, which would otherwise end in a "leaked folder" warning.
            from joblib.externals.loky import get_reusable_executor

            executor = get_reusable_executor(max_workers=1, reuse=True)
            getattr(executor, "terminate", executor.shutdown)()

        drain_shared()  # in-process jobs: their last runs may still be closing
        try:
            text, failed_jobs = shared().call("close_parent", uri=_under_way.uri, parent=_under_way.parent,
                                              sweep_dir=str(config.hydra.sweep.dir),
                                              registered_model=config.tracking.registered_model)
        except Exception as e:  # Hydra would only warn, and leave the parent RUNNING
            print(f"moonprop: the sweep's summary failed: {first_line(e)}", file=sys.stderr)
            with contextlib.suppress(Exception):
                _end("FAILED", f"summarising the sweep failed: {type(e).__name__}: {first_line(e)}")
            raise SystemExit(1) from None
        print(text, file=sys.stderr)
        _under_way = None
        if failed_jobs:
            raise SystemExit(1)
