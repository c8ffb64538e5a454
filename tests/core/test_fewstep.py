"""Few-step sampling (core/fewstep.py): levels that are never degenerate, the x0 conversions of
pyramid.md §8, the stage path, the sampler against an oracle student, the rollout that
distillation's backward simulation uses, and the recipe a distilled checkpoint locks."""

import math

import pytest
import torch

from core import Cancelled, GenerationRequest, RequestError, StagePlan
from core import resample
from core.fewstep import (FewStepRecipe, check_levels, default_levels, high_band_gain, level_list, on_stage_path,
                          rollout, sample_fewstep, to_x0)

PLAN = StagePlan.parse("2-2-1", shift=3.0, boundaries=[0.8, 0.5], guidance=1.0, grid="uniform")
FULL = (2, 16, 5, 8, 8)  # B, C, T, H, W at full resolution


def _down(x, times):
    for _ in range(times):
        x = resample.down_signal(x)
    return x


def _oracle(x0_full, plan):
    """The velocity a perfect student predicts for the clean video ``x0_full``: on stage ``k`` the
    path of pyramid.md §7 towards ``x0_k = down^(S-1-k)(x0_full)``, its noise read back from ``x``."""

    def denoise(x, sigma, stage):
        x0 = _down(x0_full, stage.level)
        ss, se = stage.sigma_start, stage.sigma_end
        s = 1.0 - ss
        low = resample.up(resample.down_signal(x0)) if ss < 1.0 else torch.zeros_like(x0)
        rho = (sigma - se) / (ss - se)
        eps = (x - rho * s * low - (1 - rho) * (1 - se) * x0) / sigma
        y_start = s * low + (1 - s) * eps
        y_end = (1 - se) * x0 + se * eps
        return (y_start - y_end) / (ss - se)

    return denoise


def test_default_levels_start_each_window_and_never_crowd_its_end():
    levels = default_levels(PLAN)
    assert [len(v) for v in levels] == [2, 2, 1]
    for stage, stage_levels in zip(PLAN.stages, levels):
        assert stage_levels[0] == pytest.approx(stage.sigma_start)
        edges = list(stage_levels) + [stage.sigma_end]
        gaps = [a - b for a, b in zip(edges, edges[1:])]
        assert min(gaps) > 0.25 * (stage.sigma_start - stage.sigma_end) / stage.steps
    assert check_levels(PLAN, None) == levels
    one = StagePlan.parse("0-0-2", guidance=1.0)
    assert default_levels(one) == ((1.0, pytest.approx(0.75)),)  # u = 0.5 through shift 3


@pytest.mark.parametrize("levels, words", [
    (((1.0, 0.001 + 0.8), (0.9188, 0.7), (0.7388,)), "degenerate"),  # Pyramid Flow's [1, 0.001, 0] in stage time
    (((1.0, 0.9), (0.9188,), (0.7388,)), "runs 2 steps but has 1 levels"),
    (((0.95, 0.9), (0.9188, 0.7), (0.7388,)), "must start at its window's start"),
    (((1.0, 0.9), (0.9188, 0.7)), "levels have 2 stages"),
    ((("a", 0.9), (0.9188, 0.7), (0.7388,)), "one list of noise levels per stage"),
])
def test_check_levels_refuses_what_would_waste_or_break_a_forward(levels, words):
    with pytest.raises(RequestError, match=words):
        check_levels(PLAN, levels)


