from dataclasses import asdict

import pytest

from moonprop.config import (
    DATASETS,
    OPTIMIZERS,
    SCHEDULES,
    Config,
    ConfigError,
    LinearSchedule,
    MoonsData,
    SgdOptimizer,
    TrainerConfig,
)
from moonprop.schedule import learning_rate
from moonprop.train import build

from .conftest import check, composed, make_config


def test_default_config_is_the_seed_experiment():
    lightning = {"deterministic": True, "precision": "32-true", "gradient_clip_val": None}
    assert asdict(make_config()) == asdict(Config(data=MoonsData(), optimizer=SgdOptimizer(), schedule=LinearSchedule(),
                                                  trainer=TrainerConfig(lightning=lightning),
                                                  logger={"mlflow": {"_target_": "moonprop.loggers.MlflowRecord"}}))
    assert asdict(make_config()) == {
        "data": {"name": "moons", "num_batches": 150, "batch_size": 50, "test_size": 1000, "val_size": 1000,
                 "train_size": None, "noise": 0.1},
        "model": {"hidden": [16, 16], "activation": "relu", "init": "uniform", "features": ["x1", "x2"]},
        "loss": {"name": "hinge", "alpha": 1e-4, "penalty": "l2"},
        "optimizer": {"name": "sgd", "weight_decay": 0.0},
        "schedule": {"name": "linear", "start": 1.0, "end": 0.1},
        "trainer": {"accelerator": "auto", "threads": 1, "lightning": lightning},
        "tracking": {"uri": None, "experiment": "moonprop", "run_name": None, "registered_model": None,
                     "tags": {}, "system_metrics": False},
        "plot": {"every_n_epochs": 1, "resolution": 480},
        "sweep": {"within": ["data"]},
        "callbacks": {},
        "logger": {"mlflow": {"_target_": "moonprop.loggers.MlflowRecord"}},  # conf/logger/mlflow.yaml
        "seed": 0,
        "resume": None,
    }


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_schedule_composes_and_instantiates(name):
    cfg = make_config(f"schedule={name}", "data.num_batches=10")
    assert type(cfg.schedule) is SCHEDULES[name]
    assert learning_rate(cfg.schedule, 0, 10) > 0
    module, data = build(cfg)
    assert module.configure_optimizers()["optimizer"].param_groups[0]["lr"] == pytest.approx(
        learning_rate(cfg.schedule, 0, 10))
    assert data.test[0].shape == (1000, 2)


@pytest.mark.parametrize("group, choices", [("data", DATASETS), ("optimizer", OPTIMIZERS)])
def test_every_dataset_and_optimizer_composes_and_builds(group, choices):
    for name in choices:
        cfg = make_config(f"{group}={name}", "data.test_size=10")
        assert type(getattr(cfg, group)) is choices[name] and getattr(cfg, group).name == name
        module, data = build(cfg)
        assert data.test[0].shape == (10, 2) and set(data.test[1].tolist()) <= {-1.0, 1.0}
        assert module.configure_optimizers()["optimizer"].param_groups[0]["lr"] == 1.0


def test_documented_overrides_work_as_written():
    cfg = make_config("model.hidden=[8,4]", "data.num_batches=7", "data.batch_size=9", "data.test_size=11",
                      "data.noise=0.2", "schedule=step", "schedule.gamma=0.3", "loss.alpha=1e-3", "seed=5",
                      "trainer.accelerator=cpu", "tracking.uri=sqlite:///x.db", "tracking.experiment=e",
                      "tracking.run_name=r", "plot.every_n_epochs=3", "plot.resolution=64")
    assert cfg.model.hidden == [8, 4] and cfg.data.num_batches == 7 and cfg.data.noise == 0.2
    assert cfg.schedule.gamma == 0.3 and cfg.loss.alpha == 1e-3 and cfg.seed == 5
    assert (cfg.tracking.uri, cfg.tracking.experiment, cfg.tracking.run_name) == ("sqlite:///x.db", "e", "r")
    assert (cfg.plot.every_n_epochs, cfg.plot.resolution) == (3, 64)


def test_empty_hidden_is_a_linear_classifier():
    assert make_config("model.hidden=[]").model.hidden == []


@pytest.mark.parametrize("override, key, shown", [
    ("model.hidden=[16,0]", "model.hidden[1]", "=0"),
    ("model.hidden=[-3]", "model.hidden[0]", "=-3"),
    ("model.hidden=[1.5]", "model.hidden[0]", "1.5"),
    ("model.hidden=16", "model.hidden", "16"),
    ("data.num_batches=0", "data.num_batches", "=0"),
    ("data.batch_size=-1", "data.batch_size", "=-1"),
    ("data.test_size=0", "data.test_size", "=0"),
    ("data.noise=-0.1", "data.noise", "=-0.1"),
    ("data.noise=nan", "data.noise", "nan"),
    ("data.noise=inf", "data.noise", "inf"),
    ("data.batch_size=abc", "data.batch_size", "abc"),
    ("schedule.start=0", "schedule.start", "=0"),
    ("schedule.end=-1", "schedule.end", "=-1"),
    ("schedule.start=inf", "schedule.start", "inf"),
    ("loss.alpha=-1e-4", "loss.alpha", "=-0.0001"),
    ("loss.alpha=nan", "loss.alpha", "nan"),
    ("plot.every_n_epochs=0", "plot.every_n_epochs", "=0"),
    ("schedule=exponential", "schedule", "exponential"),
    ("data.foo=1", "data.foo", "=1"),
    ("+data.foo=1", "data.foo", "=1"),
    ("+foo=1", "foo", "=1"),
    ("trainer.accelerator=tpu", "trainer.accelerator", "tpu"),
])
def test_bad_values_are_one_line_errors_naming_key_value_and_what_is_allowed(override, key, shown):
    with pytest.raises(ConfigError) as err:
        make_config(override)
    message = str(err.value)
    assert "\n" not in message
    assert err.value.key == key, message
    assert f"{key}=" in message and shown in message, message
    assert len(message.split(": ", 2)[-1]) > 5, message  # says what is allowed


