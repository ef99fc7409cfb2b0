"""The new-user example runs as written (issue #37): a saved model to a report, CLI and API."""

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_first_hour_from_a_saved_model_to_a_report(tmp_path):
    out = tmp_path / "fh"
    run = subprocess.run([sys.executable, str(EXAMPLES / "first_hour.py"), "--out", str(out)],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "held-out accuracy" in run.stdout and "keep accuracy within 0.001" in run.stdout
    for route in ("cli", "api"):
        page = (out / route / "report.html").read_text()
        assert page.count("data:image/png;base64,") > 20  # the digits as thumbnails
        assert (out / route / "summary.json").is_file()
