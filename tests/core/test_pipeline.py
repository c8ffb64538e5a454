import numpy as np
import pytest
import torch

from core import Cancelled, GenerationRequest, ModelLoadError, RequestError, load_pipeline
from core.video import probe, read_frames, write_mp4

PROMPT = "a red circle moves to the right"


@pytest.mark.parametrize("steps, guidance", [(6, 5.0), (4, 1.0)])
def test_one_stage_plan_reproduces_diffusers_wan_pipeline(tiny_pipe, steps, guidance):
    """Our Euler sampler on the baseline plan == stock WanPipeline + FlowMatchEulerDiscreteScheduler."""
    req = GenerationRequest(PROMPT, negative_prompt="blurry", schedule=f"0-0-{steps}", guidance=guidance, seed=3,
                            frames=17, height=64, width=96)
    ours = tiny_pipe.generate(req, return_latents=True)
    ref = tiny_pipe.original(
        prompt=PROMPT, negative_prompt="blurry", num_frames=17, height=64, width=96, num_inference_steps=steps,
        guidance_scale=guidance, generator=torch.Generator().manual_seed(3), output_type="latent",
        max_sequence_length=tiny_pipe.max_sequence_length,
    ).frames
    assert ours.latents.shape == ref.shape == (1, 16, 5, 8, 12)
    assert ref.abs().mean() > 0.1
    torch.testing.assert_close(ours.latents, ref.float(), atol=1e-4, rtol=0)
    # and the 'original' mode runs that very pipeline
    orig = tiny_pipe.generate(GenerationRequest(**{**req.to_dict(), "mode": "original"}), return_latents=True)
    torch.testing.assert_close(orig.latents, ref.float(), atol=1e-4, rtol=0)
    assert np.abs(orig.frames.astype(int) - ours.frames.astype(int)).max() <= 1


def test_pyramidal_run_is_deterministic_and_has_the_requested_shape(tiny_pipe, tmp_path):
    req = GenerationRequest(PROMPT, schedule="2-2-1", seed=7, frames=17, height=128, width=128)
    a = tiny_pipe.generate(req)
    b = tiny_pipe.generate(req)
    c = tiny_pipe.generate(GenerationRequest(PROMPT, schedule="2-2-1", seed=8, frames=17, height=128, width=128))
    assert a.frames.shape == (17, 128, 128, 3) and a.frames.dtype == np.uint8
    assert np.array_equal(a.frames, b.frames)
    assert not np.array_equal(a.frames, c.frames)
    path = write_mp4(a.frames, tmp_path / "run.mp4", fps=a.fps)
    info = probe(path)
    assert (info["codec"], info["pix_fmt"], info["width"], info["height"]) == ("h264", "yuv420p", 128, 128)
    back = read_frames(path)
    assert back.shape == a.frames.shape
    # random-weight output is noise-like (chroma subsampling loses detail); per-frame brightness survives
    assert np.abs(back.mean(axis=(1, 2, 3)) - a.frames.mean(axis=(1, 2, 3))).max() < 3


def test_batched_decode_matches_one_video_at_a_time(tiny_pipe):
    reqs = [GenerationRequest(PROMPT, schedule="1-1-1", seed=s, frames=17, height=64, width=64) for s in (1, 2)]
    runs = [tiny_pipe.generate(r, preview=False, return_latents=True) for r in reqs]
    lazy = tiny_pipe.generate(reqs[0], preview=False, return_latents=True, decode=False)
    assert lazy.frames is None and torch.equal(lazy.latents, runs[0].latents)
    both = tiny_pipe.decode_batch(torch.cat([r.latents for r in runs]))
    assert len(both) == 2
    for got, run in zip(both, runs):
        assert got.shape == run.frames.shape
        assert np.abs(got.astype(int) - run.frames.astype(int)).max() <= 1  # batched convs may round differently


def test_report_has_phases_stages_flops_and_memory(tiny_pipe):
    seen = []
    res = tiny_pipe.generate(GenerationRequest(PROMPT, schedule="1-2-1", seed=1), callback=seen.append)
    rep = res.report
    assert set(rep["seconds"]) >= {"encode", "denoise", "decode", "total", "stages"}
    assert len(rep["seconds"]["stages"]) == 3 and all(s > 0 for s in rep["seconds"]["stages"])
    assert rep["tflops"] > 0 and len(rep["tflops_per_stage"]) == 3
    assert rep["tflops_per_stage"][0] < rep["tflops_per_stage"][1] / 2 < rep["tflops_per_stage"][2]
    assert rep["peak_memory_mb"] > 0
    steps = [(i["stage"], i["step"]) for i in seen if "preview" not in i and i["phase"] == "denoising"]
    assert steps == [(0, 1), (1, 1), (1, 2), (2, 1)]
    previews = [i["preview"] for i in seen if "preview" in i]
    assert len(previews) == 1 and previews[0].shape == (5, 32, 32, 3), "one low-resolution preview after stage 0"
    assert res.preview is not None and seen[-2]["fraction"] == pytest.approx(1.0)


