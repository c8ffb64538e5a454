"""Training the tiny decoder (finetune/tiny_decoder.py) on the ``tiny`` preset at a small shape:
the loss falls, a resumed job continues exactly where it stopped, the card holds no absolute path;
and the shipped ``models/mini-tiny-decoder`` reaches 30 dB against the full decoder."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from finetune.tiny_decoder import TinyDecoderConfigError, TinyDecoderTrainConfig, train, validate

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "models" / "mini-tiny-decoder"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One triplet cache (4 training clips, 2 held out, tiny preset, 5x32x32) for every test."""
    from core.presets import build_components
    from finetune.tiny_decoder import build_cache

    folder = tmp_path_factory.mktemp("tiny-decoder-cache")
    cfg = TinyDecoderTrainConfig(base="tiny", data="world:4", out=str(folder), frames=5, height=32, width=32,
                                 eval_clips=2, vae_batch=4, cache_dir=str(folder))
    build_cache(cfg, lambda: build_components("tiny", "cpu").vae, log=lambda s: None)
    return folder


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small(out, cache_dir=None, **kw) -> TinyDecoderTrainConfig:
    settings = dict(base="tiny", data="world:4", out=str(out), steps=4, batch=2, frames=5, height=32, width=32,
                    widths=[8, 8, 4], blocks=[1, 0, 0], eval_clips=2, eval_every=1000, save_every=2,
                    vae_batch=4, lr=1e-2, warmup_steps=0, device="cpu", cache_dir=cache_dir and str(cache_dir))
    settings.update(kw)
    return TinyDecoderTrainConfig(**settings)


def _params(folder) -> dict:
    from core.tiny_decoder import load_tiny_decoder

    return {k: v.clone() for k, v in load_tiny_decoder(folder).state_dict().items()}


def test_loss_falls(tmp_path, cache):
    card = train(small(tmp_path / "a", cache, steps=40, lr_min_ratio=1.0), log=lambda s: None)
    state = torch.load(tmp_path / "a" / "train" / "state.pt", weights_only=False)
    losses = state["history"]
    assert len(losses) == 40
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5, losses
    assert card["steps"] == 40 and card["heldout"]["clips"] == 2


def test_resume_continues_exactly(tmp_path, cache):
    """4 straight steps against 2, an interruption, and 2 more: identical parameters. The job
    builds its own cache in its folder, which the resumed run must reuse (no re-encoding)."""
    straight = tmp_path / "straight"
    train(small(straight, cache, steps=4), log=lambda s: None)
    resumed = tmp_path / "resumed"
    lines: list[str] = []
    assert train(small(resumed, steps=4), log=lines.append, should_stop=lambda step: step == 2) is None
    assert any(s.startswith("cache ") for s in lines) and not (resumed / "model.safetensors").exists()
    lines.clear()
    train(small(resumed, steps=4), log=lines.append)
    assert any("resumed at step 2" in s for s in lines)
    assert not any(s.startswith("cache ") for s in lines), "a resumed job must not re-encode"
    a, b = _params(straight), _params(resumed)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # the comparison could fail: 2 steps of the same job give other parameters
    half = tmp_path / "half"
    train(small(half, cache, steps=4), log=lambda s: None, should_stop=lambda step: step == 2)
    state = torch.load(half / "train" / "state.pt", weights_only=False)
    assert state["step"] == 2
    assert any(not torch.equal(a[k], v) for k, v in state["model"].items())


def test_resume_refuses_other_settings(tmp_path, cache):
    train(small(tmp_path / "c", cache, steps=2), log=lambda s: None)
    with pytest.raises(TinyDecoderConfigError, match="other settings"):
        train(small(tmp_path / "c", cache, steps=4, lr=5e-3), log=lambda s: None)


def test_card_has_no_absolute_path(tmp_path, cache):
    card = train(small(tmp_path / "d", cache, steps=2), log=lambda s: None)
    text = (tmp_path / "d" / "card.json").read_text()
    assert json.loads(text) == card
    assert str(tmp_path) not in text and str(cache) not in text and '"/' not in text
    assert card["base"] == "tiny" and card["latent_space"] == "tiny"
    config = json.loads((tmp_path / "d" / "config.json").read_text())
    assert config["latent_space"] == "tiny" and len(config["latents_mean"]) == 16


def test_validate_names_the_problem(tmp_path):
    with pytest.raises(TinyDecoderConfigError, match="frames must be 1 \\+ 4k"):
        validate(small(tmp_path, frames=6))
    with pytest.raises(TinyDecoderConfigError, match="world:N"):
        validate(small(tmp_path, data=str(tmp_path / "nope")))


def test_cli_parses_tiny_decoder(tmp_path):
    from finetune.__main__ import _parser, tiny_decoder_config_from_args

    args = _parser().parse_args(["tiny-decoder", "--base", "mini", "--data", "world:64", "--steps", "7",
                                 "--out", str(tmp_path / "x"), "--widths", "32,16,8", "--clip-weight", "0.1"])
    cfg = tiny_decoder_config_from_args(args)
    assert (cfg.base, cfg.data, cfg.steps, cfg.widths, cfg.clip_weight) == ("mini", "world:64", 7, [32, 16, 8], 0.1)
    assert cfg.out == str((tmp_path / "x").resolve())


