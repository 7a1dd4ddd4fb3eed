"""What moonprop writes in MLflow's own layouts, and the private MLflow names it uses: all here.

Two things a run records are written the way MLflow's own calls write them, because those calls
cost a run too much:

- **Per-epoch images**: MLflow's UI finds a run's image card and its step slider by artifact
  names (`images/<key, / as ~>+step+<step>+timestamp+<ms>+<uuid>` and a `+compressed` twin) and
  by the run tag `mlflow.loggedImages`. `MlflowClient.log_image(run_id, image, key, step)` makes
  two uploads and sets a tag for each image (seconds a default run, in the recorder, which then
  finishes after the trainer: docs/internals.md) and a 256 px lossy thumbnail that blurs the text.
  moonprop writes both files as one lossless WebP, in batches (tracking.RunWriter).
- **The model folder**: `mlflow.pytorch.save_model` needs torch, which the recorder does not import
  (seconds and ~200 MB, docs/internals.md: on a fresh store the recorder is a run's critical path, and a run's peak
  memory would pass 800 MB). `save_torchscript` writes the same folder from TorchScript bytes,
  with MLflow's own `Model` and `pyfunc.add_to_model`, and three private helpers for the input
  example and the two environment files.

A third is MLflow's system-metrics monitor, which only `mlflow.start_run(log_system_metrics=True)`
starts: moonprop's runs are written with MlflowClient, so it starts the same monitor itself, and at
the run's end publishes the sample the monitor would drop (a run of a few seconds may end before
its first is published).

What would break: a release that renames the private helpers fails on import; one that changes
the layouts leaves the UI without the image card, or a model that does not load. tests/test_internals.py
checks both against the installed MLflow (the names `log_image` gives, the folder `save_model`
writes, the folder loaded by `mlflow.pytorch`, `mlflow.pyfunc` and `mlflow models serve`), and
pyproject.toml keeps mlflow below its next minor release.
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import numpy as np
import yaml
from mlflow import pyfunc
from mlflow.models import Model, ModelSignature
from mlflow.models.utils import _save_example
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
from mlflow.utils.environment import _mlflow_conda_env, _PythonEnv
from mlflow.utils.mlflow_tags import MLFLOW_LOGGED_IMAGES

IMAGES = "images"  # the artifact folder of a run's per-epoch images
LOGGED_IMAGES_TAG = MLFLOW_LOGGED_IMAGES  # set once a run has images: the UI then looks for them
_IMAGE = re.compile(r"(?P<key>[^+]+)\+step\+(?P<step>\d+)\+timestamp\+(?P<ms>\d+)\+(?P<uuid>[0-9a-f-]{36})"
                    r"(?P<compressed>\+compressed)?\.(?P<ext>\w+)")


def image_files(key: str, step: int, timestamp_ms: int, ext: str = "webp") -> tuple[str, str]:
    """The names, in IMAGES, of an image of `key` at `step`: the picture and the one the card shows."""
    stem = f"{key.replace('/', '~')}+step+{step}+timestamp+{timestamp_ms}+{uuid.uuid4()}"
    return f"{stem}.{ext}", f"{stem}+compressed.{ext}"


def image_step(name: str) -> int | None:
    """The step of a picture named as image_files names it (None for its `+compressed` twin)."""
    found = _IMAGE.fullmatch(name)
    return int(found["step"]) if found and not found["compressed"] else None


def save_torchscript(path: Path, torchscript: bytes, torch_version: str, run_id: str, model_id: str,
                     signature: ModelSignature, input_example: np.ndarray) -> None:
    """The folder `mlflow.pytorch.save_model(scripted, path, signature=signature, input_example=
    input_example, pip_requirements=[torch==...])` writes: MLmodel with the pytorch and
    python_function flavours, data/model.pth, the environment, the input example."""
    data = path / "data"
    data.mkdir(parents=True)
    (data / "model.pth").write_bytes(torchscript)  # what torch.jit.ScriptModule.save writes
    (data / "pickle_module_info.txt").write_text("mlflow.pytorch.pickle_module")
    model = Model(artifact_path=f"models:/{model_id}", run_id=run_id, signature=signature, model_id=model_id)
    model.add_flavor("pytorch", model_data="data", pytorch_version=str(torch_version), code=None)
    pyfunc.add_to_model(model, loader_module="mlflow.pytorch", data="data",
                        pickle_module_name="mlflow.pytorch.pickle_module", code=None, conda_env="conda.yaml",
                        python_env="python_env.yaml", model_config={"device": None})
    _save_example(model, input_example, str(path))
    # given, not inferred: MLflow's inference loads the model in a subprocess (seconds)
    requirements = [f"mlflow=={model.mlflow_version}", f"torch=={torch_version.split('+')[0]}"]
    (path / "requirements.txt").write_text("\n".join(requirements))
    (path / "conda.yaml").write_text(yaml.safe_dump(_mlflow_conda_env(additional_pip_deps=requirements[1:]),
                                                    default_flow_style=False))
    _PythonEnv.current().to_yaml(str(path / "python_env.yaml"))
    model.model_size_bytes = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    model.save(str(path / "MLmodel"))


def start_system_metrics(run_id: str, uri: str, resumed: bool) -> SystemMetricsMonitor:
    """MLflow's monitor of the machine's CPU, memory, disk and network for `run_id`, as
    `mlflow.start_run(log_system_metrics=True)` starts it, a sample a second (these runs take
    seconds) unless MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL says otherwise."""
    monitor = SystemMetricsMonitor(run_id, sampling_interval=1.0, resume_logging=resumed, tracking_uri=uri)
    monitor.start()
    return monitor


def finish_system_metrics(monitor: SystemMetricsMonitor) -> None:
    """Stop the monitor, and publish the sample it took since its last one, which it would drop."""
    monitor.finish()
    if last := monitor.aggregate_metrics():
        monitor.publish_metrics(last)
        monitor.mlflow_logger.flush()
