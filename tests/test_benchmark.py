"""The benchmark's bookkeeping: run locks shared by processes, the centre-slice weight column."""
import json
import subprocess
import sys

from emr_d2.benchmark import centre_weight, claim


def test_a_run_is_claimed_once_and_a_dead_holder_is_replaced(tmp_path):
    assert claim(str(tmp_path))
    assert not claim(str(tmp_path))  # held by this (live) process
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "running.lock").write_text(dead.stdout.strip())
    assert claim(str(tmp_path))


def test_centre_weight_is_the_last_logged_weight_of_offset_zero(tmp_path):
    rows = [{"iteration": 19, "fusion/a/dz+0": 0.5, "fusion/a/dz+1": 0.5},
            {"iteration": 39, "fusion/a/dz+0": 0.9, "fusion/b/dz+0": 0.7, "total_loss": 1.0}]
    (tmp_path / "metrics.json").write_text("\n".join(json.dumps(r) for r in rows))
    assert abs(centre_weight(str(tmp_path)) - 0.8) < 1e-9
    (tmp_path / "metrics.json").write_text(json.dumps({"iteration": 0, "total_loss": 1.0}))
    assert centre_weight(str(tmp_path)) != centre_weight(str(tmp_path))  # NaN: no slice weights
