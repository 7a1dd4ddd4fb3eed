"""What a run needs outside its config, checked before anything starts: folders it can write, a
store this MLflow can open, a tracking server that lets it write, a checkpoint it may continue, a
GPU, and Lightning's own Trainer arguments and loggers, made as a run makes them. No schema can
know these; preflight.py asks them of every distinct job of a command line.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.metadata
import importlib.util
import inspect
import json
import os
import re
import sqlite3
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from moonprop.config import (
    RECORD_LOGGER,
    TRAINER_DEFAULTS,
    Config,
    ConfigError,
    check_same_params,
    first_line,
    params,
    recorded,
    redact,
    resolve_uri,
)
from moonprop.jobs import CHECKPOINT_TAG

SERVER_TIMEOUT_S = 5
SHIPPED_LOGGERS = {RECORD_LOGGER: {"_target_": "moonprop.loggers.MlflowRecord"}}  # conf/logger/mlflow.yaml


def writable(path: Path) -> bool:
    """Whether `path` (a folder, existing or not) could be created and written, creating nothing.

    os.access alone says yes to root on a read-only file system, so a temporary file is tried.
    """
    existing = path.absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        return False
    try:
        with tempfile.TemporaryFile(dir=existing):
            return True
    except OSError:
        return False


def check_server(uri: str, experiment: str) -> None:
    """Fail fast on an unreachable tracking server (MLflow's own retries take about 4 minutes), and
    on one with authentication (`mlflow server --app-name basic-auth`) that refuses these
    credentials, or lets them only read `experiment`: each is one line before anything starts,
    where it would otherwise be a failed run, or a sweep's parent, after Hydra has begun."""
    base = re.sub(r"(?<=://)[^/@]+@", "", uri).rstrip("/")  # /health asks for no credentials
    try:
        with urllib.request.urlopen(base + "/health", timeout=SERVER_TIMEOUT_S):
            pass
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ConfigError("tracking.uri", redact(uri), f"a reachable MLflow server ({reason})") from None
    user, headers = credentials(uri)
    who = user or "no credentials"
    status, found = _get(f"{base}/api/2.0/mlflow/experiments/get-by-name?"
                         f"{urllib.parse.urlencode({'experiment_name': experiment})}", headers)
    if status == 401:
        said = f"these credentials ({user})" if user else "no credentials: set MLFLOW_TRACKING_USERNAME and " \
                                                          "MLFLOW_TRACKING_PASSWORD"
        raise ConfigError("tracking.uri", redact(uri), f"the tracking server refused {said}: 401")
    if status == 403:
        raise ConfigError("tracking.experiment", experiment, f"an experiment {who} may write to: the tracking "
                                                             f"server refused to let {who} read it (403)")
    if status != 200 or not isinstance(found, dict):  # a new experiment: its creator manages it
        return
    experiment_id = found.get("experiment", {}).get("experiment_id")
    status, mine = _get(f"{base}/api/3.0/mlflow/users/current/permissions", headers)  # basic-auth's only
    if status != 200 or not isinstance(mine, dict) or mine.get("is_admin"):
        return
    granted = {p["permission"] for p in mine.get("permissions", [])
               if p.get("resource_type") == "experiment" and p.get("resource_pattern") in (experiment_id, "*")}
    if granted and granted <= {"READ", "NO_PERMISSIONS"}:
        raise ConfigError("tracking.experiment", experiment, f"an experiment {who} may write to: the tracking "
                                                             f"server lets {who} only {' and '.join(sorted(granted))} "
                                                             f"it and refuses its runs (403); ask its admin for EDIT")


def credentials(uri: str) -> tuple[str | None, dict[str, str]]:
    """Whom MLflow's client will say it is to a tracking server, and the header that says it: its
    own variables (MLFLOW_TRACKING_USERNAME and _PASSWORD, or MLFLOW_TRACKING_TOKEN), else the
    URI's `user:password@`."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or None  # empty is unset, as MLflow reads it
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user is None and (given := urllib.parse.urlsplit(uri)).username:
        user, password = urllib.parse.unquote(given.username), urllib.parse.unquote(given.password or "")
    if user is not None:
        token = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
        return user, {"Authorization": f"Basic {token}"}
    if token := os.environ.get("MLFLOW_TRACKING_TOKEN"):
        return "the token of MLFLOW_TRACKING_TOKEN", {"Authorization": f"Bearer {token}"}
    return None, {}


def _get(url: str, headers: dict[str, str]) -> tuple[int, Any]:
    """A GET's status and JSON answer (None where it is not JSON)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=SERVER_TIMEOUT_S) as r:
            status, body = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, body = e.code, e.read()
    except (urllib.error.URLError, OSError):
        return 0, None
    try:
        return status, json.loads(body)
    except ValueError:
        return status, None


def check_resume(config: Config) -> None:
    """A checkpoint to resume must be one of ours, and the settings those it was trained with."""
    if not Path(config.resume).is_file():
        raise ConfigError("resume", config.resume, "the path of an interrupted run's checkpoints/last.ckpt")
    from moonprop.train import checkpoint_state

    try:
        saved = checkpoint_state(config.resume)
    except Exception:
        raise ConfigError("resume", config.resume, "a checkpoint written by moonprop") from None
    check_same_params(saved["params"], params(config), "the run being resumed")
    check_resumable(config, saved)


def check_resumable(config: Config, saved: dict[str, Any]) -> None:
    """A run is written once: only an interrupted run (KILLED) continues, in its own store, and
    only from the step its record has reached (an older checkpoint would write steps twice)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    uri, run_id = resolve_uri(config.tracking.uri), saved["run_id"]
    if run_id is None:  # a run that MLflow did not record (logger=[csv]): nothing to write twice there
        return
    try:
        client = MlflowClient(uri)
        run = client.get_run(run_id)
    except MlflowException:
        raise ConfigError("resume", config.resume, f"a checkpoint of a run in this store, {redact(uri)}: its run "
                                                   f"{run_id} is not there (see tracking.uri)") from None
    name, status = f"{run.info.run_name} ({run_id})", run.info.status
    if status != "KILLED":
        raise ConfigError("resume", config.resume, f"a checkpoint of an interrupted run: its run {name} has ended "
                                                   f"{status}, and a run is written once")
    recorded = max((m.step for m in client.get_metric_history(run_id, "test/acc")), default=-1)
    if recorded > saved.get("step", recorded):
        newest = run.data.tags.get(CHECKPOINT_TAG)
        raise ConfigError("resume", config.resume, f"the run's newest checkpoint{f', {newest}' if newest else ''}: "
                                                   f"its run {name} is recorded to step {recorded}, this checkpoint "
                                                   f"stops at step {saved['step']}")


def check_schema(uri: str, db: Path) -> None:
    """A store a newer MLflow has opened is migrated one way; this MLflow then refuses it with advice
    to upgrade it (`mlflow db upgrade`), which cannot help. Its revisions are the files of MLflow's
    migration folder, read without importing MLflow (which takes a second)."""
    if not db.is_file():
        return
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
            (revision,) = con.execute("SELECT version_num FROM alembic_version").fetchone()
    except (sqlite3.Error, TypeError, ValueError):
        return  # not an MLflow store (yet): MLflow says what it finds
    (package,) = importlib.util.find_spec("mlflow").submodule_search_locations
    known = {f.name.partition("_")[0] for f in Path(package, "store", "db_migrations", "versions").glob("*.py")}
    if revision not in known:
        raise ConfigError("tracking.uri", uri, f"a store MLflow {importlib.metadata.version('mlflow')} can open (a "
                                               f"newer MLflow migrated this one, one way, to schema {revision}: "
                                               "open it with that release, or choose another store)")


def check_environment(config: Config, experiment: str) -> None:
    """What the schema cannot know: the store (or the tracking server, and whether it lets these
    credentials write to `experiment`), the checkpoint to resume, the GPU."""
    uri = config.tracking.uri
    if recorded(config):  # logger=[csv]: no store to check
        if uri is None or uri.startswith("sqlite:"):
            db = Path(resolve_uri(uri).removeprefix("sqlite:///"))
            if not writable(db.parent):
                raise ConfigError("tracking.uri", uri, f"a store in a writable folder ({db.parent} is not)")
            check_schema(resolve_uri(uri), db)
        elif uri.startswith(("http://", "https://")):
            check_server(uri, experiment)
    if config.resume:
        check_resume(config)
    if config.trainer.accelerator == "gpu":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError("trainer.accelerator", "gpu", "auto or cpu: this machine has no GPU")


def check_trainer_names(args: dict[str, Any]) -> None:
    """Each name one of the arguments of Lightning's Trainer, or one line naming the nearest."""
    import difflib
    import inspect

    import pytorch_lightning as pl

    known = [name for name in inspect.signature(pl.Trainer.__init__).parameters if name != "self"]
    for name, value in args.items():
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"trainer.{name}", value, "not an argument of Lightning's Trainer"
                              + (f"; did you mean trainer.{near[0]}?" if near else ""))


