"""Model presets: where the transformer, VAE, text encoder and tokenizer come from.

* ``tiny``: random weights (fixed seed, so every process builds the same model), 2 layers, a
  word-level tokenizer trained in code with ``tokenizers``. Tests and CPU demos.
* ``wan2.1-1.3b``: Wan2.1-T2V-1.3B in diffusers format, from ``PWAN_WAN_PATH`` (a local folder)
  or the hub id ``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``.

Every preset builds the same four diffusers/transformers classes, so the pyramidal sampler and the
stock ``WanPipeline`` run on identical components.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from settings import get_settings

from .errors import ModelLoadError

log = logging.getLogger(__name__)

WAN_HUB_ID = "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"

# Words the offline tokenizer knows: the mini world's vocabulary plus common prompt words.
_TOKENIZER_CORPUS = """
a an the of and with in on at to from by over under into onto moves move moving slowly quickly fast slow
red green blue yellow white black purple orange pink brown grey gray cyan magenta gold silver dark light bright
circle square triangle ball box cube star shape dot ring line object small big large tiny huge round
left right up down across around toward away still static background foreground floor sky sea water
cat dog bird fish car boat tree flower person man woman child house city forest mountain beach river
sunset sunrise night day rain snow fire smoke cloud clouds wind light shadow camera zoom pan close view
walks runs flies swims jumps falls spins rotates turns rolls glows shines bounces drifts floats
video scene photo cinematic realistic style high quality blurry low worst ugly deformed static noisy
""".split()


@dataclass
class Components:
    transformer: torch.nn.Module
    vae: torch.nn.Module
    text_encoder: torch.nn.Module
    tokenizer: object
    flow_shift: float = 3.0
    max_sequence_length: int = 512
    fps: int = 16
    info: dict = field(default_factory=dict)
    tiny_decoder: torch.nn.Module | None = None  # a TinyVideoDecoder sharing the VAE's latents, or None


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    build: Callable[[torch.device], Components]
    needs_gpu: bool = False


def build_word_tokenizer(words: list[str] | None = None):
    """A word-level tokenizer trained in code (no download), wrapped for ``transformers``."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    words = words or _TOKENIZER_CORPUS
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"], min_frequency=1)
    tok.train_from_iterator([" ".join(sorted(set(words)))], trainer=trainer)
    eos = tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def tiny_transformer_config() -> dict:
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=32,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=64,
    )


def wan13b_transformer_config() -> dict:
    """Wan2.1-T2V-1.3B (pyramid.md §2); diffusers' constructor defaults are the 14B model's."""
    return dict(
        patch_size=(1, 2, 2),
        num_attention_heads=12,
        attention_head_dim=128,
        in_channels=16,
        out_channels=16,
        text_dim=4096,
        freq_dim=256,
        ffn_dim=8960,
        num_layers=30,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
    )


def _build_tiny(device: torch.device) -> Components:
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    tokenizer = build_word_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = WanTransformer3DModel(**tiny_transformer_config())
        torch.manual_seed(1)
        vae = AutoencoderKLWan(
            base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
        )
        torch.manual_seed(2)
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
                relative_attention_num_buckets=8,
                relative_attention_max_distance=32,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
                decoder_start_token_id=tokenizer.pad_token_id,
            )
        )
    for m in (transformer, vae, text_encoder):
        m.eval().requires_grad_(False).to(device)
    return Components(transformer, vae, text_encoder, tokenizer, flow_shift=3.0, max_sequence_length=64,
                      info={"source": "random weights (seed 0), built in code"},
                      tiny_decoder=_random_tiny_decoder(vae, device))


def _random_tiny_decoder(vae, device: torch.device):
    """The ``tiny`` preset's tiny decoder: seeded random weights in its VAE's latent space, so
    tests can run ``decoder="tiny"`` without files."""
    from .tiny_decoder import TinyDecoderConfig, TinyVideoDecoder

    cfg = TinyDecoderConfig(latent_channels=int(vae.config.z_dim), widths=[8, 8, 8], blocks=[1, 0, 0],
                            latent_space="tiny", latents_mean=[float(v) for v in vae.config.latents_mean],
                            latents_std=[float(v) for v in vae.config.latents_std])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(3)
        decoder = TinyVideoDecoder(cfg)
    return decoder.eval().requires_grad_(False).to(device)


TINY_DECODER_SUFFIX = "-tiny-decoder"


def tiny_decoder_folder(model_folder: str | Path) -> Path:
    """Where the tiny decoder of a model folder lives: its sibling ``<name>-tiny-decoder``."""
    path = Path(model_folder)
    return path.parent / (path.name + TINY_DECODER_SUFFIX)


