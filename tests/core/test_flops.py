import json

import pytest
import torch

from core import StagePlan
from core.flops import main as flops_main
from core.flops import measure_forward_flops, plan_flops, wan_forward_flops
from core.presets import tiny_transformer_config, wan13b_transformer_config


def test_analytic_flops_match_the_paper_for_wan13b():
    cfg = wan13b_transformer_config()
    per_forward = [wan_forward_flops(cfg, s) / 1e12 for s in [(21, 56, 104), (11, 28, 52), (6, 14, 26)]]
    assert per_forward == pytest.approx([251.8, 13.49, 1.617], rel=0.01)
    table = {"0-0-50": 12592, "20-20-10": 2821, "0-0-4": 1007, "2-2-2": 534}
    for sched, paper in table.items():
        ours = plan_flops(cfg, StagePlan.parse(sched), 81, 448, 832)["tflops_per_branch"]
        assert ours == pytest.approx(paper, rel=0.01), sched


@pytest.mark.parametrize(
    "cfg, shape, text",
    [
        (tiny_transformer_config(), (5, 16, 16), 64),
        (tiny_transformer_config(), (2, 4, 8), 64),
        (dict(tiny_transformer_config(), num_attention_heads=4, attention_head_dim=32, ffn_dim=256, text_dim=64,
              num_layers=3), (3, 8, 12), 40),
    ],
)
def test_measured_flops_agree_with_the_analytic_count(cfg, shape, text):
    from diffusers import WanTransformer3DModel

    model = WanTransformer3DModel(**cfg).eval()
    measured = measure_forward_flops(model, shape, text)
    assert measured == pytest.approx(wan_forward_flops(cfg, shape, text), rel=0.01)


def test_attention_is_counted_on_cpu(monkeypatch):
    """Without the custom mapping FlopCounterMode counts CPU attention as zero: ours adds exactly it."""
    from diffusers import WanTransformer3DModel

    import core.flops as flops

    cfg = tiny_transformer_config()
    model = WanTransformer3DModel(**cfg).eval()
    shape, text = (3, 16, 16), 64
    with_attention = measure_forward_flops(model, shape, text)
    monkeypatch.setattr(flops, "attention_custom_mapping", lambda: {})
    without = measure_forward_flops(model, shape, text)
    n, d = 3 * 8 * 8, cfg["num_attention_heads"] * cfg["attention_head_dim"]
    attention = cfg["num_layers"] * (4 * n * n * d + 4 * n * text * d)
    assert with_attention - without == pytest.approx(attention, rel=1e-6)


def test_flops_cli_prints_per_stage_without_building_weights(capsys):
    assert flops_main(["--model", "wan2.1-1.3b", "--schedule", "20-20-10", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tflops_per_branch"] == pytest.approx(2821, rel=0.01)
    assert flops_main(["--schedule", "20-20-10", "--height", "450"]) == 2
    assert "nearest valid" in capsys.readouterr().err


def test_generate_cli_writes_a_video_and_prints_json(tmp_path):
    import subprocess
    import sys

    from core.video import read_frames

    out = tmp_path / "cli.mp4"
    proc = subprocess.run(
        [sys.executable, "-m", "core.generate", "--model", "tiny", "--schedule", "2-2-1", "--prompt",
         "a red circle moves to the right", "--seed", "0", "--frames", "17", "--height", "128", "--width", "128",
         "--out", str(out), "--json"], capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(proc.stdout)
    assert rep["video"] == str(out) and rep["plan"]["schedule"] == "2-2-1"
    assert len(rep["seconds"]["stages"]) == 3 and rep["tflops"] > 0
    assert read_frames(out).shape == (17, 128, 128, 3)
    bad = subprocess.run([sys.executable, "-m", "core.generate", "--model", "tiny", "--prompt", "x", "--height",
                          "100", "--out", str(tmp_path / "bad.mp4")], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "nearest valid shape" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad.mp4").exists()
