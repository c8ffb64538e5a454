"""Distillation mechanics on the tiny preset, for every method (distill.md): the losses are
finite, the student's weights move, the critic's loss falls during the critic-only warm-up,
checkpoints round-trip with their recipe (the studio loads and runs them), a resumed run goes on
bit for bit, and bad settings are refused before any work."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from core import GenerationRequest, RequestError, load_pipeline
from finetune.distill import DistillConfig, train, validate_config
from finetune.toolkit import ConfigError, read_state

from .conftest import DATA, SHAPE

PLANS = {"dmd-pt-star": "2-2-1", "dmd-pt": "2-2-1", "adversarial": "2-2-1", "dmd-ot": "2-2-1"}


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A tiny "pyramidal teacher": the tiny transformer with a pyramidal card (windows 0.8 / 0.5,
    guidance only at full resolution)."""
    from core.checkpoints import save_checkpoint
    from core.presets import build_components

    folder = tmp_path_factory.mktemp("teacher")
    save_checkpoint(folder, build_components("tiny", "cpu").transformer,
                    {"base": "tiny", "name": "tiny-pyramidal", "boundaries": [0.8, 0.5], "trained_for": "pyramidal",
                     "guidance_per_stage": [1.0, 1.0, 2.0], "guidance": 2.0})
    return folder


@pytest.fixture
def config(world_cache, teacher_dir, tmp_path):
    def make(method="dmd-pt-star", **overrides) -> DistillConfig:
        settings = dict(method=method, base="tiny", teacher="" if method == "dmd-ot" else str(teacher_dir),
                        student_plan=PLANS.get(method, "2-2-1"), data=DATA, out=str(tmp_path / method), steps=3,
                        critic_steps=2, batch=2, lr=1e-3, pairs=4, pair_schedule="2-2-1", ot_steps=2,
                        cache_dir=str(world_cache), device="cpu", **SHAPE)
        if method == "dmd-ot":
            settings["pair_schedule"] = "0-0-3"
        settings.update(overrides)
        return DistillConfig(**settings)

    return make


def _weights(folder):
    from safetensors.torch import load_file

    files = sorted((folder / "transformer").glob("*.safetensors"))
    out = {}
    for f in files:
        out.update(load_file(str(f)))
    return out


@pytest.mark.parametrize("method", list(PLANS))
def test_every_method_trains_a_student_that_the_studio_runs_on_its_recipe(config, method, teacher_dir):
    cfg = config(method, save_every=2)
    infos = []
    result = train(cfg, on_step=lambda info: infos.append(info) and None, log=lambda m: None)
    assert result.status == "done" and result.step == 3
    steps = [i for i in infos if i["phase"] == "train"]
    assert [i["step"] for i in steps] == [1, 2, 3]
    for info in steps:
        assert math.isfinite(info["generator_loss"]) and math.isfinite(info["critic_loss"])
        assert info["student_grad_norm"] > 0 and 0 <= info["exit_stage"] < 3
    student, teacher = _weights(result.out), _weights(teacher_dir)
    moved = [k for k in student if not torch.equal(student[k], teacher[k])]
    assert len(moved) > len(student) // 2, "the student's weights should move"
    card = json.loads((result.out / "card.json").read_text())
    assert card["trained_for"] == "few-step" and card["recipe"]["schedule"] == "2-2-1" and card["guidance"] == 1.0
    assert card["method"] == method and card["complete"] and card["steps"] == 3
    assert card["recipe"]["conversion"] == ("exact" if method == "dmd-pt" else "plain")
    assert card["label"].startswith("2-2-1, 5 steps, guidance baked in")
    assert [p.split("/")[-1] for p in result.snapshots] == ["000002", "000003"]
    pipe = load_pipeline("tiny", checkpoint_dir=result.out, device="cpu")
    req = GenerationRequest("a red circle moves up", model="tiny", seed=1, **SHAPE)
    res = pipe.generate(req, preview=False)
    assert res.report["sampler"] == "few-step" and res.report["recipe"]["schedule"] == "2-2-1"
    assert res.frames.shape == (17, 64, 64, 3)
    with pytest.raises(RequestError, match="trained for schedule 2-2-1"):
        pipe.generate(GenerationRequest("x", model="tiny", schedule="1-1-1", **SHAPE))


def test_a_conventional_student_is_the_one_stage_case_of_dmd_ot(config, tmp_path):
    result = train(config("dmd-ot", student_plan="0-0-2", cache_dir=str(tmp_path / "cache1"), steps=2),
                   log=lambda m: None)
    card = result.card
    assert card["recipe"]["schedule"] == "0-0-2" and card["label"].endswith("DMD-OT (conventional)")
    assert card["teacher"]["low_res_finetune_steps"] == 0 and not (result.out / "ot-teacher").exists()
    assert len(card["recipe"]["levels"][0]) == 2