def test_exact_conversion_recovers_each_band_and_plain_inflates_the_middle_stages_detail():
    """pyramid.md §8: on the middle stage's path ``x - sigma * F`` holds the high band of x0 times
    (1 - sigma_end) sigma_start / (sigma_start - sigma_end); the exact form divides it back out."""
    g = torch.Generator().manual_seed(0)
    x0_full = torch.randn(FULL, generator=g)
    oracle = _oracle(x0_full, PLAN)
    middle = PLAN.stages[1]
    x0 = _down(x0_full, middle.level)
    gain = high_band_gain(middle)
    assert gain == pytest.approx(0.5 * middle.sigma_start / (middle.sigma_start - 0.5))
    assert high_band_gain(PLAN.stages[0]) == pytest.approx(1.0) == high_band_gain(PLAN.stages[2])
    eps = torch.randn(x0.shape, generator=g)
    for sigma in (middle.sigma_start, 0.7, 0.55):
        x = on_stage_path(x0, eps, sigma, middle)
        v = oracle(x, sigma, middle)
        assert torch.allclose(to_x0(x, sigma, v, middle, "exact"), x0, atol=1e-4)
        plain = to_x0(x, sigma, v, middle, "plain")
        assert torch.allclose(plain, x0 + (gain - 1) * resample.HAAR.high_band(x0), atol=1e-4)
        assert not torch.allclose(plain, x0, atol=1e-2)


def test_exact_conversion_given_the_stages_start_holds_where_the_per_band_form_misses():
    """A model trained on clips encoded at each resolution starts its stage from a low-resolution
    video that is not the block mean of the finer one. Knowing that start, the exact conversion
    recovers x0; pyramid.md §8's per-band form (which assumes the block mean) does not."""
    g = torch.Generator().manual_seed(4)
    middle = PLAN.stages[1]
    x0 = torch.randn(2, 16, 3, 4, 4, generator=g)
    low = resample.down_signal(x0) + 0.7 * torch.randn(2, 16, 2, 2, 2, generator=g)  # not the block mean
    eps = torch.randn(x0.shape, generator=g)
    s, width = 1.0 - middle.sigma_start, middle.sigma_start - middle.sigma_end
    for sigma in (middle.sigma_start, 0.7, 0.55):
        x = on_stage_path(x0, eps, sigma, middle, low=low)
        y_start, y_end = s * resample.up(low) + (1 - s) * eps, (1 - middle.sigma_end) * x0 + middle.sigma_end * eps
        v = (y_start - y_end) / width  # what a model trained on such paths predicts, given x0 and eps
        assert torch.allclose(to_x0(x, sigma, v, middle, "exact", low=low), x0, atol=1e-4)
        assert not torch.allclose(to_x0(x, sigma, v, middle, "exact"), x0, atol=1e-2)


def test_stage_path_of_a_one_stage_plan_is_the_usual_forward_process():
    stage = StagePlan.parse("0-0-2", guidance=1.0).stages[0]
    x0, eps = torch.randn(1, 16, 5, 4, 4), torch.randn(1, 16, 5, 4, 4)
    assert torch.allclose(on_stage_path(x0, eps, 0.3, stage), 0.7 * x0 + 0.3 * eps, atol=1e-6)
    sig = torch.tensor([0.3, 0.9])
    both = on_stage_path(x0.expand(2, -1, -1, -1, -1), eps.expand(2, -1, -1, -1, -1), sig, stage)
    assert torch.allclose(both[1], 0.1 * x0[0] + 0.9 * eps[0], atol=1e-6)


@pytest.mark.parametrize("schedule", ["2-2-1", "1-1-1", "2-2-2", "0-0-4", "0-0-2", "0-0-1"])
def test_a_perfect_student_lands_on_its_clean_video_through_every_level_and_jump(schedule):
    plan = StagePlan.parse(schedule, shift=3.0, boundaries=[0.8, 0.5] if schedule[0] != "0" else None,
                           guidance=1.0, grid="uniform")
    g = torch.Generator().manual_seed(1)
    x0_full = torch.randn(FULL, generator=g)
    seen = []
    out = sample_fewstep(_oracle(x0_full, plan), torch.randn(FULL, generator=g), plan, conversion="exact",
                         callback=lambda info: seen.append(info) and None, generator=g)
    assert torch.allclose(out, x0_full, atol=1e-3)
    assert len(seen) == plan.total_steps and seen[-1]["fraction"] == 1.0
    for info in seen:  # every level's prediction is the clean video at its stage's resolution
        level = plan.num_stages - 1 - info["stage"]
        assert torch.allclose(info["denoised"], _down(x0_full, level), atol=1e-3)


