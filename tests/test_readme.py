"""Every example the README and docs/ show, run as written: each ```bash block as one bash script
(`set -e`: a command that fails fails the test), each ```python block in the same folder, in the
order the pages show them, in one scratch folder beside the repository's own files.

Run as written, with only these changes, each for a reason a reader would accept:
- sizes a sweep gives are made small (`range(0,N)` -> `range(0,2)`, `n_trials=30` -> `n_trials=3`);
- placeholders are filled (`<model id>`: the newest model in the store; `HEAD`: this machine;
  `/srv/...`, `/shared/...`, `/etc/mlflow`: the scratch folder; the PostgreSQL databases: new ones,
  as on a new machine);
- a server a block starts (`mlflow server`, `mlflow models serve`, `optuna-dashboard`, `make ui`) runs
  in the background on 127.0.0.1 until the block ends, and its first client waits for it to answer;
- the few lines that are the project's own set-up and tests (`make setup`, `make test`, pytest,
  starting the system services, redrawing the docs' pictures) are CI's own steps, not run again here.
A block that needs SLURM or PostgreSQL runs where they are (always in CI).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow import MlflowClient

from mlflow_server import postgres_database

from .conftest import REPO, require, slurm_is_up

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# what the scratch folder shares with the repository, as a clone has it
LINKED = ["Makefile", "scripts", "src", "tests", "benchmarks", "docs", "pyproject.toml", ".venv"]
# lines that are CI's own steps (.ci/run): the set-up, the test suite itself, system services
CI_STEPS = re.compile(r"^(make setup|make test|\.venv/bin/python -m pytest|scripts/system-deps|"
                      r"python scripts/make_docs_images\.py)")
SIZES = [(re.compile(r"range\(0,\d+\)"), "range(0,2)"), (re.compile(r"n_trials=\d+"), "n_trials=3")]
# the servers a block starts, as this test runs them: on 127.0.0.1, in the background; where each answers
SERVERS = {
    "mlflow server": (lambda line, ports: line.replace("--host 0.0.0.0 --port 5000",
                                                       f"--host 127.0.0.1 --port {ports['server']}"),
                      "http://127.0.0.1:{server}/health"),
    "mlflow models serve": (lambda line, ports: line, "http://127.0.0.1:5001/ping"),
    "optuna-dashboard": (lambda line, ports: f"{line} --host 127.0.0.1 --port {ports['dashboard']}",
                         "http://127.0.0.1:{dashboard}/"),
    "make ui": (lambda line, ports: f"make ui UI_PORT={ports['ui']}", "http://127.0.0.1:{ui}/health"),
}
WAIT = "curl -sf --retry 90 --retry-connrefused --retry-delay 1 -o /dev/null"


def blocks() -> list[tuple[str, str, str]]:
    """(where, language, text) of every ```bash and ```python block of the pages, in order."""
    found = []
    for page in PAGES:
        text = page.read_text()
        for match in re.finditer(r"^```(bash|python)\n(.*?)^```", text, re.M | re.S):
            line = text[:match.start()].count("\n") + 1
            found.append((f"{page.name}:{line}", match.group(1), match.group(2)))
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def script(text: str, ports: dict[str, int], filled: dict[str, str] | None = None) -> str:
    """A bash block as this test runs it (see the module's docstring for every change)."""
    # each server in a session of its own, so that the block's end stops it with its workers
    lines = ["set -euo pipefail", "servers=()", "trap 'for p in ${servers[@]}; do kill -- -$p; done' EXIT"]
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():  # a command continued on the next line
        command = line.split("#")[0].strip() if not line.startswith(" ") else line
        if CI_STEPS.match(command) or command.startswith("scripts/system-deps"):
            continue
        for pattern, small in SIZES:
            line = pattern.sub(small, line)
        line = line.replace("<model id>", "$MODEL_ID").replace("HEAD:5000", f"127.0.0.1:{ports['server']}")
        line = line.replace("/srv/", "$PWD/srv/").replace("/shared/", "$PWD/shared/")
        line = line.replace("/etc/mlflow", "$PWD/etc/mlflow")
        for placeholder, value in (filled or {}).items():
            line = line.replace(placeholder, value)
        server = next((name for name in SERVERS if command.startswith(name)), None)
        if server is None:
            lines.append(line)
            continue
        rewrite, answers = SERVERS[server]
        lines.append(f"setsid {rewrite(line.split('#')[0].rstrip(), ports)} >>server.log 2>&1 & servers+=($!)")
        lines.append(f"{WAIT} {answers.format(**ports)}")
    return "\n".join([*lines, ""])


def newest_model(folder: Path) -> str:
    db = folder / "outputs" / "mlflow.db"
    if not db.exists():
        return ""
    client = MlflowClient(f"sqlite:///{db}")
    experiments = [e.experiment_id for e in client.search_experiments()]
    models = client.search_logged_models(experiments, order_by=[{"field_name": "creation_timestamp",
                                                                 "ascending": False}], max_results=1)
    return models[0].model_id if models else ""


def test_every_example_of_the_readme_and_docs_runs_as_written(tmp_path):
    for name in LINKED:
        (tmp_path / name).symlink_to(REPO / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MLFLOW_TRACKING_URI": ""}
    env.pop("MLFLOW_TRACKING_URI")
    ports = {"server": free_port(), "ui": free_port(), "dashboard": free_port()}
    for where, language, text in blocks():
        if language == "python":
            proc = subprocess.run([sys.executable, "-c", text], cwd=tmp_path, env=env, capture_output=True,
                                  text=True, timeout=600)
        else:
            if "hydra/launcher=slurm" in text:
                require(slurm_is_up(), f"{where} needs a SLURM cluster: run `scripts/slurm-cluster start` as root")
            filled = {}
            if "scripts/postgres" in text:
                up = subprocess.run(["scripts/postgres", "status"], cwd=REPO, capture_output=True).returncode == 0
                require(up, f"{where} needs PostgreSQL: run `scripts/postgres start` as root")
                filled = {"$(scripts/postgres url mlflow_auth)": postgres_database("readme_auth"),
                          '"$(scripts/postgres url)"': postgres_database("readme_store")}
            proc = subprocess.run(["bash", "-c", script(text, ports, filled)], cwd=tmp_path, capture_output=True,
                                  text=True, timeout=900, env={**env, "MODEL_ID": newest_model(tmp_path)})
        log = tmp_path / "server.log"
        assert proc.returncode == 0, (f"{where} fails as written:\n{text}\n--- stderr:\n{proc.stderr[-3000:]}"
                                      + (f"\n--- server:\n{log.read_text()[-2000:]}" if log.exists() else ""))


@pytest.mark.parametrize("text, expected", [
    ("moonprop -m seed='range(0,20)' x", "seed='range(0,2)' x"),
    ("mlflow server --backend-store-uri u \\\n    --host 0.0.0.0 --port 5000   # note", "--host 127.0.0.1 --port 7"),
    ("make test    # the test suite", "servers=()"),
    ("mlflow models serve -m models:/<model id> -p 5001", "-m models:/$MODEL_ID -p 5001 >>server.log"),
])
def test_the_examples_are_changed_only_as_said(text, expected):
    assert expected in script(text, {"server": 7, "ui": 8, "dashboard": 9})
    assert "make test" not in script(text, {"server": 7, "ui": 8, "dashboard": 9})
