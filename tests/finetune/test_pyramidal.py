"""Pyramidal finetune on the tiny preset: the loss falls per stage, resume equals one long run,
checkpoints (full and LoRA) round-trip through core, bad configs are refused before any work."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core import GenerationRequest, StagePlan, load_pipeline
from core.pipeline import PyramidalWanPipeline
from finetune.pyramidal import ConfigError, TrainConfig, evaluate, train, validate_config

from .conftest import SCHEDULE, SHAPE

OVERFIT_STEPS = 100
OVERFIT_CLIPS = 1
OVERFIT_PER_STAGE = 2
OVERFIT_DATA = f"world:{OVERFIT_CLIPS}"


def test_loss_falls_by_half_per_stage_on_a_fixed_small_set(train_config, tiny, world_cache, tmp_path):
    import shutil

    cache = tmp_path / "cache"
    shutil.copytree(world_cache, cache)
    comps = tiny()
    plan = StagePlan.parse(SCHEDULE)
    cfg = train_config(data=OVERFIT_DATA, cache_dir=str(cache), steps=OVERFIT_STEPS, lr=2e-2, per_stage=OVERFIT_PER_STAGE)
    from finetune.pyramidal import load_data

    data, _ = load_data(cfg, comps, plan, log=lambda *_: None)
    assert len(data) == OVERFIT_CLIPS
    before = evaluate(comps.transformer, data, plan)
    result = train(cfg, components=comps, log=lambda *_: None)
    after = evaluate(comps.transformer, data, plan)
    ratios = [a / b for a, b in zip(after, before)]
    print("loss per stage before", before, "after", after, "ratio", ratios)
    assert result.status == "done" and result.step == OVERFIT_STEPS
    assert all(r <= 0.5 for r in ratios), ratios
    # the log has the loss of every stage at every step, and the card the first and last
    assert len(result.history) == OVERFIT_STEPS and all(len(h["stages"]) == 3 for h in result.history)
    card = json.loads((Path(cfg.out) / "card.json").read_text())
    assert card["base"] == "tiny" and card["kind"] == "full" and card["steps"] == OVERFIT_STEPS
    assert card["windows"][1]["sigma_start"] == pytest.approx(plan.stages[1].sigma_start)
    assert card["boundaries"] == pytest.approx(list(plan.boundaries))
    assert "1-1-1" in card["recommended_schedules"] and card["data"]["clips"] == OVERFIT_CLIPS


def test_resume_equals_one_long_run(train_config, tiny, tmp_path):
    n = 2
    one = train(train_config(steps=2 * n, out=str(tmp_path / "one"), ema_decay=0.9), components=tiny(),
                log=lambda *_: None)
    first = train(train_config(steps=n, out=str(tmp_path / "two"), ema_decay=0.9), components=tiny(),
                  log=lambda *_: None)
    assert first.step == n
    resumed = train(train_config(steps=2 * n, out=str(tmp_path / "two"), ema_decay=0.9), components=tiny(),
                    log=lambda *_: None)
    assert resumed.step == 2 * n and len(resumed.history) == 2 * n
    a = np.array([h["stages"] for h in one.history])
    b = np.array([h["stages"] for h in resumed.history])
    assert np.allclose(a, b, rtol=1e-5, atol=1e-6), (a, b)
    # the final weights (EMA, as written) agree too
    from safetensors.torch import load_file

    wa = load_file(str(tmp_path / "one" / "transformer" / "diffusion_pytorch_model.safetensors"))
    wb = load_file(str(tmp_path / "two" / "transformer" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    # a resume with other settings is refused
    with pytest.raises(ConfigError, match="other settings"):
        train(train_config(steps=2 * n, out=str(tmp_path / "two"), lora_rank=2), components=tiny(),
              log=lambda *_: None)


def test_stage_shares_set_the_clips_each_stage_draws(train_config, tiny, tmp_path):
    """Equal shares are per_stage exactly (same draws, same weights); unequal ones change what each
    stage sees, are recorded on the card, and a resume with other shares is refused."""
    from safetensors.torch import load_file

    def weights(name, **kw):
        train(train_config(steps=2, out=str(tmp_path / name), **kw), components=tiny(), log=lambda *_: None)
        return load_file(str(tmp_path / name / "transformer" / "diffusion_pytorch_model.safetensors"))

    plain, equal = weights("plain", per_stage=2), weights("equal", stage_shares=[2, 2, 2])
    assert all(torch.equal(plain[k], equal[k]) for k in plain)
    uneven = weights("uneven", stage_shares=[3, 2, 1])
    assert not all(torch.equal(plain[k], uneven[k]) for k in plain)
    assert json.loads((tmp_path / "uneven" / "card.json").read_text())["config"]["stage_shares"] == [3, 2, 1]
    with pytest.raises(ConfigError, match="other settings"):
        train(train_config(steps=4, out=str(tmp_path / "uneven"), stage_shares=[1, 2, 3]), components=tiny(),
              log=lambda *_: None)


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_checkpoint_round_trip_through_core_and_the_database(lora, train_config, tiny, sqlite_env, tmp_path):
    import service

    comps = tiny()
    cfg = train_config(steps=1, lr=5e-2, lora_rank=4 if lora else 0, out=str(tmp_path / "ck"))
    result = train(cfg, components=comps, log=lambda *_: None)
    row = service.register_checkpoint(result.out, "tiny", f"pyr-{'lora' if lora else 'full'}")
    assert row["kind"] == ("lora" if lora else "full")
    assert any(c["name"] == row["name"] for c in service.list_checkpoints())

    req = GenerationRequest(prompt="a red circle moves up", model="tiny", schedule="1-1-1", guidance=1.0, seed=11,
                            **SHAPE)
    comps.transformer.eval()
    in_memory = PyramidalWanPipeline.from_components(comps, name="tiny", boundaries=result.card["boundaries"])
    expected = in_memory.generate(req, preview=False).frames
    loaded = load_pipeline("tiny", checkpoint_dir=service.get_checkpoint(row["id"])["path"])
    got = loaded.generate(req, preview=False).frames
    # Bit-exact, full and LoRA (core copies memory-mapped weights, which took other CPU kernels).
    assert np.array_equal(expected, got)
    if not lora:
        base = load_pipeline("tiny").generate(req, preview=False).frames
        assert not np.array_equal(base, got)  # the finetune changed the model


def test_options_run_ema_teacher_bf16_checkpointing_lora(train_config, tiny, tmp_path):
    lines = []
    cfg = train_config(steps=1, out=str(tmp_path / "opts"), lora_rank=2, ema_decay=0.5, teacher_weight=0.5,
                       bf16=True, gradient_checkpointing=True, sample_every=1, sample_schedule="1-1-1")
    result = train(cfg, components=tiny(), log=lines.append)
    assert result.status == "done" and all(np.isfinite(h["loss"]) for h in result.history)
    assert (tmp_path / "opts" / "samples" / "step000001.mp4").is_file(), lines
    assert (tmp_path / "opts" / "lora" / "adapter_model.safetensors").is_file()


def test_low_res_latents_are_block_means_of_the_full_resolution_latent(train_config, tiny, world_cache, tmp_path):
    from core.resample import down_signal, up
    from finetune.data import LatentDataset
    from finetune.pyramidal import latents_from_full_resolution

    data = LatentDataset(world_cache)
    pixels = [x.clone() for x in data.latents[0]]
    latents_from_full_resolution(data)
    top = data.latents[-1][0].unsqueeze(0)
    assert torch.allclose(data.latents[-2][0], down_signal(top)[0])
    assert torch.allclose(up(data.latents[-2][0].unsqueeze(0)), up(down_signal(top)))  # the jump's up(x0_low)
    assert torch.allclose(data.latents[0][0], down_signal(down_signal(top))[0], atol=1e-6)
    assert not torch.allclose(data.latents[0][0], pixels[0])  # not what encoding the small video gives
    result = train(train_config(steps=2, low_res="latents", out=str(tmp_path / "lat")), components=tiny(),
                   log=lambda *_: None)
    assert result.status == "done" and all(np.isfinite(h["loss"]) for h in result.history)
    assert json.loads((tmp_path / "lat" / "card.json").read_text())["config"]["low_res"] == "latents"


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_cond_dropout_trains_on_the_negative_prompt_sampling_uses(dropout, train_config, tiny, tmp_path):
    """Classifier-free guidance queries the model with the empty prompt at every stage, so a share
    of the training samples must carry exactly that embedding (and none when dropout is off)."""
    comps = tiny()
    negative = PyramidalWanPipeline.from_components(comps, name="tiny").encode("a red circle", "", True)[1]
    seen = []
    comps.transformer.register_forward_pre_hook(
        lambda _m, _a, kw: seen.extend(kw["encoder_hidden_states"].detach().float()), with_kwargs=True)
    cfg = train_config(steps=20, per_stage=2, cond_dropout=dropout, out=str(tmp_path / f"cd{dropout}"))
    train(cfg, components=comps, log=lambda *_: None)
    empty = [bool(torch.allclose(e, negative[0], atol=1e-6)) for e in seen]
    assert len(empty) == 20 * 3 * 2
    if dropout == 0:
        assert not any(empty)
    else:
        assert 0.3 <= np.mean(empty) <= 0.7, np.mean(empty)  # 120 draws at 0.5: 4.5 standard errors


def test_stop_request_leaves_a_usable_checkpoint(train_config, tiny, tmp_path):
    cfg = train_config(steps=50, out=str(tmp_path / "stop"))
    result = train(cfg, components=tiny(), on_step=lambda info: info.get("step") == 2, log=lambda *_: None)
    assert result.status == "cancelled" and result.step == 2
    card = json.loads((tmp_path / "stop" / "card.json").read_text())
    assert card["steps"] == 2 and card["complete"] is False
    load_pipeline("tiny", checkpoint_dir=tmp_path / "stop")


@pytest.mark.parametrize("change, field", [
    (dict(base="wan9-nonexistent"), "base"),
    (dict(data="/no/such/folder"), "data"),
    (dict(steps=0), "steps"),
    (dict(steps=2_000_000), "steps"),
    (dict(lr=0.0), "lr"),
    (dict(lr=0.5), "lr"),
    (dict(lr=float("nan")), "lr"),
    (dict(schedule="0-0-8"), "schedule"),  # one stage: nothing pyramidal to learn
    (dict(schedule="1-1-1", height=96), "height"),  # 96 is not a multiple of 64
    (dict(schedule="1-1-1-1-1"), "schedule"),
    (dict(frames=17, height=1280, width=1280, schedule="1-1"), "height"),  # beyond tiny's position table
    (dict(lora_rank=-1), "lora_rank"),
    (dict(ema_decay=1.0), "ema_decay"),
    (dict(out=""), "out"),
    (dict(data="world:0"), "data"),
    (dict(cond_dropout=1.0), "cond_dropout"),
    (dict(low_res="wavelets"), "low_res"),
    (dict(teacher_guidance=0.5), "teacher_guidance"),
    (dict(teacher_seed=-1), "teacher_seed"),
    (dict(stage_shares=[2, 2]), "stage_shares"),  # three stages
    (dict(stage_shares=[4, 0, 1]), "stage_shares"),
    (dict(stage_shares="4,4,1"), "stage_shares"),
])
def test_bad_configs_are_refused_before_any_work(change, field, tmp_path):
    settings = dict(base="tiny", data="world:2", out=str(tmp_path / "x"), steps=3, **SHAPE)
    settings.update(change)
    with pytest.raises(ConfigError) as info:
        train(TrainConfig(**settings), components=None, log=lambda *_: None)
    assert info.value.field == field, str(info.value)
    assert not (tmp_path / "x").exists()  # nothing was written
    with pytest.raises(ConfigError):
        validate_config(settings)


def test_prompts_file_needs_a_teacher_and_unknown_settings_are_named(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red circle moves up\n")
    with pytest.raises(ConfigError) as info:
        validate_config(dict(base="tiny", data=str(prompts), out=str(tmp_path / "o"), **SHAPE))
    assert info.value.field == "teacher"
    with pytest.raises(ConfigError) as info:
        validate_config(dict(base="tiny", data="world:1", out=str(tmp_path / "o"), learning_rate=1e-3))
    assert info.value.field == "learning_rate"


def test_cli_refuses_a_bad_config_and_trains(tmp_path, world_cache, capsys):
    from finetune.__main__ import main

    assert main(["pyramidal", "--base", "tiny", "--data", "world:2", "--steps", "0", "--out", str(tmp_path / "c")]) == 2
    assert "steps" in capsys.readouterr().err
    assert main(["pyramidal", "--base", "tiny", "--data", "world:2", "--stage-shares", "4,x,1",
                 "--out", str(tmp_path / "c")]) == 2
    assert "stage_shares" in capsys.readouterr().err and not (tmp_path / "c").exists()
    rc = main(["pyramidal", "--base", "tiny", "--data", "world:2", "--steps", "1", "--out", str(tmp_path / "c"),
               "--schedule", "1-1-1", "--frames", "17", "--height", "64", "--width", "64",
               "--cache-dir", str(world_cache), "--device", "cpu"])
    assert rc == 0 and (tmp_path / "c" / "card.json").is_file()
    assert "step 1/1" in capsys.readouterr().out
