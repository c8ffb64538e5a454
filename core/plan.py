"""Stage plans: which resolution runs which noise window with how many steps (pyramid.md §2, §4).

A schedule string lists steps per stage from the lowest resolution to the output resolution:
``20-20-10``. Leading zeros skip low stages: ``0-0-50`` is the one-stage baseline. The plan
knows its noise windows, its sigmas and, given a request shape, the latent shape of every stage.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from .errors import RequestError

MAX_STAGES = 4
MAX_STEPS_PER_STAGE = 200
M_MAX = 8  # cells in the largest resampling block (2 frames x 2 x 2)
NUM_TRAIN_TIMESTEPS = 1000
GUIDANCE_RANGE = (1.0, 20.0)
VAE_TEMPORAL = 4
VAE_SPATIAL = 8
PATCH = 2
MAX_FRAMES = 241
MAX_SIDE = 1280
DEFAULT_SHIFT = 3.0
#: How the last stage (the one that ends at sigma 0) spaces its levels:
#: "diffusers" - diffusers' baseline grid: uniform in ``u`` down to ``shift(1/1000)``, then one step to
#:   0 (the default for one-stage plans, so that ``0-0-N`` is exactly ``WanPipeline``'s schedule; its
#:   last forward only moves ``0.0089 -> 0``, a waste when the stage has few steps);
#: "uniform" - uniform in ``u`` down to exactly 0, like every other stage (pyramid.md §4; the
#:   default for pyramidal plans): every step does real work.
GRIDS = ("diffusers", "uniform")
#: With the "uniform" grid and shifts up to 5, no level interval of a stage is smaller than this
#: fraction of the stage's mean interval ``(sigma_start - sigma_end) / steps`` (tests check it).
MIN_INTERVAL_FRACTION = 0.25


def shift_sigma(u, shift: float):
    """Wan's timestep shift: ``sigma = shift * u / (1 + (shift - 1) * u)``."""
    return shift * u / (1 + (shift - 1) * u)


def unshift_sigma(sigma, shift: float):
    """Inverse of :func:`shift_sigma`."""
    return sigma / (shift - (shift - 1) * sigma)


def jump_signal_scale(e: float, m: int = M_MAX) -> float:
    """Signal fraction ``s`` at the start of the next stage after a stage ending at ``1 - e`` (§4, §5)."""
    return e / (e + math.sqrt(m) * (1 - e))


def diffusers_sigma_min(shift: float) -> float:
    """Where diffusers' FlowMatchEulerDiscreteScheduler ends its u-grid before the final step to 0.

    Its ``set_timesteps`` spaces timesteps from ``sigma_max`` to ``sigma_min`` (the *shifted* value of
    1/1000) and shifts them again, so the last u-grid point is ``shift(1/1000)``. The last stage uses
    the same grid so that a one-stage plan is exactly the baseline schedule.
    """
    return float(np.float32(shift_sigma(1.0 / NUM_TRAIN_TIMESTEPS, shift)))


@dataclass(frozen=True)
class Stage:
    index: int  # 0 = lowest resolution among the stages that run
    level: int  # number of 2x downsamplings below the output resolution
    steps: int
    sigma_start: float
    sigma_end: float
    sigmas: tuple[float, ...]  # steps + 1 values from sigma_start down to sigma_end
    guidance: float


def _nearest_multiple(value: int, multiple: int, lo: int, hi: int) -> int:
    n = max(1, round(value / multiple))
    candidate = n * multiple
    return int(min(max(candidate, lo), hi - hi % multiple))