def test_the_student_sees_fresh_noise_at_each_level_and_the_callback_can_cancel():
    g = torch.Generator().manual_seed(2)
    x0_full = torch.randn(FULL, generator=g)
    noise = torch.randn(FULL, generator=g)
    inputs = []

    def denoise(x, sigma, stage):
        inputs.append((stage.index, sigma, x.clone()))
        return _oracle(x0_full, PLAN)(x, sigma, stage)

    sample_fewstep(denoise, noise, PLAN, generator=torch.Generator().manual_seed(5))
    assert [(k, round(s, 4)) for k, s, _ in inputs] == [(st.index, round(s, 4)) for st, _, s in
                                                       level_list(PLAN, default_levels(PLAN))]
    assert torch.equal(inputs[0][2], resample.down_noise(resample.down_noise(noise)))
    for k, sigma, x in inputs:  # each state is its stage's path at sigma with white unit noise
        stage = PLAN.stages[k]
        clean = on_stage_path(_down(x0_full, stage.level), torch.zeros_like(x), sigma, stage)
        z = (x - clean) / sigma
        assert abs(float(z.mean())) < 0.2 and abs(float(z.std()) - 1.0) < 0.15, (k, sigma, float(z.std()))
    with pytest.raises(Cancelled, match="stage 2, step 1"):
        sample_fewstep(_oracle(x0_full, PLAN), noise, PLAN, callback=lambda info: info["stage"] == 1)


def test_rollout_stops_at_the_exit_level_with_the_state_the_sampler_had_there():
    g0 = torch.Generator().manual_seed(3)
    x0_full, noise = torch.randn(FULL, generator=g0), torch.randn(FULL, generator=g0)
    denoise = _oracle(x0_full, PLAN)
    states = []
    sample_fewstep(lambda x, s, st: (states.append(x.clone()), denoise(x, s, st))[1], noise, PLAN, conversion="exact",
                   generator=torch.Generator().manual_seed(9))
    for until in range(PLAN.total_steps):
        x, stage, i, sigma, low = rollout(denoise, noise, PLAN, None, until, conversion="exact",
                                          generator=torch.Generator().manual_seed(9))
        assert torch.equal(x, states[until])
        assert (stage.index, i) == [(st.index, j) for st, j, _ in level_list(PLAN, default_levels(PLAN))][until]
        if stage.index == 0:
            assert low is None
        else:  # the stage below's last prediction: the clean video there (a perfect student)
            assert torch.allclose(low, _down(x0_full, stage.level + 1), atol=1e-3)
    with pytest.raises(ValueError, match="outside"):
        rollout(denoise, noise, PLAN, None, 5)


def test_per_sample_sigmas_convert_each_sample_at_its_own_level():
    stage = PLAN.stages[2]
    x, v = torch.randn(2, 16, 5, 8, 8), torch.randn(2, 16, 5, 8, 8)
    both = to_x0(x, torch.tensor([0.2, 0.6]), v, stage)
    assert torch.allclose(both[0], x[0] - 0.2 * v[0]) and torch.allclose(both[1], x[1] - 0.6 * v[1])


# ----------------------------------------------------------------------------- the recipe
def _card(**recipe):
    r = FewStepRecipe.build("2-2-1", 3.0, [0.8, 0.5], conversion="plain").to_dict()
    r.update(recipe)
    return {"base": "tiny", "kind": "full", "name": "tiny-distilled", "trained_for": "few-step", "recipe": r,
            "boundaries": r["boundaries"], "guidance": 1.0}


