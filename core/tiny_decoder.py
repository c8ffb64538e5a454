"""A tiny convolutional video decoder for Wan latents: a fast stand-in for the VAE decoder.

Input: normalised latents ``(B, C, T, H, W)`` exactly as the sampler returns them (what
``PyramidalWanPipeline.decode_batch`` de-normalises with the VAE's ``latents_mean``/``latents_std``
before the full decoder). Output: pixels ``(B, 3, 1 + 4 (T - 1), 8 H, 8 W)`` in [-1, 1], or uint8
frames ``(F, 8H, 8W, 3)`` per video like ``decode_batch``.

Architecture (no attention; per-frame 2D convolutions plus causal temporal convolutions):

* latent resolution, latent frame rate: a 3x3 stem and residual blocks, each a causal temporal
  convolution (kernel 3 over this and the two previous frames, the first frame replicated in
  front) followed by two 3x3 convolutions;
* temporal x4: a 1x1 convolution to 4x the channels, folded into 4 frames per latent frame; the
  first 3 frames of the first group are dropped, so latent frame 0 gives 1 pixel frame (Wan's
  causal first frame) and every later one 4, as TAEHV does; then one more causal temporal mix;
* spatial x8: two stages of nearest x2 and 3x3 convolutions, then a 3x3 head to ``3 * 4``
  channels and a pixel shuffle (the third x2), so no convolution runs at full resolution;
* ``skip``: a linear path beside all of it, a 1x1 convolution from each latent pixel to its
  4 x 8 x 8 pixels (pixel-shuffled, folded in time like the main path). A latent pixel's colour is
  nearly linear in its 16 channels, and without this path the convolutions learn shapes long before
  colours (grey objects at 15 dB after 300 steps; with it 26 dB after 500).

Every temporal operation looks only backwards, so pixel frame ``f`` depends on latent frames
``<= ceil(f / 4)`` only (the full decoder is causal the same way).

A decoder is a folder: ``config.json`` (:class:`TinyDecoderConfig`) and ``model.safetensors``.
``latent_space`` names the preset whose VAE it was distilled from; ``latents_mean``/``latents_std``
record that VAE's normalisation, so :meth:`TinyVideoDecoder.matches_vae` can tell whether a VAE
shares its latent space and :meth:`TinyVideoDecoder.normalise` can take raw VAE latents too.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from core.errors import ModelLoadError, RequestError

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
CLASS_NAME = "TinyVideoDecoder"


@dataclass
class TinyDecoderConfig:
    latent_channels: int = 16
    out_channels: int = 3
    widths: list[int] = field(default_factory=lambda: [64, 32, 16])  # latent, x2, x4 resolution
    blocks: list[int] = field(default_factory=lambda: [2, 0, 0])  # residual blocks per resolution
    temporal: int = 4
    spatial: int = 8
    skip: bool = True  # the linear latent-to-pixels path (see the module docstring)
    latent_space: str = ""  # preset whose VAE latents it decodes, e.g. "mini"
    latents_mean: list[float] | None = None
    latents_std: list[float] | None = None

    def __post_init__(self):
        if self.temporal != 4 or self.spatial != 8:
            raise ValueError(f"only temporal 4 and spatial 8 (Wan's) are built, got {self.temporal}, {self.spatial}")
        if len(self.widths) != 3 or len(self.blocks) != 3 or min(self.widths) < 1 or min(self.blocks) < 0:
            raise ValueError(f"widths and blocks need 3 entries (latent, x2, x4): got {self.widths}, {self.blocks}")
        if self.latent_channels < 1 or self.out_channels < 1:
            raise ValueError("latent_channels and out_channels must be positive")
        for name in ("latents_mean", "latents_std"):
            value = getattr(self, name)
            if value is not None and len(value) != self.latent_channels:
                raise ValueError(f"{name} has {len(value)} entries for {self.latent_channels} latent channels")

    def to_dict(self) -> dict:
        return {"_class_name": CLASS_NAME, **asdict(self)}

    @classmethod
    def from_dict(cls, data: dict) -> "TinyDecoderConfig":
        names = {f.name for f in fields(cls)}
        unknown = sorted(k for k in data if k not in names and not k.startswith("_"))
        if unknown:
            raise ValueError(f"unknown config keys {unknown}")
        return cls(**{k: v for k, v in data.items() if k in names})


class CausalTemporalConv(nn.Module):
    """Per-pixel mix of this frame and the ``kernel - 1`` previous ones (first frame replicated)."""

    def __init__(self, channels: int, kernel: int = 3):
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv3d(channels, channels, (kernel, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W)
        x = F.pad(x, (0, 0, 0, 0, self.kernel - 1, 0), mode="replicate")
        return self.conv(x)


def _frames2d(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(B, C, T, H, W) -> (B * T, C, H, W), and B."""
    b, c, t, h, w = x.shape
    return x.permute(0, 2, 1, 3, 4).reshape(b * t, c, h, w), b


