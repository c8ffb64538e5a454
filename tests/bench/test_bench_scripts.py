"""The benchmark scripts run (smoke tests); their figures are printed, never asserted as timings."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args, timeout=600):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_flops_bench_matches_the_paper_table():
    out = _run("bench/flops.py")
    assert "largest difference from the paper" in out
    pct = float(out.split("largest difference from the paper: ")[1].split("%")[0])
    assert pct <= 1.0
    assert "(+0.00%)" in out or "(-0.00%)" in out, "measured and analytic counts agree"


def test_mini_world_rows_get_the_recommended_guidance_through_core_and_say_where_from():
    if not (ROOT / "models" / "mini-pyramidal" / "card.json").is_file():
        import pytest

        pytest.skip("the mini models are not shipped")
    rows = json.loads(_run("bench/mini_world.py", "--guidance-only").strip().splitlines()[-1])
    assert rows == {"guidance": 1.5, "guidance_source": "preset card",
                    "pyramid_guidance": [1.0, 1.0, 1.5], "pyramid_guidance_source": "checkpoint card"}
    given = json.loads(_run("bench/mini_world.py", "--guidance-only", "--pyramid-guidance", "2").splitlines()[-1])
    assert (given["pyramid_guidance"], given["pyramid_guidance_source"]) == (2.0, "request")


def test_gpu_check_runs_as_a_cpu_smoke_test(tmp_path):
    out_json = tmp_path / "gpu.json"
    _run("bench/gpu_check.py", "--device", "cpu", "--layers", "1", "--frames", "17", "--height", "64",
         "--width", "64", "--steps", "1", "--json", str(out_json))
    res = json.loads(out_json.read_text())
    assert len(res["ms_per_step"]) == 3 and all(ms > 0 for ms in res["ms_per_step"])
    assert res["flop_ratio"] > 1 and res["speedup"] > 0
