"""Generate a row of mini-world videos and score them: the measurement behind the mini-world
table (``bench/mini_world.py``) and the distillation recipe's choice of checkpoint.

Prompts and seeds follow the table: prompt ``i`` is ``all_captions()[i % 24]`` with seed ``i``
(``seed_offset`` moves the seeds; held-out checks use seeds the table never does).
"""

from __future__ import annotations

import time

import numpy as np


def table_prompts(clips: int) -> list[str]:
    from finetune.world import all_captions

    captions = all_captions()
    return [captions[i % len(captions)] for i in range(clips)]


def generate_row(pipe, mode: str, schedule: str | None, prompts: list[str], seeds: list[int], guidance,
                 decode_batch: int = 8, grid: str | None = None, decoder=None) -> dict:
    """Videos of one row: every request through ``pipe.generate`` (one video each; ``schedule`` and
    ``guidance`` None: a distilled checkpoint's recipe), the latents decoded ``decode_batch`` at a
    time by ``decoder`` (latents -> uint8 frames per video; default ``pipe.decode_batch``, the VAE)."""
    import torch

    from core import GenerationRequest

    decoder = decoder or pipe.decode_batch
    latents, denoise, other, tflops, plan_grid = [], [], [], 0.0, None
    for prompt, seed in zip(prompts, seeds):
        req = GenerationRequest(prompt, model=pipe.name, mode=mode, schedule=schedule, guidance=guidance, seed=seed,
                                grid=grid)
        res = pipe.generate(req, preview=False, return_latents=True, decode=False)
        plan_grid = res.report["plan"]["grid"]
        denoise.append(res.report["seconds"]["denoise"])
        other.append(res.report["seconds"]["total"])
        tflops = res.report["tflops"]
        latents.append(res.latents)
    videos, t0 = [], time.perf_counter()
    for i in range(0, len(latents), decode_batch):
        videos += decoder(torch.cat(latents[i:i + decode_batch]))
    decode = (time.perf_counter() - t0) / len(latents)
    return {"videos": videos, "denoise_seconds": float(np.mean(denoise)),
            "seconds": float(np.mean(other)) + decode, "tflops": tflops, "grid": plan_grid}


def score_videos(videos: list[np.ndarray], prompts: list[str], reference: np.ndarray | None = None,
                 real: np.ndarray | None = None) -> dict:
    """Adherence per attribute and all three (:func:`finetune.scorer.accuracy`), the scorer
    features, and the Frechet distances to ``reference`` features (the original's samples) and to
    ``real`` ones when given."""
    from finetune.scorer import accuracy, clip_features, frechet_distance, score_clip

    feats = np.stack([clip_features(v) for v in videos])
    scores = [score_clip(v) for v in videos]
    out = dict(accuracy(scores, prompts))
    out["features"] = feats
    out["scores"] = scores
    out["fd_original"] = None if reference is None else frechet_distance(feats, reference)
    out["fd_real"] = None if real is None else frechet_distance(feats, real)
    return out
