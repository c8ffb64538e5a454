"""Checkpoints: the built-in presets and the registered finetunes a run may use.

Results are plain dicts (see :func:`db.models.to_dict`), ready for JSON.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from core import list_presets
from db import checkpoints as db_checkpoints
from db import runs as db_runs
from service.checks import check_id, check_name
from service.errors import ConflictError, NotFoundError, ValidationError
from service.paths import MODELS_DIR, confine

log = logging.getLogger(__name__)

CHECKPOINT_KINDS = ("full", "lora")


def list_checkpoints() -> list[dict[str, Any]]:
    """Built-in presets first (``builtin: True``, ``id: None``), then registered checkpoints."""
    builtins = [
        {"id": None, "name": p, "base": p, "kind": "preset", "path": None, "card": {},
         "builtin": True}
        for p in list_presets()
    ]
    registered = [{**c, "builtin": False} for c in db_checkpoints.list_checkpoints()]
    return builtins + registered


def get_checkpoint(checkpoint_id: int) -> dict[str, Any]:
    row = db_checkpoints.get_checkpoint(check_id(checkpoint_id, "checkpoint"))
    if row is None:
        raise NotFoundError(f"There is no checkpoint {checkpoint_id}.")
    return row


def _folder_card(folder: Path) -> dict[str, Any]:
    """The folder's ``card.json`` (an empty card when there is none)."""
    card_file = folder / "card.json"
    try:
        return json.loads(card_file.read_text()) if card_file.is_file() else {}
    except (OSError, json.JSONDecodeError) as exc:
        raise ValidationError(f"{card_file} cannot be read: {exc}", "card") from None


def _check_card(card: Any, base: str) -> str:
    """The card's kind, once the card is an object whose kind and base fit; raises otherwise."""
    if not isinstance(card, dict):
        raise ValidationError("the card must be a JSON object", "card")
    kind = card.get("kind", "full")
    if kind not in CHECKPOINT_KINDS:
        raise ValidationError(f"card kind must be 'full' or 'lora'; got {kind!r}", "card")
    if card.get("base") not in (None, base):
        raise ValidationError(
            f"the card says this checkpoint was trained over {card['base']!r}, not {base!r}", "base"
        )
    return kind


def register_checkpoint(
    path: str | Path, base: str, name: str, card: dict[str, Any] | None = None,
    *, roots: list[Path] | None = None,
) -> dict[str, Any]:
    """Register a checkpoint folder over preset ``base`` under ``name``.

    ``card`` defaults to the folder's ``card.json`` (if any); its ``kind`` (full | lora,
    default full) and ``base`` (must match) are checked. With ``roots`` (the page and the REST
    API pass :func:`service.paths.allowed_roots`) the folder must lie inside one of them.
    """
    name = check_name(name)
    if roots is not None:
        path = confine(path, "path", roots)
    folder = Path(str(path or "")).expanduser()
    if not str(path or "").strip() or not folder.is_dir():
        raise ValidationError(f"checkpoint folder {str(path)!r} does not exist", "path")
    presets = list_presets()
    if base not in presets:
        raise ValidationError(
            f"unknown base model {base!r}; choose one of: {', '.join(presets)}", "base"
        )
    if card is None:
        card = _folder_card(folder)
    kind = _check_card(card, base)
    try:
        return db_checkpoints.add_checkpoint(
            name=name, path=str(folder.resolve()), base=base, kind=kind, card=card
        )
    except db_checkpoints.NameTaken as exc:
        raise ValidationError(str(exc), "name") from None


def register_shipped_checkpoints(models_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Register the checkpoints shipped in ``models/`` (folders with a ``card.json`` whose base
    preset is available) that are not registered yet, under their folder name. Returns the new rows.
    Called at start-up, so a shipped pyramidal model is in the model list without admin work."""
    folder = Path(models_dir) if models_dir is not None else MODELS_DIR.resolve()
    if not folder.is_dir():
        return []
    known = {row["path"] for row in db_checkpoints.list_checkpoints()}
    added = []
    for card_file in sorted(folder.glob("*/card.json")):
        path = card_file.parent.resolve()
        try:
            card = json.loads(card_file.read_text())
        except (OSError, json.JSONDecodeError):
            log.warning("shipped checkpoint %s has an unreadable card; skipped", path)
            continue
        if str(path) in known or card.get("base") not in list_presets() or card.get("kind") not in CHECKPOINT_KINDS:
            continue
        try:
            added.append(register_checkpoint(path, card["base"], path.name, card))
        except ValidationError as exc:
            log.warning("shipped checkpoint %s not registered: %s", path, exc)
    return added


def rename_checkpoint(checkpoint_id: int, name: str) -> dict[str, Any]:
    checkpoint_id = check_id(checkpoint_id, "checkpoint")
    name = check_name(name)
    try:
        row = db_checkpoints.rename_checkpoint(checkpoint_id, name)
    except db_checkpoints.NameTaken as exc:
        raise ValidationError(str(exc), "name") from None
    if row is None:
        raise NotFoundError(f"There is no checkpoint {checkpoint_id}.")
    return row


def delete_checkpoint(checkpoint_id: int) -> dict[str, Any]:
    """Unregister a checkpoint (its folder stays on disk). Refused while runs that use it are
    queued or running."""
    checkpoint_id = check_id(checkpoint_id, "checkpoint")
    busy = db_runs.active_run_ids(checkpoint_id=checkpoint_id)
    if busy:
        raise ConflictError(
            f"checkpoint {checkpoint_id} is used by queued or running runs {busy}; "
            "cancel them or wait until they finish"
        )
    row = db_checkpoints.delete_checkpoint(checkpoint_id)
    if row is None:
        raise NotFoundError(f"There is no checkpoint {checkpoint_id}.")
    return row