@pytest.mark.slow
@pytest.mark.skipif(not (SHIPPED / "model.safetensors").is_file(), reason="models/mini-tiny-decoder not shipped")
def test_shipped_decoder_reaches_30_db():
    """Four held-out world clips (seeds 20,000,000+, never trained on), encoded and decoded by the
    mini VAE here, then by the shipped tiny decoder."""
    from core.presets import build_components, mini_available
    from core.tiny_decoder import load_tiny_decoder
    from finetune.data import encode_video, to_video_tensor, world_clips
    from finetune.tiny_decoder import HELDOUT_SEED, full_decode, psnr

    if not mini_available():
        pytest.skip("models/mini is not there")
    vae = build_components("mini", "cpu").vae
    tiny = load_tiny_decoder(SHIPPED)
    assert tiny.config.latent_space == "mini" and tiny.matches_vae(vae)
    clips = world_clips(4, seed=HELDOUT_SEED + 100)  # beyond the 16 the card evaluated on
    video = torch.stack([to_video_tensor(c.load()) for c in clips])
    latents = encode_video(vae, video)
    full = full_decode(vae, latents)
    fast = tiny.decode(latents)
    scores = [psnr(fast[i], full[i]) for i in range(len(clips))]
    assert sum(scores) / len(scores) >= 30.0, scores


def test_warm_start_grows_the_decoder_exactly(tmp_path, cache):
    """A decoder trained with blocks 1,0,0 and grown to 1,1,1: before any step the grown one decodes
    exactly as the trained one (the new residual blocks start as the identity), and the fine-tune
    then moves it; the card names the folder it started from, never its path."""
    from core.tiny_decoder import TinyDecoderConfig, TinyVideoDecoder, load_tiny_decoder
    from finetune.tiny_decoder import warm_start

    train(small(tmp_path / "first", cache, steps=3), log=lambda s: None)
    first = load_tiny_decoder(tmp_path / "first")
    grown = TinyVideoDecoder(TinyDecoderConfig(**{**vars(first.config), "blocks": [1, 1, 1]}))
    info = warm_start(grown, tmp_path / "first", "tiny")
    assert info == {"folder": "first", "blocks": [1, 0, 0], "added": ["blocks1.0", "blocks2.0"]}
    latents = torch.randn(1, 16, 2, 4, 4)
    assert torch.equal(grown.eval()(latents), first(latents))

    card = train(small(tmp_path / "second", cache, steps=3, blocks=[1, 1, 1], init=str(tmp_path / "first")),
                 log=lambda s: None)
    assert card["init"]["folder"] == "first" and card["train"]["init"] == "first"
    assert card["init"]["steps"] == 3 and card["init"]["data"] == "world:4" and card["init"]["init"] is None
    assert str(tmp_path) not in (tmp_path / "second" / "card.json").read_text()
    second = load_tiny_decoder(tmp_path / "second")
    assert not torch.equal(second(latents), first(latents))


def test_warm_start_refuses_what_does_not_fit(tmp_path, cache):
    from core.tiny_decoder import TinyDecoderConfig, TinyVideoDecoder
    from finetune.tiny_decoder import warm_start

    train(small(tmp_path / "first", cache, steps=1, blocks=[1, 1, 0]), log=lambda s: None)
    with pytest.raises(TinyDecoderConfigError, match="widths"):
        warm_start(TinyVideoDecoder(TinyDecoderConfig(widths=[8, 8, 8], blocks=[1, 1, 0])), tmp_path / "first", "tiny")
    with pytest.raises(TinyDecoderConfigError, match="lacks"):
        warm_start(TinyVideoDecoder(TinyDecoderConfig(widths=[8, 8, 4], blocks=[1, 0, 0])), tmp_path / "first", "tiny")
    with pytest.raises(TinyDecoderConfigError, match="not 'mini'"):
        warm_start(TinyVideoDecoder(TinyDecoderConfig(widths=[8, 8, 4], blocks=[1, 1, 0])), tmp_path / "first", "mini")
    with pytest.raises(TinyDecoderConfigError, match="init"):
        validate(small(tmp_path, init=str(tmp_path / "nope")))


def test_generated_samples_join_the_training_data(tmp_path, cache):
    """``samples``: latents the model generates (seeds 30,000,000+, the schedules in turn), decoded by
    the full decoder, are cached beside the clips and trained on; a second run reuses them, and a
    run asking for other samples in the same folder is refused."""
    from finetune.tiny_decoder import SAMPLE_SEED, load_cache

    kw = dict(samples=3, samples_mode="original", samples_schedules="0-0-2,0-0-1", vae_batch=2,
              cache_dir=str(tmp_path / "cache"))
    lines: list[str] = []
    card = train(small(tmp_path / "s", steps=2, **kw), log=lines.append)
    assert sum(s.startswith("cache samples part") for s in lines) == 2
    assert any("4 training clips, 3 generated samples" in s for s in lines)
    samples = load_cache(tmp_path / "cache", "samples", 3, 2)
    assert samples["latents"].shape == (3, 16, 2, 4, 4) and samples["full"].shape == (3, 5, 32, 32, 3)
    assert samples["names"][0].startswith(f"sample {SAMPLE_SEED} 0-0-2: ")
    assert samples["names"][1].startswith(f"sample {SAMPLE_SEED + 1} 0-0-1: ")
    assert card["train"]["samples"] == 3
    lines.clear()
    train(small(tmp_path / "s2", steps=1, **kw), log=lines.append)
    assert not any(s.startswith("cache ") for s in lines), "cached samples must be reused"
    with pytest.raises(TinyDecoderConfigError, match="other samples"):
        train(small(tmp_path / "s3", steps=1, **{**kw, "samples_schedules": "0-0-2"}), log=lambda s: None)
    with pytest.raises(TinyDecoderConfigError, match="samples \\(pyramidal 2-2-1 at 5x32x32\\): 5 frames"):
        train(small(tmp_path / "s4", steps=1, samples=1, samples_schedules="2-2-1", cache_dir=str(tmp_path / "c4")),
              log=lambda s: None)
