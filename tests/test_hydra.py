"""Hydra as Hydra users use it: their own config folders and experiment files, config-file sweeps,
the shipped experiments, and Hydra's own errors as one line. Whatever plain Hydra accepts for this
app (`moonprop.cli.app` called directly) moonprop runs the same way."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from moonprop.config import GROUPS, AdamOptimizer, ConfigError

from .conftest import REPO, check, default_store, moonprop, only_run

EXPERIMENTS = sorted(p.stem for p in (REPO / "src" / "moonprop" / "conf" / "experiment").glob("*.yaml"))


@pytest.fixture
def myconf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's own config folder: a primary config built on moonprop's, an experiment, a sweep."""
    conf = tmp_path_factory.mktemp("myconf")
    (conf / "experiment").mkdir(parents=True)
    (conf / "myexp.yaml").write_text("defaults:\n  - config\n  - _self_\ndata:\n  num_batches: 3\n"
                                     "tracking:\n  run_name: mine\n")
    (conf / "experiment" / "small.yaml").write_text("# @package _global_\ndata:\n  num_batches: 4\n"
                                                    "model:\n  hidden: [8]\ntracking:\n  run_name: small\n")
    (conf / "mysweep.yaml").write_text("defaults:\n  - config\n  - _self_\ndata:\n  num_batches: 2\n"
                                       "hydra:\n  mode: MULTIRUN\n  sweeper:\n    params:\n"
                                       "      data.batch_size: 5,{}\n")
    return conf