def _decoder_files_present(folder: Path) -> bool:
    from .tiny_decoder import CONFIG_NAME, WEIGHTS_NAME

    return (folder / CONFIG_NAME).is_file() and (folder / WEIGHTS_NAME).is_file()


def _load_sibling_decoder(model_folder: str | Path, vae, device: torch.device):
    """The tiny decoder beside ``model_folder`` when there is one and it shares ``vae``'s latent
    space; None otherwise (a broken or mismatched one is logged and ignored: the VAE still works)."""
    from .tiny_decoder import load_tiny_decoder

    folder = tiny_decoder_folder(model_folder)
    if not _decoder_files_present(folder):
        return None
    try:
        decoder = load_tiny_decoder(folder, device)
    except ModelLoadError as exc:
        log.warning("ignoring the tiny decoder at %s: %s", folder, exc)
        return None
    if not decoder.matches_vae(vae):
        log.warning("ignoring the tiny decoder at %s: its latent space does not match the VAE of %s",
                    folder, model_folder)
        return None
    return decoder


def _folder_of(preset: str) -> Path | None:
    """The local model folder a preset loads from (None: built in code or from the hub)."""
    if preset == "mini":
        return mini_path()
    if preset == "wan2.1-1.3b" and get_settings().wan_path:
        return Path(get_settings().wan_path)
    return None


def has_tiny_decoder(preset: str) -> bool:
    """Whether ``preset`` gets a tiny decoder, answered from files only (no model is loaded):
    ``tiny`` always; a folder preset when its sibling decoder folder is complete and its config
    records the VAE's channels and normalisation (the check :meth:`matches_vae` makes on load)."""
    import numpy as np

    if preset == "tiny":
        return True
    folder = _folder_of(preset)
    if folder is None or not _decoder_files_present(tiny_decoder_folder(folder)):
        return False
    try:
        cfg = json.loads((tiny_decoder_folder(folder) / "config.json").read_text())
        vae = json.loads((folder / "vae" / "config.json").read_text())
        return (int(cfg.get("latent_channels", 16)) == int(vae.get("z_dim", -1))
                and cfg.get("latents_mean") is not None
                and bool(np.allclose(cfg["latents_mean"], vae["latents_mean"], atol=1e-5))
                and bool(np.allclose(cfg["latents_std"], vae["latents_std"], atol=1e-5)))
    except (OSError, ValueError, TypeError, KeyError):
        return False


def _load_folder(source: str, device: torch.device, dtype: torch.dtype):
    """transformer/, vae/, text_encoder/, tokenizer/ of a diffusers-format Wan folder or hub id."""
    from diffusers import AutoencoderKLWan, WanTransformer3DModel
    from transformers import AutoTokenizer, UMT5EncoderModel

    transformer = WanTransformer3DModel.from_pretrained(source, subfolder="transformer", torch_dtype=dtype)
    vae = AutoencoderKLWan.from_pretrained(source, subfolder="vae", torch_dtype=torch.float32)
    text_encoder = UMT5EncoderModel.from_pretrained(source, subfolder="text_encoder", torch_dtype=dtype)
    tokenizer = AutoTokenizer.from_pretrained(source, subfolder="tokenizer")
    for m in (transformer, vae, text_encoder):
        m.eval().requires_grad_(False).to(device)
    return transformer, vae, text_encoder, tokenizer


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _build_wan13b(device: torch.device) -> Components:
    source = get_settings().wan_path or WAN_HUB_ID
    if get_settings().wan_path and not Path(source).is_dir():
        raise ModelLoadError(
            f"PWAN_WAN_PATH={source!r} is not a folder. Point it at a downloaded copy of {WAN_HUB_ID} "
            "(diffusers format: transformer/, vae/, text_encoder/, tokenizer/)."
        )
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        parts = _load_folder(source, device, dtype)
    except Exception as exc:  # noqa: BLE001 - turned into a message a person can act on
        raise ModelLoadError(
            f"Could not load Wan2.1-T2V-1.3B from {source!r}: {_first_line(exc)}. Download it on a machine with "
            f"internet (`huggingface-cli download {WAN_HUB_ID} --local-dir /path/to/wan`), copy it here and set "
            "PWAN_WAN_PATH=/path/to/wan; or choose the 'tiny' model."
        ) from exc
    tiny = _load_sibling_decoder(source, parts[1], device) if get_settings().wan_path else None
    return Components(*parts, flow_shift=3.0, max_sequence_length=512, info={"source": source}, tiny_decoder=tiny)


