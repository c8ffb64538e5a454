import math

import pytest

from core import RequestError, StagePlan
from core.plan import diffusers_sigma_min, jump_signal_scale, shift_sigma, unshift_sigma


def test_default_three_stage_windows_match_the_contract():
    plan = StagePlan.parse("20-20-10")
    windows = [(round(s.sigma_start, 3), round(s.sigma_end, 3)) for s in plan.stages]
    assert windows == [(1.0, 0.667), (0.85, 0.333), (0.586, 0.0)]
    assert [s.steps for s in plan.stages] == [20, 20, 10]
    assert [len(s.sigmas) for s in plan.stages] == [21, 21, 11]
    for s in plan.stages:
        assert s.sigmas[0] == pytest.approx(s.sigma_start) and s.sigmas[-1] == pytest.approx(s.sigma_end)
        assert all(a > b for a, b in zip(s.sigmas, s.sigmas[1:])), "sigmas must decrease"


def test_start_of_a_stage_is_noisier_than_the_end_of_the_one_before():
    for sched in ("1-1", "3-3-3", "2-2-2-2"):
        plan = StagePlan.parse(sched)
        for prev, nxt in zip(plan.stages, plan.stages[1:]):
            e = 1 - prev.sigma_end
            assert nxt.sigma_start == pytest.approx(1 - e / (e + math.sqrt(8) * (1 - e)))
            assert nxt.sigma_start > prev.sigma_end


def test_one_stage_plan_is_the_diffusers_baseline_schedule():
    from diffusers import FlowMatchEulerDiscreteScheduler

    for n in (1, 4, 50):
        sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
        sched.set_timesteps(n)
        plan = StagePlan.parse(f"0-0-{n}")
        assert plan.num_stages == 1 and plan.is_baseline
        assert plan.stages[0].sigmas == pytest.approx(sched.sigmas.tolist(), abs=1e-6)


def test_steps_inside_a_stage_are_uniform_in_unshifted_time():
    plan = StagePlan.parse("10-10-10", shift=3.0)
    u = [unshift_sigma(s, 3.0) for s in plan.stages[1].sigmas]
    gaps = [a - b for a, b in zip(u, u[1:])]
    assert max(gaps) == pytest.approx(min(gaps), rel=1e-9)
    assert shift_sigma(unshift_sigma(0.3, 3.0), 3.0) == pytest.approx(0.3)
    assert diffusers_sigma_min(3.0) == pytest.approx(3 * 0.001 / (1 + 2 * 0.001), rel=1e-6)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0])
@pytest.mark.parametrize("boundaries", [None, [0.8, 0.5]])
def test_no_level_interval_of_a_pyramidal_plan_is_wasted(shift, boundaries):
    """Every step of a pyramidal plan does real work: no interval below MIN_INTERVAL_FRACTION of its
    stage's mean interval (diffusers' grid would give 4-4-2's last stage [0.739, 0.0089, 0])."""
    from core.plan import MIN_INTERVAL_FRACTION

    for sched in ("4-4-2", "12-12-6", "10-10-5", "20-20-10", "2-2-1", "1-1-2", "6-6-9", "3-3-3"):
        plan = StagePlan.parse(sched, shift=shift, boundaries=boundaries)
        assert plan.grid == "uniform" and plan.stages[-1].sigmas[-1] == 0.0
        for s in plan.stages:
            mean = (s.sigma_start - s.sigma_end) / s.steps
            gaps = [a - b for a, b in zip(s.sigmas, s.sigmas[1:])]
            assert min(gaps) >= MIN_INTERVAL_FRACTION * mean, (sched, s.index, s.sigmas)
    last = StagePlan.parse("4-4-2", shift=shift, boundaries=boundaries).stages[-1].sigmas
    u = [unshift_sigma(x, shift) for x in last]
    assert u[0] - u[1] == pytest.approx(u[1] - u[2], rel=1e-9)  # uniform in u down to exactly 0


def test_the_grid_is_a_choice_the_baseline_keeps_and_the_original_cannot_leave():
    from core import GenerationRequest

    assert StagePlan.parse("0-0-7").grid == "diffusers"
    assert StagePlan.parse("0-0-7").stages[0].sigmas[-2] == pytest.approx(0.0089, abs=1e-4)
    uniform = StagePlan.parse("0-0-7", grid="uniform").stages[0].sigmas
    assert uniform[0] == 1.0 and uniform[-1] == 0.0 and uniform[-2] > 0.1
    assert StagePlan.parse("4-4-2", grid="diffusers").stages[-1].sigmas[-2] == pytest.approx(0.0089, abs=1e-4)
    assert StagePlan.parse("4-4-2").describe()["grid"] == "uniform"
    with pytest.raises(RequestError) as err:
        StagePlan.parse("4-4-2", grid="cosine")
    assert err.value.field == "grid"
    with pytest.raises(RequestError) as err:
        GenerationRequest("a red circle", mode="original", schedule="0-0-7", grid="uniform").validated()
    assert err.value.field == "grid" and "pyramidal" in str(err.value)
    assert GenerationRequest("a red circle", mode="pyramidal", schedule="0-0-7", grid="uniform").validated()


