"""Which server folders a request may name: the data folder and the shipped ``models/``.

The page and the REST API accept folder paths from a person (a checkpoint to register, a
finetune's data); :func:`confine` resolves each one and refuses any that leads outside.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from db.config import data_dir
from service.errors import ValidationError

MODELS_DIR = Path(__file__).resolve().parent.parent / "models"


def allowed_roots() -> list[Path]:
    """Folders the page and the REST API may name on the server: the data folder and the
    checkpoints shipped with the project (``models/``)."""
    return [data_dir().resolve(), MODELS_DIR.resolve()]


def confine(value: Any, field: str, roots: list[Path]) -> Path:
    """``value`` as a path that stays inside one of ``roots`` once resolved (no ``..`` or links
    out); a relative path is taken from ``roots[0]``."""
    if not isinstance(value, (str, Path)) or not str(value).strip() or "\x00" in str(value):
        raise ValidationError(f"{field} must be a folder path", field)
    raw = Path(str(value)).expanduser()
    resolved = (roots[0] / raw).resolve() if not raw.is_absolute() else raw.resolve()
    if not any(resolved == root or root in resolved.parents for root in roots):
        raise ValidationError(
            f"{field} {str(value)!r} is outside the folders the studio may use "
            f"({', '.join(str(r) for r in roots)})", field)
    return resolved
