"""Bad input, found systematically: for every key of the config (each choice of every group), values
outside what a key of its type could allow (negative, zero, huge, NaN, infinity, the wrong type, the
empty string) are tried. Each is either refused by the real CLI in one line that names the key and
what is allowed (exit 2, no traceback, no run, no folder), or listed below as a value that is fine,
with the reason. A value that is neither fails the test: a new key gets its checks or its reason."""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import typing
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from moonprop import config as C
from moonprop.config import ConfigError

from .conftest import check, default_store, moonprop

# the values tried for a key, by its type
TRIED = {
    int: ["-1", "0", "1000000000000", "nan", "inf", "1.5", "abc", "''"],
    float: ["-1", "0", "1e300", "nan", "inf", "-inf", "abc", "''"],
    str: ["''", "nonsense"],
    bool: ["abc", "2", "''"],
    list[int]: ["[-1]", "[0]", "[1000000000000]", "[nan]", "abc", "''"],
    list[float]: ["[-1,0.5]", "[nan,0.5]", "[inf,0.5]", "[0.5]", "abc", "''"],
    dict: ["abc", "''", "[1]"],
}
# Lightning's arguments in every config, by the type Lightning takes
TRAINER_TYPES = {"accelerator": str, "threads": int, "deterministic": bool, "precision": str,
                 "gradient_clip_val": float}
# tried values that are fine, and why (a key of every dataset, optimizer or schedule that has it)
FINE = {
    "seed=0": "the seed's own",
    "data.num_batches=1000000000000": "a long run, not a large one: its memory is one batch's",
    "data.val_size=0": "no validation set, for a single run that chooses nothing",
    "data.noise=0": "noiseless points",
    "loss.alpha=0": "no penalty",
    "optimizer.weight_decay=0": "no weight decay",
    "optimizer.momentum=0": "plain SGD through torch's momentum optimizer",
    "optimizer.dampening=0": "torch's default",
    "optimizer.nesterov=2": "OmegaConf reads a non-zero integer as true, as in plain Hydra",
    "optimizer.amsgrad=2": "OmegaConf reads a non-zero integer as true, as in plain Hydra",
    "tracking.system_metrics=2": "OmegaConf reads a non-zero integer as true, as in plain Hydra",
    "schedule.every=1000000000000": "a rate that never steps down",
    "trainer.threads=1000000000000": "capped to the cores each job may use",
    "trainer.gradient_clip_val=0": "no clipping, as Lightning reads it",
    "plot.every_n_epochs=1000000000000": "the first and last pictures only",
    "tracking.experiment=nonsense": "any name",
    "tracking.run_name=nonsense": "any name",
    "tracking.registered_model=nonsense": "any name",
}


def kind(t: object) -> object:
    """The entry of TRIED for a field's type (`str | None` is a str)."""
    for candidate in TRIED:
        if t == candidate or candidate in typing.get_args(t) or typing.get_origin(t) is candidate:
            return candidate
    raise AssertionError(f"no values to try for {t}")


def leaves(cls: type, prefix: str) -> typing.Iterator[tuple[str, object]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            yield from leaves(hints[f.name], f"{prefix}{f.name}.")
        elif f.name != "name":  # a group's choice, tried as `group=NAME` by test_config
            yield f"{prefix}{f.name}", hints[f.name]


def cases() -> list[tuple[str, ...]]:
    """Every (choice of its group, key=value) tried, once each."""
    found: dict[str, tuple[str, ...]] = {}
    hints = typing.get_type_hints(C.Config)
    for f in dataclasses.fields(C.Config):
        if f.name in C.GROUPS:
            keys = [(f"{f.name}={option}", key, t) for option, cls in C.GROUPS[f.name].items()
                    for key, t in leaves(cls, f"{f.name}.")]
        elif f.name == "trainer":
            keys = [("", f"trainer.{key}", t) for key, t in TRAINER_TYPES.items()]
        elif dataclasses.is_dataclass(hints[f.name]):
            keys = [("", key, t) for key, t in leaves(hints[f.name], f"{f.name}.")]
        else:
            keys = [("", f.name, hints[f.name])]
        for choice, key, t in keys:
            for value in TRIED[kind(t)]:  # type: ignore[index]
                found.setdefault(f"{choice} {key}={value}", (*filter(None, [choice]), f"{key}={value}"))
    return list(found.values())


def test_the_schema_gives_every_key_its_values():
    tried = {case[-1].split("=")[0] for case in cases()}
    assert {"data.factor", "data.offset", "data.turns", "optimizer.betas", "schedule.gamma", "model.hidden",
            "trainer.gradient_clip_val", "tracking.tags", "callbacks", "seed", "resume"} <= tried
    assert len(cases()) > 200


@functools.cache  # ~0.2 s a value
def refusals() -> dict[tuple[str, ...], str]:
    """Every tried value's refusal, checked as the CLI checks it (in this process: fast); a value
    that is accepted must be FINE."""
    refused, accepted = {}, []
    for case in cases():
        try:
            check(list(case))
        except ConfigError as e:
            refused[case] = str(e)
        else:
            accepted.append(case[-1])
    assert sorted(set(accepted) - set(FINE)) == [], "accepted, but neither refused nor known to be fine"
    return refused


def test_every_value_outside_what_a_key_allows_is_refused_naming_the_key():
    for case, message in refusals().items():
        key = case[-1].split("=")[0]
        assert message.startswith(f"invalid config: {key}") and "\n" not in message, (case, message)


def test_the_cli_refuses_each_in_one_line_and_creates_nothing(tmp_path: Path):
    def run(number: int, case: tuple[str, ...]) -> tuple[tuple[str, ...], subprocess.CompletedProcess[str], Path]:
        folder = tmp_path / str(number)
        folder.mkdir()
        return case, moonprop(*case, cwd=folder, check=False, timeout=60), folder

    # each key's every refusal through the CLI, once: values that get the same line take one path
    distinct = {(case[-1].split("=")[0], message.partition(": ")[2].partition(": ")[2]): case
                for case, message in refusals().items()}
    with ThreadPoolExecutor(max_workers=2) as pool:  # a refusal is ~0.5 s of one core
        results = list(pool.map(run, *zip(*enumerate(distinct.values()), strict=True)))
    for case, proc, folder in results:
        key = case[-1].split("=")[0]
        assert proc.returncode == 2, (case, proc.stderr[-2000:])
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"moonprop: invalid config: {key}"), \
            (case, proc.stderr)
        assert list(folder.iterdir()) == [], case  # no outputs/, no store, no run folder