def mini_path() -> Path:
    """The ``mini`` preset's folder (``PWAN_MINI_PATH``, by default ``models/mini``)."""
    return get_settings().mini_path


def mini_available() -> bool:
    return (mini_path() / "transformer" / "config.json").is_file()


def _build_mini(device: torch.device) -> Components:
    """The small model trained on the procedural world (``python -m finetune.mini_world``)."""
    path = mini_path()
    if not mini_available():
        raise ModelLoadError(
            f"the mini model is not at {path}: train it with `python -m finetune.mini_world` "
            "(or set PWAN_MINI_PATH), or choose the 'tiny' model."
        )
    try:
        parts = _load_folder(str(path), device, torch.float32)
        card = json.loads((path / "card.json").read_text()) if (path / "card.json").is_file() else {}
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"the mini model at {path} could not be loaded: {_first_line(exc)}") from exc
    return Components(*parts, flow_shift=float(card.get("flow_shift", 3.0)),
                      max_sequence_length=int(card.get("max_sequence_length", 64)), info={"source": str(path)},
                      tiny_decoder=_load_sibling_decoder(path, parts[1], device))


PRESETS: dict[str, Preset] = {
    "tiny": Preset("tiny", "random weights, 2 layers: for tests and quick CPU checks", _build_tiny),
    "wan2.1-1.3b": Preset("wan2.1-1.3b", "Wan2.1-T2V-1.3B (diffusers format)", _build_wan13b, needs_gpu=True),
    "mini": Preset("mini", "small model trained on the procedural world: real videos on a CPU", _build_mini),
}


def register_preset(preset: Preset) -> None:
    PRESETS[preset.name] = preset


def list_presets() -> list[str]:
    """Presets a request may name: ``mini`` only once its trained weights are there."""
    return [name for name in PRESETS if name != "mini" or mini_available()]


def default_preset() -> str:
    """``PWAN_MODEL`` if set; else the real model with a GPU, the best CPU model without."""
    env = get_settings().model
    if env:
        return env
    if torch.cuda.is_available():
        return "wan2.1-1.3b"
    return "mini" if mini_available() else "tiny"


DEFAULT_GUIDANCE = 5.0  # Wan's


GUIDANCE_SOURCES = ("request", "checkpoint card", "preset card", "default")


def resolve_guidance(guidance, preset: str, card: dict | None = None,
                     stages: int | None = None) -> tuple[float | list[float], str]:
    """The guidance a request runs with, and where it came from (one of ``GUIDANCE_SOURCES``).

    The one place that turns "no guidance named" into a value, so the CLI, the notebook API, the
    service and the benchmarks agree: the request's own (``"request"``); else a checkpoint card's
    (``card``); else the preset's (the mini model's card records the one it was evaluated with);
    else Wan's 5 (``"default"``).

    A card may also recommend one value per stage (``guidance_per_stage``; for instance guidance
    at full resolution only, where the low-resolution stages sample better without it). A plan
    with that many ``stages`` gets the list; any other plan gets the card's single ``guidance``."""
    if guidance is not None:
        return guidance, "request"
    for name, source in (("checkpoint card", card or {}), ("preset card", _preset_card(preset))):
        per_stage = source.get("guidance_per_stage")
        if stages is not None and isinstance(per_stage, list) and len(per_stage) == stages \
                and all(_valid_guidance(g) for g in per_stage):
            return [float(g) for g in per_stage], name
        value = source.get("guidance")
        if _valid_guidance(value):
            return float(value), name
    return DEFAULT_GUIDANCE, "default"


def recommended_guidance(preset: str, card: dict | None = None, stages: int | None = None) -> float | list[float]:
    """The guidance a request that names none gets (:func:`resolve_guidance`'s value)."""
    return resolve_guidance(None, preset, card, stages)[0]


def _valid_guidance(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 1.0 <= value <= 20.0


def _preset_card(preset: str) -> dict:
    if preset != "mini" or not (mini_path() / "card.json").is_file():
        return {}
    try:
        return json.loads((mini_path() / "card.json").read_text())
    except (OSError, ValueError):
        return {}


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def build_components(preset: str, device: torch.device | str | None = None) -> Components:
    if preset not in PRESETS:
        raise ModelLoadError(f"unknown model {preset!r}; choose one of: {', '.join(PRESETS)}")
    device = torch.device(device) if device is not None else default_device()
    comps = PRESETS[preset].build(device)
    comps.info.setdefault("preset", preset)
    return comps
