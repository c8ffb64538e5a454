"""PyramidalWanPipeline: Wan2.1 run as a pyramidal model, or as the original (stock diffusers).

``generate`` reads as numbered steps: check inputs, encode prompt (and negative prompt) once,
prepare noise from the seed at full resolution, sample, decode; it returns frames and a report
(seconds per phase and per stage, TFLOPs of the plan, peak memory).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .errors import Cancelled, RequestError
from .fewstep import FewStepRecipe, sample_fewstep
from .flops import PROBE_LATENT, decode_tflops, measure_decode_probe, plan_flops
from .plan import MAX_STAGES, StagePlan
from .presets import GUIDANCE_SOURCES, Components, build_components, list_presets, resolve_guidance
from .resample import HAAR
from .sampler import JUMPS, sample_pyramid
from .text import check_text

MAX_PROMPT_CHARS = 2000
MAX_SEED = 2**32 - 1
MODES = ("pyramidal", "original")
DEFAULT_SCHEDULE = "20-20-10"  # a pyramidal request that names no schedule (the original: the same steps, 0-0-50)
#: How the final latents become pixels: the VAE ("full"), the tiny decoder ("tiny", ~10x faster,
#: slightly softer) or both ("both": the main video is the full decode, the tiny one comes beside it).
DECODERS = ("full", "tiny", "both")
TINY_DECODER_HINT = ("train one with `python -m finetune tiny-decoder --base PRESET --data world:N "
                     "--out models/PRESET-tiny-decoder`")


def _checked_text(value, field: str, label: str, *, required: bool) -> str:
    """A prompt's text, stripped: text (None counts as empty) with no control characters and at
    most ``MAX_PROMPT_CHARS`` characters once stripped; ``required`` refuses an empty one."""
    value = "" if value is None else value
    if not isinstance(value, str):
        raise RequestError(f"{label} must be text; got {type(value).__name__}", field)
    text = check_text(value, field, label).strip()  # positions are counted in the text as given
    if required and not text:
        raise RequestError(f"{label} is empty: describe the video you want", field)
    if len(text) > MAX_PROMPT_CHARS:
        raise RequestError(f"{label} has {len(text):,} characters; at most {MAX_PROMPT_CHARS:,} are "
                           "allowed. Shorten it.", field)
    return text


def baseline_schedule(schedule: str) -> str:
    """The one-stage (original model) schedule with the same total steps: 20-20-10 -> 0-0-50."""
    plan = StagePlan.parse(schedule)
    return "-".join(["0"] * (len(plan.parts) - 1) + [str(plan.total_steps)])


def default_schedule(mode: str, schedule: str | None) -> str:
    """``schedule``, or for a request that names none :data:`DEFAULT_SCHEDULE` (pyramidal) or its
    steps in one stage (the original)."""
    if schedule is not None and schedule != "":
        return schedule
    return DEFAULT_SCHEDULE if mode != "original" else baseline_schedule(DEFAULT_SCHEDULE)


@dataclass
class GenerationRequest:
    prompt: str
    negative_prompt: str = ""
    model: str = "tiny"
    mode: str = "pyramidal"
    schedule: str | None = None  # None: a distilled checkpoint's recipe, else DEFAULT_SCHEDULE (default_schedule)
    guidance: float | list[float] | None = None  # None: the model's recommendation (resolve_guidance)
    seed: int = 0
    frames: int = 17
    height: int = 128
    width: int = 128
    checkpoint: str | None = None
    shift: float | None = None
    boundaries: list[float] | None = None
    grid: str | None = None  # the last stage's level spacing (core.plan.GRIDS); None: the plan's default
    guidance_source: str | None = None  # where ``guidance`` came from; None: "request" when it is set
    decoder: str = "full"  # one of DECODERS

    def resolved(self, card: dict | None = None) -> "GenerationRequest":
        """A copy with its guidance set and ``guidance_source`` saying where it came from: the request's
        own, else the recommendation of ``card`` (a checkpoint's), the preset or Wan
        (:func:`~core.presets.resolve_guidance`, the one resolver every entry point uses).

        A distilled checkpoint's card (:class:`~core.fewstep.FewStepRecipe`) fills what the request
        leaves out (schedule, shift, windows) and refuses what would break its recipe."""
        req = self._with_recipe(FewStepRecipe.from_card(card), card)
        if req.guidance is not None:
            return dataclasses.replace(req, guidance_source=req.guidance_source or "request")
        value, source = resolve_guidance(None, req.model, card, stages=req._stage_count())
        return dataclasses.replace(req, guidance=value, guidance_source=source)

    def _with_recipe(self, recipe: FewStepRecipe | None, card: dict | None) -> "GenerationRequest":
        if recipe is None:
            return self
        name = (card or {}).get("name")
        recipe.check(schedule=self.schedule, guidance=self.guidance, shift=self.shift, boundaries=self.boundaries,
                     mode=self.mode, grid=self.grid, name=f"checkpoint {name!r}" if name else "this checkpoint")
        return dataclasses.replace(self, schedule=recipe.schedule, shift=recipe.shift,
                                   boundaries=list(recipe.boundaries), grid="uniform")

    def _stage_count(self) -> int | None:
        if self.mode == "original":
            return 1
        try:
            return StagePlan.parse(default_schedule(self.mode, self.schedule)).num_stages
        except (RequestError, TypeError, ValueError, AttributeError):
            return None  # validated() reports the schedule

    def plan(self, shift: float = 3.0, boundaries: list[float] | None = None) -> StagePlan:
        return StagePlan.parse(
            default_schedule(self.mode, self.schedule),
            shift=self.shift if self.shift is not None else shift,
            boundaries=self.boundaries if self.boundaries is not None else boundaries,
            guidance=self.guidance if self.guidance is not None else self.resolved().guidance,
            grid=self.grid,
        )

    def validated(self, known_models: list[str] | None = None) -> "GenerationRequest":
        """A normalised copy (schedule canonical, guidance per stage) or a RequestError naming the field.

        A request without guidance keeps None (checked with the preset's recommendation): the
        pipeline resolves it with its checkpoint's card (:meth:`resolved`)."""
        if self.guidance_source is not None and self.guidance_source not in GUIDANCE_SOURCES:
            raise RequestError(f"guidance_source must be one of: {', '.join(GUIDANCE_SOURCES)}; "
                               f"got {self.guidance_source!r}", "guidance_source")
        prompt = _checked_text(self.prompt, "prompt", "the prompt", required=True)
        neg = _checked_text(self.negative_prompt, "negative_prompt", "the negative prompt", required=False)
        models = known_models if known_models is not None else list_presets()
        if not isinstance(self.model, str) or self.model not in models:
            raise RequestError(f"unknown model {self.model!r}; choose one of: {', '.join(models)}", "model")
        if not isinstance(self.decoder, str) or self.decoder not in DECODERS:
            raise RequestError(f"decoder must be one of: {', '.join(DECODERS)}; got {self.decoder!r}", "decoder")
        if self.mode not in MODES:
            raise RequestError(f"mode must be 'pyramidal' or 'original'; got {self.mode!r}", "mode")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            finite = isinstance(self.seed, int) or (isinstance(self.seed, float) and math.isfinite(self.seed))
            nearest = min(max(int(self.seed), 0), MAX_SEED) if finite else 0
            raise RequestError(f"seed must be a whole number from 0 to {MAX_SEED:,}; got {self.seed!r} "
                               f"(nearest valid: {nearest})", "seed")
        plan = self.plan()
        if self.mode == "original" and not plan.is_baseline:
            raise RequestError(
                f"the original model runs at full resolution only; schedule {plan.schedule} has "
                f"{plan.num_stages} stages (nearest valid: {'-'.join(['0'] * (len(plan.parts) - 1) + [str(plan.total_steps)])})",
                "schedule",
            )
        if self.mode == "original" and plan.grid != "diffusers":
            raise RequestError("the original model runs diffusers' own schedule (grid 'diffusers'); "
                               f"grid {plan.grid!r} needs mode 'pyramidal'", "grid")
        plan.validate_shape(self.frames, self.height, self.width)
        given = self.guidance is not None
        return dataclasses.replace(self, prompt=prompt, negative_prompt=neg,
                                   schedule=plan.schedule, guidance=list(plan.guidance) if given else None,
                                   guidance_source=(self.guidance_source or "request") if given else None)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class GenerationResult:
    frames: np.ndarray  # uint8 (T, H, W, 3)
    fps: int
    report: dict
    latents: torch.Tensor | None = None
    preview: np.ndarray | None = None
    frames_tiny: np.ndarray | None = None  # decoder="both": the tiny decoder's frames of the same latents


class PeakMemory:
    """Peak memory (MB) inside a ``with`` block: CUDA max allocated, or process RSS sampled by a
    thread every ``interval`` seconds on CPU."""

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device, self.interval, self.peak, self._stop = device, interval, 0.0, threading.Event()

    @staticmethod
    def rss() -> float:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except OSError:
            return 0.0

    def _poll(self):
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, self.rss())

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            self.peak = self.rss()
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device) / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())

    @property
    def kind(self) -> str:
        return "cuda max allocated" if self.device.type == "cuda" else "process RSS"


