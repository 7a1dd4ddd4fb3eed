"""MLflow: where runs are stored and how one is opened, written and closed.

No torch or Lightning here: the CLI uses this module to create the store before any job starts.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
import tempfile
import time
import traceback
import uuid
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT, MLFLOW_LOGGED_IMAGES, MLFLOW_PARENT_RUN_ID
from omegaconf import OmegaConf
from PIL import Image

from moonprop.config import Config

OUTPUTS = Path("outputs")


def resolve_uri(uri: str | None) -> str:
    """The tracking URI; None is the embedded SQLite store under outputs/ (MLflow 3 refuses the
    plain folder store)."""
    return uri or f"sqlite:///{(OUTPUTS / 'mlflow.db').resolve()}"


def redact(uri: str) -> str:
    """The URI without credentials: `http://user:secret@host` -> `http://***@host`."""
    return re.sub(r"(?<=://)[^/@]+@", "***@", uri)


def get_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, created if needed (safe against a parallel job creating it too)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    if uri.startswith("sqlite:"):  # keep artifacts beside the default store, not in ./mlruns
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def flatten(cfg: Config) -> dict[str, str]:
    """Every resolved config value under its dotted key, credentials redacted."""
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}{k}.", v)
        else:
            out[prefix[:-1]] = str(node)

    walk("", asdict(cfg))
    if cfg.tracking.uri:
        out["tracking.uri"] = redact(cfg.tracking.uri)
    return out


def git_commit() -> str | None:
    """The commit of the moonprop checkout this code runs from; None for an installed wheel."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


class Run:
    """One MLflow run: its client, its id, and the metrics and images waiting to be sent.

    Sending is batched: a `log_metric` call costs ~10 ms on SQLite and `log_image` 16-25 ms (two
    uploads and a tag each time), while one `log_batch` and one `log_artifacts` a second cost
    about as much as one of those calls.
    """

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.id = client, run_id
        self._pending: list[Metric] = []
        self._images = Path(tempfile.mkdtemp(prefix="moonprop-images-"))
        self._images_logged = False
        self._last_flush = time.monotonic()

    def log_image(self, image: Image.Image, key: str, step: int) -> None:
        """Stage an image as MLflow's `log_image(key=..., step=...)` names it, which is what the
        UI's image grid and its step slider read: `images/<key, / as ~>+step+<step>+timestamp+
        <ms>+<uuid>.png` and a `+compressed.webp` thumbnail beside it. Ours is lossless: smaller
        than MLflow's upscaled lossy one for these flat-coloured pictures, and 10x faster."""
        stem = f"{key.replace('/', '~')}+step+{step}+timestamp+{int(time.time() * 1000)}+{uuid.uuid4()}"
        image.save(self._images / f"{stem}.png", compress_level=6)
        image.save(self._images / f"{stem}+compressed.webp", lossless=True, quality=0, method=0)

    def log_metrics(self, metrics: dict[str, float], step: int, flush_every_s: float = 1.0) -> None:
        now = int(time.time() * 1000)
        self._pending += [Metric(k, float(v), now, step) for k, v in metrics.items()]
        if time.monotonic() - self._last_flush >= flush_every_s:
            self.flush()

    def flush(self) -> None:
        """Send what is waiting: metrics in one batch, staged images in one upload."""
        for i in range(0, len(self._pending), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.id, metrics=self._pending[i:i + 1000])
        self._pending.clear()
        staged = list(self._images.iterdir())
        if staged:
            self.client.log_artifacts(self.id, str(self._images), "images")
            for f in staged:
                f.unlink()
            if not self._images_logged:  # the tag that makes the UI look for images at all
                self.client.set_tag(self.id, MLFLOW_LOGGED_IMAGES, "True")
                self._images_logged = True
        self._last_flush = time.monotonic()

    def close(self) -> None:
        shutil.rmtree(self._images, ignore_errors=True)


@contextlib.contextmanager
def start_run(cfg: Config, overrides: list[str] | None = None, tags: dict[str, str] | None = None,
              parent_run_id: str | None = None) -> Iterator[Run]:
    """Open a run with the config as params and close it FINISHED, FAILED (error recorded) or
    KILLED (Ctrl-C, SIGTERM), never leaving it RUNNING."""
    uri = resolve_uri(cfg.tracking.uri)
    client = MlflowClient(tracking_uri=uri)
    experiment_id = get_experiment(client, cfg.tracking.experiment, uri)
    all_tags = {k: v for k, v in (tags or {}).items()}
    if commit := git_commit():
        all_tags[MLFLOW_GIT_COMMIT] = commit
    if parent_run_id:
        all_tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
    run_info = client.create_run(experiment_id, run_name=cfg.tracking.run_name, tags=all_tags).info
    run = Run(client, run_info.run_id)
    try:
        client.log_batch(run.id, params=[Param(k, v) for k, v in flatten(cfg).items()])
        client.log_text(run.id, OmegaConf.to_yaml(OmegaConf.structured(cfg)), "config.yaml")
        client.log_text(run.id, OmegaConf.to_yaml(list(overrides or [])), "overrides.yaml")
        yield run
        run.flush()
    except BaseException as e:
        # Ctrl-C and SIGTERM (Lightning's SIGTERMException is a SystemExit) end a run KILLED.
        status = "KILLED" if isinstance(e, (KeyboardInterrupt, SystemExit)) else "FAILED"
        with contextlib.suppress(Exception):  # the store itself may be what failed
            run.flush()  # what was recorded up to the fault is kept
            client.set_tag(run.id, "error", f"{type(e).__name__}: {e}"[:5000])
            client.log_text(run.id, traceback.format_exc(), "error.txt")
        client.set_terminated(run.id, status)
        raise
    else:
        client.set_terminated(run.id, "FINISHED")
    finally:
        run.close()