def test_unknown_schedule_lists_the_choices():
    with pytest.raises(ConfigError, match="constant, cosine, linear, step"):
        make_config("schedule=exponential")


def test_a_sweep_is_checked_as_its_sweeper_generates_it():
    """Hydra's basic sweeper: the product of the command line and `hydra.sweeper.params`."""
    from hydra.types import RunMode

    from moonprop.cli import APP
    from moonprop.hydra_internals import args_parser
    from moonprop.preflight import app_hydra, compose, sweep_jobs

    args = args_parser().parse_args(["-m", "seed=0,1,2", "schedule=linear,cosine", "data.noise=0.1",
                                     "+hydra.sweeper.params={loss.alpha: '0,1e-3'}"])
    with app_hydra(APP, args) as (hydra, config_name):
        jobs = sweep_jobs(hydra, compose(hydra, config_name, args.overrides, RunMode.MULTIRUN))
    assert len(jobs) == 2 * 3 * 2 * 1
    assert jobs[0] == ["loss.alpha=0", "seed=0", "schedule=linear", "data.noise=0.1"]
    assert ["loss.alpha=0.001", "seed=2", "schedule=cosine", "data.noise=0.1"] in jobs


def test_credentials_never_reach_params_or_recorded_config():
    from moonprop.config import params, redact, redacted

    assert redact("http://alice:s3cret@host:5000/x") == "http://***@host:5000/x"
    assert redact("sqlite:///tmp/x.db") == "sqlite:///tmp/x.db"
    cfg = make_config("tracking.uri=https://alice:s3cret@mlflow.example:443")
    assert "s3cret" not in str(params(cfg)) and "s3cret" not in str(redacted(cfg))
    assert params(cfg)["tracking.uri"] == "https://***@mlflow.example:443"
    assert "resume" not in params(cfg)


def test_config_has_no_instantiable_targets():
    """Nothing in the app's config is handed to hydra.utils.instantiate, and `_target_` is refused."""
    with pytest.raises(ConfigError):
        make_config("+_target_=os.system")
    with pytest.raises(ConfigError):
        make_config("+schedule._target_=os.system")


def test_a_sweep_of_plain_values_is_checked_without_composing_each_job(monkeypatch):
    """Hundreds of jobs: each composition (a config group) is made once, each job's plain values
    applied to it, and every job is still validated."""
    from moonprop import preflight

    compositions = []
    compose_job = preflight.compose_job
    monkeypatch.setattr(preflight, "compose_job", lambda hydra, master, overrides: compositions.append(overrides)
                        or compose_job(hydra, master, overrides))
    configs = check(["-m", "seed=range(0,50)", "schedule=linear,cosine", "model.hidden=[8],[16,16]"])
    assert sorted(compositions) == [["schedule=cosine"], ["schedule=linear"]]  # 200 jobs, two compositions
    assert sorted({c.seed for c in configs}) == list(range(50))
    assert {type(c.schedule).__name__ for c in configs} == {"LinearSchedule", "CosineSchedule"}
    assert [8] in [c.model.hidden for c in configs]
    with pytest.raises(ConfigError, match=r"data.batch_size=0"):
        check(["-m", "data.batch_size=range(0,3)"])
    with pytest.raises(ConfigError, match=r"seed=abc"):
        check(["-m", "seed=1,abc"])
    with pytest.raises(ConfigError, match=r"model.hidden\[1\]=0"):  # in the last job only
        check(["-m", "seed=range(0,50)", "schedule=linear,cosine", "model.hidden=[8],[16,0]"])


def test_values_whose_ranges_depend_on_each_other_are_checked_together():
    """A job is checked with all its values: a training set may be smaller than the default batch
    when its own batch is smaller still, and a bad pair is refused though each value alone is fine."""
    configs = check(["-m", "data.batch_size=10", "data.train_size=20,40"])
    assert [(c.data.batch_size, c.data.train_size) for c in configs if c.data.train_size] == [(10, 20), (10, 40)]
    with pytest.raises(ConfigError, match=r"data.train_size=20: .* >= data.batch_size \(50\)"):
        check(["-m", "data.batch_size=10,50", "data.train_size=20"])
    with pytest.raises(ConfigError, match=r"optimizer.nesterov=True"):
        check(["-m", "optimizer=momentum", "optimizer.dampening=0,0.5", "optimizer.nesterov=true"])


def test_project_launcher_and_sweeper_configs_compose():
    slurm = composed("hydra/launcher=slurm", hydra=True).hydra.launcher
    assert slurm._target_.endswith("SlurmLauncher")
    assert slurm.signal_delay_s < slurm.timeout_min * 60  # the warning signal must not come at the start
    search = composed("hydra/sweeper=search", hydra=True).hydra.sweeper
    assert search.direction == "maximize" and set(search.params) == {"model.hidden", "schedule.start", "loss.alpha"}
