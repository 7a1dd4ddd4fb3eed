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

from moonprop.config import SCHEDULES, Config

OUT = Path(__file__).resolve().parents[1] / "docs" / "config.md"


def _default(value: Any) -> str:
    return "null" if value is None else str(value).replace(" ", "")


def _rows(cls: type, prefix: str) -> list[str]:
    rows = []
    for f in dataclasses.fields(cls):
        if f.name == "schedule" or f.name == "name" and prefix == "schedule.":
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):  # a group such as data.*: its keys, one by one
            rows += _rows(type(default), f"{prefix}{f.name}.")
        else:
            rows.append(f"| `{prefix}{f.name}` | `{_default(default)}` | {f.metadata.get('help', '')} |")
    return rows


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `src/moonprop/config.py` by `scripts/config_reference.py`; do not edit by hand.",
        "Every key is a command-line override: `moonprop data.num_batches=300 schedule=cosine`.",
        "",
        "| key | default | meaning |",
        "|---|---|---|",
        *_rows(Config, ""),
        "",
        "## `schedule`: the learning-rate schedule",
        "",
        "Pick one with `schedule=NAME` (default `linear`), then set its values with `schedule.KEY=...`.",
        "k is the step (0-based) and N is `data.num_batches`.",
    ]
    for name, cls in SCHEDULES.items():
        formula = next(f.metadata["help"] for f in dataclasses.fields(cls) if f.name == "name")
        lines += ["", f"### `schedule={name}`: {formula}", "", "| key | default | meaning |", "|---|---|---|"]
        lines += _rows(cls, "schedule.")
    lines += [
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
