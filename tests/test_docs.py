import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_generated_from_the_schema_and_current():
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "config_reference.py"), "--check"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    text = (ROOT / "docs" / "config.md").read_text()
    for key in ("`data.num_batches`", "`model.hidden`", "`loss.alpha`", "`schedule.start`", "`schedule.gamma`",
                "`trainer.accelerator`", "`tracking.uri`", "`plot.every_n_epochs`", "`seed`", "`resume`"):
        assert key in text
