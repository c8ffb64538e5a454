"""Distilled few-step students for the benchmarks: find one's card and name its row.

A student is a checkpoint folder whose ``card.json`` says ``"trained_for": "few-step"`` and locks
a recipe (``core.fewstep.FewStepRecipe``); requests on it name neither schedule nor guidance.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STUDENT = "models/mini-distilled"  # where the lead's distilled mini student ships


def resolve(folder: str | Path) -> Path:
    """``folder``, relative ones taken from the repository root."""
    return Path(folder) if Path(folder).is_absolute() else ROOT / folder


def student_card(folder: str | Path) -> dict | str:
    """The student's card, or a message saying why ``folder`` holds no distilled checkpoint."""
    from core.fewstep import TRAINED_FOR

    card_path = resolve(folder) / "card.json"
    if not card_path.is_file():
        return f"no distilled student at {folder} (no card.json); python -m finetune distill writes one"
    try:
        card = json.loads(card_path.read_text())
    except ValueError as exc:
        return f"{card_path} is not JSON ({exc})"
    if card.get("trained_for") != TRAINED_FOR:
        return (f"{folder} is not a distilled student (its card says trained_for {card.get('trained_for')!r}, "
                f"not {TRAINED_FOR!r})")
    return card


def method_label(card: dict) -> str:
    """The distillation method as the paper names it (``DMD-PT*``), from the card's ``method``, else
    the last part of its ``label``."""
    from finetune.distill.config import LABELS

    method = card.get("method")
    if method in LABELS:
        return LABELS[method]
    return method or str(card.get("label", "distilled")).split(",")[-1].strip()


def row_name(prefix: str, card: dict) -> str:
    """``"distilled 2-2-1 (DMD-PT*)"``: ``prefix``, the recipe's plan and the method."""
    schedule = (card.get("recipe") or {}).get("schedule") or card.get("schedule", "?")
    return f"{prefix} {schedule} ({method_label(card)})"