@pytest.mark.parametrize("mode,schedule", [("pyramidal", "1-1"), ("original", "0-2")])
def test_the_callback_hears_denoising_then_decoding(tiny_pipe, mode, schedule):
    """Every step is phase "denoising"; one "decoding" event comes after the last step, with the
    measured denoise seconds; returning True to it stops the run before the decode."""
    seen = []
    tiny_pipe.generate(GenerationRequest(PROMPT, mode=mode, schedule=schedule, frames=9, height=32, width=32),
                       callback=seen.append)
    assert [i["phase"] for i in seen] == ["denoising"] * (len(seen) - 1) + ["decoding"]
    assert len(seen) >= 3 and seen[-1]["seconds"]["denoise"] > 0
    stop_at_decode = lambda info: info["phase"] == "decoding"  # noqa: E731
    with pytest.raises(Cancelled):
        tiny_pipe.generate(GenerationRequest(PROMPT, mode=mode, schedule=schedule, frames=9, height=32, width=32),
                           callback=stop_at_decode)


def test_decode_flops_are_measured_and_grow_with_the_video(tiny_pipe):
    """The VAE's FLOPs (measured under FlopCounterMode) scale with the pixels and the frames."""
    def estimate(frames, size):
        return tiny_pipe.estimate_tflops(GenerationRequest(PROMPT, schedule="1-1", frames=frames, height=size,
                                                           width=size))

    small, wide, long = estimate(9, 32), estimate(9, 64), estimate(17, 32)
    assert 0 < small["decode"] < long["decode"] and 0 < small["denoise"] < long["denoise"]
    assert wide["decode"] == pytest.approx(4 * small["decode"])  # 4x the pixels
    assert tiny_pipe.estimate_tflops(GenerationRequest(PROMPT, schedule="1-1", frames=9, height=32, width=32),
                                     decode=False) == {"denoise": small["denoise"]}


def test_cfg_doubles_the_flops(tiny_pipe):
    a = tiny_pipe.generate(GenerationRequest(PROMPT, schedule="1-1-1", guidance=5.0))
    b = tiny_pipe.generate(GenerationRequest(PROMPT, schedule="1-1-1", guidance=1.0))
    assert a.report["tflops"] == pytest.approx(2 * b.report["tflops"])


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 5000}, "prompt"),
        ({"seed": -1}, "seed"),
        ({"model": "nope"}, "model"),
        ({"mode": "fast"}, "mode"),
        ({"schedule": "2-0-1"}, "schedule"),
        ({"height": 100}, "height"),
        ({"guidance": 50.0}, "guidance"),
        ({"mode": "original", "schedule": "2-2-1"}, "schedule"),
    ],
)
def test_invalid_requests_are_refused_with_the_field(kw, field):
    req = GenerationRequest(**{"prompt": PROMPT, "schedule": "2-2-1", **kw})
    with pytest.raises(RequestError) as err:
        req.validated()
    assert err.value.field == field


def test_unknown_preset_and_missing_weights_give_clear_messages(tmp_path, monkeypatch):
    with pytest.raises(ModelLoadError, match="unknown model"):
        load_pipeline("no-such-model")
    monkeypatch.setenv("PWAN_WAN_PATH", str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="PWAN_WAN_PATH"):
        load_pipeline("wan2.1-1.3b")
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PWAN_WAN_PATH", str(empty))
    with pytest.raises(ModelLoadError, match="Could not load Wan2.1-T2V-1.3B"):
        load_pipeline("wan2.1-1.3b")
    with pytest.raises(ModelLoadError, match="card.json"):
        load_pipeline("tiny", checkpoint_dir=tmp_path)


def test_checkpoint_card_chooses_the_jump_between_stages(tiny_pipe, tmp_path):
    """A card's ``"jump": "fresh"`` changes how stages hand over (same weights, same seed), the
    report says which jump ran, and an unknown jump is refused with the checkpoint's name."""
    from core.checkpoints import save_checkpoint

    req = GenerationRequest(PROMPT, schedule="1-1-1", seed=3, frames=17, height=64, width=64)
    runs = {}
    for jump in ("carry", "fresh"):
        folder = tmp_path / jump
        save_checkpoint(folder, tiny_pipe.transformer, {"base": "tiny", "kind": "full", "jump": jump})
        pipe = load_pipeline("tiny", checkpoint_dir=folder, device="cpu")
        assert pipe.jump == jump
        res = pipe.generate(req, preview=False, return_latents=True, decode=False)
        assert res.report["jump"] == jump
        runs[jump] = res.latents
    base = tiny_pipe.generate(req, preview=False, return_latents=True, decode=False)
    assert torch.equal(base.latents, runs["carry"])  # the default is pyramid.md's carrying jump
    assert not torch.allclose(runs["carry"], runs["fresh"])
    bad = tmp_path / "bad"
    save_checkpoint(bad, tiny_pipe.transformer, {"base": "tiny", "kind": "full", "jump": "teleport"})
    with pytest.raises(ModelLoadError, match="bad: unknown jump 'teleport'"):
        load_pipeline("tiny", checkpoint_dir=bad, device="cpu")
