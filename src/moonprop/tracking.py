"""MLflow: the store, and one run written through MlflowClient.

This module runs in the recorder process (recorder.py), beside training, so that importing MLflow,
creating the store and every write overlap with Lightning's start-up and the training steps.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import getpass
import json
import shutil
import subprocess
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunTag, SourceType
from mlflow.environment_variables import MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING
from mlflow.exceptions import MlflowException
from mlflow.utils.mlflow_tags import (
    MLFLOW_DATASET_CONTEXT,
    MLFLOW_GIT_COMMIT,
    MLFLOW_PARENT_RUN_ID,
    MLFLOW_SOURCE_NAME,
    MLFLOW_SOURCE_TYPE,
    MLFLOW_USER,
)
from PIL import Image

from moonprop import logged_model, plot
from moonprop.mlflow_internals import (
    IMAGES,
    LOGGED_IMAGES_TAG,
    finish_system_metrics,
    image_files,
    image_step,
    start_system_metrics,
)

FLUSH_EVERY_S = 1.0  # the UI sees a live run at most a second late
EXPERIMENT_KIND = "mlflow.experimentKind"


def get_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, created if needed (safe against a parallel job creating it too)."""
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = None
    if uri.startswith("sqlite:"):  # keep artifacts beside the default store, not in ./mlruns
        artifacts = (Path(uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    try:
        # MLflow's classification of an experiment; its UI reads it where the GenAI / model-training
        # toggle is off (3.17 shows the toggle: open with ?workflowType=machine_learning, docs/record.md)
        kind = {EXPERIMENT_KIND: "custom_model_development"}
        return client.create_experiment(name, artifact_location=artifacts, tags=kind)
    except MlflowException:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


def local_artifact_dir(artifact_uri: str) -> Path | None:
    """The run's artifact folder if it is on this machine's file system (a `file:` URI or a plain
    path, as a SQLite store's default artifact location is), else None."""
    parsed = urllib.parse.urlparse(artifact_uri)
    if parsed.scheme == "file" or not parsed.scheme:
        return Path(urllib.request.url2pathname(parsed.path))
    return None


@functools.cache  # once per process: `git` is a fork and an exec, and a sweep's runs share the commit
def git_commit() -> str | None:
    """The commit of the moonprop checkout this code runs from; None for an installed wheel."""
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


class RunWriter:
    """One MLflow run, written in batches: a `log_metric` call is a transaction on SQLite and MLflow's
    `log_image` two uploads and a tag, while one `log_batch` a second costs
    about as much as one of those calls. Files go straight into a local artifact store, or are
    uploaded in one `log_artifacts` a second."""

    def __init__(self, client: MlflowClient, run_id: str, name: str, artifact_uri: str) -> None:
        self.client, self.id, self.name = client, run_id, name
        self._pending: list[Metric] = []
        # Files are written where MLflow's local artifact store would copy them to, or staged in a
        # temporary folder and uploaded a second at a time (a tracking server, a bucket).
        self._local = local_artifact_dir(artifact_uri)
        self._staging = self._local or Path(tempfile.mkdtemp(prefix="moonprop-"))
        (self._staging / IMAGES).mkdir(parents=True, exist_ok=True)
        self._images_tagged = False
        self._last_flush = time.monotonic()
        self.flush_every = FLUSH_EVERY_S  # a recorder writing many runs at once spaces them out
        # what the animation needs: the GIF so far, the test curves so far, the last boundary
        self.animation = plot.Animation()
        self.frame_steps: set[int] = set()
        self.num_epochs = 0
        self.last_image: Image.Image | None = None
        self.last_frame = -1  # the step of the animation's latest frame
        self.network: tuple[bytes, str, int] | None = None  # TorchScript, torch's version, the last step
        self.registered_model: str | None = None
        self.test_set: tuple[str, str] | None = None  # the test set's dataset name and digest
        self.curves: dict[str, list[float]] = {"test/acc": [], "test/loss": []}
        self.model_id: str | None = None  # once logged
        self.system_metrics: Any = None  # MLflow's SystemMetricsMonitor, when asked for
        # the run's experiment, params and latest test metrics, for its model (None: read them back)
        self.known: tuple[str, dict[str, str], dict[str, Metric]] | None = None

    @classmethod
    def open(cls, uri: str, experiment: str, run_name: str | None, params: dict[str, str],
             tags: dict[str, str], texts: dict[str, str], parent_run_id: str | None = None,
             resume_run_id: str | None = None, num_epochs: int = 0, plot_every: int = 1,
             start_time_ms: int | None = None, datasets: list[dict[str, Any]] | None = None,
             registered_model: str | None = None, system_metrics: bool = False) -> RunWriter:
        """Start a run with its params, tags, texts and dataset inputs, its source (the command as
        the tag `mlflow.source.name`, else `moonprop`; the user; the git commit) and its start
        time when training began (a fresh store takes seconds to open); or reopen `resume_run_id`,
        whose params are already there, with its curves and pictures so far for the animation. A
        finished run's network is logged as its MLflow model, registered under `registered_model`
        if given. With `system_metrics` (or MLflow's MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING), MLflow's
        own monitor records the machine's CPU, memory, disk and network beside the run."""
        client, experiment_id = prepare(uri, experiment)
        if resume_run_id:
            client.update_run(resume_run_id, status="RUNNING")
            with contextlib.suppress(MlflowException):  # the interruption is over; error.txt stays
                client.delete_tag(resume_run_id, "error")
            info = client.get_run(resume_run_id).info
        else:
            # what MLflow's fluent API records of a run's source, so that the UI's Source and User fill in
            tags = {MLFLOW_SOURCE_NAME: "moonprop", MLFLOW_SOURCE_TYPE: SourceType.to_string(SourceType.LOCAL),
                    MLFLOW_USER: getpass.getuser(), **tags}
            if commit := git_commit():
                tags[MLFLOW_GIT_COMMIT] = commit
            if parent_run_id:
                tags[MLFLOW_PARENT_RUN_ID] = parent_run_id
            info = client.create_run(experiment_id, run_name=run_name, tags=tags, start_time=start_time_ms).info
        writer = cls(client, info.run_id, info.run_name, info.artifact_uri)
        writer.known = None if resume_run_id else (experiment_id, params, {})  # what its model needs
        writer.num_epochs, writer.frame_steps = num_epochs, plot.animation_steps(num_epochs, plot_every)
        writer.registered_model, writer.test_set = registered_model, _test_set(datasets)
        if system_metrics or MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.get():
            writer.system_metrics = start_system_metrics(info.run_id, uri, resumed=bool(resume_run_id))
        if resume_run_id:
            writer._reload()
            return writer
        try:
            client.log_batch(info.run_id, params=[Param(k, v) for k, v in params.items()])
            if datasets:
                log_inputs(client, info.run_id, [_dataset_input(d) for d in datasets])
            for name, text in texts.items():
                client.log_text(info.run_id, text, name)
        except Exception as e:  # the run exists: it must not stay RUNNING
            with contextlib.suppress(Exception):
                client.set_tag(info.run_id, "error", f"opening the run failed: {type(e).__name__}: {e}"[:5000])
                client.set_terminated(info.run_id, "FAILED")
            raise
        return writer

    def _reload(self) -> None:
        """The test curves and boundary images recorded before an interruption."""
        for key, curve in self.curves.items():
            history = sorted(self.client.get_metric_history(self.id, key), key=lambda m: m.step)
            curve += [m.value for m in history]
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(self.client.download_artifacts(self.id, IMAGES, tmp))
            pictures = sorted((step, path) for path in local.iterdir() if (step := image_step(path.name)) is not None)
            for step, path in pictures:
                if step in self.frame_steps:
                    image = Image.open(path)
                    image.load()
                    self.animation.add(plot.animation_frame(image, self.curves["test/acc"][:step + 1],
                                                            self.curves["test/loss"][:step + 1], self.num_epochs))

    def log_metrics(self, metrics: dict[str, float], step: int, timestamp_ms: int) -> None:
        new = [Metric(k, float(v), timestamp_ms, step) for k, v in metrics.items()]
        self._pending += new
        if self.known is not None:  # the latest test metrics: the model's, once the run ends
            self.known[2].update((m.key, m) for m in new if m.key in self.curves)
        for key, curve in self.curves.items():
            if key in metrics:
                curve.append(float(metrics[key]))
        self._maybe_flush()

    def log_image(self, image: Image.Image, key: str, step: int, encoded: bytes | None = None) -> None:
        """Stage an image as MLflow's `log_image(key=..., step=...)` names it, which is what the
        UI's image card and its step slider read (mlflow_internals.image_files). The card and its
        expand dialog show the compressed one at its natural size, a click the other: both are the
        whole picture, encoded once as lossless WebP (`encoded`, when the trainer had the time to
        do it), where MLflow's own 256 px lossy thumbnail would blur the text."""
        data = encoded or plot.webp(image)
        for name in image_files(key, step, int(time.time() * 1000)):
            (self._staging / IMAGES / name).write_bytes(data)
        self.last_image = image
        if step in self.frame_steps:
            self._frame(image, step)
        self._maybe_flush()

    def log_picture(self, image: Image.Image, name: str) -> None:
        """A picture as the run's artifact `name` (a PNG)."""
        image.save(self._staging / name, compress_level=6)
        self._maybe_flush()

    def set_tags(self, tags: dict[str, str]) -> None:
        self.client.log_batch(self.id, tags=[RunTag(k, v) for k, v in tags.items()])

    def _frame(self, image: Image.Image, step: int) -> None:
        self.animation.add(plot.animation_frame(image, self.curves["test/acc"], self.curves["test/loss"],
                                                self.num_epochs))
        self.last_frame = step

    def log_model(self, torchscript: bytes, torch_version: str, step: int) -> None:
        """The trained network after `step` epochs, logged as the run's MLflow model when the run
        finishes."""
        self.network = (torchscript, torch_version, step)

    def log_final_pictures(self) -> None:
        """The last boundary as `boundary.png`, and the whole run as `training.gif` (its last
        frame the last boundary, where a callback stopped the training early)."""
        if self.last_image is not None and self.network and self.last_frame != self.network[2]:
            self._frame(self.last_image, self.network[2])
        if self.last_image is not None:
            self.last_image.save(self._staging / "boundary.png", compress_level=6)
            self.animation.save(str(self._staging / "training.gif"))

    def _maybe_flush(self) -> None:
        if time.monotonic() - self._last_flush >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        """Send what is waiting: metrics in one batch, staged files in one upload."""
        for i in range(0, len(self._pending), 1000):  # MLflow takes at most 1000 metrics a call
            self.client.log_batch(self.id, metrics=self._pending[i:i + 1000])
        self._pending.clear()
        new_images = not self._images_tagged and any((self._staging / IMAGES).iterdir())
        if self._local is None and (staged := [p for p in self._staging.rglob("*") if p.is_file()]):
            self.client.log_artifacts(self.id, str(self._staging))
            for p in staged:
                p.unlink()
        if new_images:
            self.client.set_tag(self.id, LOGGED_IMAGES_TAG, "True")  # the UI looks for images
            self._images_tagged = True
        self._last_flush = time.monotonic()

    def close(self, status: str, error: str | None = None, details: str | None = None) -> None:
        """Flush and end the run FINISHED (its model logged), FAILED or KILLED; an error is kept as
        a tag and a file. A finished run whose record cannot be completed ends FAILED."""
        try:
            with contextlib.ExitStack() as stack:
                if status != "FINISHED":  # keep what can be kept; the store may be what failed
                    stack.enter_context(contextlib.suppress(Exception))
                if self.system_metrics is not None:
                    finish_system_metrics(self.system_metrics)
                self.flush()
                if status == "FINISHED" and self.network:
                    self.model_id = logged_model.log(self.client, self.id, *self.network,
                                     test_set=self.test_set, registered_model=self.registered_model,
                                     known=self.known)
                if error:
                    self.client.set_tag(self.id, "error", error[:5000])
                if details:
                    self.client.log_text(self.id, details, "error.txt")
            self.client.set_terminated(self.id, status)
        except Exception as e:
            with contextlib.suppress(Exception):  # never RUNNING forever
                self.client.set_tag(self.id, "error", f"recording the run failed: {type(e).__name__}: {e}"[:5000])
                self.client.set_terminated(self.id, "FAILED")
            raise
        finally:
            if self._local is None:
                shutil.rmtree(self._staging, ignore_errors=True)


def _test_set(datasets: list[dict[str, Any]] | None) -> tuple[str, str] | None:
    return next(((d["name"], d["digest"]) for d in datasets or [] if d["context"] == "test"), None)


def log_inputs(client: MlflowClient, run_id: str, datasets: list[DatasetInput], tries: int = 5) -> None:
    """The run's dataset inputs. Parallel runs logging the same dataset race in MLflow's store,
    which looks a dataset up and then inserts it: the loser's insert breaks the unique constraint,
    and a second try finds the winner's row."""
    for attempt in range(tries):
        try:
            client.log_inputs(run_id, datasets=datasets)
            return
        except MlflowException:
            if attempt == tries - 1:
                raise
            time.sleep(0.05 * (attempt + 1))


def _dataset_input(spec: dict[str, Any]) -> DatasetInput:
    """A dataset as MLflow records it: its source a code source whose tags say how to draw it."""
    dataset = Dataset(name=spec["name"], digest=spec["digest"], source_type="code",
                      source=json.dumps({"tags": spec["source"]}))
    return DatasetInput(dataset, tags=[InputTag(MLFLOW_DATASET_CONTEXT, spec["context"])])


@contextlib.contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Hold an exclusive lock beside a SQLite store while opening it: processes that create one
    file at once race in MLflow's schema migration (16 of 16 failed here, the file ruined)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def prepare(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client on the store and the experiment's id, both created if they do not exist yet."""
    with store_lock(uri):
        client = MlflowClient(tracking_uri=uri)
        return client, get_experiment(client, experiment, uri)
