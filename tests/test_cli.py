"""End to end through the real CLI into a real SQLite store in a scratch folder."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from .conftest import default_store, epoch_images, moonprop


def test_short_run_records_everything(workdir):
    proc = moonprop("data.num_batches=5", "tracking.run_name=short", cwd=workdir)
    # not a terminal: no progress bar, one line for the run
    assert "moonprop: run short FINISHED: val acc" in proc.stderr and "it/s" not in proc.stderr
    client = default_store(workdir)
    (run,) = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    assert run.info.status == "FINISHED" and run.info.end_time and run.info.run_name == "short"

    for key in ("test/acc", "test/loss"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2, 3, 4, 5]
    # honest numbers: accuracy the exact ratio of 1000 test points, losses the shortest decimal of
    # their float32, and the run's time span covers every metric it recorded
    history = client.get_metric_history(run.info.run_id, "test/acc")
    assert all(m.value * 1000 == round(m.value * 1000) and len(repr(m.value)) <= 5 for m in history)
    for m in client.get_metric_history(run.info.run_id, "test/loss") + client.get_metric_history(
            run.info.run_id, "train/loss"):
        assert repr(m.value) == str(np.float32(m.value))
    stamps = [m.timestamp for key in ("test/acc", "train/loss")
              for m in client.get_metric_history(run.info.run_id, key)]
    assert run.info.start_time <= min(stamps) and max(stamps) <= run.info.end_time
    for key in ("train/loss", "lr"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2, 3, 4, 5]
    lrs = [m.value for m in client.get_metric_history(run.info.run_id, "lr")]
    assert lrs == pytest.approx([1.0 - 0.9 * k / 5 for k in range(5)])  # the rate each step was taken at

    params = run.data.params
    assert params["data.num_batches"] == "5" and params["model.hidden"] == "[16, 16]"
    assert params["schedule.name"] == "linear" and params["loss.alpha"] == "0.0001"
    assert {"data.batch_size", "data.test_size", "data.noise", "seed", "tracking.experiment",
            "plot.every_n_epochs", "plot.resolution", "trainer.accelerator"} <= params.keys()
    assert run.data.tags["mlflow.loggedImages"] == "True"
    assert run.data.tags["hydra.job.name"] == "moonprop"
    assert (workdir / run.data.tags["hydra.output_dir"] / ".hydra" / "config.yaml").exists()
    assert len(run.data.tags["mlflow.source.git.commit"]) == 40  # this checkout's commit

    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"boundary.png", "training.gif", "config.yaml", "overrides.yaml", "images"} <= names
    images = [a.path for a in client.list_artifacts(run.info.run_id, "images")]
    pngs = sorted(epoch_images(client, run.info.run_id))
    assert len(pngs) == 6 and len([p for p in images if p.endswith("+compressed.webp")]) == 6
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in pngs) == [0, 1, 2, 3, 4, 5]
    assert all(p.startswith("images/test~boundary+step+") for p in pngs)

    local = client.download_artifacts(run.info.run_id, "", str(workdir / "dl"))
    gif = Image.open(f"{local}/training.gif")
    assert gif.n_frames == 6 and gif.width == 480
    assert Image.open(f"{local}/boundary.png").size == (480, 300)
    assert "data.num_batches=5" in open(f"{local}/overrides.yaml").read()
    # the network, as the run's MLflow model (tests/test_models.py has the rest)
    import mlflow.pytorch

    model = client.get_logged_model(client.get_run(run.info.run_id).outputs.model_outputs[0].model_id)
    net = mlflow.pytorch.load_model(model.artifact_location)
    assert sum(p.numel() for p in net.parameters()) == 337
    assert net(torch.zeros(4, 2)).shape == (4,)


def test_plot_every_n_epochs_keeps_first_and_last(workdir):
    moonprop("data.num_batches=7", "plot.every_n_epochs=3", cwd=workdir)
    client = default_store(workdir)
    (run,) = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    pngs = epoch_images(client, run.info.run_id)
    assert sorted(int(p.split("+step+")[1].split("+")[0]) for p in pngs) == [0, 3, 6, 7]


def test_default_experiment_reproduces_the_seed(workdir):
    """The seed's defaults reach >= 0.99 (the Haskell original 0.997) and repeat exactly."""
    histories = []
    for name in ("a", "b"):
        moonprop(f"tracking.run_name={name}", cwd=workdir)
        client = default_store(workdir)
        (run,) = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id],
                                    f"attributes.run_name = '{name}'")
        histories.append([m.value for m in client.get_metric_history(run.info.run_id, "test/acc")])
        histories.append([m.value for m in client.get_metric_history(run.info.run_id, "train/loss")])
    assert len(histories[0]) == 151
    assert histories[0][-1] >= 0.99
    assert histories[0] == histories[2] and histories[1] == histories[3]


def test_installed_wheel_finds_its_configs(tmp_path):
    """Not only from a checkout: a wheel carries conf/ inside the package."""
    import shutil
    import subprocess
    import sys
    import zipfile

    from .conftest import REPO

    source = tmp_path / "source"  # a copy: building in the checkout would leave build/ behind
    for part in ("src", "pyproject.toml", "README.md"):
        copy = shutil.copytree if (REPO / part).is_dir() else shutil.copy
        copy(REPO / part, source / part, **({"ignore": shutil.ignore_patterns("*.egg-info", "__pycache__")}
                                           if (REPO / part).is_dir() else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path), str(source)], check=True, capture_output=True)
    (wheel,) = tmp_path.glob("moonprop-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for conf in ("config.yaml", "schedule/cosine.yaml", "hydra/launcher/slurm.yaml", "hydra/sweeper/search.yaml",
                 "experiment/seeds.yaml"):
        assert f"moonprop/conf/{conf}" in names
    assert "hydra_plugins/moonprop_search/search.py" in names  # the search sweeper, where Hydra looks
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(tmp_path / "site"),
                    str(wheel)], check=True, capture_output=True)
    proc = subprocess.run([sys.executable, "-m", "moonprop", "--cfg", "job", "schedule=cosine"], cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "name: cosine" in proc.stdout
    check = subprocess.run([sys.executable, "-c", "import moonprop; print(moonprop.__file__)"], cwd=tmp_path,
                           env={**os.environ, "PYTHONPATH": str(tmp_path / "site")}, capture_output=True, text=True)
    assert str(tmp_path / "site") in check.stdout  # the installed copy, not the checkout
