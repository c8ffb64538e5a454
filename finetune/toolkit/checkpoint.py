"""Writing what a training run ships: the card beside the weights, fit to be shared."""

from __future__ import annotations

import json
from pathlib import Path


def write_card(folder: str | Path, card: dict, indent: int = 2) -> dict:
    """Write ``folder/card.json`` atomically, with paths made shareable
    (:func:`core.checkpoints.shareable_paths`: inside the repo relative, elsewhere dropped);
    returns the card as written."""
    from core.checkpoints import shareable_paths

    card = shareable_paths(card)
    path = Path(folder) / "card.json"
    tmp = path.with_name("card.json.tmp")
    tmp.write_text(json.dumps(card, indent=indent) + "\n")
    tmp.replace(path)
    return card
