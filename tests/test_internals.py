"""What moonprop takes from Hydra's and MLflow's internals (hydra_internals.py, mlflow_internals.py),
checked against the installed releases: a release that changes them fails here, not in a user's run.
(The model folder also loads through mlflow.pytorch, mlflow.pyfunc and `mlflow models serve` in
test_models.py, and the UI's image card reads the images in test_ui.py.)"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from hydra.types import RunMode
from mlflow import MlflowClient
from omegaconf import OmegaConf
from PIL import Image

from moonprop import hydra_internals, mlflow_internals
from moonprop.callbacks import torchscript
from moonprop.cli import APP
from moonprop.logged_model import INPUT_EXAMPLE, SIGNATURE
from moonprop.model import MLP
from moonprop.preflight import app_hydra, parse, sweep_jobs, without_hydra

from .conftest import moonprop


def composed(argv: list[str], mode: RunMode = RunMode.RUN):
    args = hydra_internals.args_parser().parse_args(argv)
    with app_hydra(APP, args) as (hydra, config_name):
        return hydra_internals.compose(hydra, config_name, args.overrides, mode)


# ---- Hydra -----------------------------------------------------------------------------------------

def test_the_arguments_are_read_as_hydra_main_reads_them():
    args = hydra_internals.args_parser().parse_args(["-m", "-cd", "mine", "-cn", "exp", "--cfg", "job", "seed=1"])
    assert (args.multirun, args.config_dir, args.config_name, args.cfg, args.overrides) == \
        (True, "mine", "exp", "job", ["seed=1"])


@pytest.mark.parametrize("overrides", [[], ["schedule=cosine", "seed=3", "model.hidden=[8]"], ["experiment=reference"]])
def test_a_run_is_composed_as_hydra_composes_it(tmp_path, overrides):
    """The config moonprop checks is the one Hydra hands the app: what `--cfg job` prints."""
    printed = moonprop("--cfg", "job", *overrides, cwd=tmp_path).stdout
    assert OmegaConf.to_container(without_hydra(composed(overrides))) == yaml.safe_load(printed)


def test_an_experiment_file_says_it_is_a_sweep():
    args = hydra_internals.args_parser().parse_args(["experiment=seeds"])
    with app_hydra(APP, args) as (hydra, config_name):
        assert hydra_internals.mode_of(hydra, config_name, args.overrides) == RunMode.MULTIRUN


def test_a_grid_sweep_lists_the_jobs_hydra_runs(tmp_path):
    """The jobs moonprop checks are those the sweep runs: each job's folder holds its overrides."""
    argv = ["-m", "data.num_batches=1", "plot.every_n_epochs=1", "seed=0,1", "schedule=linear,cosine"]
    args = hydra_internals.args_parser().parse_args(argv)
    with app_hydra(APP, args) as (hydra, config_name):
        master = hydra_internals.compose(hydra, config_name, args.overrides, RunMode.MULTIRUN)
        assert type(hydra_internals.sweeper_of(hydra, master)).__name__ == "BasicSweeper"
        checked = sweep_jobs(hydra, master)
    assert checked == hydra_internals.grid_jobs(parse(argv[1:]))
    moonprop(*argv, cwd=tmp_path)
    ran = [yaml.safe_load(p.read_text()) for p in sorted(tmp_path.glob("outputs/sweeps/*/*/.hydra/overrides.yaml"),
                                                         key=lambda p: int(p.parent.parent.name))]
    assert ran == checked


# ---- MLflow ----------------------------------------------------------------------------------------

def test_images_are_named_as_mlflows_log_image_names_them(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'm.db'}")
    experiment = client.create_experiment("x", artifact_location=(tmp_path / "art").as_uri())
    run = client.create_run(experiment).info.run_id
    client.log_image(run, Image.new("RGB", (8, 8)), key="test/boundary", step=3, timestamp=1234)
    theirs = sorted(a.path.rpartition("/")[2] for a in client.list_artifacts(run, mlflow_internals.IMAGES))
    ours = sorted(mlflow_internals.image_files("test/boundary", 3, 1234))

    def shape(name: str) -> str:  # the name without its uuid and extension
        return name.replace(name.split("+")[5][:36], "<uuid>").rpartition(".")[0]

    assert [shape(n) for n in theirs] == [shape(n) for n in ours]
    assert [mlflow_internals.image_step(n) for n in theirs] == [None, 3]  # compressed first, then the picture
    assert client.get_run(run).data.tags[mlflow_internals.LOGGED_IMAGES_TAG] == "True"


def test_the_model_folder_is_the_one_mlflow_pytorch_save_model_writes():
    import mlflow.pytorch

    network = MLP([16, 16], torch.Generator().manual_seed(0)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        theirs, ours = Path(tmp, "theirs"), Path(tmp, "ours")
        mlflow.pytorch.save_model(torch.jit.trace(network, torch.zeros(2, 2)), theirs, signature=SIGNATURE,
                                  input_example=INPUT_EXAMPLE, serialization_format="pickle",
                                  pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
        mlflow_internals.save_torchscript(ours, torchscript(network), str(torch.__version__), "run", "m-1",
                                          SIGNATURE, INPUT_EXAMPLE)
        files = sorted(str(p.relative_to(theirs)) for p in theirs.rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(ours)) for p in ours.rglob("*") if p.is_file())
        for name in files:
            if name == "MLmodel":  # what a logged model adds, and what differs every time
                volatile = {"artifact_path", "run_id", "model_id", "model_uuid", "utc_time_created", "model_size_bytes"}
                mine, reference = (yaml.safe_load((folder / name).read_text()) for folder in (ours, theirs))
                assert {k: v for k, v in mine.items() if k not in volatile} == \
                    {k: v for k, v in reference.items() if k not in volatile}
            elif not name.endswith(".pth"):
                assert (ours / name).read_text() == (theirs / name).read_text(), name
        loaded = mlflow.pytorch.load_model(str(ours))
        points = torch.from_numpy(INPUT_EXAMPLE)
        assert torch.equal(loaded(points), network(points).detach())


def test_the_supported_releases_are_the_installed_ones():
    """pyproject.toml's ranges for the libraries whose internals moonprop uses hold what CI tests."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    ranges = {(r := Requirement(line)).name: r.specifier for line in requires("moonprop") if ";" not in line}
    for name in ("mlflow", "hydra-core"):
        assert version(name) in ranges[name], f"{name} {version(name)} is outside pyproject.toml's {ranges[name]}"
        assert any(spec.operator == "<" for spec in ranges[name]), f"{name} needs an upper bound"


def test_the_schema_check_knows_the_revision_a_fresh_store_is_at(tmp_path):
    """environment.check_schema reads MLflow's migration folder: a release that moved it would make
    every store look newer, and a release whose store it takes for newer would be refused."""
    from moonprop.environment import check_schema

    store = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").search_experiments()
    check_schema(f"sqlite:///{store}", store)  # the installed MLflow's own head: accepted