def plain_hydra(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The app as plain Hydra runs it: `@hydra.main` without moonprop's checks."""
    return subprocess.run([sys.executable, "-c", "from moonprop.cli import app; app()", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("args", [
    ["-cd", "{conf}", "--config-name", "myexp"],
    ["-cp", "{conf}", "hydra.searchpath=[pkg://moonprop.conf]", "--config-name", "myexp"],  # -cp replaces ours
])
def test_a_users_own_primary_config(workdir, myconf, args):
    args = [a.format(conf=myconf) for a in args]
    assert plain_hydra(*args, "--cfg", "job", cwd=workdir).returncode == 0
    moonprop(*args, cwd=workdir)
    run = only_run(workdir)
    assert run.info.run_name == "mine" and run.data.params["data.num_batches"] == "3"


def test_what_plain_hydra_refuses_is_refused_in_one_line(workdir, myconf):
    """hydra.searchpath extends the search for config groups, never for the primary config."""
    args = [f"hydra.searchpath=[file://{myconf}]", "--config-name", "myexp"]
    assert "Cannot find primary config" in plain_hydra(*args, cwd=workdir).stderr
    proc = moonprop(*args, cwd=workdir, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "--config-name=myexp: Cannot find primary config 'myexp'" in proc.stderr


@pytest.mark.parametrize("args", [
    ["-cd", "{conf}", "experiment=small"],
    ["hydra.searchpath=[file://{conf}]", "experiment=small"],
])
def test_a_users_own_experiment_file(workdir, myconf, args):
    moonprop(*[a.format(conf=myconf) for a in args], cwd=workdir)
    run = only_run(workdir)
    assert run.info.run_name == "small" and run.data.params["model.hidden"] == "[8]"
    assert run.data.params["data.num_batches"] == "4"


def test_appending_a_group_the_config_has_says_how_to_set_it(myconf):
    with pytest.raises(ConfigError, match=r"^invalid config: \+experiment=small: .*experiment=small"):
        check(["-cd", str(myconf), "+experiment=small"])


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_shipped_experiment_composes_and_every_job_validates(name):
    configs = check([f"experiment={name}"])
    assert configs and all(c.data.num_batches > 0 for c in configs)


def test_the_shipped_sweeps_start_without_dash_m(workdir):
    """`experiment=seeds` is a sweep defined in its file (`hydra.mode: MULTIRUN`, `hydra.sweeper.params`),
    with its values taken from the file, one run per seed, nested under one parent."""
    moonprop("experiment=seeds", "data.num_batches=2", "hydra.sweeper.params.seed='3,4'", cwd=workdir)
    client = default_store(workdir)
    runs = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["seed"] for r in jobs) == ["3", "4"]
    assert {r.info.status for r in runs} == {"FINISHED"} and len(runs) == 3


def test_a_bad_value_in_a_config_file_sweep_is_refused_before_anything(workdir, myconf):
    (myconf / "mysweep.yaml").write_text((myconf / "mysweep.yaml").read_text().format(0))
    proc = moonprop("-cd", str(myconf), "--config-name", "mysweep", cwd=workdir, check=False)
    assert proc.returncode == 2 and proc.stderr.strip() == \
        "moonprop: invalid config: data.batch_size=0: a positive integer"
    assert list(workdir.iterdir()) == []


def test_a_config_file_sweep_runs_every_job(workdir, myconf):
    (myconf / "mysweep.yaml").write_text((myconf / "mysweep.yaml").read_text().format(7))
    moonprop("-cd", str(myconf), "--config-name", "mysweep", cwd=workdir)
    client = default_store(workdir)
    runs = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
    assert sorted(r.data.params["data.batch_size"] for r in runs if "mlflow.parentRunId" in r.data.tags) == ["5", "7"]


def test_chdir_records_into_the_store_of_the_folder_moonprop_started_in(workdir):
    moonprop("hydra.job.chdir=true", "data.num_batches=2", cwd=workdir)
    assert [p.relative_to(workdir) for p in workdir.rglob("*.db")] == [Path("outputs/mlflow.db")]
    assert only_run(workdir).info.status == "FINISHED"


def test_schemas_are_not_offered_as_schedules(workdir):
    proc = moonprop("--help", cwd=workdir)
    assert "schedule: constant, cosine, linear, step" in proc.stdout and "_schema" not in proc.stdout
    with pytest.raises(ConfigError, match="one of constant, cosine, linear, step"):
        check(["schedule=linear_schema"])


def test_hydra_types_each_option_by_its_schema_as_it_composes_it(workdir):
    """Each option of the data, optimizer and schedule groups extends its dataclass in Hydra's
    ConfigStore: Hydra's public compose gives it that type and the dataclass's defaults, and plain
    Hydra refuses a wrong type."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    with initialize_config_module("moonprop.conf", version_base="1.3"):
        for group, options in GROUPS.items():
            for name, schema in options.items():
                node = compose("config", [f"{group}={name}"])[group]
                assert OmegaConf.get_type(node) is schema
                assert OmegaConf.to_object(node) == schema()  # the YAML's values are the dataclass's defaults
    proc = plain_hydra("optimizer=adam", "optimizer.eps=abc", "--cfg", "job", cwd=workdir)
    assert proc.returncode == 1 and "Value 'abc' of type 'str' could not be converted to Float" in proc.stderr


def test_an_option_of_ones_own_extends_one_of_moonprops(myconf):
    (myconf / "optimizer").mkdir()
    (myconf / "optimizer" / "slow_adam.yaml").write_text("defaults: [adam, _self_]\neps: 1.0e-6\n")
    (config,) = check(["-cd", str(myconf), "optimizer=slow_adam"])
    assert type(config.optimizer) is AdamOptimizer and config.optimizer.eps == 1e-6
    with pytest.raises(ConfigError, match=r"^invalid config: optimizer.eps=abc: Value 'abc'"):
        check(["-cd", str(myconf), "optimizer=slow_adam", "optimizer.eps=abc"])
    for untyped in ("name: adam\neps: 1.0e-6\n", "name: sgd\nweight_decay: 0.1\n"):  # keys beyond the base's, or not
        (myconf / "optimizer" / "untyped.yaml").write_text(untyped)
        with pytest.raises(ConfigError, match=r"^invalid config: optimizer=\w+: an option that extends one of "
                                              r"moonprop's \(sgd, momentum, adam, adamw\), as `defaults: \[sgd"):
            check(["-cd", str(myconf), "optimizer=untyped"])


@pytest.mark.parametrize("args, expected", [
    (["schedule.name=cosine"], "schedule.name=cosine: the schedule is a config group: choose it with schedule=cosine"),
    (["model.hidden=[32,", "32]"], "model.hidden=[32,: write a list without spaces, model.hidden=[32,32], or quote"),
    (["schedule.gamma=0.3"], "schedule.gamma=0.3: a key of schedule=step, not of schedule=linear"),
    (["hydra.launcher.n_jobs=2"], "hydra.launcher.n_jobs=2: a key of hydra/launcher=joblib, not of "
                                  "hydra/launcher=basic"),
    (["seed=0,1,2"], "seed=0,1,2: a sweep needs -m (moonprop -m seed=0,1,2)"),
    (["-m", "hydra.sweeper.params.seed=1,2"], "hydra.sweeper.params.seed=1,2: Hydra's settings take one value"),
    (["seed=range(0,3)"], "seed=range(0,3): a sweep needs -m (moonprop -m seed=range(0,3))"),
    (["+seed=3"], "+seed=3: seed is already in the config: set it without '+', seed=3"),
    (["+schedule=cosine"], "+schedule=cosine: schedule is already in the config: set it without '+', schedule=cosine"),
    (["-m", "seed=0,1", "+optimizer=adam"], "+optimizer=adam: optimizer is already in the config: set it without"),
    (["-m", "hydra.sweeper.params.seed='1,2'"], "add it with +hydra.sweeper.params.seed='1,2'"),
    (["-m", "seed=range(0,3)", "--cfg", "job"], "command=--multirun --cfg: one of --run, --multirun, --cfg"),
    (["--config-name", "nope"], "--config-name=nope: Cannot find primary config 'nope'"),
    (["-cd", "no/such/folder"], "--config-dir=no/such/folder: an existing folder of configs"),
])
def test_hydras_errors_are_one_line_that_says_what_to_do(workdir, args, expected):
    proc = moonprop(*args, cwd=workdir, check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"moonprop: invalid config: {proc.stderr.split(': ', 2)[2].strip()}"]
    assert expected in proc.stderr
    assert list(workdir.iterdir()) == []


def test_the_error_path_imports_no_torch(workdir):
    code = ("import sys; sys.argv = ['moonprop', '-m', 'seed=range(0,3)', '--cfg', 'job']\n"
            "from moonprop import cli\ntry:\n    cli.main()\nexcept SystemExit as e:\n"
            "    print(e.code, 'torch' in sys.modules, 'pytorch_lightning' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=workdir, capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["2", "False", "False"], proc.stderr
