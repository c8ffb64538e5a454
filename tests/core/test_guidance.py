"""A request that names no guidance gets the model's recommendation, from one resolver
(``core.presets.resolve_guidance``), at every entry point of core: the CLI and the notebook API."""

import json
from pathlib import Path

import pytest

from core import GenerationRequest, load_pipeline

ROOT = Path(__file__).resolve().parents[2]
PYRAMIDAL = ROOT / "models" / "mini-pyramidal"
CARD = json.loads((PYRAMIDAL / "card.json").read_text()) if (PYRAMIDAL / "card.json").is_file() else {}
needs_mini = pytest.mark.skipif(not (ROOT / "models" / "mini" / "transformer").is_dir() or not CARD,
                                reason="the mini models are not shipped")
SMALL = ["--frames", "17", "--height", "128", "--width", "128", "--schedule", "2-2-1"]


def test_resolve_guidance_says_where_the_value_came_from(monkeypatch, tmp_path):
    from core import resolve_guidance

    card = {"guidance": 2.0, "guidance_per_stage": [1.0, 1.0, 2.0]}
    assert resolve_guidance(3.0, "tiny", card, stages=3) == (3.0, "request")
    assert resolve_guidance(None, "tiny", card, stages=3) == ([1.0, 1.0, 2.0], "checkpoint card")
    assert resolve_guidance(None, "tiny", card, stages=1) == (2.0, "checkpoint card")
    assert resolve_guidance(None, "tiny", None, stages=3) == (5.0, "default")
    (tmp_path / "card.json").write_text(json.dumps({"guidance": 1.5}))
    monkeypatch.setenv("PWAN_MINI_PATH", str(tmp_path))
    assert resolve_guidance(None, "mini", {}, stages=3) == (1.5, "preset card")


def test_a_request_without_guidance_stays_unresolved_until_the_pipeline_knows_its_card():
    req = GenerationRequest("a red circle moves to the right", schedule="2-2-1").validated(known_models=["tiny"])
    assert req.guidance is None and req.guidance_source is None
    resolved = req.resolved({"guidance_per_stage": [1, 1, 1.5]}).validated(known_models=["tiny"])
    assert resolved.guidance == [1.0, 1.0, 1.5] and resolved.guidance_source == "checkpoint card"


@needs_mini
def test_cli_without_guidance_runs_the_checkpoint_cards(capsys, tmp_path):
    from core.generate import main

    rc = main(["--model", "mini", "--checkpoint", str(PYRAMIDAL), "--prompt", "a blue square moves up",
               "--out", str(tmp_path / "a.mp4"), "--json", *SMALL])
    assert rc == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [s["guidance"] for s in report["plan"]["stages"]] == [1.0, 1.0, 1.5]  # as run
    assert report["guidance"] == CARD["guidance_per_stage"] == [1.0, 1.0, 1.5]
    assert report["guidance_source"] == "checkpoint card"


@needs_mini
def test_notebook_api_without_guidance_runs_the_checkpoint_cards():
    pipe = load_pipeline("mini", str(PYRAMIDAL))
    res = pipe("a blue square moves up", schedule="2-2-1", frames=17, height=128, width=128)
    assert res.report["guidance"] == [1.0, 1.0, 1.5] and res.report["guidance_source"] == "checkpoint card"
    one = pipe.generate(GenerationRequest("a blue square moves up", model="mini", mode="original",
                                          schedule="0-0-2"), decode=False)
    assert one.report["guidance"] == [1.5] and one.report["guidance_source"] == "checkpoint card"
    own = pipe.generate(GenerationRequest("a blue square moves up", model="mini", schedule="2-2-1", guidance=3.0),
                        decode=False)
    assert own.report["guidance"] == [3.0, 3.0, 3.0] and own.report["guidance_source"] == "request"
