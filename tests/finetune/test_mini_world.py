"""A few steps of every phase of the mini-world recipe: VAE, base folder, flow-matching
pretraining, the shipped ``mini`` preset, and the pyramidal finetune over it."""

import json

import numpy as np
import pytest

from core import GenerationRequest, load_pipeline


@pytest.mark.slow
def test_short_recipe_ships_a_loadable_mini_preset_and_pyramidal_checkpoint(tmp_path, monkeypatch):
    from finetune.mini_world import RecipeConfig, run

    cfg = RecipeConfig(work=str(tmp_path / "work"), ship=str(tmp_path / "ship"), seed_states=str(tmp_path / "none"),
                       vae_steps=2, pretrain_steps=10,
                       pyramid_steps=1, clips=3, batch=3, warmup=2, save_every=5, threads=1)
    out = run(cfg, log=lambda m: None)
    card = json.loads((tmp_path / "ship" / "mini" / "card.json").read_text())
    assert card["compute"]["pretrain"]["steps"] == 10 and card["compute"]["vae"]["steps"] == 2
    assert card["compute"]["pretrain"]["cpu_seconds"] > 0
    monkeypatch.setenv("PWAN_MINI_PATH", out["mini"])
    from core.presets import default_preset, list_presets

    assert "mini" in list_presets() and default_preset() == "mini"
    req = GenerationRequest("a red circle moves to the right", model="mini", schedule="1-1-1", seed=0)
    base = load_pipeline("mini").generate(req, preview=False)
    pyr = load_pipeline("mini", checkpoint_dir=out["mini_pyramidal"]).generate(req, preview=False)
    assert base.frames.shape == pyr.frames.shape == (17, 128, 128, 3)
    assert not np.array_equal(base.frames, pyr.frames)
    # resuming a finished recipe does no more work and gives the same answer
    again = run(cfg, log=lambda m: None)
    assert again["pretrain"]["steps"] == 10


def test_pyramidal_phase_is_capped_at_a_tenth_of_pretraining(tmp_path):
    from finetune.mini_world import RecipeConfig, phase_pyramid

    with pytest.raises(ValueError, match="10%"):
        phase_pyramid(RecipeConfig(pretrain_steps=100, pyramid_steps=11), tmp_path, log=print)