def test_leading_zeros_skip_low_stages_and_shapes_follow_the_geometry():
    plan = StagePlan.parse("20-20-10")
    assert plan.latent_shapes(81, 448, 832) == [(6, 14, 26), (11, 28, 52), (21, 56, 104)]
    two = StagePlan.parse("0-5-5")
    assert two.num_stages == 2 and two.schedule == "0-5-5"
    assert two.latent_shapes(17, 128, 128) == [(3, 8, 8), (5, 16, 16)]
    four = StagePlan.parse("1-1-1-1")
    assert four.latent_shapes(33, 256, 256)[0] == (2, 4, 4)


def test_custom_boundaries_and_per_stage_guidance():
    plan = StagePlan.parse("2-2-2", boundaries=[0.8, 0.4], guidance=[7.0, 5.0, 3.0])
    assert plan.stages[0].sigma_end == 0.8 and plan.stages[1].sigma_end == 0.4
    e = 0.2
    assert plan.stages[1].sigma_start == pytest.approx(1 - jump_signal_scale(e))
    assert plan.guidance == (7.0, 5.0, 3.0)
    # one value per written stage, skipped stages included, is accepted too
    assert StagePlan.parse("0-3-3", guidance=[9.0, 6.0, 4.0]).guidance == (6.0, 4.0)


@pytest.mark.parametrize(
    "schedule, nearest",
    [("20-0-10", "20-1-10"), ("20-20-0", "20-20-1"), ("1-2-3-4-5", "2-3-4-5"), ("5-500", "5-200")],
)
def test_invalid_schedules_name_the_nearest_valid_one(schedule, nearest):
    with pytest.raises(RequestError) as err:
        StagePlan.parse(schedule)
    assert nearest in str(err.value) and err.value.field == "schedule"


@pytest.mark.parametrize("schedule", ["", "abc", "0-0-0", "20--10", "1.5-2", "-3"])
def test_malformed_schedules_are_refused(schedule):
    with pytest.raises(RequestError, match="schedule"):
        StagePlan.parse(schedule)


@pytest.mark.parametrize(
    "guidance, nearest", [(25.0, "20"), (0.5, "1"), ([5.0, 30.0, 5.0], "20")]
)
def test_guidance_out_of_range_names_the_nearest_valid_value(guidance, nearest):
    with pytest.raises(RequestError) as err:
        StagePlan.parse("2-2-2", guidance=guidance)
    assert f"nearest valid: {nearest}" in str(err.value) and err.value.field == "guidance"


def test_wrong_number_of_guidance_values_or_boundaries():
    with pytest.raises(RequestError, match="one per stage"):
        StagePlan.parse("2-2-2", guidance=[5.0, 5.0])
    with pytest.raises(RequestError, match="decreasing"):
        StagePlan.parse("2-2-2", boundaries=[0.3, 0.6])


@pytest.mark.parametrize(
    "shape, field, nearest",
    [
        ((17, 130, 128), "height", "17x128x128"),
        ((17, 128, 100), "width", "17x128x128"),
        ((18, 128, 128), "frames", "17x128x128"),
        ((81, 470, 832), "height", "81x448x832"),
        ((10, 128, 128), "frames", "17x128x128"), ((30, 128, 128), "frames", "33x128x128"),
        ((17, 4096, 128), "height", "17x1280x128"),
    ],
)
def test_invalid_shapes_name_the_nearest_valid_shape(shape, field, nearest):
    with pytest.raises(RequestError) as err:
        StagePlan.parse("2-2-1").validate_shape(*shape)
    assert err.value.field == field and nearest in str(err.value)


def test_nearest_valid_shape_is_itself_valid():
    plan = StagePlan.parse("2-2-1")
    for f, h, w in [(18, 130, 100), (40, 500, 900), (2, 20, 20)]:
        try:
            plan.validate_shape(f, h, w)
        except RequestError as err:
            text = str(err).split("nearest valid shape: ")[1].split(" ")[0]
            nf, nh, nw = (int(v) for v in text.split("x"))
            plan.validate_shape(nf, nh, nw)
