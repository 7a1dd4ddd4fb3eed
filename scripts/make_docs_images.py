"""Regenerate docs/training.gif, the animation the README opens with: the default experiment,
recorded by moonprop itself, at a resolution that reads well on a page.

    python scripts/make_docs_images.py
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow import MlflowClient

DOCS = Path(__file__).resolve().parents[1] / "docs"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "moonprop", "plot.resolution=240"], cwd=tmp, check=True)
        client = MlflowClient(f"sqlite:///{tmp}/outputs/mlflow.db")
        (run,) = client.search_runs([client.get_experiment_by_name("moonprop").experiment_id])
        shutil.copy(client.download_artifacts(run.info.run_id, "training.gif", tmp), DOCS / "training.gif")
    print(f"written: {DOCS / 'training.gif'}")


if __name__ == "__main__":
    main()