class PyramidalWanPipeline:
    def __init__(
        self,
        transformer,
        vae,
        text_encoder,
        tokenizer,
        flow_shift: float = 3.0,
        max_sequence_length: int = 512,
        fps: int = 16,
        name: str = "custom",
        boundaries: list[float] | None = None,
        resampler=HAAR,
        info: dict | None = None,
        jump: str = "carry",
        tiny_decoder=None,
    ):
        self.transformer, self.vae, self.text_encoder, self.tokenizer = transformer, vae, text_encoder, tokenizer
        self.flow_shift, self.max_sequence_length, self.fps, self.name = flow_shift, max_sequence_length, fps, name
        self.boundaries = boundaries
        self.resampler = resampler
        self.jump = jump  # between stages: "carry" (pyramid.md §5) or "fresh" (a checkpoint card's choice)
        self.info = dict(info or {})
        self.tiny_decoder = tiny_decoder  # a core.tiny_decoder.TinyVideoDecoder, or None
        self.load_seconds = 0.0
        self._original = None
        self._decode_probe: tuple[float, float] | None = None  # see estimate_tflops
        self._tiny_probe: tuple[float, float] | None = None

    @classmethod
    def from_components(cls, comps: Components, name: str, **kw) -> "PyramidalWanPipeline":
        return cls(comps.transformer, comps.vae, comps.text_encoder, comps.tokenizer, flow_shift=comps.flow_shift,
                   max_sequence_length=comps.max_sequence_length, fps=comps.fps, name=name, info=comps.info,
                   tiny_decoder=comps.tiny_decoder, **kw)

    # ------------------------------------------------------------------ parts
    @property
    def device(self) -> torch.device:
        return next(self.transformer.parameters()).device

    @property
    def recipe(self) -> FewStepRecipe | None:
        """A distilled checkpoint's locked recipe (it runs the few-step sampler), else None."""
        return FewStepRecipe.from_card(self.info.get("checkpoint"))

    def checked(self, req: GenerationRequest) -> GenerationRequest:
        """``req`` resolved with this pipeline's checkpoint card (guidance, a distilled recipe) and
        validated, or RequestError."""
        return req.resolved(self.info.get("checkpoint")).validated(known_models=[req.model])

    @property
    def original(self):
        """The stock diffusers WanPipeline on the same components (Euler flow-matching scheduler)."""
        if self._original is None:
            from diffusers import FlowMatchEulerDiscreteScheduler, WanPipeline

            self._original = WanPipeline(
                tokenizer=self.tokenizer, text_encoder=self.text_encoder, vae=self.vae,
                transformer=self.transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=self.flow_shift),
            )
            self._original.set_progress_bar_config(disable=True)
        return self._original

    def plan_for(self, req: GenerationRequest) -> StagePlan:
        """The request's plan; a checkpoint's trained windows apply to plans with its stage count."""
        boundaries = None
        if self.boundaries is not None and req.boundaries is None:
            if req.plan(shift=self.flow_shift).num_stages == len(self.boundaries) + 1:
                boundaries = self.boundaries
        return req.plan(shift=self.flow_shift, boundaries=boundaries)

    @torch.no_grad()
    def encode(self, prompt: str, negative_prompt: str, cfg: bool):
        return self.original.encode_prompt(
            prompt=prompt, negative_prompt=negative_prompt, do_classifier_free_guidance=cfg,
            max_sequence_length=self.max_sequence_length, device=self.device,
        )

    def prepare_noise(self, seed: int, frames: int, height: int, width: int) -> tuple[torch.Tensor, torch.Generator]:
        """Full-resolution noise drawn on the CPU from ``seed`` (as diffusers' randn_tensor does)."""
        g = torch.Generator("cpu").manual_seed(int(seed))
        c = self.transformer.config.in_channels
        shape = (1, c, (frames - 1) // 4 + 1, height // 8, width // 8)
        return torch.randn(shape, generator=g, dtype=torch.float32).to(self.device), g

    def denoiser(self, prompt_embeds, negative_prompt_embeds) -> Callable:
        dtype = self.transformer.dtype

        @torch.no_grad()
        def denoise(x, sigma, stage):
            t = (torch.tensor(sigma, dtype=torch.float32) * 1000).to(x.device)
            cfg = stage.guidance > 1.0
            xin = x.to(dtype)
            if cfg:
                out = self.transformer(
                    hidden_states=torch.cat([xin, xin]), timestep=t.expand(2),
                    encoder_hidden_states=torch.cat([prompt_embeds, negative_prompt_embeds]).to(dtype),
                    return_dict=False,
                )[0]
                cond, uncond = out.chunk(2)
                return uncond + stage.guidance * (cond - uncond)
            return self.transformer(hidden_states=xin, timestep=t.expand(1),
                                    encoder_hidden_states=prompt_embeds.to(dtype), return_dict=False)[0]

        return denoise

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, decoder: str = "full") -> np.ndarray:
        """Frames ``(F, H, W, 3)`` uint8 of the first video in ``latents``."""
        return self.decode_batch(latents[:1], decoder)[0]

    def check_decoder(self, decoder: str) -> None:
        """Refuse an unknown decoder, or the tiny one when this pipeline has none (RequestError)."""
        if decoder not in DECODERS:
            raise RequestError(f"decoder must be one of: {', '.join(DECODERS)}; got {decoder!r}", "decoder")
        if decoder != "full" and self.tiny_decoder is None:
            raise RequestError(f"model {self.name!r} has no tiny decoder: {TINY_DECODER_HINT}", "decoder")

    @torch.no_grad()
    def decode_batch(self, latents: torch.Tensor, decoder: str = "full") -> list[np.ndarray]:
        """Decode a batch of (normalised) latents: ``decoder="full"`` in one VAE call (on a CPU
        several times cheaper per video than one call each), ``"tiny"`` with the tiny decoder."""
        if decoder != "full":
            self.check_decoder(decoder)
            if decoder == "tiny":
                return self.tiny_decoder.decode_frames(latents)
            raise RequestError("decode_batch decodes with one decoder: 'full' or 'tiny'", "decoder")
        vae = self.vae
        x = latents.to(next(vae.parameters()).device, vae.dtype)
        mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1).to(x)
        std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1).to(x)
        video = vae.decode(x * std + mean, return_dict=False)[0]
        frames = self.original.video_processor.postprocess_video(video, output_type="np")
        return [np.clip(np.rint(f * 255.0), 0, 255).astype(np.uint8) for f in frames]

    def estimate_tflops(self, req: GenerationRequest, decode: bool = True) -> dict:
        """TFLOPs the request will cost, per phase: ``{"denoise": ..., "decode": ...}``.

        Denoising is the plan's analytic count (:func:`~core.flops.plan_flops`); decoding the
        VAE's, measured once on a small latent and scaled (:func:`~core.flops.decode_tflops`;
        ``decode=False`` leaves it out), or the tiny decoder's for ``decoder="tiny"`` (both for
        "both"). A worker splits a run's progress between the phases with them.
        """
        req = self.checked(req)
        plan = self.plan_for(req)
        out = {"denoise": plan_flops(self.transformer.config, plan, req.frames, req.height, req.width,
                                     self.max_sequence_length)["tflops"]}
        if decode:
            if self._decode_probe is None:
                self._decode_probe = measure_decode_probe(self.vae)
            full = decode_tflops(self._decode_probe, req.frames, req.height, req.width)
            out["decode"] = full if req.decoder == "full" else self._tiny_decode_tflops(req) + (
                full if req.decoder == "both" else 0.0)
        return out

    def _tiny_decode_tflops(self, req: GenerationRequest) -> float:
        """The tiny decoder's TFLOPs for the request's video: counted once on a small latent and
        scaled like the VAE's (:func:`~core.flops.decode_tflops`)."""
        if self.tiny_decoder is None:
            return 0.0
        if self._tiny_probe is None:
            c = self.tiny_decoder.config.latent_channels
            self._tiny_probe = tuple(float(self.tiny_decoder.flops((1, c, t, *PROBE_LATENT))) for t in (1, 2))
        return decode_tflops(self._tiny_probe, req.frames, req.height, req.width)

    # ------------------------------------------------------------------ main entry
    def generate(
        self,
        req: GenerationRequest,
        callback: Callable[[dict], bool | None] | None = None,
        preview: bool = True,
        return_latents: bool = False,
        decode: bool = True,
    ) -> GenerationResult:
        """Run one request. ``decode=False`` skips the VAE decode (``frames`` is None; use with
        ``return_latents`` and :meth:`decode_batch` to decode many videos at once). ``req.decoder``
        picks the final decode (:data:`DECODERS`); the stage-0 preview always uses the tiny decoder
        when there is one.

        ``callback`` gets every denoising step's dict (``"phase": "denoising"``, ``fraction`` of the
        denoising steps done), then ``{"phase": "decoding", "seconds": {...}}`` just before the VAE
        decode (the decode is one call, often the longest part on a CPU: a follower can show it).
        Returning True from it stops the run with :class:`~core.errors.Cancelled`."""
        # 1. check inputs; no guidance named: the checkpoint card's, else the preset's, else Wan's
        req = self.checked(req)
        self.check_decoder(req.decoder)
        plan = self.plan_for(req)
        t_start = time.perf_counter()
        seconds: dict = {}
        with PeakMemory(self.device) as mem:
            # 2. encode prompt and negative prompt once
            t0 = time.perf_counter()
            cfg = any(g > 1.0 for g in plan.guidance)
            pe, ne = self.encode(req.prompt, req.negative_prompt, cfg)
            seconds["encode"] = time.perf_counter() - t0
            # 3. noise from the seed at full resolution
            noise, gen = self.prepare_noise(req.seed, req.frames, req.height, req.width)
            # 4. sample
            t0 = time.perf_counter()
            if req.mode == "original":
                latents, stage_seconds, preview_frames = self._run_original(req, plan, pe, ne, noise, gen, callback)
            else:
                latents, stage_seconds, preview_frames = self._run_pyramid(plan, pe, ne, noise, gen, callback,
                                                                           preview)
            seconds["denoise"] = time.perf_counter() - t0
            seconds["stages"] = stage_seconds
            # 5. decode
            if decode and callback is not None:
                if callback({"phase": "decoding", "stages": plan.num_stages, "decoder": req.decoder,
                             "seconds": {k: seconds[k] for k in ("encode", "denoise")}}):
                    raise Cancelled("cancelled before decoding")
            decoded = self._decode_final(latents, req.decoder, seconds) if decode else {}
            seconds.setdefault("decode", 0.0)
        seconds["total"] = time.perf_counter() - t_start
        if preview_frames is not None:
            seconds["preview"] = preview_frames[1]
        flops = plan_flops(self.transformer.config, plan, req.frames, req.height, req.width, self.max_sequence_length)
        report = {
            "model": self.name,
            "mode": req.mode,
            "seed": req.seed,
            "shape": [req.frames, req.height, req.width],
            "plan": plan.describe(),
            "guidance": list(plan.guidance),
            "guidance_source": req.guidance_source,
            "jump": ("fresh" if self.recipe else self.jump) if req.mode == "pyramidal" and plan.num_stages > 1 else None,
            "sampler": "few-step" if self.recipe is not None else "euler",
            "recipe": self.recipe.to_dict() if self.recipe is not None else None,
            "latent_shapes": flops["latent_shapes"],
            "seconds": seconds,
            "load_seconds": self.load_seconds,
            "tflops": flops["tflops"],
            "tflops_per_stage": flops["tflops_per_stage"],
            "tflops_per_branch": flops["tflops_per_branch"],
            "peak_memory_mb": round(mem.peak, 1),
            "memory_kind": mem.kind,
            "device": str(self.device),
            "decoder": req.decoder,
            "preview_decoder": self.preview_decoder if preview_frames is not None else None,
            "decode_psnr_db": decoded.get("psnr"),
        }
        return GenerationResult(frames=decoded.get("frames"), fps=self.fps, report=report,
                                latents=latents if return_latents else None,
                                preview=preview_frames[0] if preview_frames is not None else None,
                                frames_tiny=decoded.get("frames_tiny"))

    @property
    def preview_decoder(self) -> str:
        """Low-resolution previews use the tiny decoder whenever there is one (else the VAE)."""
        return "tiny" if self.tiny_decoder is not None else "full"

    def _decode_final(self, latents: torch.Tensor, decoder: str, seconds: dict) -> dict:
        """The final video by ``decoder``: ``frames`` (the full decode for "both", with
        ``frames_tiny`` and the ``psnr`` of tiny against full); ``seconds["decode"]`` for the main
        video, ``seconds["decode_tiny"]`` for the tiny one when "both"."""
        t0 = time.perf_counter()
        frames = self.decode(latents, "tiny" if decoder == "tiny" else "full")
        seconds["decode"] = time.perf_counter() - t0
        if decoder != "both":
            return {"frames": frames}
        t0 = time.perf_counter()
        tiny = self.decode(latents, "tiny")
        seconds["decode_tiny"] = time.perf_counter() - t0
        return {"frames": frames, "frames_tiny": tiny, "psnr": frames_psnr(frames, tiny)}

    def __call__(self, prompt: str, **kw) -> GenerationResult:
        callback = kw.pop("callback", None)
        return self.generate(GenerationRequest(prompt=prompt, model=kw.pop("model", self.name), **kw), callback)

    def _run_pyramid(self, plan, pe, ne, noise, gen, callback, preview):
        stage_seconds = [0.0] * plan.num_stages
        marks = {"t": time.perf_counter()}
        preview_out = {}

        def on_stage_end(stage, x, denoised):
            now = time.perf_counter()
            stage_seconds[stage.index] = now - marks["t"]
            if preview and stage.index == 0 and plan.num_stages > 1:
                # the lowest stage's last x0 estimate, decoded at its own (cheap) resolution
                t0 = time.perf_counter()
                frames = self.decode(denoised, self.preview_decoder)
                preview_out["frames"] = (frames, time.perf_counter() - t0)
                if callback is not None:
                    callback({"phase": "denoising", "stage": 0, "stages": plan.num_stages, "step": stage.steps,
                              "steps": stage.steps, "sigma": stage.sigma_end,
                              "fraction": stage.steps / plan.total_steps, "preview": frames, "latents": x})
            marks["t"] = time.perf_counter()

        def on_step(info):
            return callback({"phase": "denoising", **info})

        recipe = self.recipe
        if recipe is not None:  # a distilled student: its locked levels and conversion
            sampler = functools.partial(sample_fewstep, levels=recipe.levels, conversion=recipe.conversion)
        else:
            sampler = functools.partial(sample_pyramid, jump_mode=self.jump)
        latents = sampler(self.denoiser(pe, ne), noise, plan, callback=on_step if callback else None,
                          generator=gen, resampler=self.resampler, on_stage_end=on_stage_end)
        return latents, stage_seconds, preview_out.get("frames")

    def _run_original(self, req, plan, pe, ne, noise, gen, callback):
        pipe = self.original
        stage = plan.stages[0]
        state = {"cancelled": False}

        def on_step(p, i, t, kwargs):
            if callback is not None and not state["cancelled"]:
                stop = callback({"phase": "denoising", "stage": 0, "stages": 1, "step": i + 1, "steps": stage.steps,
                                 "sigma": float(p.scheduler.sigmas[i + 1]), "fraction": (i + 1) / stage.steps,
                                 "latents": kwargs["latents"]})
                if stop:
                    state["cancelled"] = True
                    p._interrupt = True
            return {}

        t0 = time.perf_counter()
        latents = pipe(
            prompt_embeds=pe, negative_prompt_embeds=ne if stage.guidance > 1.0 else None,
            height=req.height, width=req.width, num_frames=req.frames, num_inference_steps=stage.steps,
            guidance_scale=stage.guidance, latents=noise, output_type="latent",
            max_sequence_length=self.max_sequence_length, callback_on_step_end=on_step,
        ).frames
        if state["cancelled"]:
            raise Cancelled("cancelled during the original model's denoising loop")
        return latents.float(), [time.perf_counter() - t0], None


