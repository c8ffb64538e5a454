"""The pipeline's decoders: ``decoder="full"|"tiny"|"both"`` for the final video, the tiny decoder
for low-resolution previews whenever there is one, and clear refusals (unknown decoder, none
present). The ``tiny`` preset carries a seeded random tiny decoder, so no files are needed."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core import DECODERS, GenerationRequest, PyramidalWanPipeline, RequestError, has_tiny_decoder
from core.presets import tiny_decoder_folder

PROMPT = "a red circle moves to the right"
SMALL = dict(schedule="1-1", seed=3, frames=9, height=32, width=32)


def _run(pipe, decoder, **kw):
    return pipe.generate(GenerationRequest(PROMPT, decoder=decoder, **{**SMALL, **kw}), return_latents=True)


def test_tiny_preset_has_a_tiny_decoder_matching_its_vae(tiny_pipe):
    assert tiny_pipe.tiny_decoder is not None and tiny_pipe.tiny_decoder.matches_vae(tiny_pipe.vae)
    assert has_tiny_decoder("tiny")
    assert DECODERS == ("full", "tiny", "both")


def test_tiny_decoder_gives_frames_like_the_full_one_and_says_so(tiny_pipe):
    full, tiny = _run(tiny_pipe, "full"), _run(tiny_pipe, "tiny")
    assert tiny.frames.shape == full.frames.shape == (9, 32, 32, 3) and tiny.frames.dtype == np.uint8
    assert tiny.report["decoder"] == "tiny" and full.report["decoder"] == "full"
    assert tiny.frames_tiny is None and full.frames_tiny is None
    assert "decode_tiny" not in tiny.report["seconds"] and tiny.report["seconds"]["decode"] > 0
    np.testing.assert_array_equal(tiny.frames, tiny_pipe.decode(tiny.latents, "tiny"))


def test_both_returns_the_full_video_and_the_tiny_one_with_their_psnr(tiny_pipe):
    both = _run(tiny_pipe, "both")
    full = _run(tiny_pipe, "full")
    np.testing.assert_array_equal(both.frames, full.frames)  # the main video is the full decode
    assert both.frames_tiny.shape == both.frames.shape
    np.testing.assert_array_equal(both.frames_tiny, tiny_pipe.decode(both.latents, "tiny"))
    assert both.report["decoder"] == "both"
    assert both.report["seconds"]["decode"] > 0 and both.report["seconds"]["decode_tiny"] > 0
    assert isinstance(both.report["decode_psnr_db"], float) and 0 < both.report["decode_psnr_db"] < 100
    assert full.report["decode_psnr_db"] is None
    json.dumps(both.report)  # plain JSON


def test_preview_uses_the_tiny_decoder_when_present(tiny_pipe, monkeypatch):
    full = _run(tiny_pipe, "full")
    assert full.report["preview_decoder"] == "tiny" and full.preview.shape == (5, 16, 16, 3)
    calls = []
    original = tiny_pipe.tiny_decoder.decode_frames
    monkeypatch.setattr(tiny_pipe.tiny_decoder, "decode_frames", lambda x: calls.append(x.shape) or original(x))
    _run(tiny_pipe, "full")
    assert calls == [(1, 16, 2, 2, 2)]  # the stage-0 latent, and not the final video


def test_without_a_tiny_decoder_previews_use_the_vae_and_tiny_is_refused(tiny_pipe, monkeypatch):
    monkeypatch.setattr(tiny_pipe, "tiny_decoder", None)
    full = _run(tiny_pipe, "full")
    assert full.report["preview_decoder"] == "full" and full.preview is not None
    for decoder in ("tiny", "both"):
        with pytest.raises(RequestError, match="has no tiny decoder.*python -m finetune tiny-decoder") as err:
            _run(tiny_pipe, decoder)
        assert err.value.field == "decoder"


@pytest.mark.parametrize("bad", ["fast", "", None, 1])
def test_an_unknown_decoder_is_refused(tiny_pipe, bad):
    with pytest.raises(RequestError, match="decoder must be one of: full, tiny, both") as err:
        GenerationRequest(PROMPT, decoder=bad, **SMALL).validated(known_models=["tiny"])
    assert err.value.field == "decoder"
    with pytest.raises(RequestError):
        tiny_pipe.decode_batch(_run(tiny_pipe, "tiny").latents, decoder=bad)


def test_original_mode_honours_the_decoder(tiny_pipe):
    req = dict(mode="original", schedule="0-2", frames=9, height=32, width=32)
    tiny = _run(tiny_pipe, "tiny", **req)
    assert tiny.report["decoder"] == "tiny" and tiny.report["preview_decoder"] is None
    np.testing.assert_array_equal(tiny.frames, tiny_pipe.decode(tiny.latents, "tiny"))
    both = _run(tiny_pipe, "both", **req)
    np.testing.assert_array_equal(both.frames, tiny_pipe.decode(both.latents, "full"))
    np.testing.assert_array_equal(both.frames_tiny, tiny.frames)


def test_a_sibling_tiny_decoder_folder_is_found_checked_and_loaded(tiny_pipe, tmp_path, monkeypatch):
    """``<model folder>-tiny-decoder`` beside a folder preset: kept when it shares the VAE's latent
    space, ignored (with the VAE still decoding) when it does not; has_tiny_decoder agrees."""
    from core import presets

    model = tmp_path / "mini"
    (model / "vae").mkdir(parents=True)
    (model / "vae" / "config.json").write_text(json.dumps(dict(tiny_pipe.vae.config)))
    monkeypatch.setattr(presets, "mini_path", lambda: model)
    assert not has_tiny_decoder("mini")
    assert presets._load_sibling_decoder(model, tiny_pipe.vae, "cpu") is None
    tiny_pipe.tiny_decoder.save(tiny_decoder_folder(model))
    assert tiny_decoder_folder(model) == tmp_path / "mini-tiny-decoder"
    assert has_tiny_decoder("mini")
    loaded = presets._load_sibling_decoder(model, tiny_pipe.vae, "cpu")
    assert loaded is not None and loaded.matches_vae(tiny_pipe.vae)
    config = tiny_decoder_folder(model) / "config.json"
    data = json.loads(config.read_text())
    config.write_text(json.dumps({**data, "latents_mean": [m + 1 for m in data["latents_mean"]]}))
    assert not has_tiny_decoder("mini")
    assert presets._load_sibling_decoder(model, tiny_pipe.vae, "cpu") is None


def test_estimate_tflops_counts_the_requested_decoder(tiny_pipe):
    est = {d: tiny_pipe.estimate_tflops(GenerationRequest(PROMPT, decoder=d, **SMALL))["decode"] for d in DECODERS}
    assert 0 < est["tiny"] < est["full"] < est["both"]
    assert est["both"] == pytest.approx(est["full"] + est["tiny"])


def test_pipeline_built_from_components_keeps_the_tiny_decoder(tiny_pipe):
    from core.presets import build_components

    comps = build_components("tiny", "cpu")
    pipe = PyramidalWanPipeline.from_components(comps, name="tiny")
    assert pipe.tiny_decoder is comps.tiny_decoder is not None
