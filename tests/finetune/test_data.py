"""Training data: the pixel-space pyramid, fitting clips to the training shape, folder sources with
captions, corrupt files skipped and reported, and the cache's latents having the plan's shapes."""
import json

import numpy as np
import pytest
import torch

from core import StagePlan
from finetune.data import (ClipError, LatentDataset, build_cache, downsample_pixels, fit_frames,
                           folder_clips, pixel_pyramid, read_prompts, to_video_tensor, world_clips)
from finetune.world import make_clip


def test_pixel_pyramid_has_the_plan_shapes_and_the_documented_filter():
    frames, _, _ = make_clip(3)  # 17 x 128 x 128
    video = to_video_tensor(frames)
    plan = StagePlan.parse("20-20-10")
    levels = pixel_pyramid(video, plan.num_stages)
    assert [tuple(v.shape[1:]) for v in levels] == [(5, 32, 32), (9, 64, 64), (17, 128, 128)]
    # each level's latent shape (causal VAE: 1 + (F-1)/4, /8, /8) is the plan's stage shape
    latent = [(1 + (v.shape[1] - 1) // 4, v.shape[2] // 8, v.shape[3] // 8) for v in levels]
    assert latent == plan.latent_shapes(17, 128, 128)
    # by hand: area 2x2 spatially; frame 0 kept, then pairs (1, 2), (3, 4), ... averaged
    x = video.numpy().astype(np.float64)
    pooled = x.reshape(3, 17, 64, 2, 64, 2).mean(axis=(3, 5))
    ref = np.concatenate([pooled[:, :1], pooled[:, 1:].reshape(3, 8, 2, 64, 64).mean(axis=2)], axis=1)
    assert np.allclose(levels[1].numpy(), ref, atol=1e-5)
    with pytest.raises(ClipError):
        downsample_pixels(torch.zeros(3, 4, 8, 8))


def test_fit_frames_resizes_crops_and_refuses_short_clips():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 255, size=(20, 96, 160, 3), dtype=np.uint8)
    out = fit_frames(clip, 17, 64, 64)
    assert out.shape == (17, 64, 64, 3) and out.dtype == np.uint8
    flat = np.full((17, 128, 128, 3), 77, np.uint8)
    assert np.array_equal(fit_frames(flat, 17, 64, 64), np.full((17, 64, 64, 3), 77, np.uint8))
    with pytest.raises(ClipError, match="too short"):
        fit_frames(clip[:9], 17, 64, 64)
    with pytest.raises(ClipError):
        fit_frames(np.zeros((17, 8), np.uint8), 17, 64, 64)


def test_read_prompts(tmp_path):
    (tmp_path / "p.txt").write_text("# comment\na red circle moves up\n\na blue square moves left\n")
    (tmp_path / "p.jsonl").write_text('{"prompt": "a green circle"}\n{"caption": "a cat"}\n')
    assert read_prompts(tmp_path / "p.txt") == ["a red circle moves up", "a blue square moves left"]
    assert read_prompts(tmp_path / "p.jsonl") == ["a green circle", "a cat"]


def test_folder_source_with_a_corrupt_file_is_cached_and_the_file_reported(tmp_path, tiny):
    from core.video import write_mp4

    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(2):
        frames, text, _ = make_clip(i)
        write_mp4(frames[:, ::4, ::4], folder / f"clip{i}.mp4", fps=16)  # 17 x 32 x 32
        (folder / f"clip{i}.txt").write_text(text)
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    (folder / "broken.txt").write_text("a red circle moves up")
    (folder / "short.mp4").write_bytes(b"")
    clips, skipped = folder_clips(folder)
    assert sorted(c.name for c in clips) == ["broken", "clip0", "clip1"]
    assert skipped and skipped[0][0] == "short.mp4" and "caption" in skipped[0][1]

    plan = StagePlan.parse("1-1")  # two stages: 17 x 32 x 32 -> latents (3, 2, 2), (5, 4, 4)
    report = build_cache(clips, tiny(), plan, (17, 32, 32), tmp_path / "cache", base="tiny", skipped=skipped)
    assert [e["name"] for e in report.entries] == ["clip0", "clip1"]
    assert any(name == "broken" and "cannot be read" in why for name, why in report.skipped)
    data = LatentDataset(tmp_path / "cache")
    assert len(data) == 2 and data.captions[0] == (folder / "clip0.txt").read_text()
    shapes = plan.latent_shapes(17, 32, 32)
    for level in range(2):
        assert tuple(data.latents[level][0].shape) == (16, *shapes[level])
    assert data.text[0].ndim == 2
    manifest = json.loads((tmp_path / "cache" / "manifest.json").read_text())
    assert manifest["latent_shapes"] == [list(s) for s in shapes]
    # preprocessing happens once: a second pass encodes nothing
    again = build_cache(clips, tiny(), plan, (17, 32, 32), tmp_path / "cache", base="tiny")
    assert again.encoded == 0 and len(again.entries) == 2


def test_captions_jsonl_source(tmp_path):
    from core.video import write_mp4

    frames, _, _ = make_clip(0)
    write_mp4(frames[:, ::4, ::4], tmp_path / "a.mp4", fps=16)
    lines = [{"file": "a.mp4", "caption": "a red circle"}, {"file": "gone.mp4", "caption": "x"}, {"oops": 1}]
    (tmp_path / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\nnot json\n")
    clips, skipped = folder_clips(tmp_path)
    assert [(c.name, c.caption) for c in clips] == [("a", "a red circle")]
    assert len(skipped) == 3
    assert clips[0].load().shape == (17, 32, 32, 3)


def test_world_clips_are_the_mini_world():
    clips = world_clips(3, seed=5)
    frames, text, _ = make_clip(6)
    assert clips[1].caption == text and np.array_equal(clips[1].load(), frames)


def test_teacher_clips_come_from_the_teacher_pipeline(tmp_path, tiny):
    from core.pipeline import PyramidalWanPipeline
    from finetune.data import teacher_clips

    teacher = PyramidalWanPipeline.from_components(tiny(), name="tiny")
    clips = teacher_clips(["a red circle moves up"], teacher, frames=17, height=32, width=32,
                          schedule="0-0-1", guidance=1.0)
    frames = clips[0].load()
    assert frames.shape == (17, 32, 32, 3) and clips[0].caption == "a red circle moves up"


def test_batched_cache_matches_one_at_a_time_and_an_interrupted_build_resumes(tmp_path, tiny):
    plan = StagePlan.parse("1-1")
    clips = world_clips(5)
    small = [type(c)(c.name, c.caption, (lambda c=c: c.load()[:, ::4, ::4]), c.source) for c in clips]  # 32x32
    comps = tiny()
    single = build_cache(small, comps, plan, (17, 32, 32), tmp_path / "one", base="tiny", batch=1)
    calls = {"n": 0}

    def stop_after_three() -> bool:  # asked before every clip: the build stops with 3 clips cached
        calls["n"] += 1
        return calls["n"] > 3

    part = build_cache(small, comps, plan, (17, 32, 32), tmp_path / "many", base="tiny", batch=2,
                       should_stop=stop_after_three)
    assert len(part.entries) == 3  # two batches flushed: 2 + the last, partial one
    assert len(json.loads((tmp_path / "many" / "manifest.json").read_text())["entries"]) == 3
    done = build_cache(small, comps, plan, (17, 32, 32), tmp_path / "many", base="tiny", batch=2)
    assert done.encoded == 2 and [e["source"] for e in done.entries] == [c.source for c in clips]
    a, b = LatentDataset(tmp_path / "one"), LatentDataset(tmp_path / "many")
    assert a.captions == b.captions == [c.caption for c in clips]
    for level in range(plan.num_stages):
        for x, y in zip(a.latents[level], b.latents[level]):
            assert torch.allclose(x, y, atol=1e-4), "a clip's latents depend on its batch"
    assert all(torch.equal(x, y) for x, y in zip(a.text, b.text))


def test_teacher_clips_record_how_they_were_made(tiny):
    from core.pipeline import PyramidalWanPipeline
    from finetune.data import resolve_source, teacher_clips

    teacher = PyramidalWanPipeline.from_components(tiny(), name="tiny")
    a = teacher_clips(["x"], teacher, frames=17, height=32, width=32, schedule="0-0-2", guidance=1.5, seed=7)
    b = teacher_clips(["x"], teacher, frames=17, height=32, width=32, schedule="0-0-2", guidance=3.0, seed=7)
    assert a[0].source != b[0].source and a[0].source.endswith(":7")  # the cache never mixes them up
    assert "0-0-2" in a[0].source and "g1.5" in a[0].source


def test_teacher_clips_without_guidance_use_the_teachers_recommendation(tiny):
    from core.pipeline import PyramidalWanPipeline
    from finetune.data import teacher_clips

    teacher = PyramidalWanPipeline.from_components(tiny(), name="tiny")
    assert "g5:" in teacher_clips(["x"], teacher, frames=17, height=32, width=32, schedule="0-0-2")[0].source
    teacher.info["checkpoint"] = {"base": "tiny", "kind": "full", "guidance": 2.5}  # as load_pipeline sets it
    clip = teacher_clips(["x"], teacher, frames=17, height=32, width=32, schedule="0-0-2", seed=7)[0]
    assert clip.source.endswith(":g2.5:7")
