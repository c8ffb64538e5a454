"""Pyramidal Wan: plans, resampling, sampler, pipeline, presets, FLOPs and video (pure: no db/queue/UI).

    from core import PyramidalWanPipeline, StagePlan
"""

from .errors import Cancelled, ModelLoadError, RequestError
from .pipeline import GenerationRequest, GenerationResult, PyramidalWanPipeline, load_pipeline
from .plan import Stage, StagePlan
from .pipeline import DECODERS
from .presets import (default_device, default_preset, has_tiny_decoder, list_presets, recommended_guidance,
                      resolve_guidance)
from .resample import down_noise, down_signal, jump, up
from .sampler import sample_pyramid

__all__ = [
    "Cancelled", "ModelLoadError", "RequestError", "GenerationRequest", "GenerationResult",
    "PyramidalWanPipeline", "load_pipeline", "Stage", "StagePlan", "default_device", "default_preset",
    "recommended_guidance", "DECODERS", "has_tiny_decoder", "resolve_guidance", "list_presets", "down_noise", "down_signal", "jump", "up", "sample_pyramid",
]