@dataclass(frozen=True)
class StagePlan:
    parts: tuple[int, ...]  # steps per stage as written, leading zeros included
    shift: float
    boundaries: tuple[float, ...]  # inner boundaries b_1 > ... > b_{S-1} of the stages that run
    stages: tuple[Stage, ...]
    grid: str = "diffusers"  # the last stage's level spacing (GRIDS)

    # ----------------------------------------------------------------- construction
    @classmethod
    def parse(
        cls,
        schedule: str | int | list[int] | tuple[int, ...],
        shift: float = DEFAULT_SHIFT,
        boundaries: list[float] | tuple[float, ...] | None = None,
        guidance: float | list[float] | tuple[float, ...] = 5.0,
        grid: str | None = None,
    ) -> "StagePlan":
        """``grid`` None: "diffusers" for a one-stage plan, "uniform" for a pyramidal one (GRIDS)."""
        parts = cls._parse_parts(schedule)
        first = next(i for i, n in enumerate(parts) if n > 0)
        active = parts[first:]
        n_stages = len(active)
        if not (isinstance(shift, (int, float)) and 0.1 <= float(shift) <= 20.0):
            raise RequestError(f"shift must be a number between 0.1 and 20 (Wan uses 3.0); got {shift!r}", "shift")
        shift = float(shift)
        bounds = cls._check_boundaries(boundaries, n_stages)
        guid = cls._check_guidance(guidance, n_stages, len(parts))
        if grid is None:
            grid = "diffusers" if n_stages == 1 else "uniform"
        elif grid not in GRIDS:
            raise RequestError(f"grid must be one of {', '.join(GRIDS)}; got {grid!r}", "grid")

        edges = (1.0,) + bounds + (0.0,)
        stages = []
        for k, steps in enumerate(active):
            sigma_end = edges[k + 1]
            sigma_start = 1.0 if k == 0 else 1.0 - jump_signal_scale(1.0 - edges[k])
            stages.append(
                Stage(
                    index=k,
                    level=n_stages - 1 - k,
                    steps=steps,
                    sigma_start=sigma_start,
                    sigma_end=sigma_end,
                    sigmas=cls._stage_sigmas(sigma_start, sigma_end, steps, shift, grid),
                    guidance=guid[k],
                )
            )
        return cls(parts=parts, shift=shift, boundaries=bounds, stages=tuple(stages), grid=grid)

    @staticmethod
    def _parse_parts(schedule) -> tuple[int, ...]:
        example = "like 20-20-10 (steps per stage, lowest resolution first) or 0-0-50 for the original"
        if isinstance(schedule, int) and not isinstance(schedule, bool):
            items = [schedule]
        elif isinstance(schedule, (list, tuple)):
            items = list(schedule)
        elif isinstance(schedule, str):
            text = schedule.strip()
            if not text:
                raise RequestError(f"the schedule is empty; write one {example}", "schedule")
            if not re.fullmatch(r"\d{1,4}(\s*-\s*\d{1,4})*", text):
                raise RequestError(f"schedule {schedule!r} is not valid; write one {example}", "schedule")
            items = [int(p) for p in text.split("-")]
        else:
            raise RequestError(f"schedule must be a string {example}", "schedule")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in items):
            raise RequestError(f"schedule {schedule!r} must hold whole step counts; write one {example}", "schedule")
        if len(items) > MAX_STAGES:
            kept = "-".join(str(n) for n in items[-MAX_STAGES:])
            raise RequestError(
                f"schedule {schedule!r} has {len(items)} stages; at most {MAX_STAGES} are supported "
                f"(nearest valid: {kept})",
                "schedule",
            )
        if sum(items) == 0:
            raise RequestError(f"schedule {schedule!r} has no steps; write one {example}", "schedule")
        first = next(i for i, n in enumerate(items) if n > 0)
        fixed = items[:first] + [min(max(n, 1), MAX_STEPS_PER_STAGE) for n in items[first:]]
        if fixed != items:
            raise RequestError(
                f"schedule {schedule!r} is not valid: once a stage runs, every later stage needs 1 to "
                f"{MAX_STEPS_PER_STAGE} steps (nearest valid: {'-'.join(map(str, fixed))})",
                "schedule",
            )
        return tuple(items)

    @staticmethod
    def _check_boundaries(boundaries, n_stages: int) -> tuple[float, ...]:
        if boundaries is None or (n_stages == 1 and len(boundaries) == 0):
            return tuple(1.0 - k / n_stages for k in range(1, n_stages))
        b = tuple(float(x) for x in boundaries)
        default = tuple(round(1.0 - k / n_stages, 3) for k in range(1, n_stages))
        if len(b) != n_stages - 1 or not all(0.0 < x < 1.0 for x in b) or any(x <= y for x, y in zip(b, b[1:])):
            raise RequestError(
                f"boundaries {list(b)} are not valid for {n_stages} stages: give {n_stages - 1} noise levels, "
                f"decreasing, strictly between 0 and 1 (default: {list(default)})",
                "boundaries",
            )
        return b

    @staticmethod
    def _check_guidance(guidance, n_stages: int, n_parts: int) -> tuple[float, ...]:
        lo, hi = GUIDANCE_RANGE
        values = list(guidance) if isinstance(guidance, (list, tuple)) else [guidance]
        if len(values) == 1:
            values = values * n_stages
        elif len(values) == n_parts and n_parts != n_stages:
            values = values[n_parts - n_stages:]  # one value per written stage: drop the skipped ones
        elif len(values) != n_stages:
            raise RequestError(
                f"guidance needs one value or one per stage ({n_stages}); got {len(values)} values", "guidance"
            )
        out = []
        for g in values:
            if isinstance(g, bool) or not isinstance(g, (int, float)) or not math.isfinite(float(g)):
                raise RequestError(f"guidance must be a number between {lo:g} and {hi:g}; got {g!r}", "guidance")
            if not lo <= g <= hi:
                nearest = min(max(float(g), lo), hi)
                raise RequestError(
                    f"guidance {g:g} is out of range {lo:g} to {hi:g} (nearest valid: {nearest:g}; "
                    f"1 turns classifier-free guidance off)",
                    "guidance",
                )
            out.append(float(g))
        return tuple(out)

    @staticmethod
    def _stage_sigmas(sigma_start: float, sigma_end: float, steps: int, shift: float,
                      grid: str = "uniform") -> tuple[float, ...]:
        u_start = float(unshift_sigma(sigma_start, shift))
        if sigma_end > 0 or grid == "uniform":
            u = np.linspace(u_start, float(unshift_sigma(sigma_end, shift)), steps + 1)
            sig = shift_sigma(u, shift)
            sig[0], sig[-1] = sigma_start, sigma_end
            return tuple(float(x) for x in sig)
        # Final stage: the baseline's grid (see diffusers_sigma_min), then one step to 0.
        u = np.linspace(u_start, diffusers_sigma_min(shift), steps)
        sig = shift_sigma(u, shift)
        sig[0] = sigma_start
        return tuple(float(x) for x in sig) + (0.0,)

    # ----------------------------------------------------------------- properties
    @property
    def schedule(self) -> str:
        return "-".join(str(n) for n in self.parts)

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def total_steps(self) -> int:
        return sum(s.steps for s in self.stages)

    @property
    def is_baseline(self) -> bool:
        return self.num_stages == 1

    @property
    def guidance(self) -> tuple[float, ...]:
        return tuple(s.guidance for s in self.stages)

    def describe(self) -> dict:
        return {
            "schedule": self.schedule,
            "shift": self.shift,
            "boundaries": list(self.boundaries),
            "grid": self.grid,
            "stages": [
                {
                    "index": s.index,
                    "steps": s.steps,
                    "sigma_start": round(s.sigma_start, 6),
                    "sigma_end": round(s.sigma_end, 6),
                    "guidance": s.guidance,
                }
                for s in self.stages
            ],
        }

    # ----------------------------------------------------------------- geometry
    @property
    def spatial_multiple(self) -> int:
        return VAE_SPATIAL * PATCH * 2 ** (self.num_stages - 1)

    @property
    def frame_multiple(self) -> int:
        return VAE_TEMPORAL * 2 ** (self.num_stages - 1)

    def validate_shape(self, frames: int, height: int, width: int) -> None:
        """Refuse shapes the plan cannot run, naming the nearest valid shape (§2). Never crops."""
        sm, fm = self.spatial_multiple, self.frame_multiple
        for name, v in (("frames", frames), ("height", height), ("width", width)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise RequestError(f"{name} must be a whole number; got {v!r}", name)
        near_h = _nearest_multiple(height, sm, sm, MAX_SIDE)
        near_w = _nearest_multiple(width, sm, sm, MAX_SIDE)
        near_f = min(max(1 + fm * max(0, round((frames - 1) / fm)), 1), 1 + fm * ((MAX_FRAMES - 1) // fm))
        nearest = f"{near_f}x{near_h}x{near_w} (frames x height x width)"
        plan = f"a {self.num_stages}-stage plan" if self.num_stages > 1 else "the one-stage plan"
        if not 1 <= frames <= MAX_FRAMES or (frames - 1) % fm:
            raise RequestError(
                f"{frames} frames is not valid for {plan}: frames - 1 must be a multiple of {fm}, at most "
                f"{MAX_FRAMES} frames; nearest valid shape: {nearest}",
                "frames",
            )
        for name, v in (("height", height), ("width", width)):
            if not sm <= v <= MAX_SIDE or v % sm:
                raise RequestError(
                    f"{name} {v} is not valid for {plan}: it must be a multiple of {sm} between {sm} and "
                    f"{MAX_SIDE}; nearest valid shape: {nearest}",
                    name,
                )

    def latent_shapes(self, frames: int, height: int, width: int) -> list[tuple[int, int, int]]:
        """Latent (T, H, W) of every stage, lowest first."""
        self.validate_shape(frames, height, width)
        t, h, w = (frames - 1) // VAE_TEMPORAL + 1, height // VAE_SPATIAL, width // VAE_SPATIAL
        shapes = [(t, h, w)]
        for _ in range(self.num_stages - 1):
            t, h, w = 1 + (t - 1) // 2, h // 2, w // 2
            shapes.append((t, h, w))
        return shapes[::-1]

    def valid_sizes(self, candidates: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """The (height, width) pairs of ``candidates`` this plan accepts (for UI size pickers)."""
        sm = self.spatial_multiple
        return [(h, w) for h, w in candidates if h % sm == 0 and w % sm == 0 and sm <= min(h, w) and max(h, w) <= MAX_SIDE]