@pytest.mark.parametrize("argv, expected", [
    (["trainer=ddp"], "trainer=ddp: one of cpu, default, gpu; a run trains on one device; a sweep's jobs train in "
                      "parallel with hydra/launcher=joblib or hydra/launcher=batched"),
    (["tags=[dev]"], "write +tracking.tags.dev=true"),
    (["ckpt_path=x.ckpt"], "a run continues from its checkpoint with resume=x.ckpt"),
    (["+ckpt_path=x.ckpt"], "a run continues from its checkpoint with resume=x.ckpt"),
    (["optimizer.lr=0.1"], "the schedule sets every step's rate: schedule=constant schedule.lr=0.1"),
    (["data=gaussian"], "one of blobs, circles, moons, spiral, xor; two Gaussian blobs are data=blobs"),
    (["model.activation=linear"], "no activation is model.activation=identity"),
    (["tracking.tags={team: moons, owner: ada}"], "tracking.tags={team:moons,owner:ada}: add each tag by its name: "
                                                  "+tracking.tags.team=moons +tracking.tags.owner=ada"),
])
def test_a_neighbouring_tools_habit_is_told_what_to_write(workdir, argv, expected):
    proc = moonprop(*argv, cwd=workdir, check=False)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    assert list(workdir.iterdir()) == []


@pytest.mark.parametrize("argv, key", [
    (["data.batch_size=100000000"], "data.batch_size"),
    (["data.test_size=100000000"], "data.test_size"),
    (["model.hidden=[100000,100000]"], "model.hidden"),
    (["data.val_size=20000000", "model.hidden=[512,512]"], "data.val_size"),
])
def test_a_run_that_would_not_fit_in_memory_is_refused_at_once_with_the_estimate(workdir, argv, key):
    proc = moonprop(*argv, cwd=workdir, check=False, timeout=30)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"moonprop: invalid config: {key}=") and "GiB, more than half" in proc.stderr
    assert list(workdir.iterdir()) == []


def test_the_memory_estimate_grows_with_what_a_run_holds():
    from .conftest import make_config

    base = C.memory_estimate(make_config())
    assert base < 100 * 2**20  # the seed's run: well under 100 MB of tensors
    assert C.memory_estimate(make_config("data.batch_size=1000000")) > base
    assert C.memory_estimate(make_config("model.hidden=[512,512]")) > base
    assert C.memory_estimate(make_config("trainer.precision=64")) > base


def test_a_resume_path_that_is_empty_or_missing_is_refused(workdir):
    for value, allowed in [("", "null, or the path of an interrupted run's checkpoints/last.ckpt"),
                           ("missing.ckpt", "the path of an interrupted run's checkpoints/last.ckpt")]:
        proc = moonprop(f"resume={value}", cwd=workdir, check=False)
        assert proc.returncode == 2 and allowed in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert list(workdir.iterdir()) == []



@pytest.mark.parametrize("argv", [[], ["-m", "seed=0,1"]])
def test_a_store_a_newer_mlflow_migrated_is_refused_before_mlflow_touches_it(workdir, argv):
    """MLflow would say the schema is out of date and advise `mlflow db upgrade`, which cannot help:
    a newer release's migration goes one way (MLflow 3.18's, f4a9b2c7d1e6, is one 3.17 refuses)."""
    import sqlite3

    store = workdir / "outputs" / "mlflow.db"
    store.parent.mkdir()
    default_store(workdir)
    with sqlite3.connect(store) as con:
        con.execute("UPDATE alembic_version SET version_num = 'ffffffffffff'")  # a release yet to come
    before, files = store.read_bytes(), sorted(workdir.rglob("*"))
    proc = moonprop(*argv, cwd=workdir, check=False, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"moonprop: invalid config: tracking.uri=sqlite:///{store}: a store MLflow 3.")
    assert "one way, to schema ffffffffffff" in proc.stderr
    assert store.read_bytes() == before and sorted(workdir.rglob("*")) == files