def _frames3d(x: torch.Tensor, b: int) -> torch.Tensor:
    """(B * T, C, H, W) -> (B, C, T, H, W)."""
    bt, c, h, w = x.shape
    return x.reshape(b, bt // b, c, h, w).permute(0, 2, 1, 3, 4)


class ResBlock(nn.Module):
    """``x + conv(relu(conv(relu(x'))))`` with ``x' = x + temporal(x)`` when ``temporal``."""

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.temporal = CausalTemporalConv(channels) if temporal else None
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, b: int) -> torch.Tensor:  # (B * T, C, H, W)
        if self.temporal is not None:
            x = x + _frames2d(self.temporal(_frames3d(x, b)))[0]
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class TinyVideoDecoder(nn.Module):
    def __init__(self, config: TinyDecoderConfig | None = None):
        super().__init__()
        self.config = cfg = config or TinyDecoderConfig()
        w0, w1, w2 = cfg.widths
        self.stem = nn.Conv2d(cfg.latent_channels, w0, 3, padding=1)
        self.blocks0 = nn.ModuleList(ResBlock(w0, temporal=True) for _ in range(cfg.blocks[0]))
        self.to_time = nn.Conv2d(w0, w0 * cfg.temporal, 1)
        self.after_time = CausalTemporalConv(w0)
        self.up1 = nn.Conv2d(w0, w1, 3, padding=1)
        self.blocks1 = nn.ModuleList(ResBlock(w1, temporal=False) for _ in range(cfg.blocks[1]))
        self.up2 = nn.Conv2d(w1, w2, 3, padding=1)
        self.blocks2 = nn.ModuleList(ResBlock(w2, temporal=False) for _ in range(cfg.blocks[2]))
        self.head = nn.Conv2d(w2, cfg.out_channels * 4, 3, padding=1)
        area = cfg.temporal * cfg.spatial ** 2
        self.linear = nn.Conv2d(cfg.latent_channels, cfg.out_channels * area, 1) if cfg.skip else None

    # ------------------------------------------------------------------ shapes
    def output_shape(self, latent_shape: tuple[int, ...]) -> tuple[int, int, int, int, int]:
        b, _, t, h, w = latent_shape
        return b, self.config.out_channels, 1 + self.config.temporal * (t - 1), h * 8, w * 8

    def check_latents(self, latents) -> None:
        """Raise :class:`RequestError` unless ``latents`` is a float ``(B, C, T, H, W)`` tensor with
        this decoder's channel count; the message names what was expected and what came."""
        c = self.config.latent_channels
        want = f"normalised latents (B, {c}, T, H, W)"
        if not isinstance(latents, torch.Tensor):
            raise RequestError(f"the tiny decoder expects a torch tensor of {want}, got {type(latents).__name__}",
                               "latents")
        if latents.ndim != 5:
            raise RequestError(f"the tiny decoder expects {want} (5-D), got shape {tuple(latents.shape)}", "latents")
        if latents.shape[1] != c:
            raise RequestError(f"the tiny decoder expects {c} latent channels ({want}), got {latents.shape[1]} "
                               f"in shape {tuple(latents.shape)}", "latents")
        if min(latents.shape) < 1:
            raise RequestError(f"the tiny decoder expects {want} with every size >= 1, got {tuple(latents.shape)}",
                               "latents")
        if not latents.is_floating_point():
            raise RequestError(f"the tiny decoder expects floating-point latents, got {latents.dtype}", "latents")

    # ------------------------------------------------------------------ forward
    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw pixels ``(B, 3, 1 + 4 (T - 1), 8H, 8W)`` (about [-1, 1], unclamped: for training)."""
        p = self.stem.weight
        x, b = _frames2d(latents.to(p.device, p.dtype))
        x = self.stem(x)
        for block in self.blocks0:
            x = block(x, b)
        # temporal x4: (B*T, 4C, H, W) -> (B, C, 4T, H, W), drop the first group's first 3 frames
        x = F.relu(self.to_time(F.relu(x)))
        bt, c4, h, w = x.shape
        t, c = bt // b, c4 // self.config.temporal
        x = x.reshape(b, t, self.config.temporal, c, h, w).reshape(b, t * self.config.temporal, c, h, w)
        x = x[:, self.config.temporal - 1:].permute(0, 2, 1, 3, 4)  # (B, C, F, H, W)
        x = x + self.after_time(x)
        x, _ = _frames2d(x)
        x = F.interpolate(F.relu(x), scale_factor=2, mode="nearest")
        x = self.up1(x)
        for block in self.blocks1:
            x = block(x, b)
        x = F.interpolate(F.relu(x), scale_factor=2, mode="nearest")
        x = self.up2(x)
        for block in self.blocks2:
            x = block(x, b)
        x = _frames3d(F.pixel_shuffle(self.head(F.relu(x)), 2), b)
        if self.linear is not None:
            x = x + self._linear_path(latents.to(p.device, p.dtype))
        return x

    def _linear_path(self, latents: torch.Tensor) -> torch.Tensor:
        """Each latent pixel's 1x1 map to its ``temporal x 8 x 8`` pixels, the first group cut to
        one frame as in the main path: ``(B, 3, 1 + 4 (T - 1), 8H, 8W)``."""
        x, b = _frames2d(latents)
        bt, _, h, w = x.shape
        k, c = self.config.temporal, self.config.out_channels
        y = F.pixel_shuffle(self.linear(x), self.config.spatial)  # (B*T, k*c, 8h, 8w)
        y = y.reshape(b, bt // b, k, c, y.shape[-2], y.shape[-1]).flatten(1, 2)[:, k - 1:]
        return y.permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def decode(self, latents: torch.Tensor, chunk: int = 2) -> torch.Tensor:
        """Checked, no-grad decode: pixels ``(B, 3, F, 8H, 8W)`` in [-1, 1] (float32, on the model's
        device). Runs ``chunk`` videos per forward: on a CPU, 2 at a time is faster per video than
        the whole batch at once (the activations stay in cache)."""
        self.check_latents(latents)
        parts = [self(latents[i:i + chunk]).clamp(-1, 1).float() for i in range(0, latents.shape[0], max(chunk, 1))]
        return torch.cat(parts)

    def decode_frames(self, latents: torch.Tensor, chunk: int = 2) -> list[np.ndarray]:
        """uint8 frames ``(F, 8H, 8W, 3)`` per video, rounded as ``decode_batch`` rounds."""
        video = self.decode(latents, chunk)
        x = ((video + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
        return list(x)

    def normalise(self, raw_latents: torch.Tensor) -> torch.Tensor:
        """Raw VAE latents -> the normalised ones this decoder takes: ``(z - mean) / std``."""
        cfg = self.config
        if cfg.latents_mean is None or cfg.latents_std is None:
            raise RequestError("this tiny decoder's config records no latents_mean/latents_std", "latents")
        self.check_latents(raw_latents)
        mean = torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1).to(raw_latents)
        std = torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1).to(raw_latents)
        return (raw_latents - mean) / std

    def matches_vae(self, vae, atol: float = 1e-5) -> bool:
        """Whether ``vae`` (its ``config``) has this decoder's latent channels and normalisation."""
        vc = getattr(vae, "config", vae)
        cfg = self.config
        if int(getattr(vc, "z_dim", -1)) != cfg.latent_channels or cfg.latents_mean is None:
            return False
        return bool(np.allclose(vc.latents_mean, cfg.latents_mean, atol=atol)
                    and np.allclose(vc.latents_std, cfg.latents_std, atol=atol))

    def weights_sha256(self) -> str:
        """A digest of the weights themselves (names, dtypes, shapes, values): unlike the file's bytes,
        it does not change when the same weights are saved again (safetensors' metadata order varies)."""
        import hashlib

        digest = hashlib.sha256()
        for name, tensor in sorted(self.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            digest.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            digest.update(t.numpy().tobytes())
        return digest.hexdigest()

    def flops(self, latent_shape: tuple[int, ...] = (1, 16, 5, 16, 16)) -> int:
        """FLOPs of one forward on zeros of ``latent_shape`` (``FlopCounterMode``)."""
        from torch.utils.flop_counter import FlopCounterMode

        p = self.stem.weight
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            self(torch.zeros(latent_shape, device=p.device, dtype=p.dtype))
        return int(counter.get_total_flops())

    # ------------------------------------------------------------------ folder
    def save(self, folder: str | Path) -> Path:
        """Write ``config.json`` and ``model.safetensors`` into ``folder`` (created)."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=1) + "\n")
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt", "class": CLASS_NAME})
        return folder


def load_tiny_decoder(folder: str | Path, device=None) -> TinyVideoDecoder:
    """A :class:`TinyVideoDecoder` from a folder written by :meth:`TinyVideoDecoder.save`, in eval
    mode without gradients. Anything missing or malformed raises :class:`ModelLoadError`."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise ModelLoadError(f"tiny decoder folder {str(folder)!r} does not exist: train one with "
                             "`python -m finetune tiny-decoder --base mini --data world:N --out FOLDER`")
    config_path, weights_path = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            raise ModelLoadError(f"tiny decoder folder {str(folder)!r} has no {path.name}: it needs "
                                 f"{CONFIG_NAME} and {WEIGHTS_NAME}")
    try:
        data = json.loads(config_path.read_text())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        if data.get("_class_name", CLASS_NAME) != CLASS_NAME:
            raise ValueError(f"_class_name is {data.get('_class_name')!r}, not {CLASS_NAME!r}")
        config = TinyDecoderConfig.from_dict(data)
    except (ValueError, TypeError) as exc:
        raise ModelLoadError(f"tiny decoder config {str(config_path)!r} is invalid: {exc}") from exc
    model = TinyVideoDecoder(config)
    try:
        state = load_file(str(weights_path))
    except Exception as exc:  # noqa: BLE001 - safetensors raises several kinds
        raise ModelLoadError(f"tiny decoder weights {str(weights_path)!r} cannot be read: {exc}") from exc
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:300]
        raise ModelLoadError(f"tiny decoder weights {str(weights_path)!r} do not fit its config.json: {first}") from exc
    model.eval().requires_grad_(False)
    if device is not None:
        model.to(device)
    return model
