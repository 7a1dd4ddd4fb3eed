import subprocess
import sys
from pathlib import Path

import pytest

import make_docs_images  # scripts/, on pytest's pythonpath

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_generated_from_the_schema_and_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "docs" / "config.md").read_text()
    for key in ("`data.num_batches`", "`model.hidden`", "`loss.alpha`", "`schedule.start`", "`schedule.gamma`",
                "`trainer.accelerator`", "`tracking.uri`", "`plot.every_n_epochs`", "`seed`", "`resume`"):
        assert key in text


@pytest.mark.parametrize("name", make_docs_images.PICTURES)
def test_readme_pictures_were_made_by_the_current_code(name):
    """Each picture carries the digest of the code that draws it (scripts/make_docs_images.py)."""
    recorded = make_docs_images.recorded_digest(ROOT / "docs" / name)
    assert recorded == make_docs_images.sources_digest(), \
        f"docs/{name} is older than the code that draws it: run python scripts/make_docs_images.py"
    shown = f"docs/{name}" in (ROOT / "README.md").read_text() \
        or any(f"]({name})" in page.read_text() for page in (ROOT / "docs").glob("*.md"))
    assert shown, f"docs/{name} is shown on no page: the README or docs/*.md"
