"""``driftline demo`` (what ``make demo`` runs) works and says what it showed."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def test_demo_detects_drift_and_delivers_one_verified_event() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTLINE_")}
    done = subprocess.run(
        [sys.executable, "-m", "driftline", "demo"],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "DRIFT" in out
    assert "ok" in out
    assert "signature verified (Standard Webhooks)" in out
    assert '"type": "driftline.retraining.requested"' in out
    assert "dead-lettered:        2 (late: 1, schema: 1)" in out
    assert "drift episodes:       1 -> retraining events delivered: 1" in out
    assert out.rstrip().splitlines()[-2] == "demo passed"
