"""Cards are shipped and shared: they hold no absolute path of the machine that trained them
(paths inside the repo are relative to it; others are left out)."""
import json
from pathlib import Path

from finetune.pyramidal import train

ROOT = Path(__file__).resolve().parents[2]


def _absolute_paths(value, where="card") -> list[str]:
    """Every string in ``value`` that is an absolute path or names the repo's or a home folder."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _absolute_paths(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _absolute_paths(v, f"{where}[{i}]")]
    if isinstance(value, str) and (value.startswith(("/", "~")) or str(ROOT) in value
                                   or str(Path.home()) in value or "/home/" in value):
        return [f"{where} = {value!r}"]
    return []


def test_a_finetune_card_holds_no_absolute_path(train_config, tiny, tmp_path):
    cache = tmp_path / "cache"
    train(train_config(steps=1, out=str(tmp_path / "ck"), cache_dir=str(cache)), components=tiny(),
          log=lambda *_: None)
    card = json.loads((tmp_path / "ck" / "card.json").read_text())
    assert _absolute_paths(card) == []
    assert card["config"]["out"] is None and card["config"]["cache_dir"] is None  # outside the repo: left out


def test_paths_inside_the_repo_are_recorded_relative_to_it():
    from core.checkpoints import shareable_paths

    card = {"config": {"out": str(ROOT / "models" / "x"), "data": "world:4", "cache": str(ROOT / "data" / "c"),
                       "elsewhere": "/tmp/somewhere", "list": [str(ROOT / "models"), 3]}}
    assert shareable_paths(card) == {"config": {"out": "models/x", "data": "world:4", "cache": "data/c",
                                                "elsewhere": None, "list": ["models", 3]}}


def test_shipped_cards_hold_no_absolute_path():
    cards = sorted(ROOT.glob("models/**/card.json")) + sorted(ROOT.glob("models/**/summary.json"))
    assert any(c.parent.name == "mini-pyramidal" for c in cards)
    found = [f"{c.relative_to(ROOT)}: {p}" for c in cards for p in _absolute_paths(json.loads(c.read_text()))]
    assert found == []