def test_a_student_may_start_from_another_checkpoint_than_its_teacher(config, teacher_dir, tmp_path):
    """dmd-ot: the teacher is the original; the pyramidal student may start from the pyramidal model."""
    from core.checkpoints import save_checkpoint
    from core.presets import build_components

    other = tmp_path / "start"
    base = build_components("tiny", "cpu").transformer
    with torch.no_grad():
        for p in base.parameters():
            p.add_(0.05)
    save_checkpoint(other, base, {"base": "tiny", "name": "start"})
    result = train(config("dmd-ot", steps=1, student_init=str(other), lr=1e-9), log=lambda m: None)
    student, start = _weights(result.out), _weights(other)
    assert all(torch.allclose(student[k], start[k], atol=1e-5) for k in start)  # it moved by a hair only
    assert result.card["student_init"] == "start" and result.card["teacher"]["kind"] == "original"
    with pytest.raises(ConfigError, match="student_init"):
        validate_config(config("dmd-ot", student_init=str(tmp_path / "nowhere")))


def test_dmd_ot_finetunes_the_original_on_the_low_resolutions_once(config):
    cfg = config("dmd-ot", steps=1, teach_weight=0.0, pairs=0)
    logs = []
    train(cfg, log=logs.append)
    cfg_out = Path(cfg.out) / "ot-teacher" / "card.json"
    ot = json.loads(cfg_out.read_text())
    assert ot["steps"] == 2 and ot["trained_for"] == "original-low-res" and math.isfinite(ot["final_loss"])
    again = []
    train(config("dmd-ot", steps=2, teach_weight=0.0, pairs=0), log=again.append)
    assert any("low-resolution finetune is there" in line for line in again), again
    assert cfg_out.is_file()


def test_the_critic_learns_during_the_critic_only_warm_up(config):
    losses = []
    train(config("dmd-pt-star", steps=1, warmup=50, critic_steps=1, batch=8, lr=5e-3, pairs=0),
          on_step=lambda info: losses.append(info["critic_loss"]) if info["phase"] == "warmup" else None,
          log=lambda m: None)
    assert len(losses) == 50
    first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10  # 2.31 -> 2.12 here (much of it is irreducible)
    assert last < 0.95 * first, (first, last)


@pytest.mark.parametrize("method", ["dmd-pt-star", "adversarial"])
def test_a_resumed_run_continues_bit_for_bit(config, method, tmp_path):
    straight = train(config(method, steps=4, out=str(tmp_path / "straight"), teach_weight=0.5), log=lambda m: None)
    stopped = train(config(method, steps=4, out=str(tmp_path / "resumed"), teach_weight=0.5),
                    on_step=lambda info: info.get("step") == 2, log=lambda m: None)
    assert stopped.status == "cancelled" and stopped.step == 2 and not stopped.card["complete"]
    resumed = train(config(method, steps=4, out=str(tmp_path / "resumed"), teach_weight=0.5), log=lambda m: None)
    assert resumed.status == "done" and resumed.step == 4
    assert [h["generator_loss"] for h in resumed.history] == [h["generator_loss"] for h in straight.history]
    a, b = _weights(straight.out), _weights(resumed.out)
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = read_state(straight.out / "state" / "state.pt"), read_state(resumed.out / "state" / "state.pt")
    assert all(torch.equal(sa["model"][k], sb["model"][k]) for k in sa["model"])  # the critic too


def test_a_resume_with_other_settings_is_refused(config, tmp_path):
    train(config(steps=1, out=str(tmp_path / "run")), log=lambda m: None)
    with pytest.raises(ConfigError, match="other settings"):
        train(config(steps=2, out=str(tmp_path / "run"), batch=3), log=lambda m: None)


@pytest.mark.parametrize("overrides, field, words", [
    ({"method": "dmd-pt", "teacher": ""}, "teacher", "needs the pyramidal teacher"),
    ({"method": "dmd-ot", "teacher": "x"}, "teacher", "leave teacher empty"),
    ({"method": "dmd-pt-star", "student_plan": "0-0-2"}, "student_plan", "one stage"),
    ({"student_plan": "2-0-1"}, "student_plan", "cannot run"),
    ({"method": "nope"}, "method", "must be one of"),
    ({"critic_lr": 1e-1, "lr": 1e-4}, "critic_lr", "4x"),
    ({"teacher_guidance": [1.0, 2.0]}, "teacher_guidance", "one per stage"),
    ({"data": "world:0"}, "data", "world:N"),
    ({"out": " "}, "out", "out must name"),
    ({"pair_schedule": "banana"}, "pair_schedule", "not valid"),
])
def test_bad_settings_are_refused_before_any_work(config, overrides, field, words):
    cfg = config("dmd-pt-star").to_dict()
    cfg.update(overrides)
    with pytest.raises(ConfigError, match=words) as info:
        validate_config(cfg)
    assert info.value.field == field


def test_the_cli_derives_its_flags_from_the_config(tmp_path):
    from finetune.__main__ import _parser, distill_config_from_args

    args = _parser().parse_args(["distill", "--method", "dmd-ot", "--student-plan", "0-0-1", "--data", "world:8",
                                 "--out", str(tmp_path / "s"), "--teacher-guidance", "1.5", "--critic-steps", "3"])
    cfg = distill_config_from_args(args)
    assert (cfg.method, cfg.student_plan, cfg.teacher_guidance, cfg.critic_steps) == ("dmd-ot", "0-0-1", [1.5], 3)
    assert cfg.out == str((tmp_path / "s").resolve()) and cfg.name == "s"