def frames_psnr(a: np.ndarray, b: np.ndarray, cap: float = 100.0) -> float:
    """PSNR (dB) of two uint8 videos over all their pixels, capped at ``cap`` (identical videos),
    so a report stays plain JSON."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return cap if mse == 0 else round(min(10.0 * math.log10(255.0 ** 2 / mse), cap), 3)


# ---------------------------------------------------------------------- loading
def load_pipeline(
    preset: str,
    checkpoint_dir: str | Path | None = None,
    device: torch.device | str | None = None,
    name: str | None = None,
) -> PyramidalWanPipeline:
    """Build a preset's components, optionally with a finetuned transformer checkpoint over them.

    Raises :class:`~core.errors.ModelLoadError` with a message a person can act on.
    """
    from .checkpoints import apply_checkpoint, read_card
    from .errors import ModelLoadError

    t0 = time.perf_counter()
    card = None
    if checkpoint_dir is not None:
        card = read_card(checkpoint_dir)
        if card["base"] != preset:
            raise ModelLoadError(
                f"checkpoint {Path(checkpoint_dir).name} was trained over {card['base']!r}, not {preset!r}"
            )
    comps = build_components(preset, device)
    boundaries, jump = None, "carry"
    if card is not None:
        comps.transformer = apply_checkpoint(comps.transformer, checkpoint_dir)
        boundaries = card.get("boundaries")
        if boundaries is not None and len(boundaries) + 1 > MAX_STAGES:
            boundaries = None
        jump = card.get("jump", "carry")
        if jump not in JUMPS:
            raise ModelLoadError(f"checkpoint {Path(checkpoint_dir).name}: unknown jump {jump!r} in its card "
                                 f"(expected one of {', '.join(JUMPS)})")
    pipe = PyramidalWanPipeline.from_components(comps, name=name or preset, boundaries=boundaries, jump=jump)
    if card is not None:
        pipe.info["checkpoint"] = card
    pipe.load_seconds = time.perf_counter() - t0
    return pipe