def check_trainer(config: Config) -> None:
    """Lightning's own arguments (`trainer.NAME`), against the Trainer's signature, then by the
    Trainer itself, which checks their values (Lightning is imported only for arguments other than
    the shipped defaults: the default run's checks stay light)."""
    args = config.trainer.lightning
    shipped = {k: v for k, v in TRAINER_DEFAULTS.items() if k not in ("accelerator", "threads")}
    if args == shipped:
        return
    check_trainer_names(args)
    from moonprop.train import trainer

    try:
        trainer(config, [])
    except Exception as e:  # Lightning's word on a value, often on several lines
        changed = [name for name in args if args[name] != shipped.get(name, object())]
        name = next((n for n in changed if n in str(e)), changed[0])
        raise ConfigError(f"trainer.{name}", args[name], first_line(e)) from None


def check_loggers(config: Config) -> None:
    """The `logger` group's loggers, made as a run makes them (into a folder of no consequence):
    a missing package (TensorBoard's) or a wrong argument stops the command, not each run. The
    `mlflow` entry must stay moonprop's record, which a run hands its MLflow run. Lightning is
    imported only for loggers other than the shipped record: the default run's checks stay light."""
    if config.logger == SHIPPED_LOGGERS:
        return
    from hydra.utils import get_class

    from moonprop.loggers import MlflowRecord, loggers_of

    if recorded(config):
        key, target = f"logger.{RECORD_LOGGER}", config.logger[RECORD_LOGGER]["_target_"]
        try:
            record = get_class(target)
        except Exception as e:
            raise ConfigError(f"{key}._target_", target, first_line(e)) from None
        if not (isinstance(record, type) and issubclass(record, MlflowRecord)):
            raise ConfigError(f"{key}._target_", target, "moonprop.loggers.MlflowRecord or a subclass: others go "
                                                         "beside it (logger=[mlflow,csv])")
        given = {k: v for k, v in config.logger[RECORD_LOGGER].items() if k != "_target_"}
        try:
            inspect.signature(record).bind(run=None, uri="", save_dir="", experiment_name="", **given)
        except TypeError as e:
            raise ConfigError(key, given, f"{target}'s arguments: {e}") from None
    for name, logger in config.logger.items():
        if name != RECORD_LOGGER:
            with tempfile.TemporaryDirectory() as folder:
                try:
                    loggers_of({name: logger}, Path(folder))
                except Exception as e:  # Hydra's InstantiationException says why in its cause
                    raise ConfigError(f"logger.{name}", logger["_target_"], first_line(e.__cause__ or e)) from None
