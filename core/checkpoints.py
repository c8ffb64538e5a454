"""Transformer checkpoints over a base preset (written by ``finetune/``, read by the pipeline).

Layout of a checkpoint folder::

    card.json                 base preset, kind ("full" | "lora"), plan and windows, data, steps, losses...
    transformer/              kind "full": diffusers ``save_pretrained`` (safetensors)
    lora/adapter_config.json  kind "lora": the peft LoraConfig
    lora/adapter_model.safetensors
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .errors import ModelLoadError

CARD = "card.json"
REPO = Path(__file__).resolve().parent.parent


def shareable_paths(value, root: str | Path = REPO):
    """A copy of card data fit to ship: an absolute path inside the repo (``root``) becomes
    relative to it (``models/mini-pyramidal``); any other absolute path (a home, /tmp, another
    machine's data folder) is dropped (None). Cards are shared; the trainer's folders are not."""
    if isinstance(value, dict):
        return {k: shareable_paths(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shareable_paths(v, root) for v in value]
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, str) and (value.startswith("/") or value.startswith("~")):
        root = Path(root).resolve()
        path = Path(value).expanduser()
        for candidate in (path, path.resolve()):  # as written, then with links resolved
            if candidate == root or root in candidate.parents:
                return candidate.relative_to(root).as_posix() or "."
        return None
    return value


def read_card(path: str | Path) -> dict:
    path = Path(path)
    card_path = path / CARD
    if not card_path.is_file():
        raise ModelLoadError(f"{path} is not a checkpoint folder: {CARD} is missing")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"checkpoint card {card_path} cannot be read: {exc}") from exc
    if card.get("kind") not in ("full", "lora") or not card.get("base"):
        raise ModelLoadError(f"checkpoint card {card_path} must name its 'base' preset and 'kind' (full or lora)")
    return card


def save_checkpoint(path: str | Path, transformer: torch.nn.Module, card: dict, lora: bool = False) -> Path:
    """Write ``transformer`` (its LoRA adapter only when ``lora``) and ``card`` atomically enough:
    the card is written last, so a folder without a card is an unfinished checkpoint."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    if lora:
        from peft import get_peft_model_state_dict

        cfg = transformer.peft_config["default"]
        (path / "lora").mkdir(exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(transformer).items()}
        save_file(state, str(path / "lora" / "adapter_model.safetensors"))
        cfg_dict = cfg.to_dict()
        cfg_dict = {k: (sorted(v) if isinstance(v, set) else v) for k, v in cfg_dict.items()}
        (path / "lora" / "adapter_config.json").write_text(json.dumps(cfg_dict, indent=2, default=str))
    else:
        transformer.save_pretrained(str(path / "transformer"), safe_serialization=True)
    card = shareable_paths(dict(card, kind="lora" if lora else "full"))
    tmp = path / (CARD + ".tmp")
    tmp.write_text(json.dumps(card, indent=2, default=str))
    tmp.replace(path / CARD)
    return path


def apply_checkpoint(transformer: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Return the transformer of checkpoint ``path`` built over ``transformer`` (the base preset's)."""
    path = Path(path)
    card = read_card(path)
    try:
        if card["kind"] == "full":
            from diffusers import WanTransformer3DModel

            loaded = WanTransformer3DModel.from_pretrained(str(path / "transformer"), torch_dtype=transformer.dtype)
            for p in loaded.parameters():  # own the memory: memory-mapped weights took other CPU kernels
                p.data = p.data.clone()
            return loaded.to(transformer.device).eval().requires_grad_(False)
        from peft import LoraConfig, set_peft_model_state_dict
        from safetensors.torch import load_file

        cfg = json.loads((path / "lora" / "adapter_config.json").read_text())
        allowed = set(LoraConfig.__dataclass_fields__)
        config = LoraConfig(**{k: v for k, v in cfg.items() if k in allowed and k not in ("peft_type", "task_type")})
        transformer.add_adapter(config)
        set_peft_model_state_dict(transformer, load_file(str(path / "lora" / "adapter_model.safetensors")))
        return transformer.eval().requires_grad_(False)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"checkpoint {path.name} could not be loaded: {exc}") from exc