def test_recipe_round_trips_its_card_and_describes_itself():
    recipe = FewStepRecipe.from_card(_card())
    assert recipe.schedule == "2-2-1" and recipe.steps == 5 and recipe.plan.guidance == (1.0, 1.0, 1.0)
    assert recipe.describe() == "2-2-1, 5 steps, guidance baked in"
    assert FewStepRecipe.from_card(recipe and _card(**recipe.to_dict())) == recipe
    assert FewStepRecipe.from_card({"trained_for": "pyramidal"}) is None
    with pytest.raises(RequestError, match="degenerate"):
        FewStepRecipe.from_card(_card(levels=[[1.0, 0.8005], [0.9188, 0.7], [0.7388]]))
    with pytest.raises(RequestError, match="incomplete"):
        FewStepRecipe.from_card({"trained_for": "few-step", "recipe": {"schedule": "2-2-1"}})


def test_a_request_that_leaves_the_recipe_out_gets_it_and_one_that_breaks_it_is_refused():
    card = _card()
    req = GenerationRequest("a red circle moves up", model="tiny").resolved(card).validated()
    assert (req.schedule, req.guidance, req.guidance_source, req.shift, req.grid) == (
        "2-2-1", [1.0, 1.0, 1.0], "checkpoint card", 3.0, "uniform")
    assert req.plan().boundaries == (0.8, 0.5)
    same = GenerationRequest("x", model="tiny", schedule="2-2-1", guidance=1.0, shift=3.0).resolved(card)
    assert same.schedule == "2-2-1"
    for kw, words in [({"schedule": "20-20-10"}, "schedule 20-20-10"), ({"guidance": 5.0}, "guidance 5.0"),
                      ({"shift": 5.0}, "shift 5.0"), ({"mode": "original"}, "original model"),
                      ({"boundaries": [0.667, 0.333]}, "boundaries")]:
        with pytest.raises(RequestError) as info:
            GenerationRequest("x", model="tiny", **kw).resolved(card)
        message = str(info.value)
        assert words in message and "trained for schedule 2-2-1" in message and "tiny-distilled" in message
        assert "guidance 1 (baked in)" in message and info.value.field == next(iter(kw))


def test_requests_without_a_schedule_get_the_default_plan_or_its_original_steps():
    assert GenerationRequest("x", model="tiny").validated().schedule == "20-20-10"
    assert GenerationRequest("x", model="tiny", mode="original").validated().schedule == "0-0-50"
    assert math.isclose(GenerationRequest("x", model="tiny", guidance=1.0).plan().stages[0].sigma_start, 1.0)


def test_a_distilled_checkpoint_runs_its_recipe_whatever_the_request_leaves_out(tiny_pipe, tmp_path):
    from core import load_pipeline
    from core.checkpoints import save_checkpoint
    from core.flops import plan_flops

    save_checkpoint(tmp_path / "student", tiny_pipe.transformer, _card())
    pipe = load_pipeline("tiny", checkpoint_dir=tmp_path / "student", device="cpu")
    assert pipe.recipe.schedule == "2-2-1"
    seen = []
    res = pipe.generate(GenerationRequest("a red circle moves up", model="tiny", seed=3), preview=True,
                        callback=lambda info: seen.append(info.get("step")) and None)
    rep = res.report
    assert (rep["sampler"], rep["plan"]["schedule"], rep["guidance"], rep["guidance_source"]) == (
        "few-step", "2-2-1", [1.0, 1.0, 1.0], "checkpoint card")
    assert rep["recipe"]["levels"] == [list(v) for v in default_levels(PLAN)]
    assert rep["tflops"] == rep["tflops_per_branch"] == pytest.approx(
        plan_flops(pipe.transformer.config, PLAN, 17, 128, 128, pipe.max_sequence_length)["tflops"])
    assert seen.count(1) >= 3 and res.preview is not None and res.frames.shape == (17, 128, 128, 3)
    again = pipe.generate(GenerationRequest("a red circle moves up", model="tiny", seed=3), preview=False)
    assert (again.frames == res.frames).all()
    assert pipe.estimate_tflops(GenerationRequest("x", model="tiny"), decode=False)["denoise"] == pytest.approx(
        rep["tflops"])
    with pytest.raises(RequestError, match="trained for schedule 2-2-1"):
        pipe.generate(GenerationRequest("x", model="tiny", schedule="4-4-2"))
