"""FLOP accounting for Wan transformers: analytic per stage, and measured with FlopCounterMode.

Matmul FLOPs = 2 x multiply-accumulates. Norms, activations and RoPE are not counted (they are
not matmuls, and FlopCounterMode does not count them either).

CLI::

    python -m core.flops --model wan2.1-1.3b --frames 81 --height 448 --width 832 --schedule 20-20-10
"""

from __future__ import annotations

import argparse
import json
import math
import sys

import torch

from .errors import RequestError
from .plan import StagePlan

DEFAULT_TEXT_TOKENS = {"wan2.1-1.3b": 512, "tiny": 64}


def _cfg(config) -> dict:
    return dict(config) if isinstance(config, dict) else dict(config.config)


def wan_forward_flops(config, latent_shape: tuple[int, int, int], text_tokens: int = 512, batch: int = 1) -> float:
    """Analytic FLOPs of one transformer forward at latent ``(T, H, W)``."""
    c = _cfg(config)
    pt, ph, pw = c["patch_size"]
    d = c["num_attention_heads"] * c["attention_head_dim"]
    ffn, layers = c["ffn_dim"], c["num_layers"]
    t, h, w = latent_shape
    n = (t // pt) * (h // ph) * (w // pw)
    lt = text_tokens
    patch_in = c["in_channels"] * pt * ph * pw
    patch_out = c["out_channels"] * pt * ph * pw
    macs = n * patch_in * d  # patch embedding
    macs += c["freq_dim"] * d + d * d + d * 6 * d  # time embedding and its projection
    macs += lt * (c["text_dim"] * d + d * d)  # text embedding
    per_layer = (
        4 * n * d * d + 2 * n * n * d  # self-attention: q, k, v, o and the two attention products
        + 2 * n * d * d + 2 * lt * d * d + 2 * n * lt * d  # cross-attention
        + 2 * n * d * ffn  # feed-forward
    )
    macs += layers * per_layer
    macs += n * d * patch_out  # output projection
    return 2.0 * macs * batch


def plan_flops(config, plan: StagePlan, frames: int, height: int, width: int, text_tokens: int = 512) -> dict:
    """Per-stage and total TFLOPs of a plan, per guidance branch and with its guidance."""
    shapes = plan.latent_shapes(frames, height, width)
    per_forward = [wan_forward_flops(config, s, text_tokens) / 1e12 for s in shapes]
    per_stage = [st.steps * f for st, f in zip(plan.stages, per_forward)]
    branches = [2 if st.guidance != 1.0 else 1 for st in plan.stages]
    with_cfg = [p * b for p, b in zip(per_stage, branches)]
    return {
        "schedule": plan.schedule,
        "latent_shapes": [list(s) for s in shapes],
        "tokens": [math.prod(s) // 4 for s in shapes],
        "tflops_per_forward": per_forward,
        "tflops_per_stage_per_branch": per_stage,
        "tflops_per_branch": sum(per_stage),
        "tflops_per_stage": with_cfg,
        "tflops": sum(with_cfg),
    }


def _sdpa_flops(query_shape, key_shape, value_shape, *args, **kwargs) -> int:
    """FLOPs of scaled-dot-product attention (QK^T and AV), for ops FlopCounterMode misses on CPU."""
    b, h, sq, dq = query_shape
    sk, dv = key_shape[-2], value_shape[-1]
    return 2 * b * h * sq * sk * dq + 2 * b * h * sq * sk * dv


def attention_custom_mapping() -> dict:
    mapping = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        op = getattr(torch.ops.aten, name, None)
        if op is not None:
            mapping[op] = _sdpa_flops
    return mapping


def measure_forward_flops(transformer: torch.nn.Module, latent_shape, text_tokens: int, batch: int = 1) -> float:
    """Run one forward under FlopCounterMode and return its FLOPs (attention included)."""
    from torch.utils.flop_counter import FlopCounterMode

    c = transformer.config
    p = next(transformer.parameters())
    x = torch.zeros((batch, c.in_channels, *latent_shape), dtype=p.dtype, device=p.device)
    text = torch.zeros((batch, text_tokens, c.text_dim), dtype=p.dtype, device=p.device)
    t = torch.full((batch,), 500.0, device=p.device)
    counter = FlopCounterMode(display=False, custom_mapping=attention_custom_mapping())
    with torch.no_grad(), counter:
        transformer(hidden_states=x, timestep=t, encoder_hidden_states=text, return_dict=False)
    return float(counter.get_total_flops())


#: The small latent (height, width) the VAE decoder's cost is measured on.
_PROBE_LATENT = (4, 4)
PROBE_LATENT = _PROBE_LATENT  # the latent (H, W) decode FLOPs are measured on, then scaled


def measure_decode_probe(vae: torch.nn.Module) -> tuple[float, float]:
    """FLOPs of VAE decodes of 1 and 2 latent frames of a 4 x 4 latent, under FlopCounterMode
    (the input of :func:`decode_tflops`; measure once per VAE)."""
    from torch.utils.flop_counter import FlopCounterMode

    p = next(vae.parameters())
    counts = []
    for t in (1, 2):
        z = torch.zeros((1, vae.config.z_dim, t, *_PROBE_LATENT), dtype=p.dtype, device=p.device)
        counter = FlopCounterMode(display=False, custom_mapping=attention_custom_mapping())
        with torch.no_grad(), counter:
            vae.decode(z, return_dict=False)
        counts.append(float(counter.get_total_flops()))
    return counts[0], counts[1]


def decode_tflops(probe: tuple[float, float], frames: int, height: int, width: int) -> float:
    """TFLOPs of one VAE decode of a ``frames x height x width`` video, from the measured probe.

    The decoder is convolutional: its cost grows with the pixels it writes. The first latent
    frame becomes 1 frame and each later one 4, so the two probe counts give the cost of the
    first and of each later latent frame, scaled to the video's pixels. The mid-block attention
    (quadratic in the pixels) is a small part and is scaled linearly too: a little low for large
    videos.
    """
    first, two = probe
    latent_frames = (frames - 1) // 4 + 1
    per_probe = first + (latent_frames - 1) * (two - first)
    return per_probe * (height // 8) * (width // 8) / math.prod(_PROBE_LATENT) / 1e12


def transformer_config_for(model: str) -> dict:
    from .presets import tiny_transformer_config, wan13b_transformer_config

    configs = {"wan2.1-1.3b": wan13b_transformer_config, "tiny": tiny_transformer_config}
    if model not in configs:
        raise RequestError(f"no architecture known for {model!r}; choose one of: {', '.join(configs)}", "model")
    return configs[model]()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m core.flops", description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="wan2.1-1.3b")
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--height", type=int, default=448)
    ap.add_argument("--width", type=int, default=832)
    ap.add_argument("--schedule", default="20-20-10")
    ap.add_argument("--text-tokens", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        plan = StagePlan.parse(args.schedule)
        cfg = transformer_config_for(args.model)
        tokens = args.text_tokens or DEFAULT_TEXT_TOKENS.get(args.model, 512)
        out = plan_flops(cfg, plan, args.frames, args.height, args.width, tokens)
    except RequestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(out))
    else:
        print(f"{args.model} {args.frames}x{args.height}x{args.width} schedule {plan.schedule}")
        for k, (shape, f, st) in enumerate(zip(out["latent_shapes"], out["tflops_per_forward"],
                                               out["tflops_per_stage_per_branch"])):
            print(f"  stage {k}: latent {tuple(shape)}  {f:9.3f} TFLOPs/forward  {st:10.1f} TFLOPs")
        print(f"  total per guidance branch: {out['tflops_per_branch']:.1f} TFLOPs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
