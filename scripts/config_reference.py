"""Write docs/config.md, the configuration reference, from the schema in moonprop/config.py.

    python scripts/config_reference.py           # rewrite docs/config.md
    python scripts/config_reference.py --check   # exit 1 if docs/config.md is out of date (a test runs this)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from moonprop.config import (
    DATASETS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULES,
    TRAINER_DEFAULTS,
    Config,
    DataConfig,
    LossConfig,
    ModelConfig,
    TrainerConfig,
)

OUT = Path(__file__).resolve().parents[1] / "docs" / "config.md"
GROUPED = ("data", "model", "optimizer", "schedule", "trainer", "loss")  # tabled apart


def _default(value: Any) -> str:
    return "null" if value is None else str(value).replace(" ", "")


def _rows(cls: type, prefix: str, skip: tuple[str, ...] = ()) -> list[str]:
    rows = []
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):  # a node such as plot.*: its keys, one by one
            rows += _rows(type(default), f"{prefix}{f.name}.")
        else:
            rows.append(f"| `{prefix}{f.name}` | `{_default(default)}` | {f.metadata.get('help', '')} |")
    return rows


def _group(group: str, choices: dict[str, type], default: str, intro: str, shared: tuple[str, ...] = ()) -> list[str]:
    """A config group's section: a table of each choice's own keys (the `shared` ones are above)."""
    lines = ["", f"## `{group}`: {intro}", "",
             f"Pick one with `{group}=NAME` (default `{default}`), then set its values with `{group}.KEY=...`. Each is "
             f"a dataclass of `config.py` in Hydra's ConfigStore, which types it as it composes it; an option of your "
             f"own extends one (`{group}/NAME.yaml` starting `defaults: [{default}, _self_]`)."]
    for name, cls in choices.items():
        what = next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == "name")
        lines += ["", f"### `{group}={name}`: {what}", "", "| key | default | meaning |", "|---|---|---|"]
        lines += _rows(cls, f"{group}.", skip=("name", *shared))
    return lines


def render() -> str:
    lightning = [f"| `trainer.{k}` | `{_default(v)}` | Lightning's Trainer argument, as moonprop sets it |"
                 for k, v in TRAINER_DEFAULTS.items() if k not in ("accelerator", "threads")]
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/moonprop/config.py` by `scripts/config_reference.py`; do not edit by hand.",
        "Every key is a command-line override: `moonprop data.num_batches=300 schedule=cosine`.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
        *_rows(DataConfig, "data.", skip=("name",)),
        *_rows(ModelConfig, "model."),
        *_rows(LossConfig, "loss.", skip=("name",)),
        *_rows(TrainerConfig, "trainer.", skip=("lightning",)),
        *lightning,
        "| `+trainer.NAME` | | any other argument of Lightning's Trainer (`+trainer.profiler=simple`), checked against "
        "its signature; those moonprop sets (`max_epochs`, `logger`, `callbacks`, ...) say what to use instead |",
        *_rows(Config, "", skip=GROUPED),
        "",
        "## `loss`: the data term",
        "",
        f"Pick one with `loss=NAME` (default `hinge`): {', '.join(f'`{n}`' for n in LOSSES)}. "
        "`loss.alpha` and `loss.penalty` (above) hold for each.",
        "",
        "| `loss=` | data term, per point (labels -1 / +1, score f) |",
        "|---|---|",
        "| `hinge` | relu(1 - y f), the seed's max-margin |",
        "| `logistic` | log(1 + exp(-y f)) |",
        "| `squared_hinge` | relu(1 - y f)^2 |",
    ]
    shared_data = tuple(f.name for f in dataclasses.fields(DataConfig))
    lines += _group("data", DATASETS, "moons", "the dataset (each a fresh batch every epoch, a fixed test set, "
                    "labels -1 / +1)", shared_data)
    lines += _group("optimizer", OPTIMIZERS, "sgd", "how a step follows the gradient (the schedule sets the rate "
                    "of every step)")
    lines += _group("schedule", SCHEDULES, "linear", "the learning-rate schedule (k is the step, 0-based, "
                    "and N is `data.num_batches`)")
    lines += [
        "",
        "## `callbacks`: Lightning callbacks",
        "",
        "`callbacks=[early_stopping]` adds Lightning's `EarlyStopping` on `test/acc` (`conf/callbacks/`); set its "
        "values with `callbacks.early_stopping.patience=10`. Your own: a file `callbacks/NAME.yaml` in your config "
        "folder (`-cd myconf callbacks=[NAME]`) holding `NAME: {_target_: your.Callback, ...}`. A `_target_` comes "
        "from a config file, never from the command line.",
        "",
        "## Launchers and sweepers (Hydra's `hydra/...` groups)",
        "",
        "| override | what it does |",
        "|---|---|",
        "| (none) | sweep jobs run one after another in this process: imports are paid once |",
        "| `hydra/launcher=joblib` | parallel local processes, `hydra.launcher.n_jobs=N` (default: all cores) |",
        "| `hydra/launcher=slurm` | SLURM via submitit, sized for these jobs (`timeout_min=10`, `signal_delay_s=30`) |",
        "| `hydra/launcher=submitit_slurm` / `submitit_local` | the submitit plugin's own settings |",
        "| `hydra/launcher=batched` | the jobs trained as one batched model on `trainer.accelerator`, each its own run "
        "(`hydra.launcher.recorders=1` process writes them, `max_batch=1000` jobs a model) |",
        "| `hydra/sweeper=search` | Optuna search maximising the final test accuracy (needs the `search` extra) |",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description="write docs/config.md from the config schema")
    parser.add_argument("--check", action="store_true", help="fail if docs/config.md is out of date")
    text = render()
    if parser.parse_args().check:
        if not OUT.exists() or OUT.read_text() != text:
            sys.exit(f"{OUT} is out of date: run python scripts/config_reference.py")
        return
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(text)
    print(f"written: {OUT}")


if __name__ == "__main__":
    main()
